"""The search service's health follows its vector store (unit test of the watcher; the real path, with
Milvus stopped and started under a running stack, is in tests/test_faults.py)."""

from __future__ import annotations

import asyncio

import pytest
from grpc_health.v1 import health, health_pb2

from services.common.errors import StoreUnavailable
from services.common.grpc_server import set_serving
from services.search.__main__ import watch_store
from services.search.servicer import SERVICE_NAMES

pytestmark = pytest.mark.anyio
SEARCH = SERVICE_NAMES[0]
SERVING, NOT_SERVING = health_pb2.HealthCheckResponse.SERVING, health_pb2.HealthCheckResponse.NOT_SERVING


class SwitchedStore:
    """A store that answers or not, as the test says (only `ping` is watched)."""

    def __init__(self) -> None:
        self.up = True

    def ping(self) -> None:
        if not self.up:
            raise StoreUnavailable("vector store at http://127.0.0.1:1 is unavailable")


async def status(servicer: health.aio.HealthServicer, service: str) -> int:
    reply = await servicer.Check(health_pb2.HealthCheckRequest(service=service), None)
    return int(reply.status)


async def becomes(servicer: health.aio.HealthServicer, service: str, wanted: int) -> None:
    for _ in range(200):
        if await status(servicer, service) == wanted:
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"{service!r} never became {wanted}")


async def test_the_search_service_is_not_serving_while_its_store_does_not_answer() -> None:
    servicer = health.aio.HealthServicer()
    await set_serving(servicer, SERVICE_NAMES, True)
    store = SwitchedStore()
    watcher = asyncio.create_task(watch_store(store, servicer, 0.01))
    try:
        store.up = False
        await becomes(servicer, SEARCH, NOT_SERVING)
        assert await status(servicer, "") == SERVING  # the process itself is alive
        store.up = True
        await becomes(servicer, SEARCH, SERVING)
    finally:
        watcher.cancel()
