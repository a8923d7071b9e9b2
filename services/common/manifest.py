"""Attribute manifests for imports: a CSV or JSONL row per image file, typed by the album's columns.

    file,price,colour,sizes,in_stock,listed_at          {"file": "a.jpg", "price": 39.5, "sizes": ["41", "42"]}
    a.jpg,39.5,red,41|42,true,2024-05-01                {"file": "b.jpg", "colour": "blue"}

A row names its image by `file` (or `path`, `url` or `name`): the file's name, or its path relative to
the folder or archive imported, or the URL to fetch it from. CSV cells are text, so they are read by the
album's declared column types (int, float, bool as true/false/1/0/yes/no, timestamp as ISO 8601,
string_list split on `|`); an empty cell is null; an undeclared column stays text. JSONL values are JSON
already. The gateway checks every value again.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from services.common.errors import InvalidAttributes

FILE_KEYS = ("file", "path", "url", "name")
LIST_SEPARATOR = "|"
_TRUE, _FALSE = {"true", "t", "1", "yes", "y"}, {"false", "f", "0", "no", "n"}


class ManifestError(InvalidAttributes):
    """A manifest that cannot be read (422); the message names the line."""


def read_manifest(path: Path, columns: Mapping[str, str]) -> dict[str, dict[str, Any]]:
    """Attributes by file key (name or relative path) from a .csv or .jsonl manifest file; `columns`
    maps the album's declared columns to their types."""
    try:
        return parse_manifest(path.read_text(encoding="utf-8-sig"), path.suffix, columns)
    except ManifestError as exc:
        raise ManifestError(f"{path}: {exc}") from None


def parse_manifest(text: str, suffix: str, columns: Mapping[str, str]) -> dict[str, dict[str, Any]]:
    """Attributes by file key (a file's name or relative path, or a URL in a `url` column) from a
    manifest's text; `suffix` (.csv, .jsonl) says its format."""
    if suffix.lower() in (".jsonl", ".ndjson", ".json"):
        rows = _jsonl_rows(text.lstrip("\ufeff"))
    elif suffix.lower() == ".csv":
        rows = _csv_rows(text.lstrip("\ufeff"), columns)
    else:
        raise ManifestError("a manifest is a .csv or .jsonl file")
    manifest: dict[str, dict[str, Any]] = {}
    for line, row in rows:
        key = next((str(row.pop(k)) for k in FILE_KEYS if row.get(k) not in (None, "")), None)
        if key is None:
            raise ManifestError(f"line {line}: the row names no file (a 'file' or 'url' column)")
        if key in manifest:
            raise ManifestError(f"line {line}: {key!r} has a row already")
        manifest[key] = row
    return manifest


def _jsonl_rows(text: str) -> Iterable[tuple[int, dict[str, Any]]]:
    for line, raw in enumerate(text.splitlines(), 1):
        if not raw.strip():
            continue
        try:
            row = json.loads(raw)
        except json.JSONDecodeError as exc:
            raise ManifestError(f"line {line}: not JSON ({exc.msg})") from None
        if not isinstance(row, dict):
            raise ManifestError(f"line {line}: a row is a JSON object")
        yield line, row


def _csv_rows(text: str, columns: Mapping[str, str]) -> Iterable[tuple[int, dict[str, Any]]]:
    reader = csv.DictReader(text.splitlines())
    for line, row in enumerate(reader, 2):
        if None in row:
            raise ManifestError(f"line {line}: more cells than the header has columns")
        yield line, {key: _cell(value, columns.get(key), line, key)
                     for key, value in row.items() if key and value not in (None, "")}


def _cell(value: str, kind: str | None, line: int, key: str) -> Any:
    """A CSV cell read by its column's type (undeclared: text)."""
    try:
        if kind == "int":
            return int(value)
        if kind == "float":
            return float(value)
        if kind == "bool":
            lowered = value.strip().lower()
            if lowered not in _TRUE | _FALSE:
                raise ValueError("not true or false")
            return lowered in _TRUE
        if kind == "string_list":
            return [item.strip() for item in value.split(LIST_SEPARATOR) if item.strip()]
    except ValueError as exc:
        raise ManifestError(f"line {line}: {key} is a {kind} column and {value!r} is not one ({exc})") from None
    return value


def attributes_for(manifest: Mapping[str, dict[str, Any]], path: Path, root: Path | None) -> dict[str, Any] | None:
    """The row of a file: by its path relative to the imported folder, else by its name."""
    if root is not None:
        try:
            relative = path.relative_to(root).as_posix()
        except ValueError:
            relative = ""
        if relative in manifest:
            return manifest[relative]
    return manifest.get(path.name)
