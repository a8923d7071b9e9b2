"""Attribute filters: parsed once, then rendered as a Milvus expression or evaluated on a dict.

A filter is a JSON object whose keys are attribute names and whose values are either a plain value
(equality) or an object of operators, all of which must hold:

    {"category": "shoes", "price": {"gte": 10, "lt": 50}, "in_stock": true, "color": {"in": ["red", "blue"]}}

renders as

    attributes["category"] == "shoes" and attributes["price"] >= 10 and attributes["price"] < 50
    and attributes["in_stock"] == true and attributes["color"] in ["red", "blue"]

Semantics (the ones Milvus 2.3 applies to a JSON field, checked against a real server, and the ones
`AttributeFilter.matches` implements for the exact index):

- `eq` / `in` hold only where the attribute exists and has the same kind of value: a string equals a
  string, a number a number (10 == 10.0), a bool a bool (true is not 1).
- `ne` / `nin` are their negations, so they also hold where the attribute is missing.
- `lt` / `lte` / `gt` / `gte` compare numbers with numbers and strings with strings (by code point);
  any other pairing, or a missing attribute, does not match.
- `exists: true` holds where the key is present (even with a null value); `exists: false` where not.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from services.common.errors import InvalidFilter
from services.common.json_text import json_kind, json_object

KEY_PATTERN = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")
# Bounds the size of the expression a caller can make Milvus parse.
MAX_CONDITIONS = 64
MAX_LIST_VALUES = 1024
MAX_STRING_CHARS = 1024
_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1
# C0 controls and DEL, except the three that have a plain escape in Milvus' grammar.
_FORBIDDEN_CHARS = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
_ESCAPES = {"\\": "\\\\", '"': '\\"', "\n": "\\n", "\r": "\\r", "\t": "\\t"}

Scalar = str | int | float | bool


class Op(StrEnum):
    """The operators a filter may use on one attribute."""

    EQ = "eq"
    NE = "ne"
    LT = "lt"
    LTE = "lte"
    GT = "gt"
    GTE = "gte"
    IN = "in"
    NIN = "nin"
    EXISTS = "exists"


_OP_NAMES = tuple(o.value for o in Op)
_ORDERING_OPS = frozenset({Op.LT, Op.LTE, Op.GT, Op.GTE})
_COMPARISON_SYMBOLS = {Op.EQ: "==", Op.NE: "!=", Op.LT: "<", Op.LTE: "<=", Op.GT: ">", Op.GTE: ">="}


@dataclass(frozen=True)
class Condition:
    """One test on one attribute, e.g. `price lt 50`."""

    key: str
    op: Op
    value: Scalar | tuple[Scalar, ...]

    def to_expr(self, field: str) -> str:
        target = f"{field}[{quote_string(self.key)}]"
        if self.op is Op.EXISTS:
            return f"exists {target}" if self.value else f"not exists {target}"
        if self.op in (Op.IN, Op.NIN):
            keyword = "in" if self.op is Op.IN else "not in"
            return f"{target} {keyword} {render_list(self._values())}"
        return f"{target} {_COMPARISON_SYMBOLS[self.op]} {render_scalar(self._scalar())}"

    def matches(self, attributes: Mapping[str, Any]) -> bool:
        if self.op is Op.EXISTS:
            return (self.key in attributes) == self.value
        present = self.key in attributes
        actual = attributes.get(self.key)
        if self.op is Op.NE:
            return not (present and same_value(actual, self._scalar()))
        if self.op is Op.IN:
            return present and any(same_value(actual, v) for v in self._values())
        if self.op is Op.NIN:
            return not (present and any(same_value(actual, v) for v in self._values()))
        return present and _VALUE_TESTS[self.op](actual, self._scalar())

    def _scalar(self) -> Scalar:
        assert not isinstance(self.value, tuple)
        return self.value

    def _values(self) -> tuple[Scalar, ...]:
        assert isinstance(self.value, tuple)
        return self.value


@dataclass(frozen=True)
class AttributeFilter:
    """All conditions must hold (AND). An empty filter matches everything."""

    conditions: tuple[Condition, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.conditions)

    def to_expr(self, field: str = "attributes") -> str:
        """The Milvus boolean expression over the JSON field `field`; "" when empty."""
        return " and ".join(c.to_expr(field) for c in self.conditions)

    def matches(self, attributes: Mapping[str, Any]) -> bool:
        """Evaluates the filter on one item's attributes, with Milvus' semantics."""
        return all(c.matches(attributes) for c in self.conditions)


# --- parsing ---------------------------------------------------------------------------------------


def parse_filter_json(text: str) -> AttributeFilter:
    """Parses the wire form (a JSON object, or "" for no filter)."""
    return parse_filter(json_object(text, "filter", InvalidFilter))


def parse_filter(spec: object) -> AttributeFilter:
    """Validates a decoded filter object and builds its conditions."""
    if spec is None:
        return AttributeFilter()
    if not isinstance(spec, Mapping):
        raise InvalidFilter(f"filter must be a JSON object, not {json_kind(spec)}")
    conditions: list[Condition] = []
    for key, rule in spec.items():
        conditions.extend(_parse_rule(_check_key(key), rule))
    if len(conditions) > MAX_CONDITIONS:
        raise InvalidFilter(f"filter has {len(conditions)} conditions; at most {MAX_CONDITIONS} are allowed")
    return AttributeFilter(tuple(conditions))


def _check_key(key: object) -> str:
    if not isinstance(key, str) or not KEY_PATTERN.match(key):
        raise InvalidFilter(f"filter key {key!r} is not a valid attribute name (letters, digits, _; at most 64)")
    return key


def _parse_rule(key: str, rule: object) -> list[Condition]:
    if isinstance(rule, Mapping):
        if not rule:
            raise InvalidFilter(f"filter on {key!r} has no operators")
        return [_parse_operator(key, op, value) for op, value in rule.items()]
    return [Condition(key, Op.EQ, _check_scalar(key, rule))]


def _parse_operator(key: str, name: object, value: object) -> Condition:
    if name not in _OP_NAMES:
        allowed = ", ".join(_OP_NAMES)
        raise InvalidFilter(f"filter on {key!r} uses unknown operator {name!r} (allowed: {allowed})")
    op = Op(str(name))
    if op is Op.EXISTS:
        if not isinstance(value, bool):
            raise InvalidFilter(f"filter on {key!r}: 'exists' takes true or false, not {json_kind(value)}")
        return Condition(key, op, value)
    if op in (Op.IN, Op.NIN):
        return Condition(key, op, _check_list(key, op, value))
    scalar = _check_scalar(key, value)
    if op in _ORDERING_OPS and isinstance(scalar, bool):
        raise InvalidFilter(f"filter on {key!r}: '{op}' compares numbers or strings, not a boolean")
    return Condition(key, op, scalar)


def _check_scalar(key: str, value: object) -> Scalar:
    if isinstance(value, bool):
        return value
    if isinstance(value, int):
        if not _INT64_MIN <= value <= _INT64_MAX:
            raise InvalidFilter(f"filter on {key!r}: integer {value} is outside the 64-bit range")
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise InvalidFilter(f"filter on {key!r}: number {value} is not finite")
        return value
    if isinstance(value, str):
        return _check_string(key, value)
    raise InvalidFilter(f"filter on {key!r}: value must be a string, number or bool, not {json_kind(value)}")


def _check_string(key: str, value: str) -> str:
    if len(value) > MAX_STRING_CHARS:
        raise InvalidFilter(f"filter on {key!r}: string longer than {MAX_STRING_CHARS} characters")
    if _FORBIDDEN_CHARS.search(value):
        raise InvalidFilter(f"filter on {key!r}: string contains a control character")
    return value


def _check_list(key: str, op: Op, value: object) -> tuple[Scalar, ...]:
    if not isinstance(value, Sequence) or isinstance(value, str):
        raise InvalidFilter(f"filter on {key!r}: '{op}' takes a list, not {json_kind(value)}")
    if len(value) > MAX_LIST_VALUES:
        raise InvalidFilter(f"filter on {key!r}: '{op}' list has more than {MAX_LIST_VALUES} values")
    values = tuple(_check_scalar(key, v) for v in value)
    if len({_value_kind(v) for v in values}) > 1:
        # Milvus 2.3 fails the whole query on a mixed list, so refuse it up front.
        raise InvalidFilter(f"filter on {key!r}: '{op}' list mixes strings, numbers and bools")
    return values


def _value_kind(value: Scalar) -> str:
    if isinstance(value, bool):
        return "bool"
    return "str" if isinstance(value, str) else "number"


# --- rendering -------------------------------------------------------------------------------------


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
        return repr(value)
    return quote_string(value)


def render_list(values: Sequence[Scalar]) -> str:
    """A Milvus list literal; numbers are all written as floats if any is one (Milvus needs one type)."""
    if any(isinstance(v, float) for v in values):
        return "[" + ", ".join(repr(float(v)) for v in values) + "]"
    return "[" + ", ".join(render_scalar(v) for v in values) + "]"


# --- evaluation (the exact index) -----------------------------------------------------------------


def same_value(actual: object, expected: Scalar) -> bool:
    """Milvus' JSON equality: same kind of value (string, number, bool) and equal."""
    if isinstance(expected, bool) or isinstance(actual, bool):
        return isinstance(expected, bool) and isinstance(actual, bool) and actual == expected
    if _is_number(expected):
        return _is_number(actual) and actual == expected
    return isinstance(actual, str) and actual == expected


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _comparable(actual: object, expected: Scalar) -> bool:
    if _is_number(expected):
        return _is_number(actual)
    return isinstance(expected, str) and isinstance(actual, str)


def _ordered(test: Callable[[Any, Any], bool]) -> Callable[[object, Scalar], bool]:
    def check(actual: object, expected: Scalar) -> bool:
        return _comparable(actual, expected) and test(actual, expected)

    return check


_VALUE_TESTS: dict[Op, Callable[[object, Scalar], bool]] = {
    Op.EQ: same_value,
    Op.LT: _ordered(lambda a, b: a < b),
    Op.LTE: _ordered(lambda a, b: a <= b),
    Op.GT: _ordered(lambda a, b: a > b),
    Op.GTE: _ordered(lambda a, b: a >= b),
}
