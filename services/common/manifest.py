"""Attribute manifests for imports: a CSV or JSONL row per image file, typed by the album's columns.

    file,price,colour,sizes,in_stock,listed_at          {"file": "a.jpg", "price": 39.5, "sizes": ["41", "42"]}
    a.jpg,39.5,red,41|42,true,2024-05-01                {"file": "b.jpg", "colour": "blue"}

A row names its image by `file` (or `path`, `url` or `name`): the file's name, or its path relative to
the folder or archive imported (or to a folder above it: `gallery/a.jpg` finds `a.jpg` of the folder
`gallery` sent; `ManifestFiles`), or the URL to fetch it from. A `name` beside one of the others stays in the
row: the import names the image by it (services.gateway.usecases.imports). CSV cells are text, so they are
read by the album's declared column types (int, float, bool as true/false/1/0/yes/no, timestamp as ISO 8601,
string_list split on `|`); an empty cell is null; an undeclared column stays text. JSONL values are JSON
already. The gateway checks every value again.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import math
import re
from collections.abc import Iterable, Mapping, Sequence, Set
from pathlib import Path, PurePosixPath
from typing import Any

from services.common.errors import InvalidAttributes
from services.common.schema import INT64_MAX, INT64_MIN, MAX_COLUMNS, check_column_name, parse_timestamp

# The image files an import takes, by suffix: those the CLI packs from a folder and the gateway reads from an
# archive (the page's album.js holds the same list).
IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".webp", ".gif", ".bmp", ".tif", ".tiff"})
FILE_KEYS = ("file", "path", "url", "name")
# The most bad rows a refused manifest's error lists (it counts the rest).
REPORTED = 20
# The largest manifest an import (or a manifest cut) reads (a million rows of a few attributes).
MAX_MANIFEST_BYTES = 256 * 1024 * 1024
LIST_SEPARATOR = "|"
# Numbers as a CSV cell or the command line writes them: ASCII digits, a sign, a decimal point, an exponent.
WHOLE_NUMBER = re.compile(r"[+-]?0*([0-9]+)", re.ASCII)
DECIMAL_NUMBER = re.compile(r"[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?", re.ASCII)
# Digits with a leading zero ("00123"): a code, not a number, to a column's guess.
LEADING_ZERO = re.compile(r"[+-]?0[0-9]+", re.ASCII)
_NOT_FINITE = {"nan", "inf", "infinity"}
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


# A manifest file's suffixes, by the format each says.
JSONL_SUFFIXES = (".jsonl", ".ndjson", ".json")
MANIFEST_SUFFIXES = (".csv", *JSONL_SUFFIXES)


def parse_manifest(text: str, suffix: str, columns: Mapping[str, str]) -> dict[str, dict[str, Any]]:
    """Attributes by file key (a file's name or relative path, or a URL in a `url` column) from a
    manifest's text; `suffix` (.csv, .jsonl) says its format."""
    if suffix.lower() in JSONL_SUFFIXES:
        rows = _jsonl_rows(text.lstrip("\ufeff"))
    elif suffix.lower() == ".csv":
        rows = _csv_rows(text.lstrip("\ufeff"), columns)
    else:
        raise ManifestError("a manifest is a .csv or .jsonl file")
    manifest: dict[str, dict[str, Any]] = {}
    problems: list[str] = []
    for line, row in rows:
        if isinstance(row, str):
            problems.append(f"line {line}: {row}")
            continue
        field = _key_field(row)
        key = str(row.pop(field)) if field is not None else None
        if key is None:
            problems.append(f"line {line}: the row names no file (a 'file' or 'url' column)")
        elif key in manifest:
            problems.append(f"line {line}: {key!r} has a row already")
        else:
            manifest[key] = row
    if problems:  # every bad row at once (the first REPORTED), so that one run finds them all
        more = f"; and {len(problems) - REPORTED} more" if len(problems) > REPORTED else ""
        head = f"{len(problems)} rows cannot be read: " if len(problems) > 1 else ""
        raise ManifestError(head + "; ".join(problems[:REPORTED]) + more)
    return manifest


def _key_field(row: Mapping[str, Any]) -> str | None:
    """The field naming a row's file: the first of FILE_KEYS it has a value for."""
    return next((k for k in FILE_KEYS if row.get(k) not in (None, "")), None)


def split_manifest(text: str, suffix: str, parts: Sequence[Set[str]],
                   blank: Sequence[Sequence[str]] = ()) -> list[str]:
    """The manifest cut into one per part, each in the manifest's own format (a CSV's header on each): a part's
    holds the rows whose key (as `parse_manifest` reads it) is in its set, in the manifest's order, then a row
    naming each file of its `blank` list and nothing else; a row may go to several parts, or to none. The manifest
    was read by `parse_manifest` first: its rows are whole."""
    text = text.lstrip("\ufeff")
    out = [io.StringIO() for _ in parts]

    def parts_of(row: Mapping[str, Any]) -> list[int]:
        field = _key_field(row)
        key = str(row[field]) if field is not None else None
        return [i for i, keys in enumerate(parts) if key in keys]

    if suffix.lower() == ".csv":
        reader = csv.reader(io.StringIO(text, newline=""))
        header = next(reader, [])
        writers = [csv.writer(o, lineterminator="\n") for o in out]
        for writer in writers:
            writer.writerow(header)
        for record in reader:
            for i in parts_of({h: v for h, v in zip(header, record, strict=False) if h}):
                writers[i].writerow(record)
        field = next((k for k in FILE_KEYS if k in header), FILE_KEYS[0])
        for writer, files in zip(writers, blank, strict=False):
            for file in files:
                writer.writerow([file if h == field else "" for h in header])
    else:
        for raw in (row.removesuffix("\r") for row in text.split("\n")):
            for i in parts_of(json.loads(raw) if raw.strip() else {}):
                out[i].write(raw + "\n")
        for o, files in zip(out, blank, strict=False):
            o.writelines(json.dumps({FILE_KEYS[0]: file}) + "\n" for file in files)
    return [o.getvalue() for o in out]


def cut_manifest(text: str, suffix: str, columns: Mapping[str, str], parts: Sequence[Sequence[str]]) -> list[str]:
    """The manifest cut for an import sent in parts, an import each: `parts` the paths of each part's files (as
    the archive sent names them). A part's manifest has the rows of its files (found as an import finds them:
    `ManifestFiles`), the first's also the URL rows, the last's also the rows naming no file sent (which its
    import then lists as not found). The whole manifest is read first, by the album's `columns` as the gateway
    reads it: a bad cell anywhere raises ManifestError, before any part is sent."""
    keys = list(parse_manifest(text, suffix, columns))
    if not parts:
        return []
    urls = {key for key in keys if key.startswith(("http://", "https://"))}
    files = ManifestFiles(key for key in keys if key not in urls)
    found = [{name: files.key_of(name) for name in names} for names in parts]
    rows = [{key for key in part.values() if key is not None} for part in found]
    rows[0] |= urls
    rows[-1] |= {key for key in keys if key not in urls and key not in files.matched}
    # A file two rows match equally well takes neither; a part holding one of them only would give it that row:
    # the part's manifest gets a row of the file's own path (which it takes first), without attributes.
    blank: list[list[str]] = []
    for part, keyed in zip(rows, found, strict=True):
        alone = ManifestFiles(part - urls)
        blank.append([name for name, key in keyed.items() if key is None and alone.key_of(name) is not None])
    return split_manifest(text, suffix, rows, blank)


class ManifestFiles:
    """Finds a manifest's row for a file of the archive imported: the row whose key is the file's path,
    else the one of which it is the trailing part or which is its trailing part, folder by folder (the
    folder `gallery` sent as `a.jpg`, its row `gallery/a.jpg`; a row `a.jpg` for `photos/a.jpg`), the
    longest such match; a file that two rows match equally well takes neither. `matched` collects the keys
    found, so that rows naming no file of the archive can be reported."""

    def __init__(self, keys: Iterable[str]) -> None:
        self._by_name: dict[str, list[tuple[str, tuple[str, ...]]]] = {}
        for key in keys:
            parts = _path_parts(key)
            if parts:
                self._by_name.setdefault(parts[-1], []).append((key, parts))
        self.matched: set[str] = set()

    def key_of(self, path: str) -> str | None:
        parts = _path_parts(path)
        candidates = self._by_name.get(parts[-1] if parts else "", [])
        exact = next((key for key, key_parts in candidates if key_parts == parts), None)
        if exact is not None:  # the row naming the file's own path, before any that ends the same
            self.matched.add(exact)
            return exact
        best: str | None = None
        best_length, tied = 0, False
        for key, key_parts in candidates:
            shared = _shared_tail(parts, key_parts)
            if shared < min(len(parts), len(key_parts)):
                continue  # neither path ends with the other: another folder's file of the same name
            if shared > best_length:
                best, best_length, tied = key, shared, False
            elif shared == best_length:
                tied = True
        if best is None or tied:
            return None
        self.matched.add(best)
        return best


def _path_parts(path: str) -> tuple[str, ...]:
    return tuple(p for p in PurePosixPath(path.replace("\\", "/")).parts if p not in ("/", "."))


def _shared_tail(a: tuple[str, ...], b: tuple[str, ...]) -> int:
    n = 0
    while n < min(len(a), len(b)) and a[-1 - n] == b[-1 - n]:
        n += 1
    return n


# Rows: (line, the row's values, or what is wrong with it).
_Rows = Iterable[tuple[int, "dict[str, Any] | str"]]


def _jsonl_rows(text: str) -> _Rows:
    # By "\n" only: JSON text may hold U+2028 and other characters str.splitlines() would cut a row at.
    for line, raw in enumerate((row.removesuffix("\r") for row in text.split("\n")), 1):
        if not raw.strip():
            continue
        try:
            row = json.loads(raw)
        except json.JSONDecodeError as exc:
            yield line, f"not JSON ({exc.msg})"
            continue
        yield line, row if isinstance(row, dict) else "a row is a JSON object"


def _csv_rows(text: str, columns: Mapping[str, str]) -> _Rows:
    reader = csv.DictReader(io.StringIO(text, newline=""))
    for row in reader:
        # The line the row starts on: the reader has read to its end, past the line breaks quoted in its cells.
        line = reader.line_num - sum(str(v).count("\n") for v in row.values() if v is not None)
        if None in row:
            yield line, "more cells than the header has columns"
            continue
        try:
            yield line, {key: cell_value(value, columns.get(key), key)
                         for key, value in row.items() if key and value not in (None, "")}
        except ValueError as exc:
            yield line, str(exc)


# A manifest's columns that ingest never declares: the network's tag scores (beside `tags`, declared a list).
_NOT_GUESSED = {"tag_scores"}


def guess_column_types(text: str) -> dict[str, str]:
    """For each column of a CSV manifest that may be declared (not the file's or the name's; a valid, unreserved
    name; the first MAX_COLUMNS): the column type every cell of it (not empty) reads as: float for numbers (whole
    ones too: a later 9.99 fits), bool, timestamp (ISO 8601), string_list where a cell holds `|` (and `tags`
    always, the network's labels' column), else string (digits with a leading zero are codes: "00123"). What to
    declare it as for filters to compare its values as such. Reads the rows once, keeping no cell."""
    reader = csv.DictReader(io.StringIO(text.lstrip("\ufeff"), newline=""))
    names = [name for name in reader.fieldnames or [] if _declarable(name) and name not in _NOT_GUESSED][:MAX_COLUMNS]
    possible: dict[str, set[str]] = {name: {"float", "bool", "timestamp", "string_list", "string"} for name in names}
    seen: set[str] = set()
    listed = {"tags"}  # a cell holding `|` makes its column a list (a cell without one: a list of one)
    for row in reader:
        for name, kinds in possible.items():
            if (value := row.get(name)) not in (None, ""):
                seen.add(name)
                kinds.intersection_update(_kinds_of(str(value)))
                if LIST_SEPARATOR in str(value):
                    listed.add(name)
    return {name: "string_list" if name in listed else _first_of(kinds) if name in seen else "string"
            for name, kinds in possible.items()}


def _kinds_of(value: str) -> set[str]:
    """The column types a cell reads as (text and a list always; a list alone when it holds `|`): read as the
    gateway reads it once its column is declared (`cell_value`, `parse_timestamp`), so that no guess refuses the
    manifest it was made from."""
    if LIST_SEPARATOR in value:
        return {"string_list"}
    kinds = {"string", "string_list"}
    text = value.strip()
    if not LEADING_ZERO.fullmatch(text) and _reads_as(value, "float"):  # digits with a leading zero: a code
        kinds.add("float")
    if text not in ("1", "0") and _reads_as(value, "bool"):  # 1 and 0 read as numbers
        kinds.add("bool")
    with contextlib.suppress(ValueError):
        parse_timestamp(text)
        kinds.add("timestamp")
    return kinds


def _reads_as(value: str, kind: str) -> bool:
    try:
        cell_value(value, kind, "")
    except ValueError:
        return False
    return True


def _first_of(kinds: set[str]) -> str:
    """The most telling of the types every cell read as: a number before a flag, a time, text."""
    return next(kind for kind in ("float", "bool", "timestamp", "string") if kind in kinds)


def json_column_types(attributes: Mapping[str, Any]) -> dict[str, str]:
    """The column types of attributes given as JSON (a string, a number, true or false, a list of strings), for
    the names a column may have; others (null, objects, other lists) are left undeclared."""
    kinds = {name: ("bool" if isinstance(value, bool) else "float" if isinstance(value, int | float) else
                    "string" if isinstance(value, str) else
                    "string_list" if isinstance(value, list) and all(isinstance(v, str) for v in value) else "")
             for name, value in attributes.items() if _declarable(name) and name not in _NOT_GUESSED}
    return {name: kind for name, kind in kinds.items() if kind}


def _declarable(name: str) -> bool:
    try:
        return name not in FILE_KEYS and check_column_name(name) == name
    except InvalidAttributes:
        return False


def cell_value(value: str, kind: str | None, key: str) -> Any:
    """A text value (a CSV cell, a `--set` of the command line) read by its column's type (undeclared: text);
    ValueError says why it is not one."""
    try:
        if kind == "int":
            digits = WHOLE_NUMBER.fullmatch(value.strip())
            if not digits:
                raise ValueError("not a whole number")
            if len(digits.group(1)) > 19 or not INT64_MIN <= (whole := int(value)) <= INT64_MAX:
                raise ValueError("outside the 64-bit range")
            return whole
        if kind == "float":
            if not DECIMAL_NUMBER.fullmatch(value.strip()):
                raise ValueError("not a finite number" if value.strip().lower().lstrip("+-") in _NOT_FINITE
                                 else "not a number")
            number = float(value)
            if not math.isfinite(number):
                raise ValueError("too large")
            return number
        if kind == "bool":
            lowered = value.strip().lower()
            if lowered not in _TRUE | _FALSE:
                raise ValueError("not true or false")
            return lowered in _TRUE
        if kind == "string_list":
            return [item.strip() for item in value.split(LIST_SEPARATOR) if item.strip()]
    except ValueError as exc:
        article = "an" if kind == "int" else "a"
        raise ValueError(f"{key} is {article} {kind} column and {value!r} is not one ({exc})") from None
    return value
