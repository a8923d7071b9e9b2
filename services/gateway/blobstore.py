"""Image bytes and thumbnails in an S3 bucket (MinIO, SeaweedFS), content-addressed per album.

    albums/<album>/images/<sha256>                 the original bytes, content type + name in metadata
    albums/<album>/thumbs/<size>/<sha256>.jpg      JPEG thumbnails, made on first request

Puts and gets, the hot path, go as single signed requests (`s3_requests.SignedRequests`), the rest through the
minio SDK. Their errors never leave this module: a missing object is `ImageNotFound`, anything else
`StoreUnavailable`. Both block, so every call runs in a worker thread.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar
from urllib.parse import quote, unquote

import urllib3
from minio import Minio
from minio.deleteobjects import DeleteObject
from minio.error import MinioException, S3Error

from services.common.errors import ImageNotFound, StoreUnavailable
from services.gateway.s3_requests import CONNECT_TIMEOUT_S, MISSING_CODES, SignedRequests

log = logging.getLogger(__name__)

T = TypeVar("T")

# How many threads one `put_all` writes its objects on, each one after the other (by default: GatewaySettings.
# s3_put_threads). A thread per object (each put handed to the default executor and its answer back to the event
# loop) costs the gateway ~25 % more CPU per put for no more speed: the stack's object store answers a batch's
# puts as fast either way. bench/blob_puts.py.
PUT_THREADS = 4

NAME_META = "original-name"


def image_key(album: str, content_hash: str) -> str:
    return f"albums/{album}/images/{content_hash}"


def thumbnail_key(album: str, size: int, content_hash: str) -> str:
    return f"albums/{album}/thumbs/{size}/{content_hash}.jpg"


def features_key(album: str, content_hash: str) -> str:
    """The image's local features (services.common.local_features), for verifying copies."""
    return f"albums/{album}/features/{content_hash}"


def staging_key(job_id: str, pack: int) -> str:
    """An import's copy of the uploaded images of one of its batches (a pack: their bytes one after the
    other), kept until the import has added them."""
    return f"staging/{job_id}/{pack}"


def staging_prefix(job_id: str) -> str:
    return f"staging/{job_id}/"


def album_prefix(album: str) -> str:
    return f"albums/{album}/"


@dataclass(frozen=True)
class BlobInfo:
    """What the store knows of one object besides its bytes."""

    key: str
    size: int
    content_type: str
    name: str


@dataclass(frozen=True)
class Blob:
    content: bytes
    content_type: str


@dataclass(frozen=True)
class NewBlob:
    """An object to write: its key, bytes, content type and the name kept in its metadata (if any)."""

    key: str
    content: bytes
    content_type: str
    name: str = ""


def _meta(headers: Any, key: str) -> str:
    """Reads one user-metadata entry whatever the case of its `X-Amz-Meta-` header."""
    wanted = f"x-amz-meta-{key}".lower()
    for name, value in (headers or {}).items():
        if str(name).lower() in (wanted, key.lower()):
            return unquote(str(value))
    return ""


def default_http_client(timeout_s: float = 10.0) -> urllib3.PoolManager:
    """A pool that fails fast: minio's default retries for minutes when the store is down."""
    return urllib3.PoolManager(
        timeout=urllib3.Timeout(connect=min(CONNECT_TIMEOUT_S, timeout_s), read=timeout_s),
        maxsize=16,
        retries=urllib3.Retry(total=2, connect=1, backoff_factor=0.1, status_forcelist=(500, 502, 503, 504)),
    )


class Blobs(Protocol):
    """What the use cases need of an object store."""

    async def put(self, key: str, content: bytes, content_type: str, name: str = "") -> None: ...

    async def put_all(self, blobs: Sequence[NewBlob]) -> None: ...

    async def get(self, key: str) -> Blob: ...

    async def stat(self, key: str) -> BlobInfo: ...

    async def delete(self, *keys: str) -> None: ...

    async def delete_prefix(self, prefix: str) -> int: ...


class BlobStore:
    """Put, get, stat and delete objects of one bucket; created on `ensure_bucket`."""

    def __init__(self, client: Minio, requests: SignedRequests, bucket: str, put_threads: int = PUT_THREADS) -> None:
        self.client = client
        self.requests = requests
        self.bucket = bucket
        self.put_threads = put_threads
        self._bucket_ready = False

    @classmethod
    def connect(
        cls, endpoint: str, access_key: str, secret_key: str, bucket: str, *, secure: bool = False, region: str = "",
        timeout_s: float = 30.0, put_threads: int = PUT_THREADS,
    ) -> BlobStore:
        client = Minio(
            endpoint, access_key=access_key, secret_key=secret_key, secure=secure,
            region=region or None, http_client=default_http_client(timeout_s),
        )
        requests = SignedRequests(endpoint, access_key, secret_key, bucket, secure=secure, region=region,
                                  timeout_s=timeout_s)
        return cls(client, requests, bucket, put_threads)

    async def _run(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        try:
            return await asyncio.to_thread(fn, *args, **kwargs)
        except S3Error as exc:
            if exc.code in MISSING_CODES:
                raise ImageNotFound(f"no such object: {exc.object_name or exc.resource}") from exc
            raise StoreUnavailable(f"object store error: {exc.code}") from exc
        except (MinioException, urllib3.exceptions.HTTPError, OSError, ValueError) as exc:
            raise StoreUnavailable(f"object store is unavailable: {type(exc).__name__}") from exc

    async def ensure_bucket(self) -> None:
        """Creates the bucket if it is missing; later calls are free once it exists."""
        if self._bucket_ready:
            return
        if not await self._run(self.client.bucket_exists, self.bucket):
            try:
                await self._run(self.client.make_bucket, self.bucket)
            except StoreUnavailable:
                # Another replica may have created it in between.
                if not await self._run(self.client.bucket_exists, self.bucket):
                    raise
            log.info("created bucket %s", self.bucket)
        self._bucket_ready = True

    async def ping(self) -> None:
        """Raises StoreUnavailable unless the store answers."""
        self._bucket_ready = False
        await self.ensure_bucket()

    async def put(self, key: str, content: bytes, content_type: str, name: str = "") -> None:
        await self.ensure_bucket()
        await self._run(self._put_sync, NewBlob(key, content, content_type, name))

    def _put_sync(self, blob: NewBlob) -> None:
        self.requests.put(blob.key, blob.content, blob.content_type,
                          {NAME_META: quote(blob.name, safe="")} if blob.name else None)

    async def put_all(self, blobs: Sequence[NewBlob]) -> None:
        """Writes the objects, up to `put_threads` at once; the first failure stops the rest and is raised once
        the puts under way have ended (what was written stays: the caller deletes it, as after failed puts).
        Cancelled, it stops taking puts and returns at once; a put under way then ends by itself, as a
        cancelled `asyncio.to_thread` call's does."""
        if not blobs:
            return
        await self.ensure_bucket()
        pending = iter(blobs)
        lock = threading.Lock()
        failed = threading.Event()

        def put_pending() -> None:
            while not failed.is_set():
                with lock:
                    blob = next(pending, None)
                if blob is None:
                    return
                try:
                    self._put_sync(blob)
                except BaseException:
                    failed.set()
                    raise

        try:
            outcomes = await asyncio.gather(*(self._run(put_pending) for _ in range(min(self.put_threads, len(blobs)))),
                                            return_exceptions=True)
        finally:
            failed.set()  # a caller cancelled meanwhile: its threads take no more
        error = next((o for o in outcomes if isinstance(o, BaseException)), None)
        if error is not None:
            raise error

    async def get(self, key: str) -> Blob:
        return Blob(*await self._run(self.requests.get, key))

    async def stat(self, key: str) -> BlobInfo:
        obj = await self._run(self.client.stat_object, self.bucket, key)
        return BlobInfo(
            key=key,
            size=int(obj.size or 0),
            content_type=obj.content_type or "application/octet-stream",
            name=_meta(obj.metadata, NAME_META),
        )

    async def exists(self, key: str) -> bool:
        try:
            await self.stat(key)
        except ImageNotFound:
            return False
        return True

    async def delete(self, *keys: str) -> None:
        """Deletes the keys; a key that is already gone is not an error."""
        if keys:
            await self._run(self._delete_sync, list(keys))

    def _delete_sync(self, keys: list[str]) -> None:
        errors = list(self.client.remove_objects(self.bucket, [DeleteObject(k) for k in keys]))
        failed = [e for e in errors if e.code not in MISSING_CODES]
        if failed:
            raise StoreUnavailable(f"could not delete {len(failed)} object(s): {failed[0].code}")

    async def list_keys(self, prefix: str) -> list[str]:
        return await self._run(self._list_sync, prefix)

    def _list_sync(self, prefix: str) -> list[str]:
        return [o.object_name for o in self.client.list_objects(self.bucket, prefix=prefix, recursive=True)
                if o.object_name]

    async def delete_prefix(self, prefix: str) -> int:
        """Deletes every object under the prefix; returns how many there were."""
        keys = await self.list_keys(prefix)
        for start in range(0, len(keys), 1000):
            await self.delete(*keys[start:start + 1000])
        return len(keys)
