"""Helpers of the full-stack gateway tests: unique album names, photo variants, a tiny HTTP file server, an
import queue over a Redis database of its own."""

from __future__ import annotations

import functools
import io
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from http.server import BaseHTTPRequestHandler, SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from PIL import Image, ImageDraw
from redis.asyncio import Redis

from services.devstack import Stack
from services.gateway.import_queue import ImportQueue


@asynccontextmanager
async def queue_in_db(stack: Stack, db: int) -> AsyncIterator[ImportQueue]:
    """An import queue over the stack's Redis in database `db`, emptied first: one no gateway of the stack reads,
    so that its import workers never take the test's batches."""
    stack.ensure(("redis",))
    redis = Redis(port=stack.ports.redis, db=db)
    await redis.flushdb()
    try:
        yield ImportQueue(redis)
    finally:
        await redis.aclose()


def unique_album(prefix: str = "t") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"

def wait_for_job(http: Any, job_id: str, timeout_s: float = 120) -> dict[str, Any]:
    """An import or re-embed job (GET /v1/imports/{id}) once it has ended: done, failed or cancelled."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        job: dict[str, Any] = http.get(f"/v1/imports/{job_id}").json()
        if job["status"] in ("done", "failed", "cancelled"):
            return job
        time.sleep(0.2)
    raise AssertionError(f"job {job_id} not finished after {timeout_s}s")


def given_attributes(attributes: dict[str, Any]) -> dict[str, Any]:
    """An image's attributes less the tags the extractor's classifier gave it (services.gateway.tags)."""
    return {k: v for k, v in attributes.items() if k not in ("tags", "tag_scores")}


def cropped_copy(path: Path, keep: float = 0.85, quality: int = 70) -> bytes:
    """The photo cropped to its central part and recompressed as JPEG."""
    with Image.open(path) as image:
        rgb = image.convert("RGB")
    w, h = rgb.size
    dx, dy = int(w * (1 - keep) / 2), int(h * (1 - keep) / 2)
    out = io.BytesIO()
    rgb.crop((dx, dy, w - dx, h - dy)).save(out, format="JPEG", quality=quality)
    return out.getvalue()


# Circular details of 74 px on white, at the photo's own scale, whose keypoints match their photo.
DETAILS = {"astronaut": (260, 100), "motorcycle_left": (400, 250)}
DETAIL_SIDE = 74


def circular_detail(path: Path, centre: tuple[int, int]) -> bytes:
    """The disc of DETAIL_SIDE pixels around `centre`, on white, as a JPEG."""
    x, y = centre
    with Image.open(path) as image:
        half = DETAIL_SIDE // 2
        part = image.convert("RGB").crop((x - half, y - half, x + half, y + half))
    disc = Image.new("L", (DETAIL_SIDE, DETAIL_SIDE), 0)
    ImageDraw.Draw(disc).ellipse((0, 0, DETAIL_SIDE - 1, DETAIL_SIDE - 1), fill=255)
    out = Image.new("RGB", (DETAIL_SIDE, DETAIL_SIDE), "white")
    out.paste(part, (0, 0), disc)
    data = io.BytesIO()
    out.save(data, format="JPEG", quality=90)
    return data.getvalue()


def rotated_copy(path: Path, degrees: int = 90) -> bytes:
    """The photo turned by a multiple of 90 degrees, as PNG (no other change)."""
    with Image.open(path) as image:
        rgb = image.convert("RGB")
    out = io.BytesIO()
    rgb.rotate(degrees, expand=True).save(out, format="PNG")
    return out.getvalue()


def decompression_bomb() -> bytes:
    """A small PNG that decodes to 60 million pixels."""
    out = io.BytesIO()
    Image.new("L", (10_000, 6_000)).save(out, format="PNG", optimize=True)
    return out.getvalue()


class _QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        return None


@contextmanager
def file_server(directory: Path) -> Iterator[str]:
    """Serves the directory over HTTP on a free loopback port; yields its base URL."""
    with http_server(functools.partial(_QuietHandler, directory=str(directory))) as base:
        yield base


@contextmanager
def http_server(handler: Callable[..., BaseHTTPRequestHandler]) -> Iterator[str]:
    """Runs an HTTP server with this request handler on a free loopback port; yields its base URL."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
