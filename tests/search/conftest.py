"""Fixtures of the search tests: the two `VectorIndex` implementations, for the same test bodies."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from services.devstack import Stack
from services.search.index import ExactIndex, VectorIndex
from services.search.milvus_index import MilvusIndex
from services.search.settings import SearchSettings

MAX_TOP_K = 100


def settings_for(milvus: Stack) -> SearchSettings:
    """Settings of an index on the test Milvus, with collections under a prefix of their own."""
    return SearchSettings(
        milvus_uri=f"http://127.0.0.1:{milvus.ports.milvus}",
        collection_prefix=f"t{uuid.uuid4().hex[:6]}_",
        milvus_timeout_s=30,
        max_top_k=MAX_TOP_K,
    )


@pytest.fixture(scope="module")
def milvus_index(milvus: Stack) -> Iterator[MilvusIndex]:
    index = MilvusIndex(settings_for(milvus))
    yield index
    index.close()


@pytest.fixture(params=["exact", "milvus"])
def index(request: pytest.FixtureRequest) -> VectorIndex:
    """Each implementation in turn: the test body runs against both and they must agree."""
    if request.param == "exact":
        return ExactIndex(SearchSettings(max_top_k=MAX_TOP_K))
    result: MilvusIndex = request.getfixturevalue("milvus_index")
    return result
