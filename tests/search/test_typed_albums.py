"""Albums with declared columns, on the exact index and a real Milvus alike: typed storage, nulls,
the whole filter language (random filters over awkward data, congruence with the evaluator), ordering,
grouping and updates without re-embedding."""

from __future__ import annotations

import random
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any
from unittest import mock

import numpy as np
import pytest

from services.common.errors import InvalidArgument, InvalidAttributes, InvalidFilter
from services.common.filtering import And, Expr, Not, Op, Or, Predicate
from services.common.schema import AlbumSchema, Column, ColumnType
from services.search import milvus_index as milvus_index_module
from services.search import milvus_layout
from services.search.filters import matches
from services.search.index import ExactIndex, Item, Selection, VectorIndex, ordered_ids
from services.search.milvus_index import MilvusIndex
from services.search.milvus_order import Sampling
from services.search.settings import SearchSettings

DIM = 16
SHOES = AlbumSchema.of([
    Column("price", ColumnType.FLOAT), Column("qty", ColumnType.INT), Column("colour", ColumnType.STRING),
    Column("sizes", ColumnType.STRING_LIST), Column("in_stock", ColumnType.BOOL),
    Column("listed_at", ColumnType.TIMESTAMP),
])
STRINGS = ["", "red", "reddish", "Red", "re%d", "re_d", "blue", "it's", 'say "hi"', "back\\slash", "café", "日本", "z"]
NUMBERS = [0, 1, -1, 2.5, 39.5, 40, 50, 100, 1e9, -0.0]
START = datetime(2024, 1, 1, tzinfo=UTC)


@pytest.fixture()
def album(index: VectorIndex) -> Iterator[str]:
    name = f"shoes-{uuid.uuid4().hex[:8]}"
    index.create_collection(name, DIM, "test-model", schema=SHOES)
    yield name
    index.drop_collection(name)


@pytest.fixture(scope="module", params=["exact", "milvus", "milvus_layout2"])
def filled(request: pytest.FixtureRequest) -> Iterator[tuple[VectorIndex, str, list[Item]]]:
    """One album of 60 shoes per implementation, for the tests that only read; "milvus_layout2": an album made by
    the release before `null_names` (rows read back with the `nulls` array)."""
    index: VectorIndex = ExactIndex(SearchSettings(max_top_k=100)) if request.param == "exact" else \
        request.getfixturevalue("milvus_index")
    name = f"shoes-{uuid.uuid4().hex[:8]}"
    with mock.patch.object(milvus_layout, "SCHEMA_VERSION", 2 if request.param == "milvus_layout2" else
                           milvus_layout.SCHEMA_VERSION):
        index.create_collection(name, DIM, "test-model", schema=SHOES)
    yield index, name, fill(index, name)
    index.drop_collection(name)


def vectors(n: int, seed: int = 3) -> np.ndarray:
    v = np.random.default_rng(seed).standard_normal((n, DIM)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def shoe(i: int, rng: random.Random) -> dict[str, Any]:
    """Attributes with every declared column null a fifth of the time, and undeclared ones of mixed kinds."""
    values: dict[str, Any] = {
        "price": rng.choice([*NUMBERS[1:], 0.0]) * 1.0,
        "qty": rng.choice([0, 1, 3, 39, 40, 41, -7]),
        "colour": rng.choice(STRINGS),
        "sizes": rng.sample(["40", "41", "42", "", "x y"], rng.randint(0, 3)),
        "in_stock": rng.random() < 0.5,
        "listed_at": START + timedelta(days=rng.randint(-400, 400), microseconds=rng.randint(0, 999_999)),
    }
    typed = {k: (None if rng.random() < 0.2 else v) for k, v in values.items()}
    extra: dict[str, Any] = {}
    kind = rng.choice(["str", "int", "float", "bool", "missing", "list", "object"])
    extra["kind"] = {"str": rng.choice(STRINGS), "int": rng.choice([1, 10, 50]), "float": rng.choice([2.5, 10.0]),
                     "bool": rng.random() < 0.5, "list": ["red", 1], "object": {"x": 1}}.get(kind)
    if rng.random() < 0.5:
        extra["tags"] = rng.sample(["red", "blue", "sale"], rng.randint(0, 3))
    return {**typed, **{k: v for k, v in extra.items() if v is not None}}


def fill(index: VectorIndex, album: str, n: int = 60, seed: int = 7) -> list[Item]:
    rng = random.Random(seed)
    items = [Item(id=f"img{i:03d}", vectors=(v,), name=f"shoe {rng.choice(STRINGS)} {i}.jpg", content_hash=f"h{i}",
                  attributes=shoe(i, rng), created_at_ms=1_700_000_000_000 + i * 1000)
             for i, v in enumerate(vectors(n))]
    index.insert(album, items)
    return index.get(album, [i.id for i in items])


# --- random filters -------------------------------------------------------------------------------


def random_predicate(rng: random.Random) -> Predicate:
    column = rng.choice(["price", "qty", "colour", "sizes", "in_stock", "listed_at", "name", "id", "created_at",
                         "attributes.kind", "attributes.tags", "attributes.none"])
    op, values = _random_test(rng, column)
    return Predicate(column, op, tuple(values))


def _random_test(rng: random.Random, column: str) -> tuple[Op, list[Any]]:
    if rng.random() < 0.1:
        return Op.IS_NULL, []
    if column in ("price", "qty"):
        op = rng.choice([Op.EQ, Op.LT, Op.LE, Op.GT, Op.GE, Op.IN, Op.BETWEEN])
        pool = [0, 1, 3, 39, 40, 41, -7] if column == "qty" else NUMBERS
        count = {Op.IN: rng.randint(1, 4), Op.BETWEEN: 2}.get(op, 1)
        return op, sorted(rng.choice(pool) for _ in range(count)) if op is Op.BETWEEN else \
            [rng.choice(pool) for _ in range(count)]
    if column in ("colour", "name", "id"):
        op = rng.choice([Op.EQ, Op.LT, Op.GE, Op.IN, Op.PREFIX, Op.PREFIX, Op.BETWEEN])
        pool = [*STRINGS, "shoe", "shoe r", "img01", "re"] if column != "id" else ["img001", "img02", "img1", ""]
        count = {Op.IN: rng.randint(1, 3), Op.BETWEEN: 2}.get(op, 1)
        chosen = [rng.choice(pool) for _ in range(count)]
        return op, sorted(chosen) if op is Op.BETWEEN else chosen
    if column in ("sizes", "attributes.tags"):
        op = rng.choice([Op.CONTAINS, Op.CONTAINS_ALL, Op.CONTAINS_ANY])
        pool = ["40", "42", "", "x y"] if column == "sizes" else ["red", "blue", "sale"]
        return op, [rng.choice(pool) for _ in range(1 if op is Op.CONTAINS else rng.randint(1, 3))]
    if column == "in_stock":
        return rng.choice([Op.EQ, Op.IN]), [rng.random() < 0.5]
    if column in ("listed_at", "created_at"):
        op = rng.choice([Op.EQ, Op.LT, Op.GE, Op.BETWEEN])
        base = START if column == "listed_at" else datetime.fromtimestamp(1_700_000_030, tz=UTC)
        stamps = sorted(base + timedelta(days=rng.randint(-30, 30), seconds=rng.randint(0, 40)) for _ in range(2))
        return op, stamps if op is Op.BETWEEN else stamps[:1]
    op = rng.choice([Op.EQ, Op.IN, Op.LT, Op.GE, Op.PREFIX, Op.BETWEEN, Op.CONTAINS])
    kinds = {"str": ["red", "", "re", "blue"], "num": [1, 10, 2.5, 50], "bool": [True, False]}
    kind = rng.choice(["str", "num"] if op in (Op.LT, Op.GE, Op.BETWEEN) else
                      ["str"] if op is Op.PREFIX else ["str", "num", "bool"])
    count = {Op.IN: rng.randint(1, 3), Op.BETWEEN: 2}.get(op, 1)
    chosen = [rng.choice(kinds[kind]) for _ in range(count)]
    return op, sorted(chosen) if op is Op.BETWEEN else chosen


def random_filter(rng: random.Random, depth: int = 0) -> Expr:
    roll = rng.random()
    if depth >= 3 or roll < 0.45:
        return random_predicate(rng)
    if roll < 0.6:
        return Not(random_filter(rng, depth + 1))
    parts = tuple(random_filter(rng, depth + 1) for _ in range(rng.randint(0, 3)))
    return And(parts) if roll < 0.8 else Or(parts)


def expected(items: list[Item], expr: Expr) -> list[str]:
    from services.common.filtering import bind

    bound = bind(expr, SHOES)
    return sorted(item.id for item in items if matches(bound, item.row()))


# --- tests ------------------------------------------------------------------------------------------


def test_declared_values_are_stored_typed_with_nulls_for_the_missing_ones(index: VectorIndex, album: str) -> None:
    index.insert(album, [Item(id="a", vectors=(vectors(1)[0],), attributes={
        "price": 39, "listed_at": "2024-05-01T10:00:00.123456+02:00", "sizes": ["42"], "kind": "x", "gone": None})])
    (item,) = index.get(album, ["a"])
    assert item.attributes == {"price": 39.0, "qty": None, "colour": None, "sizes": ["42"], "in_stock": None,
                               "listed_at": datetime(2024, 5, 1, 8, 0, 0, 123456, tzinfo=UTC), "kind": "x"}
    assert isinstance(item.attributes["price"], float)
    assert [c.name for c in index.get_collection(album).schema.columns] == [c.name for c in SHOES.columns]


def test_a_wrong_type_fails_the_whole_insert_naming_image_attribute_and_value(index: VectorIndex, album: str) -> None:
    good = Item(id="good", vectors=(vectors(1)[0],), name="good.jpg", attributes={"price": 1})
    bad = Item(id="bad", vectors=(vectors(1)[0],), name="bad.jpg", attributes={"qty": "many"})
    with pytest.raises(InvalidAttributes) as caught:
        index.insert(album, [good, bad])
    assert "'bad.jpg'" in caught.value.message and "'qty'" in caught.value.message and "many" in caught.value.message
    assert index.count(album) == 0


def test_random_filters_select_what_the_evaluator_says(filled: tuple[VectorIndex, str, list[Item]]) -> None:
    index, album, items = filled
    rng = random.Random(11)
    checked = 0
    for n in range(150):
        expr = random_filter(rng)
        want = expected(items, expr)
        assert [i.id for i in index.query(album, expr, limit=1000)] == want, expr
        if n % 5 == 0:  # a count reads at Strong consistency (~0.2 s on Milvus)
            assert index.count(album, expr) == len(want), expr
        checked += bool(want) and len(want) < len(items)
    assert checked > 40  # most filters split the album, rather than taking all or nothing


def test_a_filtered_search_ranks_only_matching_images(filled: tuple[VectorIndex, str, list[Item]]) -> None:
    index, album, items = filled
    rng = random.Random(5)
    for _ in range(25):
        expr = random_filter(rng)
        hits = index.search(album, vectors(1, seed=99)[0], 60, expr)
        assert sorted(h.id for h in hits) == expected(items, expr), expr


@pytest.mark.parametrize("column", ["price", "qty", "colour", "in_stock", "listed_at", "name", "created_at", "id"])
@pytest.mark.parametrize("descending", [False, True])
def test_ordering_by_a_column_puts_nulls_last_ascending_and_first_descending(
    filled: tuple[VectorIndex, str, list[Item]], column: str, descending: bool
) -> None:
    index, album, items = filled
    from services.search.index import column_value

    want = ordered_ids(((column_value(i, column), i.id) for i in items), descending)
    got = [i.id for i in index.query(album, None, limit=1000, order_by=column, descending=descending)]
    assert got == want
    page = index.query(album, None, limit=7, offset=5, order_by=column, descending=descending)
    assert [i.id for i in page] == want[5:12]


@pytest.mark.parametrize("column", ["price", "qty", "listed_at", "created_at", "colour", "name", "id", "in_stock"])
@pytest.mark.parametrize("descending", [False, True])
def test_an_order_read_past_a_threshold_of_a_small_sample_is_the_whole_order(
    filled: tuple[VectorIndex, str, list[Item]], column: str, descending: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An album of more images than an order reads whole (here 8, in Milvus 2,000) has a number's, a time's or a
    string's order read from the rows past a threshold (services.search.milvus_order): each page, with and without a
    filter, is the page of the whole order, nulls and ties as there; most of them read fewer rows than the album
    holds. (The created_at values grow with the ids, so the sample, the first rows by id, is the oldest: the
    thresholds go deeper until enough rows pass.) Booleans are read whole."""
    index, album, items = filled
    from services.search.index import column_value

    scanned: list[int] = []
    if isinstance(index, MilvusIndex):
        monkeypatch.setattr(index, "order_sampling", Sampling(whole=8, most=16))
        scan = index._scan

        def counted(*args: Any) -> Iterator[dict[str, Any]]:
            found = list(scan(*args))
            scanned.append(len(found))
            return iter(found)

        monkeypatch.setattr(index, "_scan", counted)
    in_stock = Predicate("in_stock", Op.EQ, (True,))
    for expr in (None, in_stock):
        kept = [i for i in items if expr is None or i.id in expected(items, expr)]
        want = ordered_ids(((column_value(i, column), i.id) for i in kept), descending)
        for offset, limit in ((0, 1), (0, 5), (3, 7), (0, 12), (20, 30), (0, 100)):
            page = index.query(album, expr, limit=limit, offset=offset, order_by=column, descending=descending)
            assert [i.id for i in page] == want[offset:offset + limit], (expr, offset, limit)
    if isinstance(index, MilvusIndex) and column != "in_stock":
        assert min(scanned) < len(items) // 2
    if isinstance(index, MilvusIndex) and column == "in_stock":
        assert scanned and min(scanned) >= len(expected(items, in_stock))


def test_paging_by_id_with_after_id_walks_every_image_once(filled: tuple[VectorIndex, str, list[Item]]) -> None:
    index, album, items = filled
    seen: list[str] = []
    after = ""
    while page := index.query(album, None, limit=10, after_id=after):
        seen.extend(i.id for i in page)
        after = page[-1].id
    assert seen == sorted(i.id for i in items)


@pytest.mark.parametrize("column", ["price", "colour", "listed_at"])
@pytest.mark.parametrize(("descending", "nulls_first"), [(False, True), (True, False)])
def test_nulls_go_first_or_last_as_asked(filled: tuple[VectorIndex, str, list[Item]], column: str, descending: bool,
                                         nulls_first: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    """NULLS FIRST ascending and NULLS LAST descending ("the dearest first", those without a price after them), the
    whole order and its pages, read whole or past a threshold of a small sample (Milvus)."""
    index, album, items = filled
    from services.search.index import column_value

    if isinstance(index, MilvusIndex):
        monkeypatch.setattr(index, "order_sampling", Sampling(whole=8, most=16))
    for expr in (None, Predicate("in_stock", Op.EQ, (True,))):
        kept = [i for i in items if expr is None or i.id in expected(items, expr)]
        want = ordered_ids(((column_value(i, column), i.id) for i in kept), descending, nulls_first)
        nulls = [i.id for i in kept if column_value(i, column) is None]
        assert nulls and (want[:len(nulls)] if nulls_first else want[-len(nulls):]) == sorted(nulls)
        for offset, limit in ((0, 1), (0, 5), (3, 7), (0, 100)):
            page = index.query(album, expr, limit=limit, offset=offset, order_by=column, descending=descending,
                               nulls_first=nulls_first)
            assert [i.id for i in page] == want[offset:offset + limit], (expr, offset, limit)


@pytest.mark.parametrize("window", [milvus_index_module.MILVUS_MAX_WINDOW, 3])
def test_ids_that_sort_otherwise_by_row_key_are_paged_walked_and_ordered_by_id(
    index: VectorIndex, album: str, window: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A row's key is its id and "#<ordinal>": an id extending another with a character at or below "#" ("a!",
    "a b", "a#0") comes before it by key and after it by id. Pages by after_id and by offset, a walk of every image
    (Milvus read in windows of 3 rows, or in one) and the nulls first of a descending order give each image once,
    in id order."""
    monkeypatch.setattr(milvus_index_module, "MILVUS_MAX_WINDOW", window)
    if isinstance(index, MilvusIndex):
        monkeypatch.setattr(index, "order_sampling", Sampling(whole=2, most=window))
    ids = ["a", "a b", "a!", 'a"', "a#", "a##", "a#0", "a#!", "a$", "ab", "b", "b!", " ", "!", "b c!", "c"]
    items = [Item(id=i, vectors=(v,), name=f"n{k}", attributes={"price": None if k % 3 else float(k)})
             for k, (i, v) in enumerate(zip(ids, vectors(len(ids)), strict=True))]
    index.insert(album, items)
    want = sorted(ids)
    seen: list[str] = []
    after = ""
    while page := index.query(album, None, limit=2, after_id=after):
        seen.extend(i.id for i in page)
        after = page[-1].id
    assert seen == want
    for offset in range(window - 1 if window < len(ids) else len(ids)):
        assert [i.id for i in index.query(album, None, limit=1, offset=offset)] == want[offset:offset + 1]
    assert [(g.key, g.count) for g in index.count_groups(album, ["in_stock"])] == [((None,), len(ids))]
    by_price = ordered_ids(((i.attributes["price"], i.id) for i in items), True)
    for limit in (1, 3, 11, len(ids)):
        assert [i.id for i in index.query(album, None, limit=limit, order_by="price", descending=True)] == \
            by_price[:limit]


def test_groups_count_each_combination_of_values(filled: tuple[VectorIndex, str, list[Item]]) -> None:
    index, album, items = filled
    groups = index.count_groups(album, ["in_stock", "qty"], Predicate("price", Op.IS_NULL))
    counts: dict[tuple[Any, ...], int] = {}
    for item in items:
        if item.attributes["price"] is None:
            key = (item.attributes["in_stock"], item.attributes["qty"])
            counts[key] = counts.get(key, 0) + 1
    assert {g.key: g.count for g in groups} == counts
    assert [g.count for g in groups] == sorted(counts.values(), reverse=True)
    with pytest.raises(InvalidArgument):
        index.count_groups(album, ["sizes"])


def test_update_by_filter_changes_attributes_and_keeps_vectors(index: VectorIndex, album: str) -> None:
    items = fill(index, album)
    cheap = Predicate("price", Op.LT, (10.0,))
    chosen = expected(items, cheap)
    before = {i.id: i for i in index.get(album, [i.id for i in items], with_vectors=True)}
    updated = index.update(album, Selection(filter=cheap), {"colour": "sale-red", "kind": None, "note": "new"})
    assert updated == len(chosen) > 0
    after = {i.id: i for i in index.get(album, [i.id for i in items], with_vectors=True)}
    for image_id, item in after.items():
        old = before[image_id]
        assert len(item.vectors) == len(old.vectors)
        assert all(np.allclose(a, b) for a, b in zip(item.vectors, old.vectors, strict=True))
        if image_id in chosen:
            assert item.attributes["colour"] == "sale-red" and item.attributes["note"] == "new"
            assert "kind" not in item.attributes
        else:
            assert item.attributes == old.attributes
    assert index.count(album, Predicate("colour", Op.EQ, ("sale-red",))) == len(chosen)


def test_update_by_ids_sets_a_declared_column_to_null_and_renames(index: VectorIndex, album: str) -> None:
    fill(index, album, n=5)
    assert index.update(album, Selection(ids=("img001", "img002", "nope")), {"price": None, "name": "x.jpg"}) == 2
    first, second = index.get(album, ["img001", "img002"])
    assert first.attributes["price"] is None and first.name == "x.jpg" == second.name
    assert index.count(album, Predicate("price", Op.IS_NULL)) >= 2


@pytest.mark.parametrize(
    ("changes", "error"),
    [
        ({"price": "cheap"}, InvalidAttributes),
        ({"id": "x"}, InvalidAttributes),
        ({"created_at": "2024-01-01"}, InvalidAttributes),
        ({"name": ""}, InvalidAttributes),
        ({}, InvalidArgument),
        ({"sizes": ["x"] * 65}, InvalidAttributes),
    ],
)
def test_a_bad_update_changes_nothing(index: VectorIndex, album: str, changes: dict[str, Any],
                                      error: type[Exception]) -> None:
    items = fill(index, album, n=5)
    with pytest.raises(error):
        index.update(album, Selection(all=True), changes)
    assert index.get(album, [i.id for i in items]) == items


def test_an_update_must_say_which_images(index: VectorIndex, album: str) -> None:
    for selection in (Selection(), Selection(ids=("a",), all=True), Selection(filter=And(()), all=True)):
        with pytest.raises(InvalidArgument):
            index.update(album, selection, {"colour": "x"})


def test_a_filter_naming_an_unknown_column_is_refused(filled: tuple[VectorIndex, str, list[Item]]) -> None:
    index, album, _ = filled
    with pytest.raises(InvalidFilter, match="no column 'prcie'"):
        index.count(album, Predicate("prcie", Op.LT, (5,)))


def test_an_album_of_the_release_before_null_names_updates_and_re_embeds_into_the_new_layout(
        milvus_index: MilvusIndex) -> None:
    """An album made with the `nulls` array alone (layout 2): its rows are written and updated as before (a
    field it lacks would fail the insert), its nulls read back; a re-embed's new version has `null_names`."""
    name = f"shoes-{uuid.uuid4().hex[:8]}"
    with mock.patch.object(milvus_layout, "SCHEMA_VERSION", 2):
        milvus_index.create_collection(name, DIM, "test-model", schema=SHOES)
    milvus_index = MilvusIndex(milvus_index.settings)  # a service started since: the layout read from Milvus
    try:
        items = fill(milvus_index, name, n=8)
        assert milvus_index.update(name, Selection(ids=("img001",)), {"price": None, "qty": 3}) == 1
        (first,) = milvus_index.get(name, ["img001"])
        assert (first.attributes["price"], first.attributes["qty"]) == (None, 3)
        assert milvus_index.count(name, Predicate("price", Op.IS_NULL)) == 1 + sum(
            i.attributes["price"] is None for i in items if i.id != "img001")
        stored = milvus_index._album(name)[1]
        assert (stored.layout, stored.null_fields) == (2, ["nulls"])

        version = milvus_index.begin_version(name, DIM, "test-model")
        current = milvus_index.get(name, [i.id for i in items], with_vectors=True)
        milvus_index.insert(name, current, version=version)
        milvus_index.commit_version(name, version)
        assert [i.attributes for i in milvus_index.get(name, [i.id for i in items])] == [i.attributes for i in current]
        assert milvus_index._album(name)[1].null_fields == ["null_names"]
        hits = milvus_index.search(name, current[0].vectors[0], 8, Predicate("price", Op.IS_NULL))
        assert sorted(h.id for h in hits) == sorted(i.id for i in current if i.attributes["price"] is None)
        assert all(h.attributes == next(i.attributes for i in current if i.id == h.id) for h in hits)
    finally:
        milvus_index.drop_collection(name)
        milvus_index.close()
