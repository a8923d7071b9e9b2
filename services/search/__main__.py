"""Runs the search service: `python -m services.search` (settings from SEARCH_* variables)."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

import grpc
from grpc_health.v1 import health

from services.common.grpc_server import create_server, serve
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


async def run(settings: SearchSettings) -> None:
    service = build(settings)
    log.info("search listening on %s:%d, Milvus at %s", settings.host, service.port, settings.milvus_uri)
    await serve(service.server, service.health, SERVICE_NAMES, settings.shutdown_grace_s)


def main() -> None:
    settings = SearchSettings()
    configure_logging("search", settings.log_level)
    # pymilvus logs every failed call at ERROR through its own handler; the index maps and logs them.
    logging.getLogger("pymilvus").setLevel(logging.CRITICAL)
    start_metrics_server(settings.metrics_port)
    asyncio.run(run(settings))


if __name__ == "__main__":
    main()
