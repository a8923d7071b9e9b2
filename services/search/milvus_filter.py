"""The filter language compiled to a Milvus 2.3 boolean expression, every value quoted here.

Milvus has no nulls and two-valued logic, so each predicate is written twice: the expression that
holds where it is true, and the one that holds where it is false (where it is unknown, neither
holds); `NOT` swaps them and `AND`/`OR` combine them as De Morgan says. The result matches exactly
the rows `filters.truth` calls true (tests/search runs both on a real server).

Storage (services.search.milvus_layout): a declared column `c` is the field `c_<c>`, holding a
placeholder when null ("", 0, false, []) and the name `c` in the array field `nulls`; a test that
the placeholder would pass is guarded with `not array_contains(nulls, "c")`. Undeclared attributes
live in the JSON field `attributes`; built-in columns are the fields `image_id`, `name`,
`content_hash` and `created_at_ms`.

What Milvus 2.3.5 does that shapes this (seen on the server, see bench/README.md):
- LIKE takes only a trailing `%` and has no escape, so a prefix is a range: p <= s < successor(p);
- an INT64 field refuses a float literal, and a JSON `in` list mixing ints and floats fails the query,
  so numbers of a list are all written as floats when one is;
- `between` is not in its grammar; `!=` on a JSON key also holds where the key is missing.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from datetime import datetime

from services.common.errors import InvalidFilter
from services.common.filtering import And, Expr, Kind, Not, Op, Predicate, attribute_key, kind_of
from services.common.schema import EPOCH, AlbumSchema, ColumnType, Scalar, timestamp_us
from services.search.filters import created_at_ms, typed_truth

DECLARED_PREFIX = "c_"
NULLS_FIELD = "nulls"
JSON_FIELD = "attributes"
BUILTIN_FIELDS = {"id": "image_id", "name": "name", "content_hash": "content_hash", "created_at": "created_at_ms"}
# Expressions that hold for every row / for none (every row has an ordinal >= 0).
ALWAYS = "ordinal >= 0"
NEVER = "ordinal < 0"
# What a null declared value is stored as (a timestamp as 0 us, the epoch).
PLACEHOLDERS: dict[ColumnType, object] = {
    ColumnType.STRING: "",
    ColumnType.INT: 0,
    ColumnType.FLOAT: 0.0,
    ColumnType.BOOL: False,
    ColumnType.TIMESTAMP: EPOCH,
    ColumnType.STRING_LIST: [],
}
# C0 controls and DEL, except the three that have a plain escape in Milvus' grammar.
_FORBIDDEN_CHARS = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
_ESCAPES = {"\\": "\\\\", '"': '\\"', "\n": "\\n", "\r": "\\r", "\t": "\\t"}
_SYMBOLS = {Op.EQ: "==", Op.LT: "<", Op.LE: "<=", Op.GT: ">", Op.GE: ">="}
_OPPOSITE = {Op.EQ: "!=", Op.LT: ">=", Op.LE: ">", Op.GT: "<=", Op.GE: "<"}
_CONTAINS = {Op.CONTAINS: "contains", Op.CONTAINS_ALL: "contains_all", Op.CONTAINS_ANY: "contains_any"}


def field_of(column: str) -> str:
    """The Milvus field a built-in or declared column is stored in."""
    return BUILTIN_FIELDS.get(column) or DECLARED_PREFIX + column


def all_of(*parts: str) -> str:
    """The expressions joined by "and" (empty ones left out)."""
    return " and ".join(f"({p})" for p in parts if p)


def compile_filter(expr: Expr | None, schema: AlbumSchema) -> str:
    """The Milvus expression of a bound filter ("" for none: every row)."""
    if expr is None or expr == And(()):
        return ""
    return _Compiler(schema).true(expr)


class _Compiler:
    def __init__(self, schema: AlbumSchema) -> None:
        self.schema = schema

    def true(self, expr: Expr) -> str:
        if isinstance(expr, Predicate):
            return self.predicate(expr)[0]
        if isinstance(expr, Not):
            return self.false(expr.part)
        if isinstance(expr, And):
            return _join(" and ", [self.true(p) for p in expr.parts], ALWAYS)
        return _join(" or ", [self.true(p) for p in expr.parts], NEVER)

    def false(self, expr: Expr) -> str:
        if isinstance(expr, Predicate):
            return self.predicate(expr)[1]
        if isinstance(expr, Not):
            return self.true(expr.part)
        if isinstance(expr, And):
            return _join(" or ", [self.false(p) for p in expr.parts], NEVER)
        return _join(" and ", [self.false(p) for p in expr.parts], ALWAYS)

    def predicate(self, p: Predicate) -> tuple[str, str]:
        """(where it is true, where it is false)."""
        kind = kind_of(p.column)
        if kind is Kind.ATTRIBUTE:
            return _attribute(p)
        if kind is Kind.BUILTIN:
            if p.op is Op.IS_NULL:
                return NEVER, ALWAYS
            values = tuple(created_at_ms(v) for v in p.values) if p.column == "created_at" else p.values
            return _tests(field_of(p.column), p.op, [_literal(v, None) for v in values], values)
        column = self.schema.get(p.column)
        if column is None:
            raise InvalidFilter(f"the album has no column {p.column!r}")
        null = f"array_contains({NULLS_FIELD}, {quote_string(column.name)})"
        if p.op is Op.IS_NULL:
            return null, f"not {null}"
        literals = [_literal(v, column.type) for v in p.values]
        holds, fails = _tests(field_of(column.name), p.op, literals, p.values)
        placeholder = PLACEHOLDERS[column.type]
        if typed_truth(p.op, placeholder, p.values):
            holds = f"({holds} and not {null})"
        if not typed_truth(p.op, placeholder, p.values):
            fails = f"({fails} and not {null})"
        return holds, fails


def _join(joiner: str, parts: Sequence[str], empty: str) -> str:
    if not parts:
        return empty
    return parts[0] if len(parts) == 1 else "(" + joiner.join(parts) + ")"


def _tests(field: str, op: Op, literals: list[str], values: Sequence[Scalar]) -> tuple[str, str]:
    """(holds, fails) of a comparison on a field whose values are never null."""
    if op in _SYMBOLS:
        return f"{field} {_SYMBOLS[op]} {literals[0]}", f"{field} {_OPPOSITE[op]} {literals[0]}"
    if op is Op.IN:
        listed = _list(literals, values)
        return f"{field} in {listed}", f"{field} not in {listed}"
    if op is Op.BETWEEN:
        low, high = literals
        return f"({field} >= {low} and {field} <= {high})", f"({field} < {low} or {field} > {high})"
    if op is Op.PREFIX:
        return _prefix(field, str(values[0]))
    name = _CONTAINS[op]
    argument = literals[0] if op is Op.CONTAINS else _list(literals, values)
    holds = f"array_{name}({field}, {argument})"
    return holds, f"not {holds}"


def _attribute(p: Predicate) -> tuple[str, str]:
    """(holds, fails) of a predicate on an undeclared attribute (see filters.attribute_truth)."""
    target = f"{JSON_FIELD}[{quote_string(attribute_key(p.column))}]"
    present = f"(exists {target})"  # unparenthesised, `exists` would take the `and` after it as its operand
    if p.op is Op.IS_NULL:
        return f"not {present}", present
    literals = [_literal(v, None) for v in p.values]
    if p.op in (Op.EQ, Op.IN):
        holds = f"{target} == {literals[0]}" if p.op is Op.EQ else f"{target} in {_list(literals, p.values)}"
        return holds, f"({present} and not ({holds}))"
    if p.op in _CONTAINS:
        name = _CONTAINS[p.op]
        argument = literals[0] if p.op is Op.CONTAINS else _list(literals, p.values)
        holds = f"json_{name}({target}, {argument})"
        return holds, f"({present} and not {holds})"
    return _tests(target, p.op, literals, p.values)


def _prefix(field: str, prefix: str) -> tuple[str, str]:
    """Strings that start with `prefix`: the range [prefix, successor), as LIKE cannot say it."""
    low = quote_string(prefix)
    successor = _successor(prefix)
    if successor is None:
        return f"{field} >= {low}", f"{field} < {low}"
    high = quote_string(successor)
    return f"({field} >= {low} and {field} < {high})", f"({field} < {low} or {field} >= {high})"


def _successor(prefix: str) -> str | None:
    """The least string greater than every string starting with `prefix` (None: there is none)."""
    chars = list(prefix)
    while chars:
        code = ord(chars.pop()) + 1
        if 0xD800 <= code <= 0xDFFF:
            code = 0xE000
        if code <= 0x10FFFF:
            return "".join(chars) + chr(code)
    return None


def _literal(value: Scalar, kind: ColumnType | None) -> str:
    if kind is ColumnType.TIMESTAMP and isinstance(value, datetime):
        return str(timestamp_us(value))
    if kind is ColumnType.FLOAT and not isinstance(value, bool):
        return repr(float(value))  # type: ignore[arg-type]
    return render_scalar(value)


def _list(literals: list[str], values: Sequence[Scalar]) -> str:
    """A list literal; numbers all written as floats when one is (Milvus needs one type)."""
    if any(isinstance(v, float) for v in values):
        literals = [repr(float(v)) if isinstance(v, int | float) and not isinstance(v, bool) else lit
                    for v, lit in zip(values, literals, strict=True)]
    return "[" + ", ".join(literals) + "]"


def quote_string(value: str) -> str:
    """A double-quoted Milvus string literal; quotes, backslashes and line breaks are escaped."""
    if _FORBIDDEN_CHARS.search(value):
        raise InvalidFilter("string contains a control character")
    return '"' + "".join(_ESCAPES.get(ch, ch) for ch in value) + '"'


def render_scalar(value: Scalar) -> str:
    """A Milvus literal for one value: true/false, an integer, a float, or a quoted string."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise InvalidFilter(f"number {value} is not finite")
        return repr(value)
    if isinstance(value, datetime):
        return str(timestamp_us(value))
    return quote_string(value)
