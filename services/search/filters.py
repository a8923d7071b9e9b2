"""The filter language evaluated on one stored image: the exact index's side of the semantics.

`truth(expr, row)` is True, False or None (unknown), with SQL's three-valued logic; a row matches
when it is True. Each predicate's truth is defined so that `milvus_filter` can write both "it is
true" and "it is false" as Milvus expressions (checked against a real server by the congruence
tests in tests/search):

- a declared column or a built-in one: null (None) makes every test but IS NULL unknown; else the
  plain comparison (strings by code point, numbers as numbers, timestamps in time, lists by their
  items);
- an undeclared attribute (any JSON): missing makes every test but IS NULL unknown; `=`, `in` and
  `contains*` are then true or false (a value of another kind is simply not equal); `<`, `<=`, `>`,
  `>=`, `between` and `prefix` are unknown unless the value is of the literal's kind (numbers with
  numbers, strings with strings), as Milvus' own comparisons of JSON values are;
- `created_at` is kept in milliseconds: a timestamp compared with it is cut to the millisecond.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from services.common.filtering import And, Expr, Kind, Not, Op, Predicate, attribute_key, kind_of
from services.common.schema import Scalar, timestamp_us

Truth = bool | None


@dataclass(frozen=True)
class Row:
    """What a filter can read of one image: its built-in columns and its attributes (declared ones
    typed, None when null; undeclared ones as stored)."""

    id: str
    name: str
    content_hash: str
    created_at_ms: int
    attributes: Mapping[str, Any]

    def builtin(self, column: str) -> Any:
        if column == "created_at":
            return self.created_at_ms
        return getattr(self, column)


def matches(expr: Expr | None, row: Row) -> bool:
    """Whether the row matches (no filter matches everything)."""
    return expr is None or truth(expr, row) is True


def truth(expr: Expr, row: Row) -> Truth:
    if isinstance(expr, Predicate):
        return predicate_truth(expr, row)
    if isinstance(expr, Not):
        inner = truth(expr.part, row)
        return None if inner is None else not inner
    results = [truth(part, row) for part in expr.parts]
    if isinstance(expr, And):
        if False in results:
            return False
        return None if None in results else True
    if True in results:
        return True
    return None if None in results else False


def predicate_truth(p: Predicate, row: Row) -> Truth:
    kind = kind_of(p.column)
    if kind is Kind.ATTRIBUTE:
        key = attribute_key(p.column)
        present = key in row.attributes
        if p.op is Op.IS_NULL:
            return not present
        return attribute_truth(p.op, row.attributes[key], p.values) if present else None
    value = row.builtin(p.column) if kind is Kind.BUILTIN else row.attributes.get(p.column)
    if p.op is Op.IS_NULL:
        return value is None
    if value is None:
        return None
    values = tuple(created_at_ms(v) for v in p.values) if p.column == "created_at" else p.values
    return typed_truth(p.op, value, values)


def created_at_ms(value: Scalar) -> Scalar:
    """A timestamp as `created_at` compares it: milliseconds, cut."""
    return timestamp_us(value) // 1000 if isinstance(value, datetime) else value


def typed_truth(op: Op, value: Any, values: tuple[Scalar, ...]) -> bool:
    """A declared or built-in column's non-null value tested (the values are of its type)."""
    return _TESTS[op](value, values)


_TESTS: dict[Op, Callable[[Any, tuple[Any, ...]], bool]] = {
    Op.EQ: lambda v, xs: bool(v == xs[0]),
    Op.LT: lambda v, xs: bool(v < xs[0]),
    Op.LE: lambda v, xs: bool(v <= xs[0]),
    Op.GT: lambda v, xs: bool(v > xs[0]),
    Op.GE: lambda v, xs: bool(v >= xs[0]),
    Op.IN: lambda v, xs: v in xs,
    Op.BETWEEN: lambda v, xs: bool(xs[0] <= v <= xs[1]),
    Op.PREFIX: lambda v, xs: str(v).startswith(str(xs[0])),
    Op.CONTAINS: lambda v, xs: xs[0] in v,
    Op.CONTAINS_ALL: lambda v, xs: all(x in v for x in xs),
    Op.CONTAINS_ANY: lambda v, xs: any(x in v for x in xs),
}


def attribute_truth(op: Op, actual: Any, values: tuple[Scalar, ...]) -> Truth:
    """An undeclared attribute's present value tested (see the module doc)."""
    if op is Op.EQ:
        return same_value(actual, values[0])
    if op is Op.IN:
        return any(same_value(actual, v) for v in values)
    if op in (Op.CONTAINS, Op.CONTAINS_ALL, Op.CONTAINS_ANY):
        items = actual if isinstance(actual, list) else []
        held = [any(same_value(item, v) for item in items) for v in values]
        return any(held) if op is Op.CONTAINS_ANY else all(held)
    if not all(comparable(actual, v) for v in values):
        return None
    return _TESTS[op](actual, values)


def same_value(actual: object, expected: Scalar) -> bool:
    """JSON equality as Milvus has it: same kind of value (string, number, bool) and equal."""
    if isinstance(expected, bool) or isinstance(actual, bool):
        return isinstance(expected, bool) and isinstance(actual, bool) and actual == expected
    if is_number(expected):
        return is_number(actual) and actual == expected
    return isinstance(actual, str) and actual == expected


def is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def comparable(actual: object, expected: Scalar) -> bool:
    """Whether an undeclared attribute's value orders against the literal: numbers with numbers, strings
    with strings."""
    if is_number(expected):
        return is_number(actual)
    return isinstance(expected, str) and isinstance(actual, str)
