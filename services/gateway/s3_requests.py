"""Object puts and gets as single signed HTTP requests: the object store's hot path, at a third of the SDK's CPU.

An import writes two objects an image and a copy search reads five; through the minio SDK each request cost the
gateway ~0.6 ms of CPU (its URL and header building, the signing key derived anew, urllib3's pool) and the stack's
S3 server ~1.6. `SignedRequests` sends the same S3 calls (AWS Signature V4 with the payload's SHA-256 signed, so
the store checks every body it is sent, over TLS too) on a keep-alive connection per thread, with the signing key
kept for the day: ~0.25 ms a put here, and ~1.4 ms in the S3 server, whose fewer headers to read and check are
most of its share (bench/blob_puts.py). Buckets, stat, listings and deletes stay with the SDK (`BlobStore`).

A request on a kept connection that the server has closed meanwhile (its idle timeout, a restart) is sent again
on a new one; a connection refused or cut at once (the store restarting) or a 500/502/503/504 answer is tried
again after 0.1 s, then 0.2 s, as the SDK's pool does (`blobstore.default_http_client`). A connection gets 2 s
to open, then `timeout_s` for each step of the exchange: a body goes out in slices of 1 MiB, each with its own
`timeout_s`, so a large object (a staged pack of 32 photos) fails only if the store stops taking it. Failures
leave as the store's errors: a missing object or bucket `ImageNotFound`, anything else `StoreUnavailable`.
"""

from __future__ import annotations

import hashlib
import hmac
import http.client
import re
import socket
import threading
import time
from datetime import UTC, datetime
from urllib.parse import quote

from services.common.errors import ImageNotFound, StoreUnavailable

MISSING_CODES = frozenset({"NoSuchKey", "NoSuchObject", "NoSuchBucket", "ResourceNotFound"})
_EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()
_RETRY_STATUSES = frozenset({500, 502, 503, 504})
CONNECT_TIMEOUT_S = 2.0
_SLICE = 1 << 20
_RETRY_DELAYS_S = (0.1, 0.2)
_CODE = re.compile(rb"<Code>([^<]+)</Code>")
# What a kept connection closed by the server raises on its next use: the request is sent again on a new one.
_CLOSED = (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError, ConnectionAbortedError,
           http.client.CannotSendRequest)
# What a new connection to a store that is not there (yet) raises: tried again after a pause.
_AWAY = (ConnectionRefusedError, ConnectionResetError, ConnectionAbortedError, http.client.RemoteDisconnected,
         socket.gaierror)


class _Connection(http.client.HTTPConnection):
    """A connection with a short timeout to open and the exchange's own after (http.client has one for both)."""

    def __init__(self, host: str, timeout_s: float) -> None:
        super().__init__(host, timeout=timeout_s)
        self.exchange_timeout_s = timeout_s

    def connect(self) -> None:  # also when http.client opens it again after a "Connection: close" answer
        self.timeout = min(CONNECT_TIMEOUT_S, self.exchange_timeout_s)
        super().connect()
        self.sock.settimeout(self.exchange_timeout_s)


class _TlsConnection(_Connection, http.client.HTTPSConnection):
    """The same over TLS (its handshake within the time to open)."""


class SignedRequests:
    """PUT and GET of one bucket's objects, signed with AWS Signature V4, from any thread."""

    def __init__(self, endpoint: str, access_key: str, secret_key: str, bucket: str, *, secure: bool = False,
                 region: str = "", timeout_s: float = 30.0) -> None:
        self.host = endpoint
        # The Host header as the SDK sends it (and a proxy in front of the store may rewrite it): no default port.
        default_port = ":443" if secure else ":80"
        self.host_header = endpoint.removesuffix(default_port)
        self.access_key = access_key
        self.secret_key = secret_key
        self.bucket = bucket
        self.secure = secure
        self.region = region or "us-east-1"
        self.timeout_s = timeout_s
        self._local = threading.local()
        self._signing_key: tuple[str, bytes] = ("", b"")

    def put(self, key: str, content: bytes, content_type: str, metadata: dict[str, str] | None = None) -> None:
        """Writes the object; `metadata` values are printable ASCII (`BlobStore` quotes the name it keeps)."""
        for value in (metadata or {}).values():
            if not (value.isascii() and value.isprintable()):
                raise ValueError("object metadata values are printable ASCII")
        headers = {"Content-Type": content_type, **{f"x-amz-meta-{k}": v for k, v in (metadata or {}).items()}}
        self._request("PUT", key, content, headers)

    def get(self, key: str) -> tuple[bytes, str]:
        """The object's bytes and content type."""
        response, body = self._request("GET", key, b"", {})
        return body, response.getheader("Content-Type") or "application/octet-stream"

    # --- one request ---------------------------------------------------------------------------------
    def _request(self, method: str, key: str, body: bytes,
                 headers: dict[str, str]) -> tuple[http.client.HTTPResponse, bytes]:
        path = f"/{quote(self.bucket, safe='')}/{quote(key, safe='/~')}"
        payload = hashlib.sha256(body).hexdigest() if body else _EMPTY_SHA256
        for delay in (*_RETRY_DELAYS_S, None):
            try:
                response, answer = self._send(method, path, body, self._signed(method, path, payload, headers))
            except _AWAY as exc:
                if delay is None:
                    raise StoreUnavailable(f"object store is unavailable: {type(exc).__name__}") from exc
                time.sleep(delay)
                continue
            except (OSError, http.client.HTTPException) as exc:
                raise StoreUnavailable(f"object store is unavailable: {type(exc).__name__}") from exc
            if response.status in _RETRY_STATUSES and delay is not None:
                time.sleep(delay)
                continue
            if 200 <= response.status < 300:
                return response, answer
            found = _CODE.search(answer)
            code = found.group(1).decode(errors="replace") if found else f"HTTP {response.status}"
            if code in MISSING_CODES or (response.status == 404 and not found):
                raise ImageNotFound(f"no such object: {key}")
            raise StoreUnavailable(f"object store error: {code}")
        raise AssertionError("unreachable")  # the last try returns or raises

    def _send(self, method: str, path: str, body: bytes,
              headers: dict[str, str]) -> tuple[http.client.HTTPResponse, bytes]:
        """Sends on this thread's kept connection; once more on a new one if the server had closed it. A connection
        whose exchange failed otherwise (a timeout: its answer may still come) is never used again."""
        kept = getattr(self._local, "connection", None)
        if kept is not None:
            try:
                return self._exchange(kept, method, path, body, headers)
            except _CLOSED:
                kept.close()
            except BaseException:
                kept.close()
                self._local.connection = None
                raise
        self._local.connection = None
        connection = self._connect()
        self._local.connection = connection
        try:
            return self._exchange(connection, method, path, body, headers)
        except BaseException:
            connection.close()
            self._local.connection = None
            raise

    @staticmethod
    def _exchange(connection: http.client.HTTPConnection, method: str, path: str, body: bytes,
                  headers: dict[str, str]) -> tuple[http.client.HTTPResponse, bytes]:
        view = memoryview(body)
        slices = (view[start:start + _SLICE] for start in range(0, len(body), _SLICE))
        # The length given: http.client then sends the slices as they are (no chunked encoding), each its own send.
        connection.request(method, path, body=slices if body else None,
                           headers={**headers, "Content-Length": str(len(body))} if body else headers)
        response = connection.getresponse()
        return response, response.read()

    def _connect(self) -> http.client.HTTPConnection:
        """A new connection, opened now (a store that is not there raises here)."""
        connection = (_TlsConnection if self.secure else _Connection)(self.host, self.timeout_s)
        connection.connect()
        return connection

    # --- AWS Signature V4 ----------------------------------------------------------------------------
    def _signed(self, method: str, path: str, payload: str, headers: dict[str, str]) -> dict[str, str]:
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
        day = stamp[:8]
        signed = {"host": self.host_header, "x-amz-content-sha256": payload, "x-amz-date": stamp,
                  **{k.lower(): v for k, v in headers.items() if k.lower().startswith("x-amz-")}}
        names = sorted(signed)
        # A canonical header value is trimmed, its runs of spaces made one (as the store reads it back)
        values = (" ".join(signed[n].split()) for n in names)
        canonical = "\n".join([method, path, "", *(f"{n}:{v}" for n, v in zip(names, values, strict=True)), "",
                               ";".join(names), payload])
        scope = f"{day}/{self.region}/s3/aws4_request"
        to_sign = f"AWS4-HMAC-SHA256\n{stamp}\n{scope}\n{hashlib.sha256(canonical.encode()).hexdigest()}"
        signature = hmac.new(self._key(day), to_sign.encode(), hashlib.sha256).hexdigest()
        unsigned = {k: v for k, v in headers.items() if not k.lower().startswith("x-amz-")}
        return {**unsigned, **signed, "Authorization": f"AWS4-HMAC-SHA256 Credential={self.access_key}/{scope}, "
                                                      f"SignedHeaders={';'.join(names)}, Signature={signature}"}

    def _key(self, day: str) -> bytes:
        """The signing key of the day (four HMACs), made once a day rather than once a request."""
        kept_day, key = self._signing_key
        if kept_day != day:
            key = ("AWS4" + self.secret_key).encode()
            for part in (day, self.region, "s3", "aws4_request"):
                key = hmac.new(key, part.encode(), hashlib.sha256).digest()
            self._signing_key = (day, key)
        return key
