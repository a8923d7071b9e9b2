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


def pack_images(paths: Sequence[Path], out: IO[bytes]) -> tuple[int, list[str]]:
    """Writes a tar (uncompressed: images are) of the image files under the folders and of the files
    given; members are named by their path under their folder (a file given alone: its name), which is
    what a manifest's `file` column names. Returns (how many, the files that could not be read)."""
    unreadable: list[str] = []
    count = 0
    with tarfile.open(fileobj=out, mode="w|") as tar:
        for path in paths:
            root = path if path.is_dir() else path.parent
            for file in iter_image_files([str(path)]):
                try:
                    tar.add(str(file), arcname=file.relative_to(root).as_posix(), recursive=False)
                    count += 1
                except OSError as exc:
                    unreadable.append(f"{file}: {exc}")
    return count, unreadable
