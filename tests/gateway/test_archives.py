"""An import's archive read off the event loop (`read_archive_images`); an import staging through it: test_imports."""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time

import pytest

from services.common.errors import ImageTooLarge, InvalidArgument
from services.gateway import archives
from tests.gateway.fakes import NotedFile, png, tar_gz


@pytest.mark.anyio
async def test_an_archive_is_read_in_worker_threads_a_few_images_at_a_time(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(archives, "READ_AHEAD_IMAGES", 3)
    files = {f"d/p{n:02d}.png": png(n) for n in range(10)} | {"d/.hidden.png": png(99), "d/notes.txt": b"x"}
    archive = NotedFile(tar_gz(files))
    read = [item async for item in archives.read_archive_images(archive, 1 << 20)]
    assert read == [(f"d/p{n:02d}.png", png(n)) for n in range(10)]
    assert archive.readers and threading.get_ident() not in archive.readers


@pytest.mark.anyio
async def test_a_too_large_image_comes_as_its_error_and_a_damaged_archive_raises_through_the_thread() -> None:
    read = [item async for item in archives.read_archive_images(NotedFile(tar_gz({"a.png": png(1)})), 10)]
    assert [(path, type(error)) for path, error in read] == [("a.png", ImageTooLarge)]
    cut = tar_gz({f"p{n}.png": png(n, 64) for n in range(8)})[:-400]
    with pytest.raises(InvalidArgument, match="cut short or damaged"):
        [item async for item in archives.read_archive_images(NotedFile(cut), 1 << 20)]


@pytest.mark.anyio
async def test_a_reading_stopped_by_a_cancel_is_waited_for_before_the_archive_is_let_go() -> None:
    """The consumer is cancelled while a worker thread reads (slowly): the reading is waited for and the archive
    closed before the cancel lands, so no thread reads a file its caller then closes."""
    archive = NotedFile(tar_gz({f"p{n:02d}.png": png(n) for n in range(40)}), read_s=0.02)

    async def consume() -> None:
        async with contextlib.aclosing(archives.read_archive_images(archive, 1 << 20)) as read:
            async for _ in read:
                pass

    task = asyncio.create_task(consume())
    while not archive.readers:
        await asyncio.sleep(0.005)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    ended = time.monotonic()
    archive.close()
    await asyncio.sleep(0.1)
    assert archive.last_read <= ended
