"""Fetching query and ingest images by URL, from a local HTTP server."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler
from pathlib import Path

import httpx
import pytest

from services.common.errors import ImageTooLarge, UrlFetchFailed
from services.devstack import free_port
from services.gateway.urlfetch import MAX_REDIRECTS, AddressPolicy, UrlFetcher
from tests.gateway.stack_helpers import file_server, http_server

pytestmark = pytest.mark.anyio
LOOPBACK_ALLOWED = AddressPolicy(allowed_hosts=frozenset({"127.0.0.1"}))


@contextlib.contextmanager
def redirector(target: str) -> Iterator[str]:
    """A loopback server answering every GET with a redirect to target + the path (target "": to the
    path + "/more" on itself, endlessly); yields its base URL."""

    class Redirect(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(302)
            self.send_header("Location", target + self.path if target else self.path + "/more")
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    with http_server(Redirect) as base:
        yield base


async def test_fetch_returns_the_bytes_and_maps_failures(tmp_path: Path) -> None:
    (tmp_path / "small.bin").write_bytes(b"x" * 100)
    (tmp_path / "big.bin").write_bytes(b"x" * 5000)
    async with httpx.AsyncClient() as client:
        fetcher = UrlFetcher(client, max_bytes=1000, timeout_s=5, policy=LOOPBACK_ALLOWED)
        with file_server(tmp_path) as base:
            assert await fetcher.fetch(f"{base}/small.bin") == b"x" * 100
            with pytest.raises(ImageTooLarge):
                await fetcher.fetch(f"{base}/big.bin")
            with pytest.raises(UrlFetchFailed, match="404"):
                await fetcher.fetch(f"{base}/missing.bin")
        with pytest.raises(UrlFetchFailed):
            await fetcher.fetch(f"http://127.0.0.1:{free_port()}/x.jpg")
        for bad in ("file:///etc/passwd", "ftp://x/y", "not a url"):
            with pytest.raises(UrlFetchFailed):
                await fetcher.fetch(bad)


@pytest.mark.parametrize("url", [
    "http://127.0.0.1/x.jpg", "http://localhost:8080/x.jpg", "http://[::1]/x.jpg", "http://10.1.2.3/x.jpg",
    "http://192.168.0.7/x.jpg", "http://169.254.169.254/latest/meta-data/", "http://0.0.0.0/x.jpg",
    "http://[::ffff:127.0.0.1]/x.jpg", "http://2130706433/x.jpg",  # 127.0.0.1 as one number
])
async def test_private_and_local_addresses_are_refused_by_default(url: str) -> None:
    async with httpx.AsyncClient() as client:
        with pytest.raises(UrlFetchFailed, match="private or local address"):
            await UrlFetcher(client, max_bytes=1000, timeout_s=5).fetch(url)


async def test_allowed_hosts_and_allow_private_open_them(tmp_path: Path) -> None:
    (tmp_path / "a.bin").write_bytes(b"abc")
    async with httpx.AsyncClient() as client:
        with file_server(tmp_path) as base:
            by_name = base.replace("127.0.0.1", "localhost")
            allowed = UrlFetcher(client, 1000, 5, AddressPolicy(allowed_hosts=frozenset({"LocalHost"})))
            assert await allowed.fetch(f"{by_name}/a.bin") == b"abc"
            with pytest.raises(UrlFetchFailed, match="private or local address"):
                await allowed.fetch(f"{base}/a.bin")  # 127.0.0.1 is not listed
            assert await UrlFetcher(client, 1000, 5, AddressPolicy(allow_private=True)).fetch(f"{base}/a.bin") == b"abc"


async def test_every_redirect_is_checked_and_followed_a_few_times_at_most(tmp_path: Path) -> None:
    (tmp_path / "a.bin").write_bytes(b"abc")
    async with httpx.AsyncClient() as client:
        with file_server(tmp_path) as files:
            with redirector(files) as hop:
                assert await UrlFetcher(client, 1000, 5, LOOPBACK_ALLOWED).fetch(f"{hop}/a.bin") == b"abc"
            # an allowed host redirecting to one that is not (the same server by its name)
            named = redirector(files.replace("127.0.0.1", "localhost"))
            with named as hop, pytest.raises(UrlFetchFailed, match="private or local address"):
                await UrlFetcher(client, 1000, 5, LOOPBACK_ALLOWED).fetch(f"{hop}/a.bin")
            with redirector("file:///etc") as hop, pytest.raises(UrlFetchFailed, match="not an http"):
                await UrlFetcher(client, 1000, 5, LOOPBACK_ALLOWED).fetch(f"{hop}/passwd")
        # each answer redirects to a longer path on the same server, endlessly
        endless = pytest.raises(UrlFetchFailed, match=f"more than {MAX_REDIRECTS} redirects")
        with redirector("") as hop, endless:
            await UrlFetcher(client, 1000, 5, LOOPBACK_ALLOWED).fetch(f"{hop}/x")
