"""A manifest cut for an import sent in parts: each part's import gets the rows of its own files.

A client that sends a large folder as several archives, an import each (the web page, as `imagesearch ingest`
does), sends each its part of the manifest: the rows its files take as an import finds them, the URL rows with
the first, the rows naming no file with the last (its import lists them as not found). The cut is the gateway's
so that a client need not match files to rows as an import does (`services.common.manifest.cut_manifest`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from pathlib import PurePosixPath

from services.common.errors import InvalidArgument
from services.common.manifest import MANIFEST_SUFFIXES, MAX_MANIFEST_BYTES, cut_manifest
from services.gateway.deps import Deps

FORMATS = ("csv", "jsonl")
# The most parts, and files in all, one cut takes (a million-image folder in parts of a thousand).
MAX_PARTS = 10_000
MAX_FILES = 1_000_000
# A cut's request: the manifest and its parts' paths (a million of 256 bytes).
MAX_REQUEST_BYTES = MAX_MANIFEST_BYTES + 256 * MAX_FILES


async def cut(deps: Deps, album: str, manifest: str, manifest_format: str, parts: Sequence[Sequence[str]],
              manifest_name: str = "") -> list[str]:
    """The manifest (text; its format said by `manifest_name`'s suffix as an import's manifest file's is, else by
    `manifest_format`, csv or jsonl) cut into one per part, in the manifest's format, the paths of each part's
    files as its archive names them; read by the album's column types as its imports read it, so a bad cell is
    refused here (422), before any part is sent."""
    suffix = name_suffix(manifest_name) if manifest_name else format_suffix(manifest_format)
    if not parts:
        raise InvalidArgument("parts lists the files of each part the folder is sent in: at least one")
    if len(parts) > MAX_PARTS or sum(map(len, parts)) > MAX_FILES:
        raise InvalidArgument(f"parts holds at most {MAX_PARTS} parts and {MAX_FILES} files in all")
    if len(manifest.encode()) > MAX_MANIFEST_BYTES:
        raise InvalidArgument(f"the manifest is over {MAX_MANIFEST_BYTES} bytes")
    collection = await deps.collection(album)
    columns = {c.name: c.type.value for c in collection.schema.columns}
    return await asyncio.to_thread(cut_manifest, manifest, suffix, columns, parts)


def name_suffix(manifest_name: str) -> str:
    """The suffix of a manifest file's name, which says its format as an import reads it (.csv; .jsonl, .ndjson
    or .json), whatever its case; another is refused (400)."""
    suffix = PurePosixPath(manifest_name).suffix.lower()
    if suffix not in MANIFEST_SUFFIXES:
        raise InvalidArgument(f"{manifest_name}: a manifest is a .csv or .jsonl file")
    return suffix


def format_suffix(manifest_format: str) -> str:
    """The file suffix a manifest given as text in this format is read by (".csv", ".jsonl"), whatever its case;
    another format is refused (400), by an import as by a cut."""
    if manifest_format.lower() not in FORMATS:
        raise InvalidArgument(f"manifest_format is one of {', '.join(FORMATS)}")
    return f".{manifest_format.lower()}"
