"""The Search service over real gRPC on loopback, backed by the real Milvus server."""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from imagesearch.v1 import common_pb2, search_pb2, search_pb2_grpc

from services.common.filtering import from_json
from services.common.grpc_server import ERROR_REASON_KEY
from services.common.schema import NO_COLUMNS
from services.common.wire import attributes_from_wire, attributes_to_wire, filter_to_wire
from services.devstack import Stack, free_port
from services.search.__main__ import build
from services.search.settings import SearchSettings


class ServiceThread:
    """The search service's gRPC server running in its own event loop on a background thread."""

    def __init__(self, settings: SearchSettings) -> None:
        self.settings = settings
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.server: grpc.aio.Server | None = None

    def __enter__(self) -> search_pb2_grpc.SearchStub:
        self.thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self.loop).result(timeout=30)
        self.channel = grpc.insecure_channel(f"127.0.0.1:{self.settings.port}")
        return search_pb2_grpc.SearchStub(self.channel)

    async def _start(self) -> None:
        service = build(self.settings)
        self.server = service.server
        await service.server.start()
        await service.health.set("", health_pb2.HealthCheckResponse.SERVING)

    def __exit__(self, *exc: object) -> None:
        self.channel.close()
        if self.server is not None:
            asyncio.run_coroutine_threadsafe(self.server.stop(0), self.loop).result(timeout=30)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=10)


def service_settings(milvus_port: int, **overrides: Any) -> SearchSettings:
    values: dict[str, Any] = {
        "host": "127.0.0.1",
        "port": free_port(),
        "metrics_port": 0,
        "milvus_uri": f"http://127.0.0.1:{milvus_port}",
        "collection_prefix": f"svc{uuid.uuid4().hex[:6]}_",
        **overrides,
    }
    return SearchSettings(**values)


@pytest.fixture(scope="module")
def stub(milvus: Stack) -> Iterator[search_pb2_grpc.SearchStub]:
    with ServiceThread(service_settings(milvus.ports.milvus, milvus_timeout_s=30)) as client:
        yield client


def reason(error: grpc.RpcError) -> str | None:
    for key, value in error.trailing_metadata() or ():  # type: ignore[attr-defined]
        if key == ERROR_REASON_KEY:
            return str(value)
    return None


def item(image_id: str, *vectors: list[float], **attributes: Any) -> search_pb2.Item:
    return search_pb2.Item(
        id=image_id, name=f"{image_id}.jpg", content_hash=f"sha-{image_id}", attributes=attributes_to_wire(attributes),
        created_at_ms=42, vectors=[search_pb2.Descriptor(values=v) for v in vectors],
    )


def where(spec: dict[str, Any]) -> Any:
    """A filter message from the JSON form."""
    return filter_to_wire(from_json(spec, NO_COLUMNS))


def test_an_album_round_trips_through_every_rpc(stub: search_pb2_grpc.SearchStub) -> None:
    created = stub.CreateCollection(search_pb2.CreateCollectionRequest(name="round-trip", dim=4, model="m1"))
    assert (created.name, created.dim, created.metric, created.model, created.index_type) == (
        "round-trip", 4, "cosine", "m1", "HNSW")
    inserted = stub.Insert(search_pb2.InsertRequest(collection="round-trip", items=[
        item("a", [1, 0, 0, 0], category="shoes", price=10),
        item("b", [0, 1, 0, 0], [0, 0, 1, 0], category="hats", price=20),
        item("c", [1, 1, 0, 0], category="shoes", price=60),
    ]))
    assert list(inserted.ids) == ["a", "b", "c"]

    found = stub.Search(search_pb2.SearchRequest(collection="round-trip", vector=[0, 0, 2, 0], top_k=2))
    assert found.metric == "cosine"
    assert found.hits[0].id == "b" and found.hits[0].distance == pytest.approx(0, abs=1e-5)
    assert attributes_from_wire(found.hits[0].attributes) == {"category": "hats", "price": 20}
    assert (found.hits[0].name, found.hits[0].content_hash, found.hits[0].created_at_ms) == ("b.jpg", "sha-b", 42)
    filtered = stub.Search(search_pb2.SearchRequest(
        collection="round-trip", vector=[1, 0, 0, 0], top_k=5,
        filter=where({"category": "shoes", "price": {"lt": 50}})))
    assert [h.id for h in filtered.hits] == ["a"]
    excluded = stub.Search(search_pb2.SearchRequest(collection="round-trip", vector=[1, 0, 0, 0], top_k=5,
                                                    exclude_ids=["a"]))
    assert [h.id for h in excluded.hits] == ["c", "b"]

    got = stub.Get(search_pb2.GetRequest(collection="round-trip", ids=["b", "zz"], with_vectors=True))
    assert [i.id for i in got.items] == ["b"] and len(got.items[0].vectors) == 2
    listed = stub.Query(search_pb2.QueryRequest(collection="round-trip", limit=10))
    assert sorted(i.id for i in listed.items) == ["a", "b", "c"]
    assert stub.Count(search_pb2.CountRequest(collection="round-trip")).count == 3
    assert stub.GetCollection(search_pb2.GetCollectionRequest(name="round-trip")).count == 3
    names = [c.name for c in stub.ListCollections(search_pb2.ListCollectionsRequest()).collections]
    assert "round-trip" in names

    assert stub.Delete(search_pb2.DeleteRequest(collection="round-trip", ids=["a", "nope"])).deleted == 1
    assert stub.Count(search_pb2.CountRequest(collection="round-trip")).count == 2
    assert stub.DropCollection(search_pb2.DropCollectionRequest(name="round-trip")).dropped is True
    assert stub.DropCollection(search_pb2.DropCollectionRequest(name="round-trip")).dropped is False


def test_an_unknown_album_is_not_found_with_its_reason(stub: search_pb2_grpc.SearchStub) -> None:
    with pytest.raises(grpc.RpcError) as caught:
        stub.Search(search_pb2.SearchRequest(collection="no-such-album", vector=[1, 0, 0, 0], top_k=1))
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND  # type: ignore[attr-defined]
    assert reason(caught.value) == "album_not_found"


def test_creating_an_album_twice_is_already_exists(stub: search_pb2_grpc.SearchStub) -> None:
    stub.CreateCollection(search_pb2.CreateCollectionRequest(name="twice", dim=4, model="m"))
    try:
        with pytest.raises(grpc.RpcError) as caught:
            stub.CreateCollection(search_pb2.CreateCollectionRequest(name="twice", dim=4, model="m"))
        assert caught.value.code() == grpc.StatusCode.ALREADY_EXISTS  # type: ignore[attr-defined]
    finally:
        stub.DropCollection(search_pb2.DropCollectionRequest(name="twice"))


@pytest.mark.parametrize(
    ("request_kwargs", "expected_reason"),
    [
        ({"top_k": 0}, "invalid_argument"),
        ({"top_k": 5, "vector": [1, 0]}, "invalid_argument"),
        ({"top_k": 5, "filter": common_pb2.Filter(predicate=common_pb2.Predicate(
            column="attributes.price", op=2, values=[common_pb2.Value(bool_value=True)]))}, "invalid_filter"),
        ({"top_k": 5, "filter": common_pb2.Filter(predicate=common_pb2.Predicate(column="a b", op=1, values=[
            common_pb2.Value(int_value=1)]))}, "invalid_filter"),
        ({"top_k": 5, "filter": common_pb2.Filter(predicate=common_pb2.Predicate(column="a", values=[
            common_pb2.Value(int_value=1)]))}, "invalid_filter"),
        ({"top_k": 5, "expand_k": 51}, "invalid_argument"),
        ({"top_k": 5, "expand_k": -1}, "invalid_argument"),
    ],
)
def test_bad_search_requests_are_invalid_arguments_with_their_reason(
    stub: search_pb2_grpc.SearchStub, request_kwargs: dict[str, Any], expected_reason: str
) -> None:
    stub.CreateCollection(search_pb2.CreateCollectionRequest(name="bad-requests", dim=4, model="m"))
    try:
        values = {"collection": "bad-requests", "vector": [1, 0, 0, 0], **request_kwargs}
        with pytest.raises(grpc.RpcError) as caught:
            stub.Search(search_pb2.SearchRequest(**values))
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT  # type: ignore[attr-defined]
        assert reason(caught.value) == expected_reason
    finally:
        stub.DropCollection(search_pb2.DropCollectionRequest(name="bad-requests"))


def test_primary_only_and_expand_k_cross_the_wire(stub: search_pb2_grpc.SearchStub) -> None:
    stub.CreateCollection(search_pb2.CreateCollectionRequest(name="similar", dim=4, model="m"))
    try:
        stub.Insert(search_pb2.InsertRequest(collection="similar", items=[
            item("a", [1, 0, 0, 0]), item("b", [0, 1, 0, 0], [1, 0, 0, 0]), item("c", [0, 0, 1, 0])]))

        def distances(query: list[float], **options: Any) -> dict[str, float]:
            request = search_pb2.SearchRequest(collection="similar", vector=query, top_k=3, **options)
            return {h.id: h.distance for h in stub.Search(request).hits}

        assert distances([1, 0, 0, 0])["b"] == pytest.approx(0, abs=1e-5)
        assert distances([1, 0, 0, 0], primary_only=True)["b"] == pytest.approx(1, abs=1e-5)
        plain = distances([1, 0.5, 0, 0], primary_only=True)
        expanded = distances([1, 0.5, 0, 0], primary_only=True, expand_k=1)
        assert expanded["a"] < plain["a"] - 0.01  # the query moved towards its nearest image, a
    finally:
        stub.DropCollection(search_pb2.DropCollectionRequest(name="similar"))


def test_a_declared_attribute_of_the_wrong_type_is_refused_naming_image_attribute_and_value(
    stub: search_pb2_grpc.SearchStub,
) -> None:
    stub.CreateCollection(search_pb2.CreateCollectionRequest(name="typed", dim=4, model="m", columns=[
        common_pb2.Column(name="price", type=common_pb2.COLUMN_TYPE_FLOAT)]))
    try:
        bad = item("x", [1, 0, 0, 0], price="cheap")
        with pytest.raises(grpc.RpcError) as caught:
            stub.Insert(search_pb2.InsertRequest(collection="typed", items=[item("y", [0, 1, 0, 0], price=3), bad]))
        assert reason(caught.value) == "invalid_attributes"
        assert "'price'" in caught.value.details() and "cheap" in caught.value.details()  # type: ignore[attr-defined]
        assert "x.jpg" in caught.value.details()  # type: ignore[attr-defined]
        assert stub.Count(search_pb2.CountRequest(collection="typed")).count == 0
        described = stub.GetCollection(search_pb2.GetCollectionRequest(name="typed"))
        assert [(c.name, c.type) for c in described.columns] == [("price", common_pb2.COLUMN_TYPE_FLOAT)]
    finally:
        stub.DropCollection(search_pb2.DropCollectionRequest(name="typed"))


def test_without_milvus_the_service_starts_and_answers_unavailable_quickly() -> None:
    settings = service_settings(free_port(), milvus_timeout_s=0.5)
    with ServiceThread(settings) as client:
        with grpc.insecure_channel(f"127.0.0.1:{settings.port}") as channel:
            health = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5)
        assert health.status == health_pb2.HealthCheckResponse.SERVING
        for _ in range(2):
            started = time.monotonic()
            with pytest.raises(grpc.RpcError) as caught:
                client.Count(search_pb2.CountRequest(collection="any"), timeout=10)
            assert caught.value.code() == grpc.StatusCode.UNAVAILABLE  # type: ignore[attr-defined]
            assert reason(caught.value) == "store_unavailable"
            assert time.monotonic() - started < 3
