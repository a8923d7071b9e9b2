"""Versions of an album, on the exact index and a real Milvus alike: a version filled beside the album while
the album answers as it is, then made the album's at once, or dropped; and an album made before versions
(its collection bearing its name) moved onto one."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import numpy as np
import pytest

from services.common.errors import AlbumNotFound
from services.common.schema import AlbumSchema, Column, ColumnType
from services.search.index import Collection, IndexType, Item, VectorIndex, now_ms
from services.search.milvus_index import MilvusIndex
from services.search.milvus_layout import build_schema, collection_name

DIM = 8
SCHEMA = AlbumSchema.of([Column("price", ColumnType.FLOAT)])


def items(seed: int, n: int = 5) -> list[Item]:
    rng = np.random.default_rng(seed)
    return [Item(id=f"img{i}", vectors=(rng.standard_normal(DIM).astype(np.float32),), name=f"i{i}",
                 attributes={"price": float(i)}) for i in range(n)]


@pytest.fixture()
def album(index: VectorIndex) -> Iterator[str]:
    name = f"versions-{uuid.uuid4().hex[:8]}"
    index.create_collection(name, DIM, "old-model", schema=SCHEMA)
    index.insert(name, items(1))
    yield name
    index.drop_collection(name)


def test_a_version_is_filled_beside_the_album_and_takes_its_place_at_once(index: VectorIndex, album: str) -> None:
    version = index.begin_version(album, DIM, "new-model")
    new = items(2, n=3)
    index.insert(album, new, version=version)
    assert index.count(album) == 5 and index.count(album, version=version) == 3
    assert index.get_collection(album).model == "old-model"
    query = new[0].vectors[0]
    assert index.search(album, query, 1)[0].distance > 1e-4  # the album still answers with its vectors
    assert [a.name for a in index.list_collections()].count(album) == 1
    assert [i.id for i in index.query(album, version=version)] == ["img0", "img1", "img2"]
    committed = index.commit_version(album, version)
    assert (committed.model, committed.count, committed.schema) == ("new-model", 3, SCHEMA)
    assert index.search(album, query, 1)[0].distance == pytest.approx(0, abs=1e-5)
    assert [a.name for a in index.list_collections()].count(album) == 1
    with pytest.raises(AlbumNotFound):
        index.count(album, version=version + 1)
    again = index.begin_version(album, DIM, "newer")
    assert again > version


def test_an_aborted_version_leaves_the_album_as_it_was(index: VectorIndex, album: str) -> None:
    version = index.begin_version(album, DIM, "new-model")
    index.insert(album, items(3), version=version)
    assert index.abort_version(album, version) is True
    assert index.abort_version(album, version) is False
    with pytest.raises(AlbumNotFound):
        index.insert(album, items(3), version=version)
    assert (index.get_collection(album).model, index.count(album)) == ("old-model", 5)


def test_beginning_a_version_abandons_one_left_in_the_making(index: VectorIndex, album: str) -> None:
    first = index.begin_version(album, DIM, "new-model")
    second = index.begin_version(album, DIM, "new-model")
    with pytest.raises(AlbumNotFound):
        index.count(album, version=first)
    assert index.count(album, version=second) == 0


def test_an_album_made_before_versions_moves_onto_one(milvus_index: MilvusIndex) -> None:
    name = f"legacy-{uuid.uuid4().hex[:8]}"
    cname = collection_name(milvus_index.settings.collection_prefix, name)
    info = Collection(name=name, dim=DIM, model="old-model", index_type=IndexType.HNSW, created_at_ms=now_ms(),
                      schema=SCHEMA)
    milvus_index._call(name, lambda c: c.create_collection(cname, schema=build_schema(info)))
    milvus_index._call(name, lambda c: milvus_index._index_and_load(c, cname, info))
    try:
        milvus_index.insert(name, items(1))
        assert milvus_index.get_collection(name).count == 5
        version = milvus_index.begin_version(name, DIM, "new-model")
        milvus_index.insert(name, items(4, n=2), version=version)
        assert milvus_index.commit_version(name, version).model == "new-model"
        assert milvus_index.count(name) == 2
        assert [a.name for a in milvus_index.list_collections()].count(name) == 1
    finally:
        milvus_index.drop_collection(name)
    assert name not in [a.name for a in milvus_index.list_collections()]
