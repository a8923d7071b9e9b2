"""gRPC server bootstrap shared by every service: errors, request ids, metrics, health, shutdown."""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import signal
import time
from collections.abc import AsyncGenerator, Awaitable, Callable, Sequence
from typing import Any, NoReturn

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from services.common.errors import ImageSearchError
from services.common.logs import REQUEST_ID_HEADER, new_request_id, request_id_var
from services.common.metrics import observe_request
from services.common.settings import ServiceSettings

log = logging.getLogger(__name__)

ERROR_REASON_KEY = "x-error-reason"

Handler = Callable[[Any, grpc.aio.ServicerContext], Awaitable[Any]]
StreamHandler = Callable[[Any, grpc.aio.ServicerContext], AsyncGenerator[Any, None]]


def _metadata_value(context: grpc.aio.ServicerContext, key: str) -> str | None:
    for item in context.invocation_metadata() or ():
        if item.key == key:
            return str(item.value)
    return None


class ServiceInterceptor(grpc.aio.ServerInterceptor):
    """Wraps every unary RPC, and every one that streams its answers: sets the request id, maps our errors to
    status codes, records metrics."""

    def __init__(self, service: str) -> None:
        self.service = service

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(handler_call_details)
        method = str(handler_call_details.method).rsplit("/", 1)[-1]
        if handler is not None and handler.unary_unary is not None:
            return grpc.unary_unary_rpc_method_handler(
                self._wrap(method, handler.unary_unary),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        # An RPC that streams its answers as an async generator (ours); not one that writes them itself (grpc's
        # Health.Watch, a coroutine calling context.write), which is left as it is.
        if handler is not None and inspect.isasyncgenfunction(handler.unary_stream):
            return grpc.unary_stream_rpc_method_handler(
                self._wrap_stream(method, handler.unary_stream),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        return handler

    def _wrap(self, method: str, inner: Handler) -> Handler:
        async def wrapped(request: Any, context: grpc.aio.ServicerContext) -> Any:
            request_id_var.set(_metadata_value(context, REQUEST_ID_HEADER) or new_request_id())
            started = time.perf_counter()
            outcome = [grpc.StatusCode.OK]
            try:
                return await inner(request, context)
            except Exception as exc:
                await self._fail(method, context, exc, outcome)
            finally:
                observe_request(self.service, method, outcome[0].name, time.perf_counter() - started)

        return wrapped

    def _wrap_stream(self, method: str, inner: StreamHandler) -> StreamHandler:
        async def wrapped(request: Any, context: grpc.aio.ServicerContext) -> AsyncGenerator[Any, None]:
            request_id_var.set(_metadata_value(context, REQUEST_ID_HEADER) or new_request_id())
            started = time.perf_counter()
            outcome = [grpc.StatusCode.OK]
            try:
                async with contextlib.aclosing(inner(request, context)) as responses:
                    async for response in responses:
                        yield response
            except Exception as exc:
                await self._fail(method, context, exc, outcome)
            finally:
                observe_request(self.service, method, outcome[0].name, time.perf_counter() - started)

        return wrapped

    @staticmethod
    async def _fail(method: str, context: grpc.aio.ServicerContext, exc: Exception,
                    outcome: list[grpc.StatusCode]) -> NoReturn:
        """Ends the call for `exc` (our error: its status; anything else: INTERNAL, logged with its traceback),
        its status code put in `outcome`."""
        if isinstance(exc, grpc.aio.AbortError):
            outcome[0] = context.code() or grpc.StatusCode.UNKNOWN
            raise exc
        if isinstance(exc, ImageSearchError):
            outcome[0] = exc.grpc_code
            log.info("%s failed: %s (%s)", method, exc.message, exc.reason)
            context.set_trailing_metadata(((ERROR_REASON_KEY, exc.reason),))
        else:
            outcome[0] = grpc.StatusCode.INTERNAL
            log.error("%s failed unexpectedly", method, exc_info=exc)
            context.set_trailing_metadata(((ERROR_REASON_KEY, "internal"),))
        await context.abort(outcome[0], exc.message if isinstance(exc, ImageSearchError) else "internal error")
        raise AssertionError("context.abort raises")  # typed as returning


def create_server(
    settings: ServiceSettings,
    service_name: str,
    register: Callable[[grpc.aio.Server], None],
    service_full_names: Sequence[str],
) -> tuple[grpc.aio.Server, health.aio.HealthServicer, int]:
    """Builds a server with our interceptor, health checking and reflection; returns the bound port."""
    options = [
        ("grpc.max_receive_message_length", settings.max_message_bytes),
        ("grpc.max_send_message_length", settings.max_message_bytes),
    ]
    server = grpc.aio.server(interceptors=[ServiceInterceptor(service_name)], options=options)
    register(server)
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    names = [*service_full_names, health.SERVICE_NAME, reflection.SERVICE_NAME]
    reflection.enable_server_reflection(names, server)
    port = server.add_insecure_port(f"{settings.host}:{settings.port}")
    if port == 0:
        raise OSError(f"cannot listen on {settings.host}:{settings.port}")
    return server, health_servicer, port


async def set_serving(health_servicer: health.aio.HealthServicer, names: Sequence[str], serving: bool,
                      include_server: bool = True) -> None:
    """Sets the health of the named services, and of the server as a whole ("") with `include_server`."""
    status = health_pb2.HealthCheckResponse.SERVING if serving else health_pb2.HealthCheckResponse.NOT_SERVING
    for name in ("", *names) if include_server else names:
        await health_servicer.set(name, status)


async def serve(
    server: grpc.aio.Server,
    health_servicer: health.aio.HealthServicer,
    service_full_names: Sequence[str],
    grace_s: float,
    watchers: Sequence[asyncio.Task[None]] = (),
    watched: Sequence[str] = (),
) -> None:
    """Starts the server, marks it SERVING (but the `watched` services, whose health the `watchers` set
    once they know it), and on SIGTERM/SIGINT cancels the `watchers` (tasks that change the health
    while running), marks it NOT_SERVING and stops."""
    await server.start()
    await set_serving(health_servicer, [n for n in service_full_names if n not in watched], True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    log.info("shutting down (grace %.1fs)", grace_s)
    for watcher in watchers:
        watcher.cancel()
    await set_serving(health_servicer, service_full_names, False)
    await server.stop(grace_s)
