"""The `VectorIndex` contract, run against the exact numpy index and a real Milvus server alike.

Each behavioural test runs once per implementation ("congruence"); the tests at the end compare
Milvus' answers on random data with the exact ones. (Surviving a Milvus restart: tests/test_faults.py.)
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
from pymilvus import MilvusClient

from services.common.errors import AlbumNotFound, AlreadyExists, InvalidArgument
from services.common.filtering import Expr, bind, from_json
from services.common.schema import NO_COLUMNS
from services.search import milvus_index
from services.search.filters import matches
from services.search.index import (
    EXPAND_ALPHA,
    MAX_EXPAND_K,
    ExactIndex,
    Item,
    VectorIndex,
    expanded_query,
    search_expanded,
)
from services.search.milvus_index import MilvusIndex
from services.search.milvus_layout import collection_name
from services.search.settings import SearchSettings

DIM = 32


def parse_filter(spec: Any) -> Expr:
    """A filter in the JSON form, for an album without declared columns."""
    return from_json(spec, NO_COLUMNS)


@pytest.fixture()
def album(index: VectorIndex) -> Iterator[str]:
    name = f"album-{uuid.uuid4().hex[:8]}"
    index.create_collection(name, DIM, "test-model")
    yield name
    index.drop_collection(name)


def unit(rng: np.random.Generator, n: int, dim: int = DIM) -> np.ndarray:
    vectors = rng.standard_normal((n, dim)).astype(np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def items_from(vectors: np.ndarray, attributes: list[dict[str, Any]] | None = None) -> list[Item]:
    return [
        Item(id=f"img{i}", vectors=(v,), name=f"photo {i}.jpg", content_hash=f"h{i}",
             attributes=(attributes or [{}] * len(vectors))[i], created_at_ms=1000 + i)
        for i, v in enumerate(vectors)
    ]


def ids(hits: list[Any]) -> list[str]:
    return [h.id for h in hits]


# --- albums ------------------------------------------------------------------------------------


def test_a_new_album_is_empty_and_describes_itself(index: VectorIndex, album: str) -> None:
    info = index.get_collection(album)
    assert (info.name, info.dim, info.model, info.metric, info.index_type, info.count) == (
        album, DIM, "test-model", "cosine", "HNSW", 0)
    assert info.created_at_ms > 0
    assert album in [a.name for a in index.list_collections()]


def test_the_album_list_counts_an_insert_made_just_before(index: VectorIndex, album: str) -> None:
    # At Bounded consistency, or by another name than the one written to (pymilvus keeps a Session's write
    # times by name: an album's alias), Milvus answered 0 right after an insert.
    index.insert(album, items_from(unit(np.random.default_rng(15), 3)))
    assert {a.name: a.count for a in index.list_collections()}[album] == 3


def test_creating_an_existing_album_is_refused(index: VectorIndex, album: str) -> None:
    with pytest.raises(AlreadyExists):
        index.create_collection(album, DIM, "test-model")


def test_a_dropped_album_is_gone_and_dropping_it_again_says_so(index: VectorIndex) -> None:
    index.create_collection("to-drop", DIM, "m")
    assert index.drop_collection("to-drop") is True
    assert index.drop_collection("to-drop") is False
    with pytest.raises(AlbumNotFound):
        index.get_collection("to-drop")
    assert "to-drop" not in [a.name for a in index.list_collections()]


@pytest.mark.parametrize("name", ["", "Upper", "-lead", "a" * 64, "sp ace", "a..b", "a.b.c", "a.B", ".faces", 'q"'])
def test_an_invalid_album_name_is_refused(index: VectorIndex, name: str) -> None:
    with pytest.raises(InvalidArgument):
        index.create_collection(name, DIM, "m")


def test_an_albums_companion_collection_is_a_collection_of_its_own(index: VectorIndex) -> None:
    """"album.part" (the gateway's "<album>.faces") holds other vectors of the album's images, apart from it."""
    index.create_collection("pics", DIM, "m")
    index.create_collection("pics.faces", DIM, "faces-model")
    index.insert("pics.faces", items_from(np.eye(DIM)[:2]))
    assert index.count("pics.faces") == 2 and index.count("pics") == 0
    assert {"pics", "pics.faces"} <= {a.name for a in index.list_collections()}
    hit = index.search("pics.faces", np.eye(DIM)[1], 1)[0]
    assert hit.row == 0 and hit.distance == pytest.approx(0, abs=1e-6)
    assert index.drop_collection("pics.faces")
    assert index.get_collection("pics").name == "pics"
    index.drop_collection("pics")


def test_an_unknown_album_is_not_found_by_every_operation(index: VectorIndex) -> None:
    calls = [
        lambda: index.get_collection("nope"), lambda: index.count("nope"), lambda: index.query("nope"),
        lambda: index.get("nope", ["a"]), lambda: index.delete("nope", ["a"]),
        lambda: index.search("nope", [1.0] * DIM, 3), lambda: index.insert("nope", items_from(np.eye(DIM)[:1])),
    ]
    for call in calls:
        with pytest.raises(AlbumNotFound):
            call()


def test_bad_parameters_are_invalid_arguments(index: VectorIndex, album: str) -> None:
    bad = [
        lambda: index.create_collection("x", 0, "m"),
        lambda: index.create_collection("x", DIM, "m", "FLAT"),
        lambda: index.create_collection("x", 30, "m", "IVF_PQ"),
        lambda: index.search(album, [1.0] * DIM, 0),
        lambda: index.search(album, [1.0] * DIM, 101),
        lambda: index.search(album, [1.0] * (DIM - 1), 3),
        lambda: index.search(album, [0.0] * DIM, 3),
        lambda: index.search(album, [float("nan")] * DIM, 3),
        lambda: index.insert(album, [Item(id="a", vectors=(np.ones(DIM + 1, np.float32),))]),
        lambda: index.insert(album, [Item(id="a", vectors=())]),
        # One bad row among good ones (the rows are normalised together) fails the item.
        *(lambda bad_row=bad_row: index.insert(album, [Item(id="a", vectors=(np.ones(DIM, np.float32), bad_row))])
          for bad_row in (np.zeros(DIM, np.float32), np.ones(DIM - 1, np.float32), np.full(DIM, np.inf, np.float32))),
        lambda: index.insert(album, [Item(id="", vectors=(np.ones(DIM, np.float32),))]),
        lambda: index.insert(album, [Item(id="x" * 257, vectors=(np.ones(DIM, np.float32),))]),
        lambda: index.query(album, limit=1001),
        lambda: index.query(album, offset=-1),
        lambda: search_expanded(index, album, [1.0] * DIM, 3, expand_k=-1),
        lambda: search_expanded(index, album, [1.0] * DIM, 3, expand_k=MAX_EXPAND_K + 1),
        lambda: search_expanded(index, album, [1.0] * (DIM - 1), 3, expand_k=3),
    ]
    for call in bad:
        with pytest.raises(InvalidArgument):
            call()


def test_an_ivf_album_is_created_and_searched(index: VectorIndex) -> None:
    name = f"ivf-{uuid.uuid4().hex[:6]}"
    assert index.create_collection(name, DIM, "m", "ivf_flat").index_type == "IVF_FLAT"
    try:
        vectors = unit(np.random.default_rng(7), 20)
        index.insert(name, items_from(vectors))
        assert index.search(name, vectors[3], 1)[0].id == "img3"
    finally:
        index.drop_collection(name)


# --- items ------------------------------------------------------------------------------------


def test_search_returns_the_stored_vector_first_at_distance_zero(index: VectorIndex, album: str) -> None:
    vectors = unit(np.random.default_rng(1), 20)
    index.insert(album, items_from(vectors, [{"i": i} for i in range(20)]))
    hits = index.search(album, vectors[5] * 3.0, 5)
    assert hits[0].id == "img5"
    assert hits[0].distance == pytest.approx(0.0, abs=1e-5)
    assert (hits[0].name, hits[0].content_hash, hits[0].attributes, hits[0].created_at_ms) == (
        "photo 5.jpg", "h5", {"i": 5}, 1005)
    assert [h.distance for h in hits] == sorted(h.distance for h in hits)


def test_search_returns_exactly_top_k_distinct_images_when_there_are_enough(index: VectorIndex, album: str) -> None:
    vectors = unit(np.random.default_rng(2), 30)
    index.insert(album, items_from(vectors))
    assert len(index.search(album, vectors[0], 7)) == 7
    assert len(set(ids(index.search(album, vectors[0], 30)))) == 30
    assert len(index.search(album, vectors[0], 50)) == 30


def test_excluded_ids_are_never_returned(index: VectorIndex, album: str) -> None:
    vectors = unit(np.random.default_rng(3), 10)
    index.insert(album, items_from(vectors))
    hits = index.search(album, vectors[2], 10, exclude_ids=["img2", "img7", "unknown"])
    assert len(hits) == 8
    assert not {"img2", "img7"} & set(ids(hits))


def test_a_deleted_image_leaves_search_and_count_at_once(index: VectorIndex, album: str) -> None:
    vectors = unit(np.random.default_rng(4), 10)
    index.insert(album, items_from(vectors))
    assert index.count(album) == 10
    assert index.delete(album, ["img4", "img4", "missing"]) == 1
    assert index.count(album) == 9
    assert "img4" not in ids(index.search(album, vectors[4], 10))
    assert index.get(album, ["img4"]) == []
    assert index.get_collection(album).count == 9


@pytest.mark.parametrize("window", [milvus_index.MILVUS_MAX_WINDOW, 3])  # all rows read at once, or too many
def test_deleting_images_deletes_every_row_of_theirs(index: VectorIndex, album: str, window: int,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    # Milvus deletes by primary key the rows one read returns, by expression when there are more than that.
    monkeypatch.setattr(milvus_index, "MILVUS_MAX_WINDOW", window)
    vectors = unit(np.random.default_rng(41), 12)
    index.insert(album, [Item(id=f"img{i}", vectors=tuple(vectors[3 * i:3 * i + 3]), name=f"n{i}") for i in range(4)])
    assert index.delete(album, ["img1", "img2", "missing"]) == 2
    assert index.count(album) == 2 and index.get(album, ["img1", "img2"]) == []
    for vector in vectors[3:9]:
        assert not {"img1", "img2"} & set(ids(index.search(album, vector, 10)))
    assert {hit.id for vector in (vectors[0], vectors[10]) for hit in index.search(album, vector, 1)} == \
        {"img0", "img3"}


def test_inserting_the_same_id_again_replaces_the_item(index: VectorIndex, album: str) -> None:
    vectors = unit(np.random.default_rng(5), 3)
    index.insert(album, items_from(vectors[:1], [{"v": 1}]))
    index.insert(album, [Item(id="img0", vectors=(vectors[1],), name="new", attributes={"v": 2})])
    assert index.count(album) == 1
    hit = index.search(album, vectors[1], 1)[0]
    assert (hit.id, hit.name, hit.attributes) == ("img0", "new", {"v": 2})
    assert hit.distance == pytest.approx(0.0, abs=1e-5)


def test_an_image_with_several_vectors_is_one_hit_at_its_best_vector(index: VectorIndex, album: str) -> None:
    vectors = unit(np.random.default_rng(6), 12)
    index.insert(album, items_from(vectors[:8]))
    index.insert(album, [Item(id="multi", vectors=tuple(vectors[8:12]))])
    assert index.count(album) == 9
    hits = index.search(album, vectors[10], 9)
    assert hits[0].id == "multi" and hits[0].distance == pytest.approx(0.0, abs=1e-5)
    assert hits[0].row == 2  # the third of its vectors matched
    assert sorted(ids(hits)) == sorted([*(f"img{i}" for i in range(8)), "multi"])
    stored = index.get(album, ["multi"], with_vectors=True)[0]
    np.testing.assert_allclose(np.stack(stored.vectors), vectors[8:12], atol=1e-6)


def test_replacing_a_multi_vector_image_with_fewer_vectors_drops_the_rest(index: VectorIndex, album: str) -> None:
    vectors = unit(np.random.default_rng(8), 5)
    index.insert(album, [Item(id="multi", vectors=tuple(vectors[:3]))])
    index.insert(album, [Item(id="multi", vectors=(vectors[3],))])
    assert len(index.get(album, ["multi"], with_vectors=True)[0].vectors) == 1
    assert index.search(album, vectors[1], 1)[0].distance > 1e-3
    assert index.delete(album, ["multi"]) == 1
    assert index.count(album) == 0


def test_get_returns_the_asked_items_in_order_with_unit_vectors_if_asked(index: VectorIndex, album: str) -> None:
    vectors = unit(np.random.default_rng(9), 4)
    index.insert(album, [Item(id="a", vectors=(vectors[0] * 5,)), *items_from(vectors[1:])])
    found = index.get(album, ["img1", "missing", "a"], with_vectors=True)
    assert ids(found) == ["img1", "a"]
    np.testing.assert_allclose(found[1].vectors[0], vectors[0], atol=1e-6)
    assert all(item.vectors == () for item in index.get(album, ["a", "img1"]))


def test_list_pages_through_every_image_once_without_vectors(index: VectorIndex, album: str) -> None:
    vectors = unit(np.random.default_rng(10), 25)
    index.insert(album, items_from(vectors))
    index.insert(album, [Item(id="multi", vectors=tuple(vectors[:3]))])
    pages = [index.query(album, limit=10, offset=o) for o in (0, 10, 20)]
    listed = [item.id for page in pages for item in page]
    assert sorted(listed) == sorted([*(f"img{i}" for i in range(25)), "multi"])
    assert [len(p) for p in pages] == [10, 10, 6]
    assert all(item.vectors == () for page in pages for item in page)


def test_awkward_ids_and_strings_survive_storage_and_filters(index: VectorIndex, album: str) -> None:
    awkward = ['q"uote', "back\\slash", "é😀", "' or 1 == 1", 'x"] or image_id != "']
    texts = [*awkward, "new\nline", "tab\there"]
    vectors = unit(np.random.default_rng(11), len(texts))
    item_ids = [*awkward, "ctl-1", "ctl-2"]  # control characters are allowed in attributes, not in ids
    index.insert(album, [Item(id=i, vectors=(v,), attributes={"s": s}) for i, s, v in
                         zip(item_ids, texts, vectors, strict=True)])
    for i, s, v in zip(item_ids, texts, vectors, strict=True):
        assert ids(index.search(album, v, 10, parse_filter({"s": s}))) == [i]
        assert i not in ids(index.search(album, v, 10, exclude_ids=[i]))
    wanted = awkward
    assert ids(index.get(album, wanted)) == wanted
    assert index.delete(album, wanted) == len(wanted)
    with pytest.raises(InvalidArgument):
        index.insert(album, [Item(id="new\nline", vectors=(vectors[0],))])


# --- primary-only search and query expansion ------------------------------------------------------


def test_primary_only_matches_an_image_by_its_first_vector_alone(index: VectorIndex, album: str) -> None:
    rng = np.random.default_rng(20)
    upright, query = unit(rng, 2)
    near = query + 0.3 * unit(rng, 1)[0]
    others = unit(rng, 6)
    index.insert(album, [Item(id="rotated", vectors=(upright, query), attributes={"kind": "a"}),
                         Item(id="near", vectors=(near,), attributes={"kind": "a"}),
                         *(Item(id=f"img{i}", vectors=(v,), attributes={"kind": "b"}) for i, v in enumerate(others))])
    every_row = index.search(album, query, 1)
    assert ids(every_row) == ["rotated"] and every_row[0].distance == pytest.approx(0.0, abs=1e-5)
    assert ids(index.search(album, query, 1, primary_only=True)) == ["near"]
    by_first = {h.id: h.distance for h in index.search(album, query, 8, primary_only=True)}
    assert len(by_first) == 8
    assert by_first["rotated"] == pytest.approx(1.0 - float(upright @ query), abs=1e-4)
    kind_a = index.search(album, query, 8, parse_filter({"kind": "a"}), exclude_ids=["near"], primary_only=True)
    assert ids(kind_a) == ["rotated"] and kind_a[0].distance == pytest.approx(by_first["rotated"], abs=1e-4)


def test_search_many_primary_only_answers_each_vector_as_a_primary_only_search_does(index: VectorIndex,
                                                                                  album: str) -> None:
    """An add's near-duplicate look: every new image's nearest by their first rows, in one call."""
    rng = np.random.default_rng(23)
    upright, query = unit(rng, 2)
    near = query + 0.3 * unit(rng, 1)[0]
    others = unit(rng, 6)
    index.insert(album, [Item(id="rotated", vectors=(upright, query)), Item(id="near", vectors=(near,)),
                         *(Item(id=f"img{i}", vectors=(v,)) for i, v in enumerate(others))])
    queries = [query, others[2], upright]
    found = index.search_many(album, queries, 3, primary_only=True)
    for vector, hits in zip(queries, found, strict=True):
        alone = index.search(album, vector, 3, primary_only=True)
        assert ids(hits) == ids(alone)
        assert [h.distance for h in hits] == pytest.approx([h.distance for h in alone], abs=1e-4)
        assert all(h.row == 0 for h in hits)
    assert ids(found[0])[0] == "near" and ids(index.search_many(album, [query], 1)[0]) == ["rotated"]



def test_search_many_gives_each_vectors_nearest_images_with_the_row_that_matched(index: VectorIndex) -> None:
    name = f"album-{uuid.uuid4().hex[:8]}.keypoints"
    index.create_collection(name, DIM, "sift")
    try:
        rng = np.random.default_rng(21)
        rows = unit(rng, 200)
        index.insert(name, [Item(id="a", vectors=tuple(rows[:100])), Item(id="b", vectors=tuple(rows[100:]))])
        queries = [rows[7] + 0.05 * unit(rng, 1)[0], rows[150], rows[30]]
        found = index.search_many(name, queries, 2)
        assert [[h.id for h in hits] for hits in found] == [["a", "b"], ["b", "a"], ["a", "b"]]
        assert [hits[0].row for hits in found] == [7, 50, 30]
        assert found[1][0].distance == pytest.approx(0.0, abs=1e-5)
        assert index.search_many(name, [], 2) == []
    finally:
        index.drop_collection(name)


def test_an_albums_item_holds_at_most_64_vectors_a_companions_many_more(index: VectorIndex, album: str) -> None:
    rows = tuple(unit(np.random.default_rng(22), 65))
    with pytest.raises(InvalidArgument):
        index.insert(album, [Item(id="a", vectors=rows)])
    companion = f"{album}.keypoints"
    index.create_collection(companion, DIM, "sift")
    try:
        index.insert(companion, [Item(id="a", vectors=rows)])
        assert len(index.get(companion, ["a"], with_vectors=True)[0].vectors) == 65
    finally:
        index.drop_collection(companion)


def expansion_of(primary: np.ndarray, query: np.ndarray, k: int, excluded: list[int]) -> np.ndarray:
    """alpha-QE as the feature study defines it: q' = L2(q + sum over the top k of max(sim, 0)^3 * v)."""
    q = query / np.linalg.norm(query)
    sims = primary @ q
    sims[excluded] = -np.inf
    top = np.argsort(-sims)[:k]
    expanded = q + (np.clip(sims[top], 0, None)[:, None] ** EXPAND_ALPHA * primary[top]).sum(axis=0)
    return expanded / np.linalg.norm(expanded)


def test_query_expansion_adds_the_nearest_first_vectors_weighted_by_similarity_cubed() -> None:
    index = ExactIndex(SearchSettings(max_top_k=100))
    index.create_collection("qe", DIM, "m")
    rng = np.random.default_rng(21)
    primary, extra = unit(rng, 40), unit(rng, 40)
    index.insert("qe", [Item(id=f"img{i}", vectors=(p, e)) for i, (p, e) in enumerate(zip(primary, extra,
                                                                                          strict=True))])
    query = primary[7] + 0.5 * unit(rng, 1)[0]
    for k in (1, 3, 10):
        expected = expansion_of(primary, query, k, excluded=[7])
        np.testing.assert_allclose(expanded_query(index, "qe", query, k, exclude_ids=["img7"]), expected, atol=1e-5)
        hits = search_expanded(index, "qe", query, 10, exclude_ids=["img7"], primary_only=True, expand_k=k)
        truth = index.search("qe", expected, 10, exclude_ids=["img7"], primary_only=True)
        assert ids(hits) == ids(truth)
        np.testing.assert_allclose([h.distance for h in hits], [h.distance for h in truth], atol=1e-6)
    assert search_expanded(index, "qe", query, 10, expand_k=0) == index.search("qe", query, 10)


def same_album_in_both(milvus_index: MilvusIndex, prefix: str, dim: int,
                       items: list[Item]) -> tuple[ExactIndex, str]:
    """A fresh exact index and the Milvus one, each given a new album of the same items; the album's name."""
    exact = ExactIndex(SearchSettings(max_top_k=100))
    name = f"{prefix}-{uuid.uuid4().hex[:6]}"
    for target in (exact, milvus_index):
        target.create_collection(name, dim, "m")
        target.insert(name, items)
    return exact, name


def test_exact_and_milvus_agree_on_expanded_primary_only_searches(milvus_index: MilvusIndex) -> None:
    rng = np.random.default_rng(22)
    n = 300
    items = [Item(id=f"img{i}", vectors=tuple(unit(rng, 5)), attributes={"bucket": i % 3}) for i in range(n)]
    exact, name = same_album_in_both(milvus_index, "qe", DIM, items)
    try:
        for i, query in enumerate(unit(rng, 10)):
            query_filter = parse_filter({"bucket": {"ne": 1}}) if i % 2 else None
            args = (name, query, 10, query_filter, [f"img{i}"])
            found, truth = (search_expanded(t, *args, primary_only=True, expand_k=3) for t in (milvus_index, exact))
            assert ids(found) == ids(truth)
            np.testing.assert_allclose([h.distance for h in found], [h.distance for h in truth], atol=1e-4)
    finally:
        milvus_index.drop_collection(name)


# --- filters: the same answers as the exact index on heterogeneous attributes -------------------

ATTRIBUTES: list[dict[str, Any]] = [
    {"category": "shoes", "price": 10, "in_stock": True},
    {"category": "hats", "price": 60.5, "in_stock": False},
    {"category": 3, "price": "cheap"},
    {"in_stock": 1, "tags": ["x", "y"], "nothing": None, "price": 2**60},
    {},
    {"category": "Zed", "price": -7},
    {"category": "shoes", "price": 49.99, "in_stock": True},
    {"price": True},
]

FILTERS: list[dict[str, Any]] = [
    {"category": "shoes", "price": {"lt": 50}, "in_stock": True},
    {"category": {"ne": "shoes"}},
    {"price": {"gte": 10}},
    {"price": {"gt": -8, "lte": 49.99}},
    {"price": 10.0},
    {"price": True},
    {"price": {"ne": True}},
    {"in_stock": True},
    {"in_stock": {"ne": False}},
    {"category": {"in": ["shoes", "hats"]}},
    {"category": {"nin": ["shoes"]}},
    {"price": {"in": [10, 60.5]}},
    {"price": {"nin": [10, 60.5]}},
    {"category": {"lt": "m"}},
    {"nothing": {"exists": True}},
    {"price": {"exists": False}},
    {"category": 3},
    {"price": {"in": []}},
]


@pytest.mark.parametrize("spec", FILTERS, ids=[str(f) for f in FILTERS])
def test_a_filtered_search_returns_the_images_the_exact_index_would(
    index: VectorIndex, album: str, spec: dict[str, Any]
) -> None:
    vectors = unit(np.random.default_rng(12), len(ATTRIBUTES))
    items = items_from(vectors, ATTRIBUTES)
    index.insert(album, items)
    stored = index.get(album, [item.id for item in items])  # as written: undeclared nulls are left out
    expected = sorted(item.id for item in stored if matches(bind(parse_filter(spec), NO_COLUMNS), item.row()))
    assert sorted(ids(index.search(album, vectors[0], 20, parse_filter(spec)))) == expected


# --- Milvus against the exact reference ------------------------------------------------------


def test_milvus_top_10_agrees_with_the_exact_index_on_random_data(milvus_index: MilvusIndex) -> None:
    rng = np.random.default_rng(13)
    dim, n = 128, 3000
    vectors = unit(rng, n, dim)
    attributes = [{"bucket": i % 5} for i in range(n)]
    items = items_from(vectors, attributes)
    exact, name = same_album_in_both(milvus_index, "recall", dim, items)
    try:
        queries = unit(rng, 50, dim)
        for query_filter in (None, parse_filter({"bucket": {"in": [1, 3]}})):
            found = [set(ids(milvus_index.search(name, q, 10, query_filter))) for q in queries]
            truth = [set(ids(exact.search(name, q, 10, query_filter))) for q in queries]
            recall = np.mean([len(f & t) / 10 for f, t in zip(found, truth, strict=True)])
            assert recall >= 0.95, f"recall@10 {recall:.3f} with filter {query_filter}"
    finally:
        milvus_index.drop_collection(name)


def record_milvus_calls(monkeypatch: pytest.MonkeyPatch, *methods: str) -> list[tuple[str, str]]:
    """From now on, each call an index makes to these pymilvus `MilvusClient` methods: (method, the consistency
    level it asks for, or "None")."""
    calls: list[tuple[str, str]] = []
    for method in methods:
        original = getattr(MilvusClient, method)

        def recorded(self: MilvusClient, *args: Any, _original: Any = original, _method: str = method,
                     **kwargs: Any) -> Any:
            calls.append((_method, str(kwargs.get("consistency_level"))))
            return _original(self, *args, **kwargs)
        monkeypatch.setattr(MilvusClient, method, recorded)
    return calls


def test_milvus_writes_an_image_after_its_reads_so_it_never_waits_for_its_own_write(
        milvus_index: MilvusIndex, monkeypatch: pytest.MonkeyPatch) -> None:
    """A Session read right after an upsert waits until Milvus makes the upsert visible, 0.2-0.6 s on its
    time tick: an add of one photo took ~400 ms instead of ~35 (bench/search_during_import.py --timed add).
    So an insert reads what it needs first; only the delete of rows left over (rare) reads after it."""
    calls = record_milvus_calls(monkeypatch, "get", "query", "search", "upsert", "delete")
    name = f"album-{uuid.uuid4().hex[:8]}"
    milvus_index.create_collection(name, DIM, "test-model")
    try:
        vectors = unit(np.random.default_rng(14), 4)
        milvus_index.insert(name, items_from(vectors[:1]))
        for item in (Item(id="new", vectors=(vectors[1],)), Item(id="img0", vectors=(vectors[2], vectors[3]))):
            calls.clear()
            milvus_index.insert(name, [item])
            methods = [method for method, _ in calls]
            assert "upsert" in methods and methods[-1] == "upsert", methods
        calls.clear()
        milvus_index.insert(name, [Item(id="img0", vectors=(vectors[0],))])  # one row fewer: one to delete
        methods = [method for method, _ in calls]
        assert methods[-3:] == ["upsert", "delete", "query"], methods  # the delete's Strong read (_delete_where)
        assert len(milvus_index.get(name, ["img0"], with_vectors=True)[0].vectors) == 1
    finally:
        milvus_index.drop_collection(name)


def test_back_to_back_adds_each_find_their_image_absent_then_present(index: VectorIndex, album: str) -> None:
    """What an add asks of the album, one add right after another: which of its images the album holds (none:
    each is new), then, once inserted, the image is there, with its vector, and the earlier ones too."""
    vectors = unit(np.random.default_rng(16), 6)
    for n, vector in enumerate(vectors):
        image = f"new{n}"
        assert index.get(album, [image]) == []
        index.insert(album, [Item(id=image, vectors=(vector,), content_hash=f"h{n}")])
        assert [i.id for i in index.get(album, [f"new{k}" for k in range(n + 1)])] == [f"new{k}" for k in range(n + 1)]
    assert index.get_collection(album).count == len(vectors)


def test_milvus_reads_by_id_at_bounded_unless_this_process_wrote_the_images_lately(
        milvus_index: MilvusIndex, monkeypatch: pytest.MonkeyPatch) -> None:
    """A Session read waits for this process's last write to the album to become visible (Milvus' next time tick,
    140-340 ms after back-to-back adds: bench/adds.py); a read by id of images this process has not written within
    `recent_writes_s` runs at Bounded, which waits for nothing. Images written lately, and an album changed as a
    whole lately (a version switched, here), are read at Session, so that this process reads its own writes."""
    name = f"album-{uuid.uuid4().hex[:8]}"
    milvus_index.create_collection(name, DIM, "test-model")
    vectors = unit(np.random.default_rng(17), 4)
    milvus_index.insert(name, items_from(vectors[:2]))
    other = MilvusIndex(milvus_index.settings)  # another process: it wrote nothing of the album
    try:
        other.get_collection(name)  # its first read of the album checks it once (a Strong read: `_check_caught_up`)
        calls = record_milvus_calls(monkeypatch, "query")
        milvus_index.get(name, ["img0"])
        milvus_index.get(name, ["img9"])
        assert [level for _, level in calls] == ["Session", "Bounded"]  # img0 written here a moment ago
        calls.clear()
        other.get(name, ["img0", "img9"])
        assert [level for _, level in calls] == ["Bounded"]
        calls.clear()
        other.insert(name, [Item(id="img5", vectors=(vectors[2],))])
        assert [level for _, level in calls] == ["Bounded"]  # the insert's look at the image's rows
        calls.clear()
        assert [i.id for i in other.get(name, ["img5"])] == ["img5"]
        assert [i.id for i in other.get(name, ["img0", "img5"])] == ["img0", "img5"]
        assert [level for _, level in calls] == ["Session", "Session"]
        calls.clear()
        other.get(name, ["img1"])
        assert [level for _, level in calls] == ["Bounded"]
        calls.clear()
        assert other.delete(name, ["img5"]) == 1
        assert other.get(name, ["img5"]) == []
        assert [level for _, level in calls][-1] == "Session"
        version = other.begin_version(name, DIM, "test-model-2")
        other.commit_version(name, version)
        calls.clear()
        assert other.get(name, ["img9"]) == []
        assert [level for _, level in calls] == ["Session"]
        disabled = MilvusIndex(milvus_index.settings.model_copy(update={"recent_writes_s": 0}))
        try:
            disabled.get_collection(name)
            calls.clear()
            disabled.get(name, ["img0"])
            assert [level for _, level in calls] == ["Session"]
        finally:
            disabled.close()
    finally:
        other.close()
        milvus_index.drop_collection(name)


def test_milvus_reads_after_a_restart_check_each_collection_once(milvus_index: MilvusIndex,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """A restarted search service checks each album's collection (loaded, its log replayed: a Strong read of
    ~200 ms) before it says ready (`ping`); reads then address the album by its alias, the same collection, and
    must not check it again: the first listing after a restart of the stack took 5.8 s in CI, one Strong read
    per album."""
    name = f"album-{uuid.uuid4().hex[:8]}"
    milvus_index.create_collection(name, DIM, "test-model")
    vectors = unit(np.random.default_rng(15), 3)
    milvus_index.insert(name, items_from(vectors))
    calls = record_milvus_calls(monkeypatch, "query")
    try:
        for listed_first in (True, False):
            restarted = MilvusIndex(milvus_index.settings)
            try:
                restarted.ping()
                calls.clear()
                if listed_first:
                    assert {a.name: a.count for a in restarted.list_collections()} == {name: 3}
                assert restarted.search(name, vectors[0], 1)[0].id == "img0"
                assert restarted.get_collection(name).count == 3
                levels = [level for _, level in calls]
                assert "Strong" not in levels, (listed_first, levels)
            finally:
                restarted.close()
    finally:
        milvus_index.drop_collection(name)


def test_album_names_with_dashes_and_underscores_map_to_distinct_collections() -> None:
    names = ["a-b", "a_b", "a_hb", "a__b", "a-_b", "a_-b", "a.faces", "a_cfaces", "a-faces", "a_faces"]
    mapped = {collection_name("p_", n) for n in names}
    assert len(mapped) == len(names)
    assert all(m.replace("_", "").isalnum() for m in mapped)
