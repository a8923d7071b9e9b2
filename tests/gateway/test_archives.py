"""An import's archive read off the event loop (`read_archive_images`); an import staging through it: test_imports."""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from typing import Any

import pytest

from services.common.errors import ImageTooLarge, InvalidArgument
from services.gateway import archives
from tests.gateway.fakes import NotedFile, png, tar_gz, zipped


@pytest.mark.anyio
async def test_an_archive_is_read_in_worker_threads_a_few_images_at_a_time(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(archives, "READ_AHEAD_IMAGES", 3)
    files = {f"d/p{n:02d}.png": png(n) for n in range(10)} | {"d/.hidden.png": png(99), "d/notes.txt": b"x"}
    archive = NotedFile(tar_gz(files))
    reads = 0
    to_thread = asyncio.to_thread

    async def counted(*args: Any) -> Any:  # asyncio.to_thread, its calls counted
        nonlocal reads
        reads += 1
        return await to_thread(*args)

    monkeypatch.setattr(archives.asyncio, "to_thread", counted)
    read = [item async for item in archives.read_archive_images(archive, 1 << 20)]
    assert read == [(f"d/p{n:02d}.png", png(n)) for n in range(10)]
    assert archive.readers and threading.get_ident() not in archive.readers
    assert reads == 5  # 3 + 3 + 3 + 1, then the read that finds no more


@pytest.mark.anyio
async def test_a_too_large_image_comes_as_its_error_and_a_damaged_archive_raises_through_the_thread() -> None:
    read = [item async for item in archives.read_archive_images(NotedFile(tar_gz({"a.png": png(1)})), 10)]
    assert [(path, type(error)) for path, error in read] == [("a.png", ImageTooLarge)]
    cut = tar_gz({f"p{n}.png": png(n, 64) for n in range(8)})[:-400]
    with pytest.raises(InvalidArgument, match="cut short or damaged"):
        [item async for item in archives.read_archive_images(NotedFile(cut), 1 << 20)]


@pytest.mark.anyio
async def test_the_images_read_before_an_error_come_before_it() -> None:
    """A zip whose fourth member is damaged: the three before it come first (as read unthreaded), then the error
    (before, the whole read ahead was lost with it)."""
    files = {f"p{n}.png": png(n) for n in range(6)}
    content = bytearray(zipped(files))
    damaged = content.find(png(3)[20:60])  # the fourth member's stored bytes, changed: its CRC fails
    content[damaged:damaged + 40] = bytes(40)
    got: list[str] = []
    with pytest.raises(InvalidArgument, match="zip archive cannot be read"):
        async for path, _ in archives.read_archive_images(NotedFile(bytes(content)), 1 << 20):
            got.append(path)
    assert got == ["p0.png", "p1.png", "p2.png"]


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
    await asyncio.sleep(0.01)
    task.cancel()  # a second cancel (a deadline, then the gateway stopping) while the read is waited for
    with pytest.raises(asyncio.CancelledError):
        await task
    ended = time.monotonic()
    archive.close()
    await asyncio.sleep(0.1)
    assert archive.last_read <= ended
