"""How Milvus' errors become ours (the paths through a real Milvus are in test_index.py and
tests/test_faults.py; these are the messages seen there, and the rules for them)."""

from __future__ import annotations

import threading
import time

import grpc
import pytest
from pymilvus.exceptions import MilvusException, ParamError

from services.common.errors import AlbumNotFound, ImageSearchError, InvalidArgument, StoreUnavailable
from services.search import milvus_index
from services.search.milvus_errors import deadline_exceeded, map_error
from services.search.milvus_index import MilvusIndex, _each_at_once
from services.search.settings import SearchSettings


@pytest.mark.parametrize("message", [
    # while a restarted Milvus standalone brings its parts up (tests/test_faults.py's outage)
    "empty grpc client: failed to connect 192.0.2.2:57607, reason: connection error: desc",
    "proxy not healthy, StateCode=Initializing",
    "service unavailable: internal: Milvus Proxy is not ready yet",
    # a read whose time ran out inside Milvus (a restarted Milvus not yet caught up with its log)
    "proxy TaskCondition context Done",
    # a read that reached a collection as its query node let it go (seen in tests/gateway/test_api_schema.py:
    # a re-embed started while the previous one's old collection was released)
    "failed to search/query delegator 1 for channel by-dev-rootcoord-dml_13_470813683884691662v0: fail to Query, "
    "QueryNode ID = 1, reason=delegator closed during wait tsafe: channel not available[channel=by-dev-rootcoord-"
    "dml_13_470813683884691662v0]",
])
def test_milvus_saying_a_part_of_it_is_down_is_unavailable(message: str) -> None:
    error = map_error(MilvusException(code=65535, message=message), "shoes")
    assert isinstance(error, StoreUnavailable) and error.reason == "store_unavailable"
    assert type(error) is not StoreUnavailable  # answered: the connection is not remade (MilvusIndex._call)


def test_other_errors_keep_their_meaning() -> None:
    assert type(map_error(MilvusException(code=100, message="collection not found[x]"), "shoes")) is AlbumNotFound
    assert type(map_error(ParamError(message="bad dim"), "shoes")) is InvalidArgument
    odd = map_error(MilvusException(code=65535, message="something no rule knows"), "shoes")
    assert type(odd) is ImageSearchError and "something no rule knows" in odd.message
    assert map_error(KeyError("a bug"), "shoes") is None


def test_a_read_that_ran_out_of_time_is_told_apart() -> None:
    # Both ways a Strong read waiting for a restarted Milvus to catch up with its log ends.
    assert deadline_exceeded(MilvusException(code=65535, message="proxy TaskCondition context Done"))
    assert deadline_exceeded(MilvusException(code=grpc.StatusCode.DEADLINE_EXCEEDED, message="timeout"))
    assert not deadline_exceeded(MilvusException(code=101, message="collection not loaded"))
    assert not deadline_exceeded(KeyError("a bug"))


def test_pymilvus_looks_for_scipy_before_any_thread_does() -> None:
    # Its unlocked first look failed two concurrent first searches with KeyError 'scipy.sparse' (a 500).
    from pymilvus.client.utils import SciPyHelper

    from services.search.milvus_index import MilvusIndex
    from services.search.settings import SearchSettings

    SciPyHelper._checked = False
    MilvusIndex(SearchSettings())
    assert SciPyHelper._checked


RELEASED = ("failed to search/query delegator 1 for channel by-dev-rootcoord-dml_13_470813683884691662v0: fail to "
            "Query, QueryNode ID = 1, reason=delegator closed during wait tsafe: channel not available")


def test_a_read_reaching_a_collection_being_released_is_made_again(monkeypatch: pytest.MonkeyPatch) -> None:
    # A re-embed's commit moves the album's alias to the new version and releases the old collection; a
    # read caught in between is read again (through the alias, on the new one), not answered 503.
    from services.search import milvus_index
    from services.search.milvus_index import MilvusIndex
    from services.search.settings import SearchSettings

    index = MilvusIndex(SearchSettings())
    monkeypatch.setattr(index, "_call", lambda album, operation: operation(None))
    monkeypatch.setattr(index, "_ensure_loaded", lambda client, cname: None)
    monkeypatch.setattr(milvus_index, "RELEASED_RETRY_S", 0.0)
    answers: list[object] = [map_error(MilvusException(code=65535, message=RELEASED), "shoes"), "rows"]

    def read(client: object) -> object:
        answer = answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer

    assert index._read("c", "shoes", read) == "rows"
    # Twice in a row, or any other part of Milvus down, stays unavailable.
    answers[:] = [map_error(MilvusException(code=65535, message=RELEASED), "shoes")] * 2
    with pytest.raises(StoreUnavailable):
        index._read("c", "shoes", read)
    answers[:] = [map_error(MilvusException(code=65535, message="proxy not healthy"), "shoes"), "rows"]
    with pytest.raises(StoreUnavailable):
        index._read("c", "shoes", read)


def test_work_on_each_album_at_once_keeps_the_order_and_stops_at_the_first_error(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(milvus_index, "AT_ONCE", 2)
    assert _each_at_once(str.upper, ["b", "a", "c"]) == ["B", "A", "C"]
    started: list[str] = []
    lock = threading.Lock()

    def check(name: str) -> str:
        with lock:
            started.append(name)
        if name == "a0":
            raise StoreUnavailable("album a0 is not loaded")
        time.sleep(0.2)
        return name

    began = time.monotonic()
    with pytest.raises(StoreUnavailable, match="a0"):
        _each_at_once(check, [f"a{i}" for i in range(20)])
    # Raised once the first album failed: the albums not started yet were not (one after another, 2 at a
    # time, the other 19 would have taken ~2 s).
    assert time.monotonic() - began < 1.0 and len(started) < 20


def test_a_reset_for_a_lost_connection_leaves_a_client_connected_since() -> None:
    """Calls running at once that lost one connection reset it once: a later one's reset does not close the
    client another call has just connected."""
    class Client:
        closed = False

        def close(self) -> None:
            self.closed = True

    index = MilvusIndex(SearchSettings(milvus_uri="http://127.0.0.1:9"))
    lost, fresh = Client(), Client()
    index._client = fresh  # type: ignore[assignment]
    index._reset(lost)  # type: ignore[arg-type]
    assert index._client is fresh and not fresh.closed
    index._reset(fresh)  # type: ignore[arg-type]
    assert index._client is None and fresh.closed
