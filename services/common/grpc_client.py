"""Calling our own gRPC services: request id propagation and status -> error mapping."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import grpc

from services.common.errors import ImageSearchError, Unavailable, error_from_reason
from services.common.grpc_server import ERROR_REASON_KEY
from services.common.logs import REQUEST_ID_HEADER, request_id_var

T = TypeVar("T")

CHANNEL_OPTIONS = [
    ("grpc.max_receive_message_length", 256 * 1024 * 1024),
    ("grpc.max_send_message_length", 256 * 1024 * 1024),
    # Spread calls over every address a name resolves to (e.g. the extractor pods behind a
    # headless Kubernetes Service), not just the first one.
    ("grpc.lb_policy_name", "round_robin"),
    # A peer that restarts is found again within a second (gRPC's default backoff grows to 120 s).
    ("grpc.initial_reconnect_backoff_ms", 250),
    ("grpc.min_reconnect_backoff_ms", 250),
    ("grpc.max_reconnect_backoff_ms", 1000),
]
# A call that finds its peer unreachable waits this long for it once before giving up.
RECONNECT_WAIT_S = 1.5


def open_channel(target: str) -> grpc.aio.Channel:
    return grpc.aio.insecure_channel(target, options=CHANNEL_OPTIONS)


def call_metadata() -> tuple[tuple[str, str], ...]:
    return ((REQUEST_ID_HEADER, request_id_var.get()),)


def _reason(exc: grpc.aio.AioRpcError) -> str | None:
    for key, value in exc.trailing_metadata() or ():
        if key == ERROR_REASON_KEY:
            return str(value)
    return None


async def call(
    method: Callable[..., Awaitable[T]],
    request: Any,
    *,
    timeout: float,
    unavailable: type[Unavailable],
    peer: str,
) -> T:
    """Calls a unary RPC; a peer that cannot be reached raises `unavailable`, others their own error.

    A peer found unreachable gets one more try that waits up to RECONNECT_WAIT_S for it, so a
    service that has just restarted is used as soon as it is back, and one that is down still
    gives a prompt UNAVAILABLE.
    """
    try:
        return await method(request, timeout=timeout, metadata=call_metadata())
    except grpc.aio.AioRpcError as exc:
        if exc.code() != grpc.StatusCode.UNAVAILABLE or _reason(exc) is not None:
            raise rpc_error(exc, unavailable, peer) from exc
    try:
        return await method(request, timeout=min(timeout, RECONNECT_WAIT_S), metadata=call_metadata(),
                            wait_for_ready=True)
    except grpc.aio.AioRpcError as exc:
        raise rpc_error(exc, unavailable, peer) from exc


def rpc_error(exc: grpc.aio.AioRpcError, unavailable: type[Unavailable], peer: str) -> ImageSearchError:
    code = exc.code()
    reason = _reason(exc)
    if reason is None and code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
        return unavailable(f"{peer} is unavailable: {exc.details() or code.name}")
    return error_from_reason(reason, code, exc.details() or code.name)
