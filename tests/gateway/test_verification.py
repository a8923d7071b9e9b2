"""Copy searches verified geometrically: the pipelines over fakes of the services, with real keypoints
(the fake extractor's vectors are hashes, so only verification can put the copy first)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from services.gateway.blobstore import features_key
from services.gateway.records import NewImage, Query, SearchMode
from services.gateway.usecases import albums, images, ingest, reembed, search
from tests.common.test_local_features import MIN_MATCHES, edited
from tests.conftest import sample_photos
from tests.gateway.conftest import MakeFakes
from tests.gateway.fakes import Fakes

pytestmark = pytest.mark.anyio

NAMES = ("astronaut", "chelsea", "coffee", "motorcycle_left")


@pytest.fixture(scope="module")
def photos() -> list[Path]:
    return [p for p in sample_photos() if p.stem in NAMES]


async def album_of(make_fakes: MakeFakes, photos: list[Path], **settings: object) -> tuple[Fakes, list[str]]:
    fakes = make_fakes(**settings)
    await albums.create(fakes.deps, "demo")
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
