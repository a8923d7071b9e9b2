"""The filter language: one expression tree for every way a caller says which images.

    Expr      = And(parts) | Or(parts) | Not(part) | Predicate(column, op, values)
    Op        = = < <= > >= in between is_null contains contains_all contains_any prefix

It comes from the SQL WHERE clause and the text form `where=price < 50 and colour in ('red','blue')`
(both parsed by services.gateway.sql), from the JSON form `{"price": {"lt": 50}}` (`from_json`), or
from the wire (services.common.wire). `bind` checks it against an album's columns before it is used;
the search service compiles it to a Milvus expression (services.search.milvus_filter) and the exact
index evaluates it (services.search.filters), with the same semantics, tested together:

- SQL's three-valued logic: a comparison with a null (a declared column without a value, an undeclared
  attribute the image does not have) is unknown, and `NOT unknown` is unknown too; only true matches.
- Columns: a predicate names a built-in column (`id`, `name`, `content_hash`, `created_at`), a declared
  column, or an undeclared attribute as `attributes.<key>`. A bare name that is neither built-in nor
  declared means the attribute of that name in an album without declared columns; an album with
  columns refuses it (a typo should not silently match nothing) and asks for `attributes.<key>`.
- Undeclared attributes hold any JSON: `=` and `in` hold for a value of the same kind (numbers with
  numbers, 10 = 10.0); `<`, `<=`, `>`, `>=`, `between` compare numbers with numbers and strings with
  strings, any other pairing is unknown; `contains` tests an array's items.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from enum import StrEnum

from services.common.errors import InvalidFilter
from services.common.json_text import json_kind, json_object
from services.common.schema import (
    ATTRIBUTES_PREFIX,
    BUILTIN_COLUMNS,
    CONTROL_CHARS,
    INT64_MAX,
    INT64_MIN,
    AlbumSchema,
    ColumnType,
    Scalar,
    coerce,
    iso,
)

# Bounds on what a caller can make the vector store parse.
MAX_PREDICATES = 256
MAX_LIST_VALUES = 1024
MAX_DEPTH = 32
MAX_STRING_CHARS = 1024
# An undeclared attribute's key as a filter names it.
ATTRIBUTE_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}")


class Op(StrEnum):
    """What a predicate tests."""

    EQ = "="
    LT = "<"
    LE = "<="
    GT = ">"
    GE = ">="
    IN = "in"
    BETWEEN = "between"
    IS_NULL = "is_null"
    CONTAINS = "contains"
    CONTAINS_ALL = "contains_all"
    CONTAINS_ANY = "contains_any"
    PREFIX = "prefix"


ORDERING = frozenset({Op.LT, Op.LE, Op.GT, Op.GE, Op.BETWEEN})
LIST_OPS = frozenset({Op.CONTAINS, Op.CONTAINS_ALL, Op.CONTAINS_ANY})
# How many values each operator takes: (at least, at most).
_ARITY: dict[Op, tuple[int, int]] = {
    **dict.fromkeys((Op.EQ, Op.LT, Op.LE, Op.GT, Op.GE, Op.CONTAINS, Op.PREFIX), (1, 1)),
    Op.BETWEEN: (2, 2),
    Op.IS_NULL: (0, 0),
    **dict.fromkeys((Op.IN, Op.CONTAINS_ALL, Op.CONTAINS_ANY), (1, MAX_LIST_VALUES)),
}


@dataclass(frozen=True)
class Predicate:
    """One test of one column; `position` is where it starts in the text it was parsed from."""

    column: str
    op: Op
    values: tuple[Scalar, ...] = ()
    position: int | None = field(default=None, compare=False)


@dataclass(frozen=True)
class And:
    """All parts hold; no parts: true."""

    parts: tuple[Expr, ...] = ()


@dataclass(frozen=True)
class Or:
    """Some part holds; no parts: false."""

    parts: tuple[Expr, ...] = ()


@dataclass(frozen=True)
class Not:
    part: Expr


Expr = And | Or | Not | Predicate
TRUE: Expr = And(())
FALSE: Expr = Or(())


class Kind(StrEnum):
    """Where a bound predicate's column lives."""

    BUILTIN = "builtin"
    DECLARED = "declared"
    ATTRIBUTE = "attribute"


def kind_of(column: str) -> Kind:
    """The kind of a bound predicate's column (see `bind`)."""
    if column.startswith(ATTRIBUTES_PREFIX):
        return Kind.ATTRIBUTE
    return Kind.BUILTIN if column in BUILTIN_COLUMNS else Kind.DECLARED


def attribute_key(column: str) -> str:
    return column.removeprefix(ATTRIBUTES_PREFIX)


def predicates(expr: Expr) -> Iterator[Predicate]:
    """Every predicate of the tree, left to right."""
    if isinstance(expr, Predicate):
        yield expr
    elif isinstance(expr, Not):
        yield from predicates(expr.part)
    else:
        for part in expr.parts:
            yield from predicates(part)


def conjoin(*exprs: Expr | None) -> Expr:
    """All of the given filters (None and true ones left out)."""
    parts = tuple(e for e in exprs if e is not None and e != TRUE)
    return parts[0] if len(parts) == 1 else And(parts)


# --- checking against an album ------------------------------------------------------------------------


def _at(p: Predicate) -> str:
    return f"at position {p.position}: " if p.position is not None else ""


def bind(expr: Expr, schema: AlbumSchema) -> Expr:
    """The filter checked against the album's columns: every column resolved (see the module doc), every
    value of its column's type (timestamps as datetimes), operators that suit the type; InvalidFilter
    names the position and the problem otherwise."""
    _check_size(expr)
    return _bind(expr, schema)


def _check_size(expr: Expr) -> None:
    count = sum(1 for _ in predicates(expr))
    if count > MAX_PREDICATES:
        raise InvalidFilter(f"the filter has {count} conditions; at most {MAX_PREDICATES} are allowed")
    if _depth(expr) > MAX_DEPTH:
        raise InvalidFilter(f"the filter nests deeper than {MAX_DEPTH} levels")


def _depth(expr: Expr) -> int:
    if isinstance(expr, Predicate):
        return 1
    if isinstance(expr, Not):
        return 1 + _depth(expr.part)
    return 1 + max((_depth(p) for p in expr.parts), default=0)


def _bind(expr: Expr, schema: AlbumSchema) -> Expr:
    if isinstance(expr, Predicate):
        return bind_predicate(expr, schema)
    if isinstance(expr, Not):
        return Not(_bind(expr.part, schema))
    return type(expr)(tuple(_bind(p, schema) for p in expr.parts))


def resolve_column(name: str, schema: AlbumSchema, position: int | None = None) -> tuple[str, ColumnType | None]:
    """(the column's canonical name, its type; None for an undeclared attribute)."""
    where = f"at position {position}: " if position is not None else ""
    if name.startswith(ATTRIBUTES_PREFIX):
        key = attribute_key(name)
        if not ATTRIBUTE_KEY.fullmatch(key):
            raise InvalidFilter(f"{where}{key[:80]!r} is not a valid attribute name (letters, digits, _; at most 64)")
        return name, None
    if name in BUILTIN_COLUMNS:
        return name, BUILTIN_COLUMNS[name]
    column = schema.get(name)
    if column is not None:
        return name, column.type
    if schema:
        raise InvalidFilter(f"{where}the album has no column {name[:80]!r} (its columns: "
                            f"{', '.join([*BUILTIN_COLUMNS, *schema.names])}); an undeclared attribute is "
                            f"named attributes.{name[:80]}")
    return resolve_column(ATTRIBUTES_PREFIX + name, schema, position)


def bind_predicate(p: Predicate, schema: AlbumSchema) -> Predicate:
    column, kind = resolve_column(p.column, schema, p.position)
    low, high = _ARITY[p.op]
    if not low <= len(p.values) <= high:
        raise InvalidFilter(f"{_at(p)}{p.op.value} takes {low if low == high else f'{low} to {high}'} value(s), "
                            f"not {len(p.values)}")
    bound = replace(p, column=column)
    if kind is None:
        return _bind_attribute(bound)
    return _bind_typed(bound, kind)


def _bind_typed(p: Predicate, kind: ColumnType) -> Predicate:
    if p.op is Op.IS_NULL:
        return p
    allowed = _OPS_BY_TYPE[kind]
    if p.op not in allowed:
        names = ", ".join(sorted(o.value for o in allowed))
        raise InvalidFilter(f"{_at(p)}{p.column} is a {kind.value} column: it takes {names}, not {p.op.value}")
    value_type = ColumnType.STRING if kind is ColumnType.STRING_LIST else kind
    if kind is ColumnType.INT and p.op in ORDERING:
        return _int_bounds(p)
    values = tuple(_typed_value(p, value_type, v) for v in p.values)
    return replace(p, values=values)


_OPS_BY_TYPE: dict[ColumnType, frozenset[Op]] = {
    ColumnType.STRING: frozenset({Op.EQ, Op.IN, Op.PREFIX, *ORDERING}),
    ColumnType.INT: frozenset({Op.EQ, Op.IN, *ORDERING}),
    ColumnType.FLOAT: frozenset({Op.EQ, Op.IN, *ORDERING}),
    ColumnType.TIMESTAMP: frozenset({Op.EQ, Op.IN, *ORDERING}),
    ColumnType.BOOL: frozenset({Op.EQ, Op.IN}),
    ColumnType.STRING_LIST: LIST_OPS,
}


def _typed_value(p: Predicate, kind: ColumnType, value: Scalar) -> Scalar:
    if kind is ColumnType.INT and isinstance(value, float) and not value.is_integer():
        raise InvalidFilter(f"{_at(p)}{p.column} is an int column; {value!r} is never equal to one")
    coerced = coerce(kind, value, p.column, error=InvalidFilter)
    assert coerced is not None and not isinstance(coerced, list)
    if isinstance(coerced, str) and len(coerced) > MAX_STRING_CHARS:
        raise InvalidFilter(f"{_at(p)}string longer than {MAX_STRING_CHARS} characters")
    return coerced


def _int_bounds(p: Predicate) -> Predicate:
    """An int column compared with numbers: fractional bounds become the integers they admit."""
    numbers = []
    for value in p.values:
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            raise InvalidFilter(f"{_at(p)}{p.column} is an int column; compare it with a number, not "
                                f"{json_kind(value) if not isinstance(value, datetime) else 'a timestamp'}")
        numbers.append(value)
    if p.op is Op.BETWEEN:
        low, high = math.ceil(numbers[0]), math.floor(numbers[1])
        return replace(p, values=(_clamp(low), _clamp(high)))
    value = numbers[0]
    if isinstance(value, float) and not value.is_integer():
        op = {Op.LT: Op.LE, Op.LE: Op.LE, Op.GT: Op.GE, Op.GE: Op.GE}[p.op]
        bound = math.floor(value) if op is Op.LE else math.ceil(value)
        return replace(p, op=op, values=(_clamp(bound),))
    return replace(p, values=(_clamp(int(value)),))


def _clamp(value: int) -> int:
    return max(INT64_MIN, min(INT64_MAX, value))


def _bind_attribute(p: Predicate) -> Predicate:
    values = tuple(_attribute_value(p, v) for v in p.values)
    if p.op in ORDERING and any(isinstance(v, bool) for v in values):
        raise InvalidFilter(f"{_at(p)}{p.op.value} compares numbers or strings, not a boolean")
    if p.op is Op.PREFIX and not isinstance(values[0], str):
        raise InvalidFilter(f"{_at(p)}a prefix is a string, not {json_kind(values[0])}")
    if len({_value_kind(v) for v in values}) > 1:
        raise InvalidFilter(f"{_at(p)}the values of {p.op.value} mix strings, numbers and booleans")
    return replace(p, values=values)


def _attribute_value(p: Predicate, value: Scalar) -> Scalar:
    if isinstance(value, datetime):
        raise InvalidFilter(f"{_at(p)}{p.column} is not a declared timestamp column; compare it with a string "
                            f"such as {iso(value)!r}")
    if isinstance(value, str):
        if len(value) > MAX_STRING_CHARS:
            raise InvalidFilter(f"{_at(p)}string longer than {MAX_STRING_CHARS} characters")
        if CONTROL_CHARS.search(value):
            raise InvalidFilter(f"{_at(p)}string contains a control character")
    elif isinstance(value, int) and not isinstance(value, bool) and not INT64_MIN <= value <= INT64_MAX:
        raise InvalidFilter(f"{_at(p)}integer {value} is outside the 64-bit range")
    elif isinstance(value, float) and not math.isfinite(value):
        raise InvalidFilter(f"{_at(p)}number {value} is not finite")
    return value


def _value_kind(value: Scalar) -> str:
    if isinstance(value, bool):
        return "bool"
    return "str" if isinstance(value, str) else "number"


# --- the JSON form ------------------------------------------------------------------------------------

_JSON_OPS = ("eq", "ne", "lt", "lte", "gt", "gte", "in", "nin", "exists")
_JSON_COMPARISONS = {"eq": Op.EQ, "lt": Op.LT, "lte": Op.LE, "gt": Op.GT, "gte": Op.GE}


def from_json_text(text: str, schema: AlbumSchema) -> Expr | None:
    """The JSON form as text ("" or blank: no filter)."""
    spec = json_object(text, "filter", InvalidFilter)
    return from_json(spec, schema) if spec else None


def from_json(spec: object, schema: AlbumSchema) -> Expr:
    """The JSON form: `{"key": value}` is equality, `{"key": {"op": value, ...}}` operators, all of which
    must hold (eq ne lt lte gt gte in nin exists). A key names a declared column, else an undeclared
    attribute. `ne` and `nin` also hold where the attribute is missing, `exists` says whether it is there."""
    if not isinstance(spec, Mapping):
        raise InvalidFilter(f"filter must be a JSON object, not {json_kind(spec)}")
    parts: list[Expr] = []
    for key, rule in spec.items():
        if not isinstance(key, str) or not ATTRIBUTE_KEY.fullmatch(key):
            raise InvalidFilter(f"filter key {key!r} is not a valid attribute name (letters, digits, _; at most 64)")
        column = key if schema.get(key) else ATTRIBUTES_PREFIX + key
        if isinstance(rule, Mapping):
            if not rule:
                raise InvalidFilter(f"filter on {key!r} has no operators")
            parts.extend(_json_operator(column, op, value) for op, value in rule.items())
        else:
            parts.append(Predicate(column, Op.EQ, (_json_scalar(key, rule),)))
    if len(parts) > MAX_PREDICATES:
        raise InvalidFilter(f"filter has {len(parts)} conditions; at most {MAX_PREDICATES} are allowed")
    return conjoin(*parts)


def _json_operator(key: str, name: object, value: object) -> Expr:
    if name not in _JSON_OPS:
        raise InvalidFilter(f"filter on {key!r} uses unknown operator {name!r} (allowed: {', '.join(_JSON_OPS)})")
    if name == "exists":
        if not isinstance(value, bool):
            raise InvalidFilter(f"filter on {key!r}: 'exists' takes true or false, not {json_kind(value)}")
        is_null = Predicate(key, Op.IS_NULL)
        return Not(is_null) if value else is_null
    if name in ("in", "nin"):
        listed = _json_list(key, str(name), value)
        found: Expr = Predicate(key, Op.IN, listed) if listed else FALSE
    else:
        scalar = _json_scalar(key, value)
        if name in ("lt", "lte", "gt", "gte") and isinstance(scalar, bool):
            raise InvalidFilter(f"filter on {key!r}: '{name}' compares numbers or strings, not a boolean")
        found = Predicate(key, _JSON_COMPARISONS.get(str(name), Op.EQ), (scalar,))
    if name in ("ne", "nin"):
        return Or((Not(found), Predicate(key, Op.IS_NULL)))
    return found


def _json_scalar(key: str, value: object) -> Scalar:
    if isinstance(value, str | bool | int | float):
        return value
    raise InvalidFilter(f"filter on {key!r}: value must be a string, number or bool, not {json_kind(value)}")


def _json_list(key: str, op: str, value: object) -> tuple[Scalar, ...]:
    if not isinstance(value, Sequence) or isinstance(value, str):
        raise InvalidFilter(f"filter on {key!r}: '{op}' takes a list, not {json_kind(value)}")
    if len(value) > MAX_LIST_VALUES:
        raise InvalidFilter(f"filter on {key!r}: '{op}' list has more than {MAX_LIST_VALUES} values")
    return tuple(_json_scalar(key, v) for v in value)


# --- text -------------------------------------------------------------------------------------------


def to_text(expr: Expr) -> str:
    """The filter in the text form (what `where=` and SQL's WHERE take)."""
    if isinstance(expr, Predicate):
        return _predicate_text(expr)
    if isinstance(expr, Not):
        return f"NOT ({to_text(expr.part)})"
    if not expr.parts:
        return "TRUE" if isinstance(expr, And) else "FALSE"
    joiner = " AND " if isinstance(expr, And) else " OR "
    return joiner.join(f"({to_text(p)})" for p in expr.parts)


def _predicate_text(p: Predicate) -> str:
    column = _name_text(p.column)
    values = [literal_text(v) for v in p.values]
    if p.op is Op.IS_NULL:
        return f"{column} IS NULL"
    if p.op is Op.IN:
        return f"{column} IN ({', '.join(values)})"
    if p.op is Op.BETWEEN:
        return f"{column} BETWEEN {values[0]} AND {values[1]}"
    if p.op in LIST_OPS:
        return f"{p.op.value}({column}, {', '.join(values)})"
    if p.op is Op.PREFIX:
        return f"{column} LIKE {literal_text(_like_escape(str(p.values[0])) + '%')}"
    return f"{column} {p.op.value} {values[0]}"


def _name_text(column: str) -> str:
    if column.startswith(ATTRIBUTES_PREFIX):
        return f"attributes.{attribute_key(column)}"
    return column


def _like_escape(prefix: str) -> str:
    return prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def literal_text(value: Scalar) -> str:
    """A SQL literal of the value."""
    if isinstance(value, bool):
        return "TRUE" if value else "FALSE"
    if isinstance(value, datetime):
        return f"TIMESTAMP '{iso(value)}'"
    if isinstance(value, int | float):
        return repr(value)
    return "'" + value.replace("'", "''") + "'"
