"""The use cases over in-memory fakes of the extractor, search service, object store, cache and fetcher."""

from __future__ import annotations

import asyncio
import hashlib

import pytest

from services.common.errors import (
    AlbumNotFound,
    AlreadyExists,
    ExtractorUnavailable,
    FaceModelUnavailable,
    FacesNotEnabled,
    ImageNotFound,
    ImageTooLarge,
    InvalidArgument,
    InvalidAttributes,
    InvalidFilter,
    InvalidImage,
    ModelMismatch,
    SearchUnavailable,
    StoreUnavailable,
    UrlFetchFailed,
)
from services.common.filtering import Op, Predicate
from services.gateway.blobstore import features_key, image_key
from services.gateway.records import AddStatus, EmbedPurpose, ImageFilter, Listing, NewImage, OnDuplicate, Query
from services.gateway.usecases import albums, faces, images, ingest, reembed, search
from tests.gateway.conftest import MakeFakes
from tests.gateway.fakes import MODEL, Fakes, SlowGet, png, until, vector_of

pytestmark = pytest.mark.anyio


@pytest.fixture()
async def fakes(make_fakes: MakeFakes) -> Fakes:
    f = make_fakes(max_image_bytes=100_000, max_top_k=50)
    await albums.create(f.deps, "demo")
    return f


async def test_create_album_records_the_extractors_model(fakes: Fakes) -> None:
    album = await albums.get(fakes.deps, "demo")
    assert (album.model, album.dim, album.metric, album.image_count) == (MODEL, 8, "cosine", 0)


@pytest.mark.parametrize("name", ["", "Demo", "-x", "a/b", "../etc", "x" * 64, "été"])
async def test_create_album_refuses_invalid_names(fakes: Fakes, name: str) -> None:
    with pytest.raises(InvalidArgument):
        await albums.create(fakes.deps, name)


async def test_create_album_twice_is_already_exists(fakes: Fakes) -> None:
    with pytest.raises(AlreadyExists):
        await albums.create(fakes.deps, "demo")


async def test_an_album_with_faces_needs_an_extractor_with_face_models_and_is_not_left_half_made(
        fakes: Fakes) -> None:
    with pytest.raises(FaceModelUnavailable, match="face models"):
        await albums.create(fakes.deps, "people", faces=True)
    assert [a.name for a in await albums.list_all(fakes.deps)] == ["demo"]
    with pytest.raises(FacesNotEnabled, match="does not index faces"):
        await faces.search_faces(fakes.deps, "demo", Query(image=png(1)))


async def test_unknown_album_is_album_not_found(fakes: Fakes) -> None:
    with pytest.raises(AlbumNotFound):
        await albums.get(fakes.deps, "nope")
    with pytest.raises(AlbumNotFound):
        await ingest.add_images(fakes.deps, "nope", [NewImage(png(1))])


async def test_add_images_embeds_the_batch_in_one_call_and_stores_blob_and_vector(fakes: Fakes) -> None:
    results = await ingest.add_images(fakes.deps, "demo", [NewImage(png(i), name=f"p{i}.png") for i in range(3)])
    assert [r.status for r in results] == [AddStatus.ADDED] * 3
    assert fakes.extractor.calls == [3]
    digest = hashlib.sha256(png(0)).hexdigest()
    assert results[0].id == digest[:32]
    assert fakes.blobs.objects[image_key("demo", digest)] == (png(0), "image/png", "p0.png")
    assert features_key("demo", digest) in fakes.blobs.objects
    assert fakes.extractor.local_features == [True]
    assert (await albums.get(fakes.deps, "demo")).image_count == 3


async def test_same_bytes_again_are_a_duplicate_with_no_new_write(fakes: Fakes) -> None:
    await ingest.add_images(fakes.deps, "demo", [NewImage(png(1))])
    results = await ingest.add_images(fakes.deps, "demo", [NewImage(png(1)), NewImage(png(1)), NewImage(png(2))])
    assert [r.status for r in results] == [AddStatus.DUPLICATE, AddStatus.DUPLICATE, AddStatus.ADDED]
    assert fakes.extractor.calls == [1, 1]
    assert await images.count(fakes.deps, "demo") == 2


async def test_an_add_is_embedded_while_the_album_is_slow_to_say_which_images_it_has(make_fakes: MakeFakes) -> None:
    """Which of an add's images the album has is asked before they are embedded (its duplicates are not); a new
    album answers once Milvus has loaded it (2-3 s). Not answered within DESCRIBE_AFTER_S, the images are embedded
    meanwhile, once, and the add uses those embeddings; the same images again, answered at once, are not
    embedded at all. A failed answer fails the add, with nothing written."""
    fakes = make_fakes()
    search = fakes.use_search(SlowGet())
    await albums.create(fakes.deps, "demo")
    search.answer.clear()
    batch = [NewImage(png(i)) for i in range(3)] + [NewImage(b"not an image", name="text")]
    adding = asyncio.create_task(ingest.add_images(fakes.deps, "demo", batch))
    await until(lambda: fakes.extractor.calls == [4], "the images are embedded while the album's answer waits")
    assert search.waiting and not adding.done()
    search.answer.set()
    results = await adding
    assert [r.status for r in results] == [AddStatus.ADDED] * 3 + [AddStatus.FAILED]
    assert results[3].error is not None and results[3].error.reason == "invalid_image"  # it fails alone
    assert fakes.extractor.calls == [4]
    assert await images.count(fakes.deps, "demo") == 3

    results = await ingest.add_images(fakes.deps, "demo", [NewImage(png(i)) for i in range(3)])
    assert [r.status for r in results] == [AddStatus.DUPLICATE] * 3
    assert fakes.extractor.calls == [4]

    search.answer.clear()
    search.error = SearchUnavailable("Milvus is down")
    adding = asyncio.create_task(ingest.add_images(fakes.deps, "demo", [NewImage(png(5))]))
    await until(lambda: fakes.extractor.calls == [4, 1], "the image is embedded while the album's answer waits")
    search.answer.set()
    with pytest.raises(SearchUnavailable):
        await adding
    search.error = None
    assert await images.count(fakes.deps, "demo") == 3
    assert image_key("demo", hashlib.sha256(png(5)).hexdigest()) not in fakes.blobs.objects


async def test_bad_items_fail_alone_with_their_reason(fakes: Fakes) -> None:
    batch = [
        NewImage(png(1), name="good"),
        NewImage(b"", name="empty"),
        NewImage(b"not an image", name="text"),
        NewImage(b"x" * 100_001, name="huge"),
        NewImage(png(2), name="attrs", attributes=InvalidAttributes("attributes must be a JSON object")),
        NewImage(png(3), name="broken-json", attributes={"bad key \u0000": 1}),
    ]
    results = await ingest.add_images(fakes.deps, "demo", batch)
    reasons = {r.name: (r.status, r.error.reason if r.error else None) for r in results}
    assert reasons == {
        "good": (AddStatus.ADDED, None),
        "empty": (AddStatus.FAILED, "invalid_image"),
        "text": (AddStatus.FAILED, "invalid_image"),
        "huge": (AddStatus.FAILED, "image_too_large"),
        "attrs": (AddStatus.FAILED, "invalid_attributes"),
        "broken-json": (AddStatus.FAILED, "invalid_attributes"),
    }
    assert [r.index for r in results] == list(range(6))
    assert await images.count(fakes.deps, "demo") == 1
    assert len([k for k in fakes.blobs.objects if "/images/" in k]) == 1  # and its local features


async def test_a_failed_vector_insert_leaves_no_blob_behind(fakes: Fakes) -> None:
    fakes.search.insert_error = SearchUnavailable("down")
    with pytest.raises(SearchUnavailable):
        await ingest.add_images(fakes.deps, "demo", [NewImage(png(1)), NewImage(png(2))])
    assert fakes.blobs.objects == {}


async def test_an_insert_that_failed_after_it_was_applied_leaves_no_image_without_its_bytes(fakes: Fakes) -> None:
    fakes.search.insert_error, fakes.search.insert_applied = SearchUnavailable("answer lost"), True
    with pytest.raises(SearchUnavailable):
        await ingest.add_images(fakes.deps, "demo", [NewImage(png(1))])
    assert await images.count(fakes.deps, "demo") == 0 and fakes.blobs.objects == {}  # vectors deleted, then blobs
    fakes.search.delete_error = SearchUnavailable("still down")
    with pytest.raises(SearchUnavailable):
        await ingest.add_images(fakes.deps, "demo", [NewImage(png(2))])
    # Its vectors could not be deleted: its blobs stay, so the image a retry finds present is whole.
    assert await images.count(fakes.deps, "demo") == 1 and any("/images/" in k for k in fakes.blobs.objects)


async def test_a_failed_blob_write_inserts_no_vector(fakes: Fakes) -> None:
    fakes.blobs.put_error = StoreUnavailable("down")
    with pytest.raises(StoreUnavailable):
        await ingest.add_images(fakes.deps, "demo", [NewImage(png(1))])
    assert await images.count(fakes.deps, "demo") == 0


async def test_an_album_of_another_model_is_refused_with_a_hint_to_re_embed(fakes: Fakes) -> None:
    fakes.extractor.model = "other-model"
    with pytest.raises(ModelMismatch, match="re-embed"):
        await ingest.add_images(fakes.deps, "demo", [NewImage(png(1))])
    with pytest.raises(ModelMismatch):
        await search.search(fakes.deps, "demo", Query(image=png(1)))


async def test_search_by_bytes_finds_the_same_image_first_and_caches_the_query(fakes: Fakes) -> None:
    await ingest.add_images(fakes.deps, "demo", [NewImage(png(i), name=f"p{i}") for i in range(4)])
    outcome = await search.search(fakes.deps, "demo", Query(image=png(2)), top_k=3)
    assert outcome.hits[0].image.name == "p2"
    assert outcome.hits[0].distance == pytest.approx(0, abs=1e-6)
    assert outcome.metric == "cosine" and outcome.model == MODEL
    assert len(outcome.hits) == 3
    assert outcome.hits[0].image.url == f"/v1/albums/demo/images/{outcome.hits[0].image.id}/content"
    calls = len(fakes.extractor.calls)
    await search.search(fakes.deps, "demo", Query(image=png(2)), top_k=3)
    assert len(fakes.extractor.calls) == calls


async def test_search_by_image_id_uses_the_stored_vector_and_excludes_the_query(fakes: Fakes) -> None:
    added = await ingest.add_images(fakes.deps, "demo", [NewImage(png(i)) for i in range(3)])
    calls = len(fakes.extractor.calls)
    outcome = await search.search(fakes.deps, "demo", Query(image_id=added[0].id), top_k=5)
    assert added[0].id not in [h.image.id for h in outcome.hits]
    assert len(outcome.hits) == 2
    assert len(fakes.extractor.calls) == calls
    with pytest.raises(ImageNotFound):
        await search.search(fakes.deps, "demo", Query(image_id="0" * 32))


async def test_search_by_url_fetches_the_image(fakes: Fakes) -> None:
    await ingest.add_images(fakes.deps, "demo", [NewImage(png(1), name="one")])
    fakes.fetcher.pages["http://x/one.png"] = png(1)
    outcome = await search.search(fakes.deps, "demo", Query(url="http://x/one.png"))
    assert outcome.hits[0].image.name == "one"
    with pytest.raises(UrlFetchFailed):
        await search.search(fakes.deps, "demo", Query(url="http://x/missing.png"))


async def test_search_passes_the_filter_through(fakes: Fakes) -> None:
    await ingest.add_images(fakes.deps, "demo", [
        NewImage(png(1), name="red", attributes={"color": "red"}),
        NewImage(png(2), name="blue", attributes={"color": "blue"}),
    ])
    outcome = await search.search(fakes.deps, "demo", Query(image=png(1)), filter=ImageFilter(json='{"color": "blue"}'))
    assert [h.image.name for h in outcome.hits] == ["blue"]
    assert outcome.hits[0].image.attributes == {"color": "blue"}
    assert fakes.search.last_search["filter"] == Predicate("attributes.color", Op.EQ, ("blue",))


async def test_copy_mode_searches_every_row_and_similar_mode_the_upright_rows_expanded(
    make_fakes: MakeFakes,
    fakes: Fakes,
) -> None:
    added = await ingest.add_images(fakes.deps, "demo", [NewImage(png(i)) for i in range(3)])
    await search.search(fakes.deps, "demo", Query(image_id=added[0].id))
    assert (fakes.search.last_search["primary_only"], fakes.search.last_search["expand_k"]) == (False, 0)
    outcome = await search.search(fakes.deps, "demo", Query(image_id=added[0].id), mode="similar")
    assert (fakes.search.last_search["primary_only"], fakes.search.last_search["expand_k"]) == (True, 3)
    assert fakes.search.last_search["exclude_ids"] == [added[0].id]
    assert len(outcome.hits) == 2
    tuned = make_fakes(similar_expand_k=7)
    await albums.create(tuned.deps, "demo")
    await search.search(tuned.deps, "demo", Query(image=png(1)), mode="similar")
    assert tuned.search.last_search["expand_k"] == 7


@pytest.mark.parametrize("mode", ["bogus", "", "Similar", "copies"])
async def test_an_unknown_search_mode_is_invalid_argument_naming_the_modes(fakes: Fakes, mode: str) -> None:
    with pytest.raises(InvalidArgument, match="'copy', 'similar'"):
        await search.search(fakes.deps, "demo", Query(image=png(1)), mode=mode)


@pytest.mark.parametrize("top_k", [0, -1, 51])
async def test_top_k_out_of_range_is_invalid_argument(fakes: Fakes, top_k: int) -> None:
    with pytest.raises(InvalidArgument, match="top_k"):
        await search.search(fakes.deps, "demo", Query(image=png(1)), top_k=top_k)


@pytest.mark.parametrize("flt", ["{oops", "[1]", '"x"'])
async def test_a_filter_that_is_not_a_json_object_is_invalid_filter(fakes: Fakes, flt: str) -> None:
    with pytest.raises(InvalidFilter):
        await search.search(fakes.deps, "demo", Query(image=png(1)), filter=ImageFilter(json=flt))


async def test_search_needs_exactly_one_query(fakes: Fakes) -> None:
    with pytest.raises(InvalidArgument):
        await search.search(fakes.deps, "demo", Query())
    with pytest.raises(InvalidArgument):
        await search.search(fakes.deps, "demo", Query(image=png(1), url="http://x/y"))


async def test_search_with_an_undecodable_query_is_invalid_image(fakes: Fakes) -> None:
    with pytest.raises(InvalidImage):
        await search.search(fakes.deps, "demo", Query(image=b"hello"))
    with pytest.raises(ImageTooLarge):
        await search.search(fakes.deps, "demo", Query(image=b"x" * 100_001))


async def test_an_unreachable_extractor_fails_the_call_with_its_error(fakes: Fakes) -> None:
    fakes.extractor.error = ExtractorUnavailable("extractor is unavailable")
    with pytest.raises(ExtractorUnavailable):
        await albums.create(fakes.deps, "other")


async def test_get_image_content_and_thumbnail(fakes: Fakes) -> None:
    added = await ingest.add_images(fakes.deps, "demo", [NewImage(png(1, size=150), name="big.png",
                                                               attributes={"a": 1})])
    image = await images.get_image(fakes.deps, "demo", added[0].id)
    assert (image.name, image.attributes, image.content_type) == ("big.png", {"a": 1}, "image/png")
    assert image.size_bytes == len(png(1, size=150))
    assert (await images.get_content(fakes.deps, "demo", added[0].id)).content == png(1, size=150)
    thumb = await images.get_thumbnail(fakes.deps, "demo", added[0].id, 100)
    assert thumb.content_type == "image/jpeg" and thumb.content.startswith(b"\xff\xd8")
    assert any("/thumbs/128/" in k for k in fakes.blobs.objects)
    with pytest.raises(InvalidArgument):
        await images.get_thumbnail(fakes.deps, "demo", added[0].id, 5000)


async def test_delete_image_removes_vector_blob_and_thumbnails(fakes: Fakes) -> None:
    added = await ingest.add_images(fakes.deps, "demo", [NewImage(png(1)), NewImage(png(2))])
    await images.get_thumbnail(fakes.deps, "demo", added[0].id)
    assert await images.delete_image(fakes.deps, "demo", added[0].id)
    assert await images.count(fakes.deps, "demo") == 1
    assert not any(hashlib.sha256(png(1)).hexdigest() in k for k in fakes.blobs.objects)
    with pytest.raises(ImageNotFound):
        await images.delete_image(fakes.deps, "demo", added[0].id)
    with pytest.raises(ImageNotFound):
        await images.get_image(fakes.deps, "demo", "not-an-id")


async def test_list_images_pages_through_the_album(fakes: Fakes) -> None:
    await ingest.add_images(fakes.deps, "demo", [NewImage(png(i)) for i in range(5)])
    first = await images.list_images(fakes.deps, "demo", Listing(limit=3))
    rest = await images.list_images(fakes.deps, "demo", Listing(limit=3, offset=3))
    assert len(first) == 3 and len(rest) == 2
    assert {i.id for i in first}.isdisjoint({i.id for i in rest})
    with pytest.raises(InvalidArgument, match=r"^limit must be between 1 and 1000, not 0$"):
        await images.list_images(fakes.deps, "demo", Listing(limit=0))
    with pytest.raises(InvalidArgument, match=r"^offset must be 0 or more \(and under 2\*\*62\), not -1$"):
        await images.list_images(fakes.deps, "demo", Listing(offset=-1))
    with pytest.raises(InvalidArgument, match="give order_by too"):  # not left unread
        await images.list_images(fakes.deps, "demo", Listing(nulls_first=False))


async def test_delete_album_drops_vectors_and_blobs(fakes: Fakes) -> None:
    await ingest.add_images(fakes.deps, "demo", [NewImage(png(1))])
    await albums.create(fakes.deps, "keep")
    await ingest.add_images(fakes.deps, "keep", [NewImage(png(1))])
    assert await albums.delete(fakes.deps, "demo")
    assert [a.name for a in await albums.list_all(fakes.deps)] == ["keep"]
    assert all(k.startswith("albums/keep/") for k in fakes.blobs.objects)
    with pytest.raises(AlbumNotFound):
        await albums.delete(fakes.deps, "demo")


async def test_an_added_image_stores_every_index_row_upright_first(fakes: Fakes) -> None:
    fakes.extractor.index_rows = 5
    (result,) = await ingest.add_images(fakes.deps, "demo", [NewImage(png(1))])
    (item,) = await fakes.search.get("demo", [result.id], with_vectors=True)
    assert len(item.vectors) == 5 and fakes.extractor.purposes == [EmbedPurpose.INDEX]
    assert item.vectors[0] == pytest.approx(vector_of(png(1)), abs=1e-6)


async def test_a_query_is_embedded_as_one_vector_and_its_variants_when_no_copy_is_found(fakes: Fakes) -> None:
    await ingest.add_images(fakes.deps, "demo", [NewImage(png(1))])
    await search.search(fakes.deps, "demo", Query(image=png(1)))  # the same bytes: a near-duplicate
    assert fakes.extractor.purposes == [EmbedPurpose.INDEX, EmbedPurpose.QUERY]
    await search.search(fakes.deps, "demo", Query(image=png(2)))
    assert fakes.extractor.purposes[2:] == [EmbedPurpose.QUERY, EmbedPurpose.QUERY_VARIANTS]
    await search.search(fakes.deps, "demo", Query(image=png(2)))  # all from the cache
    assert len(fakes.extractor.purposes) == 4


async def test_reembed_moves_the_album_to_the_new_model_keeping_names_attributes_and_times(fakes: Fakes) -> None:
    added = await ingest.add_images(fakes.deps,
        "demo", [NewImage(png(i), name=f"p{i}", attributes={"n": i}) for i in range(3)])
    before = {i.id: i for i in await fakes.search.get("demo", [r.id for r in added], with_vectors=True)}
    fakes.extractor.model = "new-model"
    with pytest.raises(ModelMismatch, match="reembed"):
        await search.search(fakes.deps, "demo", Query(image=png(0)))
    report = await reembed.reembed_album(fakes.deps, "demo")
    assert (report.model, report.previous_model, report.images, report.failed) == ("new-model", MODEL, 3, [])
    assert (await albums.get(fakes.deps, "demo")).model == "new-model"
    after = await fakes.search.get("demo", list(before), with_vectors=True)
    for item in after:
        old = before[item.id]
        assert (item.name, item.attributes, item.created_at_ms) == (old.name, old.attributes, old.created_at_ms)
        assert item.vectors[1] != old.vectors[1]
    hits = (await search.search(fakes.deps, "demo", Query(image=png(0)))).hits
    assert hits[0].image.name == "p0"


async def test_reembed_leaves_the_album_as_it_was_when_the_extractor_is_down(fakes: Fakes) -> None:
    await ingest.add_images(fakes.deps, "demo", [NewImage(png(1))])
    fakes.extractor.model = "new-model"
    fakes.extractor.error = ExtractorUnavailable("down")
    with pytest.raises(ExtractorUnavailable):
        await reembed.reembed_album(fakes.deps, "demo")
    album = await albums.get(fakes.deps, "demo")
    assert (album.model, album.image_count) == (MODEL, 1)


async def test_reembed_reports_images_whose_bytes_are_gone(fakes: Fakes) -> None:
    added = await ingest.add_images(fakes.deps, "demo", [NewImage(png(1)), NewImage(png(2))])
    await fakes.blobs.delete(image_key("demo", hashlib.sha256(png(2)).hexdigest()))
    report = await reembed.reembed_album(fakes.deps, "demo")
    assert report.images == 1 and [i for i, _ in report.failed] == [added[1].id]
    assert report.failed[0][1].reason == "image_not_found"


# --- near-duplicates at import ---------------------------------------------------------------------------


@pytest.mark.parametrize("policy", list(OnDuplicate))
async def test_a_near_duplicate_is_kept_skipped_or_put_in_place_of_the_old_one(fakes: Fakes,
                                                                               policy: OnDuplicate) -> None:
    (old,) = await ingest.add_images(fakes.deps, "demo", [NewImage(png(1), name="old", attributes={"a": 1})])
    fakes.extractor.near_copies[png(2)] = png(1)
    (new, other) = await ingest.add_images(fakes.deps, "demo", [NewImage(png(2), name="new", attributes={"b": 2}),
                                                                NewImage(png(3), name="other")], on_duplicate=policy)
    assert other.status is AddStatus.ADDED
    names = {i.name: i for i in await images.list_images(fakes.deps, "demo")}
    if policy is OnDuplicate.KEEP:
        assert new.status is AddStatus.ADDED and set(names) == {"old", "new", "other"}
    elif policy is OnDuplicate.SKIP:
        assert (new.status, new.near) == (AddStatus.SKIPPED, old.id) and set(names) == {"old", "other"}
    else:
        assert (new.status, new.near) == (AddStatus.REPLACED, old.id) and set(names) == {"new", "other"}
        assert names["new"].attributes == {"a": 1, "b": 2}
        assert not [k for k in fakes.blobs.objects if old.id[:16] in k]


async def test_near_duplicates_within_one_batch_are_caught_too(fakes: Fakes) -> None:
    fakes.extractor.near_copies[png(2)] = png(1)
    results = await ingest.add_images(fakes.deps, "demo", [NewImage(png(1)), NewImage(png(2))],
                                      on_duplicate=OnDuplicate.SKIP)
    assert [r.status for r in results] == [AddStatus.ADDED, AddStatus.SKIPPED]
    assert results[1].near == results[0].id


async def test_an_undeclared_value_the_store_cannot_keep_fails_its_image_alone(fakes: Fakes) -> None:
    batch = [NewImage(png(1), name="ok", attributes={"n": 1}), NewImage(png(2), name="huge", attributes={"n": 2**64}),
             NewImage(png(3), name="nan", attributes={"x": float("nan")})]
    results = await ingest.add_images(fakes.deps, "demo", batch)
    assert [r.status for r in results] == [AddStatus.ADDED, AddStatus.FAILED, AddStatus.FAILED]
    assert results[1].error is not None and "64-bit" in results[1].error.message
