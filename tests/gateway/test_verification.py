"""Copy searches verified geometrically: the pipelines over fakes of the services, with real keypoints
(the fake extractor's vectors are hashes, so only verification can put the copy first)."""

from __future__ import annotations

import hashlib
import io
from pathlib import Path

import pytest
from PIL import Image

from services.common.errors import ImageSearchError, SearchUnavailable, StoreUnavailable
from services.gateway.blobstore import features_key, image_key
from services.gateway.records import EmbedPurpose, ImageFilter, NewImage, Query, SearchMode
from services.gateway.usecases import albums, images, ingest, reembed, search
from services.gateway.usecases.shared import image_id_of
from tests.common.test_local_features import MIN_MATCHES, edited
from tests.conftest import sample_photos
from tests.gateway.conftest import MakeFakes
from tests.gateway.fakes import Fakes

pytestmark = pytest.mark.anyio

NAMES = ("astronaut", "chelsea", "coffee", "motorcycle_left")


@pytest.fixture(scope="module")
def photos() -> list[Path]:
    return [p for p in sample_photos() if p.stem in NAMES]


async def album_of(make_fakes: MakeFakes, photos: list[Path], details: bool = False,
                   **settings: object) -> tuple[Fakes, list[str]]:
    fakes = make_fakes(**settings)
    await albums.create(fakes.deps, "demo", details=details)
    results = await ingest.add_images(fakes.deps, "demo", [NewImage(p.read_bytes(), name=p.stem) for p in photos])
    return fakes, [r.id or "" for r in results]


async def test_a_copy_search_puts_the_verified_original_first_with_its_matches(
    make_fakes: MakeFakes,
    photos: list[Path],
) -> None:
    fakes, ids = await album_of(make_fakes, photos, verify_top=10)
    for index, path in enumerate(photos):
        outcome = await search.search(fakes.deps, "demo", Query(image=edited(path)), top_k=4)
        first, *rest = outcome.hits
        assert first.image.id == ids[index], path.name
        assert first.matches is not None and first.matches >= 40
        assert all(h.matches is not None and h.matches < MIN_MATCHES for h in rest)


async def test_verification_looks_at_the_nearest_few_even_for_top_1(make_fakes: MakeFakes, photos: list[Path]) -> None:
    fakes, ids = await album_of(make_fakes, photos, verify_top=4)
    outcome = await search.search(fakes.deps, "demo", Query(image=edited(photos[2], mirror=True)), top_k=1)
    assert [h.image.id for h in outcome.hits] == [ids[2]]
    assert (outcome.hits[0].matches or 0) >= 40


async def test_a_repeated_query_is_verified_from_the_cache_without_the_extractor(
    make_fakes: MakeFakes,
    photos: list[Path],
) -> None:
    fakes, ids = await album_of(make_fakes, photos, verify_top=10)
    query = edited(photos[1])
    await search.search(fakes.deps, "demo", Query(image=query))
    calls = len(fakes.extractor.calls)
    again = await search.search(fakes.deps, "demo", Query(image=query))
    assert len(fakes.extractor.calls) == calls
    assert again.hits[0].image.id == ids[1] and (again.hits[0].matches or 0) >= 40


async def test_search_by_image_id_is_verified_with_its_stored_features(
    make_fakes: MakeFakes,
    photos: list[Path],
) -> None:
    fakes, ids = await album_of(make_fakes, photos, verify_top=10)
    await ingest.add_images(fakes.deps, "demo", [NewImage(edited(photos[3]), name="copy")])
    outcome = await search.search(fakes.deps, "demo", Query(image_id=ids[3]))
    assert outcome.hits[0].image.name == "copy" and (outcome.hits[0].matches or 0) >= 40


async def test_similar_search_and_verification_off_leave_the_order_to_the_vectors(
    make_fakes: MakeFakes,
    photos: list[Path],
) -> None:
    fakes, _ = await album_of(make_fakes, photos, verify_top=10)
    similar = await search.search(fakes.deps, "demo", Query(image=edited(photos[0])), mode=SearchMode.SIMILAR.value)
    assert all(h.matches is None for h in similar.hits)
    assert fakes.extractor.local_features[-1] is False
    off, _ = await album_of(make_fakes, photos, verify_top=0)
    outcome = await search.search(off.deps, "demo", Query(image=edited(photos[0])))
    assert all(h.matches is None for h in outcome.hits)
    assert off.extractor.local_features[-1] is False


async def test_an_image_without_stored_features_is_found_unverified(make_fakes: MakeFakes, photos: list[Path]) -> None:
    fakes, ids = await album_of(make_fakes, photos, verify_top=10)
    digest = hashlib.sha256(photos[0].read_bytes()).hexdigest()
    fakes.blobs.objects[features_key("demo", digest)] = (b"not features", "application/octet-stream", "")
    del fakes.blobs.objects[features_key("demo", hashlib.sha256(photos[1].read_bytes()).hexdigest())]
    outcome = await search.search(fakes.deps, "demo", Query(image=edited(photos[0])), top_k=4)
    matches = {h.image.id: h.matches for h in outcome.hits}
    assert matches[ids[0]] is None and matches[ids[1]] is None
    assert matches[ids[2]] is not None


async def test_deleting_an_image_deletes_its_features(make_fakes: MakeFakes, photos: list[Path]) -> None:
    fakes, ids = await album_of(make_fakes, photos)
    digest = hashlib.sha256(photos[0].read_bytes()).hexdigest()
    assert features_key("demo", digest) in fakes.blobs.objects
    await images.delete_image(fakes.deps, "demo", ids[0])
    assert features_key("demo", digest) not in fakes.blobs.objects


async def test_reembedding_rewrites_the_features(make_fakes: MakeFakes, photos: list[Path]) -> None:
    fakes, _ = await album_of(make_fakes, photos)
    keys = [k for k in fakes.blobs.objects if "/features/" in k]
    for key in keys:
        del fakes.blobs.objects[key]
    await reembed.reembed_album(fakes.deps, "demo")
    assert sorted(k for k in fakes.blobs.objects if "/features/" in k) == sorted(keys)


async def test_unreadable_cached_query_features_leave_the_search_unverified_not_failed(
    make_fakes: MakeFakes,
    photos: list[Path],
) -> None:
    fakes, ids = await album_of(make_fakes, photos, verify_top=10)
    query = edited(photos[1])
    await search.search(fakes.deps, "demo", Query(image=query))
    fakes.cache.features[hashlib.sha256(query).hexdigest()] = b"LF1\0 truncated"
    outcome = await search.search(fakes.deps, "demo", Query(image=query))
    assert sorted(h.image.id for h in outcome.hits) == sorted(ids)
    assert all(h.matches is None for h in outcome.hits)


def turned(path: Path) -> bytes:
    """The photo turned a quarter (anticlockwise), as a camera held sideways saves it."""
    out = io.BytesIO()
    with Image.open(path) as image:
        image.convert("RGB").transpose(Image.Transpose.ROTATE_90).save(out, "JPEG", quality=90)
    return out.getvalue()


async def turned_copy_album(make_fakes: MakeFakes, photos: list[Path], **settings: object
                            ) -> tuple[Fakes, list[str], bytes]:
    """The album, and a turned copy of its third photo whose upright vector ranks another photo first
    (the fake's vectors are hashes), with verification of the nearest one only: only the query turned
    back can find the copy."""
    fakes, ids = await album_of(make_fakes, photos, verify_top=1, **settings)
    query = turned(photos[2])
    fakes.extractor.turned[query] = photos[2].read_bytes()
    upright = await fakes.search.search("demo", fakes.extractor._vector(query, 0), 1)
    assert upright[0].id != ids[2]  # so the test means something
    return fakes, ids, query


async def test_a_turned_copy_is_found_by_the_query_turned_back_and_verified(
    make_fakes: MakeFakes, photos: list[Path]
) -> None:
    fakes, ids, query = await turned_copy_album(make_fakes, photos)
    outcome = await search.search(fakes.deps, "demo", Query(image=query), top_k=2)
    first = outcome.hits[0]
    assert first.image.id == ids[2] and (first.matches or 0) >= 40
    assert first.distance == pytest.approx(0.0, abs=1e-5)  # the turned-back vector is the photo's own
    assert fakes.extractor.purposes[-2:] == [EmbedPurpose.QUERY, EmbedPurpose.QUERY_VARIANTS]


async def test_the_variants_search_under_the_same_filter(make_fakes: MakeFakes, photos: list[Path]) -> None:
    fakes, ids, query = await turned_copy_album(make_fakes, photos)
    where = ImageFilter(where=f"name <> '{photos[2].stem}'")
    outcome = await search.search(fakes.deps, "demo", Query(image=query), top_k=4, filter=where)
    assert fakes.extractor.purposes[-1] == EmbedPurpose.QUERY_VARIANTS
    assert ids[2] not in [h.image.id for h in outcome.hits] and len(outcome.hits) == 3


async def test_a_verified_upright_copy_needs_no_variants(make_fakes: MakeFakes, photos: list[Path]) -> None:
    fakes, ids = await album_of(make_fakes, photos, verify_top=10)
    outcome = await search.search(fakes.deps, "demo", Query(image=edited(photos[1])))
    assert outcome.hits[0].image.id == ids[1]
    assert EmbedPurpose.QUERY_VARIANTS not in fakes.extractor.purposes


async def test_copy_variants_never_leaves_a_turned_copy_unfound(make_fakes: MakeFakes, photos: list[Path]) -> None:
    fakes, ids, query = await turned_copy_album(make_fakes, photos, copy_variants="never")
    outcome = await search.search(fakes.deps, "demo", Query(image=query), top_k=1)
    assert outcome.hits[0].image.id != ids[2]
    assert EmbedPurpose.QUERY_VARIANTS not in fakes.extractor.purposes


async def test_copy_variants_always_tries_them_beside_a_verified_copy(make_fakes: MakeFakes,
                                                                     photos: list[Path]) -> None:
    fakes, ids = await album_of(make_fakes, photos, verify_top=10, copy_variants="always")
    outcome = await search.search(fakes.deps, "demo", Query(image=edited(photos[1])))
    assert outcome.hits[0].image.id == ids[1] and (outcome.hits[0].matches or 0) >= 40
    assert fakes.extractor.purposes[-1] == EmbedPurpose.QUERY_VARIANTS


async def test_similar_searches_and_searches_by_image_id_try_no_variants(
    make_fakes: MakeFakes, photos: list[Path]
) -> None:
    fakes, ids, query = await turned_copy_album(make_fakes, photos)
    await search.search(fakes.deps, "demo", Query(image=query), mode=SearchMode.SIMILAR.value)
    await search.search(fakes.deps, "demo", Query(image_id=ids[0]))
    assert EmbedPurpose.QUERY_VARIANTS not in fakes.extractor.purposes


def detail(path: Path, box: tuple[int, int, int, int] = (150, 60, 300, 210)) -> bytes:
    """A small part of the photo (150 x 150 pixels: the cat's face in chelsea), as a detail cut out of a
    larger picture."""
    with Image.open(path) as image:
        part = image.convert("RGB").crop(box)
    out = io.BytesIO()
    part.save(out, format="JPEG", quality=95)
    return out.getvalue()


async def test_a_small_query_is_verified_against_more_of_its_nearest_images(
        make_fakes: MakeFakes, photos: list[Path]) -> None:
    fakes, ids = await album_of(make_fakes, photos, verify_top=1, verify_small_top=4, verify_small_side=160)
    outcome = await search.search(fakes.deps, "demo", Query(image=detail(photos[1])), top_k=4)
    assert all(h.matches is not None for h in outcome.hits)  # all four verified, not only the nearest
    assert outcome.hits[0].image.id == ids[1] and (outcome.hits[0].matches or 0) >= 40
    large = await search.search(fakes.deps, "demo", Query(image=edited(photos[2])), top_k=4)
    assert sum(h.matches is not None for h in large.hits) == 1  # a photo of ordinary size: verify_top


async def test_small_query_verification_is_off_by_default(make_fakes: MakeFakes, photos: list[Path]) -> None:
    fakes, _ = await album_of(make_fakes, photos, verify_top=1)
    outcome = await search.search(fakes.deps, "demo", Query(image=detail(photos[1])), top_k=4)
    assert sum(h.matches is not None for h in outcome.hits) == 1


async def test_a_detail_is_found_by_its_keypoints_when_its_vector_misses_its_photo(
        make_fakes: MakeFakes, photos: list[Path]) -> None:
    query = Query(image=detail(photos[1]))
    without, ids = await album_of(make_fakes, photos, verify_top=1)
    nearest = await search.search(without.deps, "demo", query, top_k=4)
    assert nearest.hits[0].image.id != ids[1]  # the fake's vectors are hashes: the nearest is another photo
    fakes, ids = await album_of(make_fakes, photos, details=True, verify_top=1)
    outcome = await search.search(fakes.deps, "demo", query, top_k=4)
    assert outcome.hits[0].image.id == ids[1] and (outcome.hits[0].matches or 0) >= 40
    assert len(outcome.hits) == 4 and len({h.image.id for h in outcome.hits}) == 4
    large = await search.search(fakes.deps, "demo", Query(image=edited(photos[2])), top_k=4)
    assert sum(h.matches is not None for h in large.hits) == 1  # a photo of ordinary size: the vector's nearest


async def test_the_keypoint_candidates_keep_to_the_searchs_filter(make_fakes: MakeFakes, photos: list[Path]) -> None:
    fakes, ids = await album_of(make_fakes, photos, details=True, verify_top=1)
    outcome = await search.search(fakes.deps, "demo", Query(image=detail(photos[1])), top_k=4,
                                  filter=ImageFilter(where="name <> 'chelsea'"))
    assert ids[1] not in {h.image.id for h in outcome.hits}


async def test_an_images_keypoint_rows_are_written_with_it_and_deleted_with_it(
        make_fakes: MakeFakes, photos: list[Path]) -> None:
    fakes, ids = await album_of(make_fakes, photos, details=True)
    rows = fakes.search.index.get("demo.keypoints", ids, with_vectors=True)
    assert [r.id for r in rows] == ids and all(len(r.vectors) >= 100 for r in rows)
    await images.delete_image(fakes.deps, "demo", ids[0])
    assert [r.id for r in fakes.search.index.get("demo.keypoints", ids)] == ids[1:]
    await images.delete_images(fakes.deps, "demo", all=True)
    assert fakes.search.index.get("demo.keypoints", ids) == []
    await albums.delete(fakes.deps, "demo")
    assert "demo.keypoints" not in {c.name for c in fakes.search.index.list_collections()}


async def test_a_failed_add_leaves_no_keypoint_rows(make_fakes: MakeFakes, photos: list[Path]) -> None:
    fakes = make_fakes()
    await albums.create(fakes.deps, "demo", details=True)
    original = fakes.search.index.insert

    def fail_on_the_album(name: str, items: object, version: int = 0) -> list[str]:
        if name == "demo":
            raise StoreUnavailable("the album's insert fails")
        return original(name, items, version)  # type: ignore[arg-type]

    fakes.search.index.insert = fail_on_the_album  # type: ignore[method-assign]
    with pytest.raises(ImageSearchError):
        await ingest.add_images(fakes.deps, "demo", [NewImage(photos[0].read_bytes(), name="a")], atomic=True)
    assert fakes.search.index.count("demo.keypoints") == 0


async def test_an_add_whose_applied_insert_cannot_be_undone_keeps_its_keypoint_rows(
        make_fakes: MakeFakes, photos: list[Path]) -> None:
    """The album's insert was applied and raised, and its vectors cannot be deleted (Milvus still down for
    the album, not for its companion): the image stays in the album, so its keypoint rows stay with its
    blobs; deleted, they would be gone for good (the client's retry of the add answers "duplicate")."""
    fakes = make_fakes()
    await albums.create(fakes.deps, "demo", details=True)
    original_insert, original_delete = fakes.search.index.insert, fakes.search.index.delete

    def applied_then_failed(name: str, items: object, version: int = 0) -> list[str]:
        ids = original_insert(name, items, version)  # type: ignore[arg-type]
        if name == "demo":
            raise SearchUnavailable("the answer was lost")
        return ids

    def album_down(name: str, ids: object) -> int:
        if name == "demo":
            raise SearchUnavailable("still down")
        return original_delete(name, ids)  # type: ignore[arg-type]

    fakes.search.index.insert = applied_then_failed  # type: ignore[method-assign]
    fakes.search.index.delete = album_down  # type: ignore[method-assign]
    with pytest.raises(ImageSearchError):
        await ingest.add_images(fakes.deps, "demo", [NewImage(photos[0].read_bytes(), name="a")])
    (image,) = fakes.search.index.get("demo", [image_id_of(hashlib.sha256(photos[0].read_bytes()).hexdigest())])
    assert [r.id for r in fakes.search.index.get("demo.keypoints", [image.id])] == [image.id]
    assert image_key("demo", image.content_hash) in fakes.blobs.objects


async def test_an_album_keeps_a_keypoint_index_only_when_made_with_details(
        make_fakes: MakeFakes, photos: list[Path]) -> None:
    plain, _ = await album_of(make_fakes, photos)
    assert "demo.keypoints" not in {c.name for c in plain.search.index.list_collections()}
    assert not (await albums.get(plain.deps, "demo")).details
    # Its images' features are made as a query's; an album with details asks for finer ones.
    assert plain.extractor.fine_local_features == [False]
    fakes, ids = await album_of(make_fakes, photos, details=True)
    assert (await albums.get(fakes.deps, "demo")).details
    assert [a.details for a in await albums.list_all(fakes.deps)] == [True]
    assert fakes.extractor.fine_local_features == [True]
    rows = fakes.search.index.get("demo.keypoints", ids, with_vectors=True)
    assert [r.id for r in rows] == ids and all(len(r.vectors) >= 100 for r in rows)


async def test_reembedding_with_details_gives_an_album_made_without_a_keypoint_index_its_rows(
        make_fakes: MakeFakes, photos: list[Path]) -> None:
    fakes, ids = await album_of(make_fakes, photos)
    await reembed.reembed_album(fakes.deps, "demo")  # a re-embed alone does not add the index
    assert "demo.keypoints" not in {c.name for c in fakes.search.index.list_collections()}
    await fakes.deps.keypoints.ensure("demo")  # what reembed.start(details=True) does before queueing the job
    await reembed.reembed_album(fakes.deps, "demo")
    assert sorted(r.id for r in fakes.search.index.get("demo.keypoints", ids)) == sorted(ids)
    assert fakes.extractor.fine_local_features[-1]
