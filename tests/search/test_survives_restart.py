"""A Milvus restart loses nothing: albums written before it are searchable after it.

Its own module, named to run after the other search tests: it restarts the session's Milvus server.
"""

from __future__ import annotations

import time

import numpy as np

from services.common.errors import StoreUnavailable
from services.devstack import Stack
from services.search.milvus_index import MilvusIndex
from tests.search.conftest import settings_for
from tests.search.test_index import DIM, ids, items_from, unit


def wait_until_serving(index: MilvusIndex, timeout_s: float = 240) -> None:
    """Milvus answers some time after its process starts (longer on a busy machine)."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            index.list_collections()
            return
        except StoreUnavailable:
            if time.monotonic() > deadline:
                raise
            time.sleep(1)


def test_an_album_written_before_a_milvus_restart_is_searchable_after_it(milvus: Stack) -> None:
    settings = settings_for(milvus)
    before = MilvusIndex(settings)
    vectors = unit(np.random.default_rng(14), 10)
    before.create_collection("durable", DIM, "m")
    before.insert("durable", items_from(vectors))
    # `before` stays open across the restart, as the search service's client does.
    milvus.restart("milvus")
    wait_until_serving(before)
    after = MilvusIndex(settings)  # a fresh process's view: nothing cached, nothing known loaded
    try:
        assert ids(before.search("durable", vectors[6], 1)) == ["img6"]
        assert ids(after.search("durable", vectors[6], 1)) == ["img6"]
        assert after.count("durable") == 10
    finally:
        after.drop_collection("durable")
        before.close()
        after.close()
