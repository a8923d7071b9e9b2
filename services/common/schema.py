"""An album's typed columns: the one definition every layer derives its attribute types from.

An album may declare columns when it is created; each image then has a value of the declared type
(or null) for each, checked on every write:

    type          Python value        JSON (HTTP)         Milvus field            SQL type names
    string        str                 string              VARCHAR                 VARCHAR, TEXT, STRING, CHAR
    int           int (64-bit)        integer             INT64                   INT, INTEGER, BIGINT, SMALLINT
    float         float               number              DOUBLE                  DOUBLE, FLOAT, REAL, DECIMAL
    bool          bool                boolean             BOOL                    BOOLEAN, BOOL
    timestamp     datetime (UTC, us)  ISO 8601 string     INT64 (us since epoch)  TIMESTAMP, TIMESTAMPTZ, DATE
    string_list   list[str]           array of strings    ARRAY of VARCHAR        VARCHAR[], TEXT[]

The search service stores them as Milvus scalar fields (services.search.milvus_layout), the gRPC wire
carries them as `imagesearch.v1.Value` (services.common.wire, whose `ColumnType` enum mirrors this
one: a test holds them together), and the HTTP API's OpenAPI document takes `json_schema` from here.
Attributes an album does not declare are kept as they are (any JSON) in one JSON field.

Every image also has the built-in columns `id`, `name`, `content_hash` and `created_at`, which
filters and SQL can read like declared ones but which are not attributes.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from enum import StrEnum
from typing import Any

from services.common.errors import InvalidAttributes, InvalidFilter

COLUMN_NAME = re.compile(r"[a-z_][a-z0-9_]{0,62}")
MAX_COLUMNS = 32
MAX_STRING_BYTES = 1024
MAX_LIST_ITEMS = 64
MAX_LIST_ITEM_BYTES = 256
# The attribute every image's labels are kept in (the network's at import, or set by hand): a list of words.
TAGS_ATTRIBUTE = "tags"
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
# C0 controls and DEL, except tab and line breaks: they cannot be written as a filter literal.
CONTROL_CHARS = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

Scalar = str | int | float | bool | datetime
AttributeValue = Scalar | list[str] | None


class ColumnType(StrEnum):
    """The types a declared column may have."""

    STRING = "string"
    INT = "int"
    FLOAT = "float"
    BOOL = "bool"
    TIMESTAMP = "timestamp"
    STRING_LIST = "string_list"

    @property
    def json_schema(self) -> dict[str, Any]:
        """The JSON schema of a value of this type in the HTTP API (nullable)."""
        return {**_JSON_SCHEMAS[self], "nullable": True}

    @property
    def ordered(self) -> bool:
        """Whether values compare with < and > (and sort)."""
        return self in (ColumnType.STRING, ColumnType.INT, ColumnType.FLOAT, ColumnType.TIMESTAMP)

    @property
    def numeric(self) -> bool:
        return self in (ColumnType.INT, ColumnType.FLOAT)


_JSON_SCHEMAS: dict[ColumnType, dict[str, Any]] = {
    ColumnType.STRING: {"type": "string", "maxLength": MAX_STRING_BYTES},
    ColumnType.INT: {"type": "integer", "minimum": INT64_MIN, "maximum": INT64_MAX},
    ColumnType.FLOAT: {"type": "number"},
    ColumnType.BOOL: {"type": "boolean"},
    ColumnType.TIMESTAMP: {"type": "string", "format": "date-time"},
    ColumnType.STRING_LIST: {"type": "array", "items": {"type": "string", "maxLength": MAX_LIST_ITEM_BYTES},
                             "maxItems": MAX_LIST_ITEMS},
}

# SQL type names (as sqlglot spells them) that declare each type.
SQL_TYPES: dict[str, ColumnType] = {
    **dict.fromkeys(("VARCHAR", "TEXT", "CHAR", "NVARCHAR", "NCHAR", "STRING"), ColumnType.STRING),
    **dict.fromkeys(("INT", "INTEGER", "BIGINT", "SMALLINT", "TINYINT"), ColumnType.INT),
    **dict.fromkeys(("DOUBLE", "FLOAT", "REAL", "DECIMAL", "NUMERIC"), ColumnType.FLOAT),
    **dict.fromkeys(("BOOLEAN", "BOOL"), ColumnType.BOOL),
    **dict.fromkeys(("TIMESTAMP", "TIMESTAMPTZ", "DATETIME", "DATE"), ColumnType.TIMESTAMP),
}


@dataclass(frozen=True)
class Column:
    """A declared column: a name (lower-case identifier) and a type."""

    name: str
    type: ColumnType


# Columns every image has; they are read like declared ones but are not attributes.
BUILTIN_COLUMNS: dict[str, ColumnType] = {
    "id": ColumnType.STRING,
    "name": ColumnType.STRING,
    "content_hash": ColumnType.STRING,
    "created_at": ColumnType.TIMESTAMP,
}
# Names a declared column cannot take: the built-in columns, and words the SQL dialect gives a meaning.
RESERVED_NAMES = frozenset({*BUILTIN_COLUMNS, "attributes", "distance", "matches", "feature", "image", "image_id",
                            "pk", "ordinal", "vector", "nulls", "count", "created_at_ms", "score"})
# The prefix that names an undeclared attribute explicitly in a filter ("attributes.colour").
ATTRIBUTES_PREFIX = "attributes."


def check_column_name(name: str) -> str:
    if not isinstance(name, str) or not COLUMN_NAME.fullmatch(name):
        raise InvalidAttributes(f"column name {str(name)[:80]!r} must be 1-63 of a-z, 0-9 and '_', not starting "
                                "with a digit")
    if name in RESERVED_NAMES:
        raise InvalidAttributes(f"column name {name!r} is reserved (reserved: {', '.join(sorted(RESERVED_NAMES))})")
    return name


def column_type(value: object) -> ColumnType:
    try:
        return ColumnType(str(value).lower())
    except ValueError:
        allowed = ", ".join(t.value for t in ColumnType)
        raise InvalidAttributes(f"column type {str(value)[:40]!r} is not one of {allowed}") from None


@dataclass(frozen=True)
class AlbumSchema:
    """The declared columns of an album, in declaration order (none for an album without a schema)."""

    columns: tuple[Column, ...] = ()

    @classmethod
    def of(cls, columns: Iterable[Column]) -> AlbumSchema:
        """A schema from columns, checked: valid distinct names, at most MAX_COLUMNS."""
        listed = tuple(Column(check_column_name(c.name), c.type) for c in columns)
        if len(listed) > MAX_COLUMNS:
            raise InvalidAttributes(f"{len(listed)} columns; an album may declare at most {MAX_COLUMNS}")
        names = [c.name for c in listed]
        repeated = sorted({n for n in names if names.count(n) > 1})
        if repeated:
            raise InvalidAttributes(f"column {repeated[0]!r} is declared twice")
        return cls(listed)

    def __bool__(self) -> bool:
        return bool(self.columns)

    def get(self, name: str) -> Column | None:
        return next((c for c in self.columns if c.name == name), None)

    @property
    def names(self) -> list[str]:
        return [c.name for c in self.columns]

    def split(self, attributes: Mapping[str, Any], what: str = "") -> tuple[dict[str, AttributeValue],
                                                                           dict[str, Any]]:
        """(declared values, checked and complete with nulls; the undeclared ones, nulls left out).
        `InvalidAttributes` names `what` (the image), the attribute and the value on a wrong type."""
        typed: dict[str, AttributeValue] = {c.name: None for c in self.columns}
        extra: dict[str, Any] = {}
        for key, value in attributes.items():
            column = self.get(key)
            if column is not None:
                typed[key] = coerce(column.type, value, key, what)
            elif value is not None:
                extra[check_attribute_key(key, what)] = check_json_value(value, key, what)
        return typed, extra

    def check(self, attributes: Mapping[str, Any], what: str = "") -> dict[str, Any]:
        """The attributes with declared values checked and typed (nulls in full), undeclared ones as given."""
        typed, extra = self.split(attributes, what)
        return {**extra, **typed}


# An album without declared columns.
NO_COLUMNS = AlbumSchema()
ATTRIBUTE_KEY = re.compile(r"[^\x00-\x1f\x7f\"\\]{1,256}")


def check_attribute_key(key: object, what: str = "") -> str:
    """An undeclared attribute's key: 1-256 characters, no control characters, quotes or backslashes."""
    if not isinstance(key, str) or not ATTRIBUTE_KEY.fullmatch(key):
        raise InvalidAttributes(f"{_where(what)}attribute name {str(key)[:80]!r} must be 1-256 characters without "
                                "control characters, quotes or backslashes")
    return key


# Nesting of an undeclared attribute's JSON value, at most.
MAX_JSON_DEPTH = 32


def check_json_value(value: Any, key: str = "", what: str = "", depth: int = 0) -> Any:
    """An undeclared attribute's value as the wire and the store can keep it: JSON with integers of 64
    bits, finite numbers and at most MAX_JSON_DEPTH levels; `InvalidAttributes` names it otherwise."""
    if depth > MAX_JSON_DEPTH:
        raise InvalidAttributes(f"{_where(what)}attribute {key!r} nests deeper than {MAX_JSON_DEPTH} levels")
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return value
    if isinstance(value, int):
        if not INT64_MIN <= value <= INT64_MAX:
            raise InvalidAttributes(f"{_where(what)}attribute {key!r}: {value} is outside the 64-bit integer range")
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise InvalidAttributes(f"{_where(what)}attribute {key!r}: {value} is not a finite number")
        return value
    if isinstance(value, list | tuple):
        return [check_json_value(v, key, what, depth + 1) for v in value]
    if isinstance(value, dict):
        return {str(k): check_json_value(v, key, what, depth + 1) for k, v in value.items()}
    if isinstance(value, datetime | date):
        return value
    raise InvalidAttributes(f"{_where(what)}attribute {key!r}: a {type(value).__name__} is not a JSON value")


def _where(what: str) -> str:
    return f"{what}: " if what else ""


def coerce(kind: ColumnType, value: object, key: str = "", what: str = "",
           error: type[InvalidAttributes] | type[InvalidFilter] = InvalidAttributes) -> AttributeValue:
    """`value` as a value of the column type (None stays None), or `error` naming `what`, `key` and
    the value."""
    if value is None:
        return None
    try:
        return _COERCE[kind](value)
    except (TypeError, ValueError) as exc:
        shown = repr(value[:80]) if isinstance(value, str) else json.dumps(value, default=str)[:80]  # as sent: true
        raise error(f"{_where(what)}attribute {key!r} is a {kind.value} column and {shown} is not one: "
                    f"{exc}") from None


def _string(value: object) -> str:
    if not isinstance(value, str):
        raise TypeError("a string is needed")
    if len(value.encode()) > MAX_STRING_BYTES:
        raise ValueError(f"longer than {MAX_STRING_BYTES} bytes")
    if CONTROL_CHARS.search(value):
        raise ValueError("it contains a control character")
    return value


def _int(value: object) -> int:
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError("an integer is needed")
    if not INT64_MIN <= value <= INT64_MAX:
        raise ValueError("outside the 64-bit range")
    return value


def _float(value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError("a number is needed")
    result = float(value)
    if not math.isfinite(result):
        raise ValueError("not a finite number")
    return result


def _bool(value: object) -> bool:
    if not isinstance(value, bool):
        raise TypeError("true or false is needed")
    return value


def _timestamp(value: object) -> datetime:
    if isinstance(value, datetime):
        stamp = value
    elif isinstance(value, date):
        stamp = datetime(value.year, value.month, value.day)
    elif isinstance(value, str):
        stamp = parse_timestamp(value)
    else:
        raise TypeError("an ISO 8601 date or time (e.g. '2024-01-31T12:00:00Z') is needed")
    return stamp.replace(tzinfo=UTC) if stamp.tzinfo is None else stamp.astimezone(UTC)


def parse_timestamp(text: str) -> datetime:
    """An ISO 8601 date or date-time ('Z' or an offset; none means UTC)."""
    cleaned = text.strip()
    try:
        return datetime.fromisoformat(cleaned[:-1] + "+00:00" if cleaned.endswith(("Z", "z")) else cleaned)
    except ValueError:
        raise ValueError("not an ISO 8601 date or time (e.g. '2024-01-31' or '2024-01-31T12:00:00Z')") from None


def _string_list(value: object) -> list[str]:
    if not isinstance(value, list | tuple):
        raise TypeError("an array of strings is needed")
    if len(value) > MAX_LIST_ITEMS:
        raise ValueError(f"more than {MAX_LIST_ITEMS} items")
    items = []
    for item in value:
        if not isinstance(item, str):
            raise TypeError("an array of strings is needed")
        if len(item.encode()) > MAX_LIST_ITEM_BYTES:
            raise ValueError(f"an item is longer than {MAX_LIST_ITEM_BYTES} bytes")
        if CONTROL_CHARS.search(item):
            raise ValueError("an item contains a control character")
        items.append(item)
    return items


_COERCE: dict[ColumnType, Callable[[object], AttributeValue]] = {
    ColumnType.STRING: _string,
    ColumnType.INT: _int,
    ColumnType.FLOAT: _float,
    ColumnType.BOOL: _bool,
    ColumnType.TIMESTAMP: _timestamp,
    ColumnType.STRING_LIST: _string_list,
}


def timestamp_us(value: datetime) -> int:
    """Microseconds since 1970-01-01 UTC."""
    delta = value - EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def from_timestamp_us(us: int) -> datetime:
    from datetime import timedelta

    return EPOCH + timedelta(microseconds=us)


def iso(value: datetime) -> str:
    """A UTC timestamp as ISO 8601 with 'Z' (microseconds only when there are some)."""
    text = value.astimezone(UTC).isoformat(timespec="microseconds" if value.microsecond else "seconds")
    return text.replace("+00:00", "Z")


def to_json(value: Any) -> Any:
    """An attribute value as JSON can carry it (timestamps as ISO 8601 strings)."""
    if isinstance(value, datetime):
        return iso(value)
    if isinstance(value, dict):
        return {k: to_json(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [to_json(v) for v in value]
    return value


def columns_from_json(spec: Sequence[Mapping[str, Any]]) -> AlbumSchema:
    """A schema from `[{"name": ..., "type": ...}, ...]`."""
    return AlbumSchema.of(Column(str(c.get("name", "")), column_type(c.get("type", ""))) for c in spec)
