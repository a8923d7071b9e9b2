"""Fetching an image from a URL given by a caller: bounded in time and size, errors mapped, and only
from public addresses unless allowed.

A gateway that fetches any URL a caller names can be made to read from the network it runs in
(server-side request forgery): Redis, Milvus, MinIO, a cloud metadata endpoint at 169.254.169.254.
So by default a URL's host (and every redirect's) must resolve to public addresses only; hosts in
`allowed_hosts` (an internal image server) and, with `allow_private`, any host are exempt. The
check resolves the name before the request and httpx resolves it again to connect, so a DNS server
answering differently the second time (rebinding) is not stopped: a deployment that must rule that
out gives the gateway an egress proxy or firewall as well.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import socket
from dataclasses import dataclass, field
from typing import Protocol
from urllib.parse import unquote, urljoin, urlsplit

import httpx

from services.common.errors import ImageTooLarge, UrlFetchFailed

log = logging.getLogger(__name__)


class Fetcher(Protocol):
    async def fetch(self, url: str) -> bytes: ...


@dataclass(frozen=True)
class AddressPolicy:
    """Which hosts a caller's URL may name: public addresses, the `allowed_hosts`, or with
    `allow_private` any."""

    allow_private: bool = False
    allowed_hosts: frozenset[str] = field(default_factory=frozenset)

    def __post_init__(self) -> None:
        # Host names compare case-insensitively (a URL's is lower-cased before the check).
        object.__setattr__(self, "allowed_hosts", frozenset(h.lower() for h in self.allowed_hosts))

    async def check(self, host: str, port: int) -> None:
        """Raises UrlFetchFailed unless the host may be fetched from."""
        if self.allow_private or host.lower() in self.allowed_hosts:
            return
        try:
            found = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except OSError as exc:
            raise UrlFetchFailed(f"cannot resolve {host[:100]}: {exc}") from exc
        for *_, address in found:
            ip = ipaddress.ip_address(str(address[0]).split("%")[0])
            if not ip.is_global:
                raise UrlFetchFailed(
                    f"{host[:100]} is a private or local address ({ip}): not fetched; a deployment that "
                    "means it lists the host in GATEWAY_URL_ALLOWED_HOSTS or sets GATEWAY_URL_ALLOW_PRIVATE=true")


MAX_REDIRECTS = 5


class UrlFetcher:
    """GETs http(s) URLs; non-200, unreachable, slow or too large answers, and hosts the policy does
    not allow (redirects included), raise our errors."""

    def __init__(self, client: httpx.AsyncClient, max_bytes: int, timeout_s: float,
                 policy: AddressPolicy | None = None) -> None:
        self.client = client
        self.max_bytes = max_bytes
        self.timeout_s = timeout_s
        self.policy = policy or AddressPolicy()

    async def fetch(self, url: str) -> bytes:
        try:
            async with asyncio.timeout(self.timeout_s):
                return await self._follow(url)
        except TimeoutError as exc:
            raise UrlFetchFailed(f"fetching {url[:200]} took more than {self.timeout_s:.0f}s") from exc
        except httpx.HTTPError as exc:
            raise UrlFetchFailed(f"cannot fetch {url[:200]}: {type(exc).__name__}: {exc}") from exc

    async def _follow(self, url: str) -> bytes:
        """GETs the URL, following up to MAX_REDIRECTS redirects, each target checked first."""
        for _ in range(MAX_REDIRECTS + 1):
            await self._check(url)
            location = await self._get(url)
            if isinstance(location, bytes):
                return location
            url = location
        raise UrlFetchFailed(f"{url[:200]}: more than {MAX_REDIRECTS} redirects")

    async def _check(self, url: str) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise UrlFetchFailed(f"not an http(s) URL: {url[:200]!r}")
        try:
            port = parts.port or (443 if parts.scheme == "https" else 80)
        except ValueError as exc:
            raise UrlFetchFailed(f"bad port in {url[:200]!r}") from exc
        await self.policy.check(parts.hostname, port)

    async def _get(self, url: str) -> bytes | str:
        """The body, or the URL a redirect points to."""
        async with self.client.stream("GET", url, follow_redirects=False) as response:
            if response.is_redirect and "location" in response.headers:
                return urljoin(url, response.headers["location"])
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


def name_from_url(url: str) -> str:
    """The last segment of the URL's path, else the URL itself."""
    segment = unquote(urlsplit(url).path.rsplit("/", 1)[-1])
    return segment or url
