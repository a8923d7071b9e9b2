"""BlobStore against a real S3 server (SeaweedFS), and against none."""

from __future__ import annotations

import asyncio
import contextlib
import http.server
import re
import socket
import threading
import time
import uuid
from typing import ClassVar

import pytest
import urllib3
from pydantic import ValidationError

from services.common.errors import ImageNotFound, StoreUnavailable
from services.devstack import S3_ACCESS_KEY, S3_SECRET_KEY, Stack, free_port
from services.gateway.blobstore import Blobs, BlobStore, NewBlob, image_key, thumbnail_key
from services.gateway.s3_requests import SignedRequests
from services.gateway.settings import GatewaySettings
from tests.gateway.fakes import FakeBlobs

pytestmark = pytest.mark.anyio


@pytest.fixture()
def store(servers: Stack) -> BlobStore:
    bucket = f"test-{uuid.uuid4().hex[:10]}"
    return BlobStore.connect(f"127.0.0.1:{servers.ports.s3}", S3_ACCESS_KEY, S3_SECRET_KEY, bucket)


def test_keys_are_content_addressed_per_album() -> None:
    assert image_key("a", "ff" * 32) == f"albums/a/images/{'ff' * 32}"
    assert thumbnail_key("a", 256, "ab") == "albums/a/thumbs/256/ab.jpg"


async def test_put_get_stat_keep_bytes_type_and_name(store: BlobStore) -> None:
    await store.ensure_bucket()
    await store.put("albums/a/images/x", b"bytes", "image/png", name="Café photo.png")
    blob = await store.get("albums/a/images/x")
    assert (blob.content, blob.content_type) == (b"bytes", "image/png")
    info = await store.stat("albums/a/images/x")
    assert (info.size, info.content_type, info.name) == (5, "image/png", "Café photo.png")


@pytest.mark.parametrize("kind", ["s3", "fake"])
async def test_put_all_writes_every_object_with_its_type_and_name(store: BlobStore, kind: str) -> None:
    blobs: Blobs = store if kind == "s3" else FakeBlobs()  # the unit tests' fake behaves as the real store
    new = [NewBlob(f"albums/a/images/{i}", f"bytes {i}".encode(), "image/png" if i % 2 else "image/jpeg",
                   f"photo {i}.jpg" if i % 3 else "") for i in range(11)]
    await blobs.put_all(new)
    await blobs.put_all([])
    for blob in new:
        info = await blobs.stat(blob.key)
        assert ((await blobs.get(blob.key)).content, info.content_type, info.name) == \
            (blob.content, blob.content_type, blob.name)


async def test_put_all_stops_at_a_failed_put_and_raises_it_as_store_unavailable(store: BlobStore) -> None:
    class FailingThird(BlobStore):
        def _put_sync(self, blob: NewBlob) -> None:
            if blob.key.endswith("/3"):
                raise urllib3.exceptions.ProtocolError("connection reset")
            super()._put_sync(blob)

    new = [NewBlob(f"albums/a/images/{i}", b"x", "image/jpeg") for i in range(40)]
    with pytest.raises(StoreUnavailable):
        await FailingThird(store.client, store.requests, store.bucket).put_all(new)
    written = await store.list_keys("albums/a/")
    assert "albums/a/images/3" not in written and len(written) < len(new)  # the others stopped taking puts


async def test_a_missing_object_is_image_not_found(store: BlobStore) -> None:
    await store.ensure_bucket()
    with pytest.raises(ImageNotFound):
        await store.get("albums/a/images/missing")
    with pytest.raises(ImageNotFound):
        await store.stat("albums/a/images/missing")
    await store.delete("albums/a/images/missing")


async def test_delete_prefix_removes_only_that_album(store: BlobStore) -> None:
    for key in ("albums/a/images/1", "albums/a/thumbs/64/1.jpg", "albums/ab/images/2"):
        await store.put(key, b"x", "image/jpeg")
    assert await store.delete_prefix("albums/a/") == 2
    assert await store.list_keys("albums/") == ["albums/ab/images/2"]


async def test_an_unreachable_store_is_store_unavailable() -> None:
    store = BlobStore.connect(f"127.0.0.1:{free_port()}", "k", "s", "bucket", timeout_s=1)
    with pytest.raises(StoreUnavailable):
        await store.ensure_bucket()
    with pytest.raises(StoreUnavailable):
        await store.get("albums/a/images/x")


@pytest.mark.parametrize("value", ["0", "17", "many"])
def test_puts_at_once_outside_1_to_16_are_refused_by_name(value: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GATEWAY_S3_PUT_THREADS", value)
    with pytest.raises(ValidationError, match="s3_put_threads"):
        GatewaySettings()


async def test_put_all_keeps_at_most_its_threads_puts_under_way(store: BlobStore) -> None:
    running, most, lock = [0], [0], threading.Lock()

    class Counting(BlobStore):
        def _put_sync(self, blob: NewBlob) -> None:
            with lock:
                running[0] += 1
                most[0] = max(most[0], running[0])
            time.sleep(0.01)
            super()._put_sync(blob)
            with lock:
                running[0] -= 1

    await Counting(store.client, store.requests, store.bucket, put_threads=2).put_all(
        [NewBlob(f"albums/a/images/{i}", b"x", "image/jpeg") for i in range(12)])
    assert most[0] == 2 and len(await store.list_keys("albums/a/")) == 12


@pytest.mark.parametrize("key", ["albums/a b/images/x+y=z", "staging/job~1/0", "albums/caf\u00e9/images/%41?#&"])
async def test_keys_that_need_escaping_are_written_and_read_as_given(store: BlobStore, key: str) -> None:
    await store.put(key, b"bytes", "image/jpeg", name="n")
    assert (await store.get(key)).content == b"bytes"
    assert await store.list_keys("") == [key]
    assert (await store.stat(key)).name == "n"


async def test_a_wrong_secret_is_refused_as_store_unavailable(servers: Stack) -> None:
    bucket = f"test-{uuid.uuid4().hex[:10]}"
    right = BlobStore.connect(f"127.0.0.1:{servers.ports.s3}", S3_ACCESS_KEY, S3_SECRET_KEY, bucket)
    await right.put("albums/a/images/x", b"bytes", "image/jpeg")
    wrong = BlobStore.connect(f"127.0.0.1:{servers.ports.s3}", S3_ACCESS_KEY, "not-the-secret", right.bucket)
    with pytest.raises(StoreUnavailable, match="SignatureDoesNotMatch"):
        await wrong.put("albums/a/images/y", b"bytes", "image/jpeg")
    with pytest.raises(StoreUnavailable, match="SignatureDoesNotMatch"):
        await wrong.get("albums/a/images/x")
    assert await right.list_keys("albums/") == ["albums/a/images/x"]


class _Relay:
    """A TCP relay in front of the S3 server that can close every connection it carries, as a server does at
    its idle timeout or a restart."""

    def __init__(self, target: int) -> None:
        self.target = target
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.open: list[socket.socket] = []
        self.accepted = 0
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            self.accepted += 1
            upstream = socket.create_connection(("127.0.0.1", self.target))
            self.open += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        for s in (src, dst):
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)

    def drop_all(self) -> None:
        for s in self.open:
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
        self.open.clear()
        time.sleep(0.1)

    def close(self) -> None:
        self.drop_all()
        self.listener.close()


def test_a_kept_connection_the_server_closed_is_replaced_without_an_error(servers: Stack) -> None:
    relay = _Relay(servers.ports.s3)
    try:
        requests = SignedRequests(f"127.0.0.1:{relay.port}", S3_ACCESS_KEY, S3_SECRET_KEY, "test-relayed")
        asyncio.run(BlobStore.connect(f"127.0.0.1:{servers.ports.s3}", S3_ACCESS_KEY, S3_SECRET_KEY,
                                      "test-relayed").ensure_bucket())
        requests.put("k/1", b"one", "text/plain")
        assert requests.get("k/1") == (b"one", "text/plain") and relay.accepted == 1  # one kept connection
        relay.drop_all()
        requests.put("k/2", b"two", "text/plain")
        relay.drop_all()
        assert requests.get("k/2") == (b"two", "text/plain") and relay.accepted == 3
    finally:
        relay.close()


class _Flaky(http.server.BaseHTTPRequestHandler):
    """Answers 503 to the first `failures` requests, then 200 with the request's signature scheme as its body."""

    failures = 2
    seen: ClassVar[list[str]] = []

    def do_GET(self) -> None:
        type(self).seen.append(self.headers.get("Authorization", "").split(" ")[0])
        status = 503 if len(self.seen) <= self.failures else 200
        body = b"<Error><Code>SlowDown</Code></Error>" if status == 503 else b"answered"
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.mark.parametrize("failures, answered", [(2, True), (3, False)])
def test_a_busy_store_is_asked_again_twice(failures: int, answered: bool) -> None:
    handler = type("Flaky", (_Flaky,), {"failures": failures, "seen": []})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        requests = SignedRequests(f"127.0.0.1:{server.server_address[1]}", "k", "s", "bucket")
        if answered:
            assert requests.get("x")[0] == b"answered"
        else:
            with pytest.raises(StoreUnavailable, match="SlowDown"):
                requests.get("x")
        assert handler.seen == ["AWS4-HMAC-SHA256"] * 3
    finally:
        server.shutdown()


class _QuietServer(http.server.ThreadingHTTPServer):
    def handle_error(self, request: object, client_address: object) -> None:
        pass  # a client that gave up on an answer: expected here


class _StallsSecond(http.server.BaseHTTPRequestHandler):
    """Answers on a kept connection; stalls halfway through its second answer's body."""

    protocol_version = "HTTP/1.1"  # keep-alive, as an S3 server's
    answered = 0

    def do_GET(self) -> None:
        type(self).answered += 1
        body = f"answer-{self.answered}".encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body[:5])
        self.wfile.flush()
        if self.answered == 2:
            time.sleep(0.6)
        self.wfile.write(body[5:])

    def log_message(self, *args: object) -> None:
        pass


def test_a_request_that_timed_out_leaves_nothing_for_the_next_one() -> None:
    """The second request times out on the connection the first one left open; the rest of its answer comes
    later, and must not be read as the third request's."""
    handler = type("StallsSecond", (_StallsSecond,), {"answered": 0})
    server = _QuietServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        requests = SignedRequests(f"127.0.0.1:{server.server_address[1]}", "k", "s", "bucket", timeout_s=0.3)
        assert requests.get("first")[0] == b"answer-1"
        with pytest.raises(StoreUnavailable):
            requests.get("second")
        time.sleep(0.5)  # the rest of the second answer has come meanwhile
        assert requests.get("third")[0] == b"answer-3"
    finally:
        server.shutdown()


def _slow_reader(rate: int, got: list[int]) -> socket.socket:
    """A server that reads one request's body at `rate` bytes a second (a store busy or far away), then answers."""
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 18)  # no room to take the body in for it
    listener.bind(("127.0.0.1", 0))
    listener.listen()

    def serve() -> None:
        connection, _ = listener.accept()
        head = b""
        while b"\r\n\r\n" not in head:
            head += connection.recv(4096)
        head, _, body = head.partition(b"\r\n\r\n")
        length = int(re.search(rb"(?i)content-length: *(\d+)", head).group(1))  # type: ignore[union-attr]
        received = len(body)
        while received < length:
            received += len(connection.recv(rate // 8))
            time.sleep(1 / 8)
        got.append(received)
        connection.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
        connection.close()

    threading.Thread(target=serve, daemon=True).start()
    return listener


def test_a_large_object_goes_through_a_slow_store_each_slice_in_its_own_time() -> None:
    """24 MiB to a store taking 8 MiB a second, with a timeout of 1.5 s: the whole body takes ~3 s, each 1 MiB slice
    an eighth of one (one send of the whole timed out, as the timeout covers one call)."""
    got: list[int] = []
    listener = _slow_reader(8 << 20, got)
    try:
        requests = SignedRequests(f"127.0.0.1:{listener.getsockname()[1]}", "k", "s", "bucket", timeout_s=1.5)
        requests.put("big", bytes(24 << 20), "application/octet-stream")
        assert got == [24 << 20]
    finally:
        listener.close()


async def test_metadata_is_signed_as_the_store_reads_it(store: BlobStore) -> None:
    await store.ensure_bucket()
    store.requests.put("albums/a/images/x", b"x", "image/png", {"note": "  two  spaces  "})
    assert (await store.get("albums/a/images/x")).content == b"x"
    with pytest.raises(ValueError, match="printable ASCII"):
        store.requests.put("albums/a/images/y", b"y", "image/png", {"note": "caf\u00e9"})


def test_the_host_is_signed_without_its_default_port() -> None:
    assert SignedRequests("minio:80", "k", "s", "b").host_header == "minio"
    assert SignedRequests("minio:443", "k", "s", "b", secure=True).host_header == "minio"
    assert SignedRequests("minio:9000", "k", "s", "b").host_header == "minio:9000"


def test_a_store_that_does_not_speak_tls_is_unavailable_to_a_secure_client(servers: Stack) -> None:
    requests = SignedRequests(f"127.0.0.1:{servers.ports.s3}", S3_ACCESS_KEY, S3_SECRET_KEY, "bucket", secure=True)
    with pytest.raises(StoreUnavailable, match="SSLError"):
        requests.get("x")
