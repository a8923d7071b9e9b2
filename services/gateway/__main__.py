"""Runs the gateway: the gRPC API and the HTTP API + web page in one event loop, and the import workers.

It starts whether or not the extractor, search service, object store and Redis are up; calls that
need one that is down answer 503 until it is back.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import signal
from collections.abc import Callable, Iterator

import grpc
import httpx
import uvicorn
from imagesearch.v1 import gateway_pb2_grpc
from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError

from services.common.errors import StoreUnavailable
from services.common.grpc_client import open_channel
from services.common.grpc_server import create_server, set_serving
from services.common.logs import configure_logging
from services.gateway.app import create_app
from services.gateway.blobstore import BlobStore
from services.gateway.cache import RedisEmbeddingCache
from services.gateway.clients import GrpcExtractor, GrpcVectorSearch
from services.gateway.deps import Deps
from services.gateway.import_queue import ImportQueue
from services.gateway.import_worker import ImportWorker
from services.gateway.servicer import SERVICE_NAME, GatewayServicer
from services.gateway.settings import GatewaySettings
from services.gateway.urlfetch import AddressPolicy, UrlFetcher

log = logging.getLogger(__name__)


class HttpServer(uvicorn.Server):
    """uvicorn, with its exit signals taken through the event loop and announced to `on_exit` first."""

    def __init__(self, config: uvicorn.Config, on_exit: Callable[[], None]) -> None:
        super().__init__(config)
        self.on_exit = on_exit

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        # uvicorn re-raises a captured signal after serving, which would kill the process before the
        # gRPC server and the worker are stopped; handling it in the loop avoids that.
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._exit, sig)
        try:
            yield
        finally:
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.remove_signal_handler(sig)

    def _exit(self, sig: int) -> None:
        log.info("received %s, shutting down", signal.Signals(sig).name)
        self.on_exit()
        self.handle_exit(sig, None)


async def main() -> None:
    settings = GatewaySettings()
    configure_logging("gateway", settings.log_level)
    extractor_channel = open_channel(settings.extractor_target)
    search_channel = open_channel(settings.search_target)
    extractor = GrpcExtractor(extractor_channel, settings.rpc_timeout_s)
    search = GrpcVectorSearch(search_channel, settings.rpc_timeout_s)
    blobs = BlobStore.connect(settings.s3_endpoint, settings.s3_access_key, settings.s3_secret_key, settings.s3_bucket,
                              secure=settings.s3_secure, region=settings.s3_region, timeout_s=settings.s3_timeout_s,
                              put_threads=settings.s3_put_threads)
    try:
        await blobs.ensure_bucket()
    except StoreUnavailable as exc:
        log.warning("object store not ready at start (will retry on use): %s", exc.message)
    # A pooled connection to a Redis that has restarted since is dead: the first command on it fails with a
    # ConnectionError (seen as 503s, one per pooled connection, right after Redis was back). Such a command is made
    # once more on a new connection (redis-py retries none when built from a URL). Only connection errors (a Retry
    # retries timeouts too unless told): a command that timed out may have run, and must not run twice.
    redis = Redis.from_url(settings.redis_url, socket_timeout=settings.redis_timeout_s,
                           socket_connect_timeout=settings.redis_timeout_s,
                           retry=Retry(NoBackoff(), 1, supported_errors=(RedisConnectionError,)))
    http_client = httpx.AsyncClient(timeout=settings.url_fetch_timeout_s,
                                    headers={"User-Agent": "imagesearch-gateway/1.0"})
    deps = Deps(
        settings, extractor, search, blobs, RedisEmbeddingCache(redis, settings.embedding_cache_ttl_s),
        UrlFetcher(http_client, settings.max_image_bytes, settings.url_fetch_timeout_s,
                   AddressPolicy(settings.url_allow_private, frozenset(settings.url_allowed_hosts))),
    )
    queue = ImportQueue(redis)
    checks = {"extractor": extractor.health, "search": search.health, "object_store": blobs.ping, "redis": queue.ping}
    app = create_app(settings, deps, queue, checks)

    def register(server: grpc.aio.Server) -> None:
        gateway_pb2_grpc.add_GatewayServicer_to_server(GatewayServicer(deps, queue), server)

    grpc_server, health, grpc_port = create_server(settings, "gateway", register, [SERVICE_NAME])
    await grpc_server.start()
    # The workers' images are served after those of searches and adds, which someone waits for.
    background = dataclasses.replace(deps, extractor=extractor.background())
    workers = [asyncio.create_task(ImportWorker(background, queue, settings.import_visibility_s,
                                                takeover_s=settings.import_takeover_s).serve(), name=f"import-{n}")
               for n in range(settings.import_workers)]

    def not_serving() -> None:
        asyncio.get_running_loop().create_task(set_serving(health, [SERVICE_NAME], False))

    config = uvicorn.Config(app, host=settings.host, port=settings.http_port, log_config=None, access_log=False,
                            lifespan="off", timeout_graceful_shutdown=int(settings.shutdown_grace_s))
    http = HttpServer(config, on_exit=not_serving)
    http_task = asyncio.create_task(http.serve(), name="http")
    while not http.started and not http_task.done():
        await asyncio.sleep(0.05)
    if http.started:
        # Only now: readiness probes (and the test stack) take SERVING to mean both APIs answer.
        await set_serving(health, [SERVICE_NAME], True)
        log.info("gateway serving gRPC on %s:%d and HTTP on %s:%d", settings.host, grpc_port, settings.host,
                 settings.http_port)
    try:
        await http_task
    finally:
        await set_serving(health, [SERVICE_NAME], False)
        await grpc_server.stop(settings.shutdown_grace_s)
        for worker in workers:
            worker.cancel()
        await asyncio.gather(*workers, return_exceptions=True)
        await http_client.aclose()
        await redis.aclose()
        await extractor_channel.close()
        await search_channel.close()
        log.info("gateway stopped")


if __name__ == "__main__":
    asyncio.run(main())
