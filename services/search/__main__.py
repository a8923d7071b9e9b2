"""Runs the search service: `python -m services.search` (settings from SEARCH_* variables)."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Protocol

import grpc
from grpc_health.v1 import health

from services.common.errors import StoreUnavailable
from services.common.grpc_server import create_server, serve, set_serving
from services.common.logs import configure_logging
from services.common.metrics import start_metrics_server
from services.search.index import VectorIndex
from services.search.milvus_index import MilvusIndex
from services.search.servicer import SERVICE_NAMES, SearchServicer, registrar
from services.search.settings import SearchSettings

log = logging.getLogger(__name__)


@dataclass
class SearchService:
    """The wired service: a gRPC server (not started) over its index."""

    server: grpc.aio.Server
    health: health.aio.HealthServicer
    port: int
    index: VectorIndex


def build(settings: SearchSettings, index: VectorIndex | None = None) -> SearchService:
    """Wires an index (Milvus by default, connected lazily) into a server; call in the event loop."""
    index = index or MilvusIndex(settings)
    server, health_servicer, port = create_server(settings, "search", registrar(SearchServicer(index)), SERVICE_NAMES)
    return SearchService(server, health_servicer, port, index)


class Pingable(Protocol):
    def ping(self) -> None: ...


async def watch_store(index: Pingable, health_servicer: health.aio.HealthServicer, interval_s: float,
                      timeout_s: float = 15.0) -> None:
    """Keeps the Search service's health (the server's own, "", stays as it is) SERVING while the store
    serves and NOT_SERVING while it does not (any error, or no answer within `timeout_s`); logs each
    change. The service starts NOT_SERVING (see `run`) and is SERVING after the first check that the
    store passes; while it does not, the store is checked every second, so that comes soon after the
    store serves. Runs until cancelled."""
    serving: bool | None = None
    pending: asyncio.Future[None] | None = None
    while True:
        if pending is None or pending.done():  # a ping stuck in its thread is not started again
            pending = asyncio.ensure_future(asyncio.to_thread(index.ping))
        try:
            await asyncio.wait_for(asyncio.shield(pending), timeout_s)
            answers, why = True, ""
        except StoreUnavailable as exc:
            answers, why = False, exc.message
        except TimeoutError:
            answers, why = False, f"no answer in {timeout_s:.0f} s"
        except Exception as exc:  # whatever the store's client raises, it did not answer
            answers, why = False, f"{type(exc).__name__}: {exc}"
        if answers != serving:
            if answers:
                log.info("vector store serves%s, Search marked SERVING", "" if serving is None else " again")
            else:
                log.warning("vector store does not serve, Search marked NOT_SERVING: %s", why)
            serving = answers
            await set_serving(health_servicer, SERVICE_NAMES, serving, include_server=False)
        await asyncio.sleep(interval_s if serving else min(interval_s, 1.0))


async def run(settings: SearchSettings) -> None:
    service = build(settings)
    log.info("search listening on %s:%d, Milvus at %s", settings.host, service.port, settings.milvus_uri)
    interval = settings.store_check_interval_s
    watchers = []
    if interval > 0:
        # NOT_SERVING until the watcher's first check says the store serves (see watch_store).
        await set_serving(service.health, SERVICE_NAMES, False, include_server=False)
        watcher = asyncio.create_task(watch_store(service.index, service.health, interval,
                                                  settings.milvus_timeout_s + 5))
        watcher.add_done_callback(_report_crash)
        watchers.append(watcher)
    # With a watcher, the Search service is SERVING only once the watcher has seen the store serve.
    await serve(service.server, service.health, SERVICE_NAMES, settings.shutdown_grace_s, watchers,
                watched=SERVICE_NAMES if watchers else ())


def _report_crash(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("the vector store watcher stopped: %r", task.exception())


def main() -> None:
    settings = SearchSettings()
    configure_logging("search", settings.log_level)
    # pymilvus logs every failed call at ERROR through its own handler; the index maps and logs them.
    logging.getLogger("pymilvus").setLevel(logging.CRITICAL)
    start_metrics_server(settings.metrics_port)
    asyncio.run(run(settings))


if __name__ == "__main__":
    main()
