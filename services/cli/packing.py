"""The image files an ingest sends: found under folders, packed into one tar."""

from __future__ import annotations

import tarfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import IO

from services.common.manifest import IMAGE_SUFFIXES


def iter_image_files(paths: Sequence[str]) -> Iterator[Path]:
    """Files named directly, and image files found under folders (sorted, recursively)."""
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            yield from sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
        else:
            yield path


ARCHIVE_SUFFIXES = (".zip", ".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tar.xz")


def image_entries(paths: Sequence[Path]) -> list[tuple[Path, str]]:
    """(file, the name it is sent as) of the image files under the folders and of the files given: its path under
    its folder (a file given alone: its name), which is what a manifest's `file` column names."""
    entries: list[tuple[Path, str]] = []
    for path in paths:
        root = path if path.is_dir() else path.parent
        entries.extend((file, file.relative_to(root).as_posix()) for file in iter_image_files([str(path)]))
    return entries


def pack_entries(entries: Sequence[tuple[Path, str]], out: IO[bytes]) -> list[str]:
    """Writes a tar (uncompressed: images are) of the files under their names; returns those that could not be
    read (what, and why)."""
    unreadable: list[str] = []
    with tarfile.open(fileobj=out, mode="w|") as tar:
        for file, name in entries:
            try:
                tar.add(str(file), arcname=name, recursive=False)
            except OSError as exc:
                unreadable.append(f"{file}: {exc}")
    return unreadable


def pack_images(paths: Sequence[Path], out: IO[bytes]) -> tuple[int, list[str]]:
    """Writes a tar of the image files under the folders and of the files given (`image_entries`). Returns (how
    many, the files that could not be read)."""
    entries = image_entries(paths)
    unreadable = pack_entries(entries, out)
    return len(entries) - len(unreadable), unreadable
