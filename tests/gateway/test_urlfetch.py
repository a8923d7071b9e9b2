"""Fetching query and ingest images by URL, from a local HTTP server."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from services.common.errors import ImageTooLarge, UrlFetchFailed
from services.devstack import free_port
from services.gateway.urlfetch import UrlFetcher
from tests.gateway.stack_helpers import file_server

pytestmark = pytest.mark.anyio


async def test_fetch_returns_the_bytes_and_maps_failures(tmp_path: Path) -> None:
    (tmp_path / "small.bin").write_bytes(b"x" * 100)
    (tmp_path / "big.bin").write_bytes(b"x" * 5000)
    async with httpx.AsyncClient() as client:
        fetcher = UrlFetcher(client, max_bytes=1000, timeout_s=5)
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
