"""pymilvus and grpc errors as ours (`map_error`), and the errors of Milvus' own that callers tell apart:
a collection not loaded yet, a part of Milvus down, a read that reached a collection being let go, a call
out of time."""

from __future__ import annotations

import grpc
from pymilvus.client.types import Status
from pymilvus.exceptions import (
    DataNotMatchException,
    DataTypeNotMatchException,
    MilvusException,
    MilvusUnavailableException,
    ParamError,
)

from services.common.errors import AlbumNotFound, ImageSearchError, InvalidArgument, StoreUnavailable

# Milvus' codes for a collection it does not hold, and for one it holds but has not loaded.
COLLECTION_NOT_FOUND, _COLLECTION_NOT_LOADED = 100, 101


class CollectionNotLoaded(StoreUnavailable):
    """Milvus holds the collection but has not loaded it into memory (e.g. just restarted)."""


def map_error(exc: BaseException, album: str) -> ImageSearchError | None:
    """Our error for a pymilvus/grpc one; None for anything else (a bug: let it surface)."""
    if isinstance(exc, ImageSearchError):
        return exc
    if isinstance(exc, MilvusException):
        return _map_milvus(exc, album)
    if isinstance(exc, grpc.RpcError):
        code = exc.code() if callable(getattr(exc, "code", None)) else None
        if code in (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.RESOURCE_EXHAUSTED):
            return InvalidArgument(f"vector store rejected the request: {code.name}")
        return StoreUnavailable(f"vector store is unavailable: {getattr(code, 'name', exc)}")
    if isinstance(exc, grpc.FutureTimeoutError | TimeoutError | ConnectionError):
        return StoreUnavailable(f"vector store is unavailable: {type(exc).__name__}")
    return None


class StorePartDown(StoreUnavailable):
    """Milvus answers, saying one of its own parts is down, starting or stopping (seen through a
    restart: "empty grpc client: failed to connect 192.0.2.2:57607, reason: connection error"):
    unavailable for the caller, but our connection is fine, so it is not remade (which, with Milvus
    half stopped, can take the whole timeout while every other call waits for it)."""


# Milvus' words for a read that reached a collection as its query node let it go (a version's old collection
# released as the album moved on; a node restarting).
_RELEASED_MARKERS = ("channel not available", "delegator closed")
_UNAVAILABLE_MARKERS = ("failed to connect", "empty grpc client", "service unavailable", "not healthy",
                        "is not ready", "stopping",
                        # the call's time ran out inside Milvus ("proxy TaskCondition context Done")
                        "context done", "context deadline exceeded",
                        *_RELEASED_MARKERS)


def released_under_it(error: ImageSearchError) -> bool:
    """Whether the error is Milvus saying the read reached a collection it was releasing."""
    return any(marker in error.message.lower() for marker in _RELEASED_MARKERS)


def _map_milvus(exc: MilvusException, album: str) -> ImageSearchError:
    message = str(exc.message)
    if exc.code == COLLECTION_NOT_FOUND or "collection not found" in message:
        return AlbumNotFound(f"album {album!r} not found")
    if exc.code == _COLLECTION_NOT_LOADED or "not loaded" in message:
        return CollectionNotLoaded(f"album {album!r} is loading")
    code = exc.code() if callable(exc.code) else exc.code  # pymilvus' retry wrapper passes grpc's method
    if isinstance(code, grpc.StatusCode) or code == Status.CONNECT_FAILED:
        return StoreUnavailable(f"vector store is unavailable: {message}")
    if isinstance(exc, MilvusUnavailableException) or isinstance(exc.__cause__, grpc.RpcError):
        return StoreUnavailable(f"vector store is unavailable: {message}")
    if any(marker in message.lower() for marker in _UNAVAILABLE_MARKERS):
        return StorePartDown(f"vector store is unavailable: {message}")
    if isinstance(exc, ParamError | DataNotMatchException | DataTypeNotMatchException):
        return InvalidArgument(f"vector store rejected the request: {message}")
    return ImageSearchError(f"vector store error: {message}")


def deadline_exceeded(exc: BaseException) -> bool:
    """Whether a pymilvus call ran out of time: grpc's DEADLINE_EXCEEDED (raised as is, or its code
    wrapped), or Milvus answering first that the call's context ended ("proxy TaskCondition context
    Done", code 65535)."""
    if isinstance(exc, grpc.RpcError) and callable(getattr(exc, "code", None)):
        return bool(exc.code() == grpc.StatusCode.DEADLINE_EXCEEDED)
    if isinstance(exc, MilvusException):
        code = exc.code() if callable(exc.code) else exc.code
        message = str(exc.message).lower()
        return code == grpc.StatusCode.DEADLINE_EXCEEDED or "context done" in message or "deadline exceeded" in message
    return False
