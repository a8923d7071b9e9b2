"""How filtered searches are planned (services.search.search_plan), and what it buys on a real Milvus: a
filter keeping 15 % of an indexed album, which Milvus 2.3's own filtered HNSW search answers with poor
recall, answered as the exact index would; and a remembered share that no longer holds costs no hits."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator

import numpy as np
import pytest
from numpy.typing import NDArray
from pymilvus import MilvusClient

from services.common.filtering import Op, Predicate
from services.common.schema import AlbumSchema, Column, ColumnType
from services.search.index import Item
from services.search.milvus_index import MilvusIndex
from services.search.milvus_layout import collection_name
from services.search.search_plan import ExpiringCache, post_filter_depth

DIM = 32
ROWS = 20_000
BUCKETS = 100
SCHEMA = AlbumSchema.of([Column("bucket", ColumnType.INT)])


# --- the plan ---------------------------------------------------------------------------------------


def test_a_filter_keeping_a_tenth_is_post_filtered_ten_times_deeper() -> None:
    assert post_filter_depth(0.1, 20, min_share=0.05, max_rows=1024) == 200
    assert post_filter_depth(1.0, 20, min_share=0.05, max_rows=1024) == 20


def test_a_selective_filter_or_a_deep_one_goes_into_the_search() -> None:
    assert post_filter_depth(0.01, 20, min_share=0.05, max_rows=1024) == 0
    assert post_filter_depth(0.0, 20, min_share=0.0, max_rows=1024) == 0
    assert post_filter_depth(0.1, 200, min_share=0.05, max_rows=1024) == 0


def test_a_cached_value_expires_and_the_least_recently_used_goes_first() -> None:
    now = [0.0]
    cache: ExpiringCache[str, int] = ExpiringCache(ttl_s=10, size=2, clock=lambda: now[0])
    cache.put("a", 1)
    cache.put("b", 2)
    assert cache.get("a") == 1
    cache.put("c", 3)  # "b" was used least recently
    assert (cache.get("a"), cache.get("b"), cache.get("c")) == (1, None, 3)
    now[0] = 10.0
    assert cache.get("a") is None


# --- on a real Milvus -------------------------------------------------------------------------------


def clustered(rng: np.random.Generator, n: int) -> NDArray[np.float32]:
    """Unit vectors around 200 centres, as real albums cluster around their subjects."""
    centres = rng.standard_normal((200, DIM))
    vectors = centres[rng.integers(0, len(centres), n)] + 0.6 * rng.standard_normal((n, DIM))
    return (vectors / np.linalg.norm(vectors, axis=1, keepdims=True)).astype(np.float32)


def settle(index: MilvusIndex, album: str) -> None:
    """Seals the album's rows and waits until Milvus serves them from the built HNSW index (growing
    segments are searched another way, which would not show what filtered HNSW does)."""
    client = MilvusClient(uri=index.settings.milvus_uri)
    cname = collection_name(index.settings.collection_prefix, album)
    try:
        physical = str(client.describe_alias(cname)["collection_name"])
        client.flush(physical)
        deadline = time.monotonic() + 60
        while client.describe_index(physical, "vector")["indexed_rows"] < ROWS:
            assert time.monotonic() < deadline, "the index was not built in time"
            time.sleep(0.5)
        client.release_collection(physical)
        client.load_collection(physical)
    finally:
        client.close()


@pytest.fixture(scope="module")
def indexed_album(milvus_index: MilvusIndex) -> Iterator[tuple[str, NDArray[np.float32], NDArray[np.int64]]]:
    rng = np.random.default_rng(4)
    vectors = clustered(rng, ROWS)
    buckets = rng.integers(0, BUCKETS, ROWS)
    name = f"plan-{uuid.uuid4().hex[:8]}"
    milvus_index.create_collection(name, DIM, "m", schema=SCHEMA)
    try:
        for start in range(0, ROWS, 5000):
            milvus_index.insert(name, [Item(id=f"img{i:05d}", vectors=(vectors[i],), attributes={"bucket": int(b)})
                                       for i, b in enumerate(buckets[start:start + 5000], start)])
        settle(milvus_index, name)
        yield name, vectors, buckets
    finally:
        milvus_index.drop_collection(name)


def test_a_filter_keeping_15_percent_finds_the_exact_top_10(
    milvus_index: MilvusIndex, indexed_album: tuple[str, NDArray[np.float32], NDArray[np.int64]]
) -> None:
    name, vectors, buckets = indexed_album
    kept = np.flatnonzero(buckets < 15)
    queries = clustered(np.random.default_rng(5), 50)
    recalls = []
    for query in queries:
        truth = {f"img{i:05d}" for i in kept[np.argsort(-(vectors[kept] @ query))[:10]]}
        hits = milvus_index.search(name, query, 10, Predicate("bucket", Op.LT, (15,)))
        assert len(hits) == 10 and all(hit.attributes["bucket"] < 15 for hit in hits)
        recalls.append(len({hit.id for hit in hits} & truth) / 10)
    assert np.mean(recalls) >= 0.95


def test_a_share_that_no_longer_holds_costs_no_hits(milvus_index: MilvusIndex) -> None:
    rng = np.random.default_rng(6)
    vectors = clustered(rng, 400)
    name = f"plan-{uuid.uuid4().hex[:8]}"
    milvus_index.create_collection(name, DIM, "m", schema=SCHEMA)
    try:
        milvus_index.insert(name, [Item(id=f"img{i:03d}", vectors=(v,), attributes={"bucket": i % 5})
                                   for i, v in enumerate(vectors)])
        wanted = Predicate("bucket", Op.EQ, (0,))
        assert len(milvus_index.search(name, vectors[0], 10, wanted)) == 10  # the share, a fifth, is remembered
        milvus_index.delete(name, [f"img{i:03d}" for i in range(5, 400, 5)])  # one image with bucket 0 is left
        assert [hit.id for hit in milvus_index.search(name, vectors[0], 10, wanted)] == ["img000"]
        milvus_index.insert(name, [Item(id="new", vectors=(-vectors[0],), attributes={"bucket": 0})])
        assert [hit.id for hit in milvus_index.search(name, vectors[0], 10, wanted)] == ["img000", "new"]
    finally:
        milvus_index.drop_collection(name)
