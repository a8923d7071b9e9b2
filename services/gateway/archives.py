"""An import's archive read: the image files of a zip or tar archive (gzip, bzip2 or xz compressed), by path.

A folder the CLI or the page imports is sent as a tar. Folders, links, hidden files (`.x`, `__MACOSX/`) and files
of other suffixes are left out (the page leaves them out of what it sends too).
"""

from __future__ import annotations

import asyncio
import lzma
import tarfile
import zipfile
import zlib
from collections.abc import AsyncGenerator, Generator
from pathlib import PurePosixPath
from typing import IO

from services.common.errors import ImageSearchError, ImageTooLarge, InvalidArgument
from services.common.manifest import IMAGE_SUFFIXES

ARCHIVE_KINDS = ".zip, .tar, .tar.gz, .tar.bz2 or .tar.xz"
# What a compressed archive cut short or damaged raises while it is read (gzip: EOFError, zlib.error; xz:
# LZMAError; bz2 and the rest: OSError).
_CUT_SHORT = (EOFError, zlib.error, lzma.LZMAError, OSError)
# How gzip, bzip2 and xz data begin.
_COMPRESSED = (b"\x1f\x8b", b"BZh", b"\xfd7zX")
# An image file of an archive: its path, and its bytes or why it is not taken.
Member = tuple[str, bytes | ImageSearchError]
# What `read_archive_images` reads in a worker thread at a time: images, and their bytes.
READ_AHEAD_IMAGES = 64
READ_AHEAD_BYTES = 16 * 1024 * 1024


async def read_archive_images(archive: IO[bytes], max_bytes: int) -> AsyncGenerator[Member, None]:
    """`archive_images` read in a worker thread, a few images at a time: decompressing a large archive never holds
    the event loop, so the gateway answers searches and its staging heartbeat meanwhile (a tar.gz is decompressed
    whole before its first member: that first read takes the longest). An error after some images of a read comes
    after those images, as it would unthreaded. A consumer that stops early closes it (`contextlib.aclosing`): a
    read under way is waited for, through any cancel, not left reading a file its caller is about to close."""
    members = archive_images(archive, max_bytes)
    failed: list[BaseException] = []  # what stopped the last read, raised once its images are taken

    def read_ahead() -> list[Member]:
        taken: list[Member] = []
        size = 0
        try:
            for path, content in members:
                taken.append((path, content))
                size += len(content) if isinstance(content, bytes) else 0
                if len(taken) >= READ_AHEAD_IMAGES or size >= READ_AHEAD_BYTES:
                    break
        except Exception as exc:
            if not taken:
                raise
            failed.append(exc)
        return taken

    reading: asyncio.Future[list[Member]] | None = None
    try:
        while not failed:
            reading = asyncio.ensure_future(asyncio.to_thread(read_ahead))
            taken = await asyncio.shield(reading)  # a cancel leaves the thread reading: waited for below
            reading = None
            if not taken:
                return
            for item in taken:
                yield item
        raise failed[0]
    finally:
        cancelled = False
        while reading is not None and not reading.done():
            try:
                await asyncio.wait({reading})  # which, unlike gather, a second cancel does not pass on to it
            except asyncio.CancelledError:
                cancelled = True
        if reading is not None and not reading.cancelled():
            reading.exception()  # read, so that it is not logged as never retrieved
        members.close()
        if cancelled:
            raise asyncio.CancelledError


def check_archive(archive: IO[bytes]) -> None:
    """Raises InvalidArgument unless the file opens as a zip or tar archive (a look at its start, and at a zip's
    directory): checked before an import is made of it, so that a wrong file makes no failed import."""
    magic = _magic(archive)
    if _is_zip(magic):
        try:
            zipfile.ZipFile(archive).close()
        except (zipfile.BadZipFile, *_CUT_SHORT) as exc:
            raise InvalidArgument(f"the zip archive cannot be read ({exc})") from None
    else:
        _open_tar(archive, magic).close()
    archive.seek(0)


def archive_images(archive: IO[bytes], max_bytes: int) -> Generator[Member, None, None]:
    """(path, bytes) of every image file in a zip or tar archive (gzip, bz2 or xz compressed), by path
    order; an image over `max_bytes` comes as its error. Other files, folders, links and hidden files
    (`.x`, `__MACOSX/`) are left out."""
    magic = _magic(archive)
    if _is_zip(magic):
        yield from _zip_images(archive, max_bytes)
        return
    tar = _open_tar(archive, magic)
    try:
        with tar:
            members = sorted((m for m in tar.getmembers() if m.isfile() and _is_image_path(m.name)),
                             key=lambda m: m.name)
            for member in members:
                if member.size > max_bytes:
                    yield member.name, ImageTooLarge(f"{member.size} bytes; the limit is {max_bytes}")
                    continue
                handle = tar.extractfile(member)
                yield member.name, handle.read() if handle is not None else b""
    except tarfile.TarError as exc:
        raise InvalidArgument(f"the tar archive cannot be read ({exc})") from None
    except _CUT_SHORT as exc:
        raise InvalidArgument(f"the tar archive is cut short or damaged ({type(exc).__name__}: {exc})") from None


def _magic(archive: IO[bytes]) -> bytes:
    archive.seek(0)
    magic = archive.read(12)
    archive.seek(0)
    return magic


def _is_zip(magic: bytes) -> bool:
    return magic.startswith((b"PK\x03\x04", b"PK\x05\x06"))


# How image files begin: an image sent as the archive is said to be one.
_IMAGES = ((b"\xff\xd8\xff", "JPEG"), (b"\x89PNG", "PNG"), (b"GIF8", "GIF"), (b"II*\x00", "TIFF"), (b"MM\x00*", "TIFF"))


def _open_tar(archive: IO[bytes], magic: bytes) -> tarfile.TarFile:
    try:
        return tarfile.open(fileobj=archive, mode="r:*")
    except (tarfile.TarError, *_CUT_SHORT):  # its message lists each compression tried, over lines
        if magic.startswith(_COMPRESSED):
            raise InvalidArgument("the compressed archive is cut short or damaged") from None
        image = "WEBP" if magic[:4] == b"RIFF" and magic[8:12] == b"WEBP" else \
            "BMP" if magic[:2] == b"BM" and magic[6:10] == bytes(4) else \
            next((kind for start, kind in _IMAGES if magic.startswith(start)), None)
        if image is not None:
            raise InvalidArgument(f"the archive is a {image} image, not a zip or tar file ({ARCHIVE_KINDS}): add "
                                  "images themselves with POST /v1/albums/{album}/images (the page's Add images)") \
                from None
        raise InvalidArgument(f"the archive is neither a zip nor a tar file ({ARCHIVE_KINDS}); its first bytes "
                              f"are {magic[:4]!r}") from None


def _zip_images(archive: IO[bytes], max_bytes: int) -> Generator[Member, None, None]:
    try:
        with zipfile.ZipFile(archive) as bundle:
            members = sorted((m for m in bundle.infolist() if not m.is_dir() and _is_image_path(m.filename)),
                             key=lambda m: m.filename)
            for member in members:
                if member.file_size > max_bytes:
                    yield member.filename, ImageTooLarge(f"{member.file_size} bytes; the limit is {max_bytes}")
                    continue
                with bundle.open(member) as handle:
                    content = handle.read(max_bytes + 1)
                yield member.filename, content if len(content) <= max_bytes else ImageTooLarge(
                    f"more than {max_bytes} bytes")
    except (zipfile.BadZipFile, *_CUT_SHORT) as exc:
        raise InvalidArgument(f"the zip archive cannot be read ({exc})") from None


def _is_image_path(path: str) -> bool:
    parts = PurePosixPath(path).parts
    return bool(parts) and not any(p.startswith(".") or p == "__MACOSX" for p in parts) and \
        PurePosixPath(path).suffix.lower() in IMAGE_SUFFIXES
