"""Fetching an image from a URL given by a caller: bounded in time and size, errors mapped."""

from __future__ import annotations

import asyncio
import logging
from typing import Protocol
from urllib.parse import urlsplit

import httpx

from services.common.errors import ImageTooLarge, UrlFetchFailed

log = logging.getLogger(__name__)


class Fetcher(Protocol):
    async def fetch(self, url: str) -> bytes: ...


class UrlFetcher:
    """GETs http(s) URLs; non-200, unreachable, slow or too large answers raise our errors."""

    def __init__(self, client: httpx.AsyncClient, max_bytes: int, timeout_s: float) -> None:
        self.client = client
        self.max_bytes = max_bytes
        self.timeout_s = timeout_s

    async def fetch(self, url: str) -> bytes:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise UrlFetchFailed(f"not an http(s) URL: {url[:200]!r}")
        try:
            async with asyncio.timeout(self.timeout_s):
                return await self._get(url)
        except TimeoutError as exc:
            raise UrlFetchFailed(f"fetching {url[:200]} took more than {self.timeout_s:.0f}s") from exc
        except httpx.HTTPError as exc:
            raise UrlFetchFailed(f"cannot fetch {url[:200]}: {type(exc).__name__}: {exc}") from exc

    async def _get(self, url: str) -> bytes:
        async with self.client.stream("GET", url, follow_redirects=True) as response:
            if response.status_code != 200:
                raise UrlFetchFailed(f"{url[:200]} answered HTTP {response.status_code}")
            declared = response.headers.get("content-length", "")
            if declared.isdigit() and int(declared) > self.max_bytes:
                raise ImageTooLarge(f"{url[:200]} is {int(declared)} bytes; the limit is {self.max_bytes}")
            chunks: list[bytes] = []
            received = 0
            async for chunk in response.aiter_bytes():
                received += len(chunk)
                if received > self.max_bytes:
                    raise ImageTooLarge(f"{url[:200]} is larger than the limit of {self.max_bytes} bytes")
                chunks.append(chunk)
        return b"".join(chunks)
