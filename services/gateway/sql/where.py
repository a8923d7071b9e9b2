"""WHERE clauses, and the `where=` text form, as filter trees (services.common.filtering).

    price < 50 AND colour IN ('red', 'blue') AND in_stock
    listed_at >= TIMESTAMP '2024-01-01' OR name LIKE 'a%'
    '42' = ANY(sizes)   sizes @> ARRAY['42', '43']   sizes && ARRAY['42']   contains(sizes, '42')
    price BETWEEN 10 AND 20   colour IS NOT NULL   NOT (qty > 3)   attributes.kind = 'photo'

Comparisons take a column on one side and a literal on the other; `LIKE` takes a prefix ('abc%',
with `\\%` and `\\_` for the characters themselves). Each predicate remembers where it starts, so an
error found when the tree is checked against the album (a wrong type, an unknown column) names it.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import datetime
from typing import Any

from sqlglot import exp

from services.common.filtering import FALSE, TRUE, And, Expr, Not, Op, Or, Predicate
from services.common.schema import ATTRIBUTES_PREFIX, SQL_TYPES, ColumnType, Scalar, parse_timestamp
from services.gateway.sql.dialect import SqlError, at, parse_expression, position

SUPPORTED = ("comparisons (= <> < <= > >=), IN, BETWEEN, IS [NOT] NULL, LIKE 'prefix%', "
             "'x' = ANY(list), list @> ARRAY[...], list && ARRAY[...], contains(list, 'x'), AND, OR, NOT")
_COMPARISONS: dict[type[exp.Expr], Op] = {exp.EQ: Op.EQ, exp.LT: Op.LT, exp.LTE: Op.LE, exp.GT: Op.GT,
                                                exp.GTE: Op.GE}
_FLIPPED = {Op.LT: Op.GT, Op.LE: Op.GE, Op.GT: Op.LT, Op.GE: Op.LE, Op.EQ: Op.EQ}


def parse_where(text: str, album: str = "") -> Expr:
    """The text form of a filter (a WHERE clause without the WHERE)."""
    if not text.strip():
        return TRUE
    return to_filter(parse_expression(text), album)


def to_filter(node: exp.Expr, album: str = "") -> Expr:
    """A parsed WHERE expression as a filter tree; `SqlError` for anything the language does not have.
    `album` is the table a column may be qualified with (`shoes.price`)."""
    return _Converter(album).convert(node)


class _Converter:
    def __init__(self, album: str) -> None:
        self.album = album

    def convert(self, node: exp.Expr) -> Expr:
        handler = self._handlers().get(type(node))
        if handler is not None:
            return handler(node)
        if isinstance(node, exp.Column | exp.Bracket | exp.JSONExtractScalar | exp.JSONExtract | exp.Dot):
            return Predicate(column_name(node, self.album), Op.EQ, (True,), position(node))  # a bool column alone
        raise SqlError(f"{at(node)}{node.sql(dialect='postgres')[:60]!r} is not a condition the filter language "
                       f"has; it has {SUPPORTED}")

    def _handlers(self) -> dict[type[exp.Expr], Callable[[Any], Expr]]:
        return {
            exp.And: lambda n: And((self.convert(n.this), self.convert(n.expression))),
            exp.Or: lambda n: Or((self.convert(n.this), self.convert(n.expression))),
            exp.Not: lambda n: Not(self.convert(n.this)),
            exp.Paren: lambda n: self.convert(n.this),
            exp.Boolean: lambda n: TRUE if n.this else FALSE,
            **dict.fromkeys(_COMPARISONS, self._comparison),
            exp.NEQ: lambda n: Not(self._comparison(n, Op.EQ)),
            exp.In: self._in,
            exp.Between: self._between,
            exp.Is: self._is,
            exp.Like: self._like,
            exp.StartsWith: lambda n: self._predicate(n.this, Op.PREFIX, [n.expression]),
            exp.Contains: lambda n: self._predicate(n.this, Op.CONTAINS, [n.expression]),
            exp.ArrayContains: lambda n: self._predicate(n.this, Op.CONTAINS, [n.expression]),
            exp.ArrayContainsAll: lambda n: self._predicate(n.this, Op.CONTAINS_ALL, _array(n.expression)),
            exp.ArrayOverlaps: lambda n: self._predicate(n.this, Op.CONTAINS_ANY, _array(n.expression)),
            exp.Anonymous: self._function,
        }

    def _predicate(self, column: exp.Expr, op: Op, values: list[exp.Expr]) -> Predicate:
        return Predicate(column_name(column, self.album), op, tuple(scalar(v) for v in values), position(column))

    def _comparison(self, node: exp.Binary, op: Op | None = None) -> Expr:
        op = op or _COMPARISONS[type(node)]
        left, right = node.this, node.expression
        if isinstance(right, exp.Any):  # 'x' = ANY(list) / col = ANY(ARRAY[...])
            return self._any(node, left, right, op)
        if _is_column(right) and not _is_column(left):
            left, right, op = right, left, _FLIPPED[op]
        if not _is_column(left) or _is_column(right):
            raise SqlError(f"{at(node)}compare a column with a value, as in price < 50 (not "
                           f"{node.sql(dialect='postgres')[:60]!r})")
        return self._predicate(left, op, [right])

    def _any(self, node: exp.Expr, left: exp.Expr, right: exp.Any, op: Op) -> Expr:
        inner = right.this.this if isinstance(right.this, exp.Paren) else right.this
        if op is not Op.EQ:
            raise SqlError(f"{at(node)}ANY takes = only, as in '42' = ANY(sizes)")
        if _is_column(inner) and not _is_column(left):
            return self._predicate(inner, Op.CONTAINS, [left])
        if _is_column(left) and isinstance(inner, exp.Array):
            return self._predicate(left, Op.IN, _array(inner))
        raise SqlError(f"{at(node)}write 'value' = ANY(list_column) or column = ANY(ARRAY[...])")

    def _in(self, node: exp.In) -> Expr:
        if node.args.get("query") is not None or node.args.get("unnest") is not None:
            raise SqlError(f"{at(node)}IN takes a list of values; subqueries are not supported")
        if not _is_column(node.this):
            raise SqlError(f"{at(node)}IN tests a column, as in colour IN ('red', 'blue')")
        return self._predicate(node.this, Op.IN, list(node.expressions))

    def _between(self, node: exp.Between) -> Expr:
        return self._predicate(node.this, Op.BETWEEN, [node.args["low"], node.args["high"]])

    def _is(self, node: exp.Is) -> Expr:
        target = node.expression
        if isinstance(target, exp.Null):
            test: Expr = self._predicate(node.this, Op.IS_NULL, [])
        elif isinstance(target, exp.Boolean):
            # `x IS TRUE` is never unknown: false where x is null.
            is_null = self._predicate(node.this, Op.IS_NULL, [])
            test = And((Not(is_null), self._predicate(node.this, Op.EQ, [target])))
        else:
            raise SqlError(f"{at(node)}IS takes NULL, TRUE or FALSE")
        return Not(test) if node.args.get("negate") else test

    def _like(self, node: exp.Like) -> Expr:
        pattern = literal(node.expression)
        if not isinstance(pattern, str):
            raise SqlError(f"{at(node)}LIKE takes a string pattern")
        return Predicate(column_name(node.this, self.album), Op.PREFIX, (like_prefix(pattern, node),),
                         position(node.this))

    def _function(self, node: exp.Anonymous) -> Expr:
        name = str(node.this).lower()
        ops = {"contains": Op.CONTAINS, "contains_all": Op.CONTAINS_ALL, "contains_any": Op.CONTAINS_ANY,
               "array_contains": Op.CONTAINS, "starts_with": Op.PREFIX}
        if name not in ops or len(node.expressions) < 2:
            raise SqlError(f"{at(node)}function {name}() is not in the filter language; it has {SUPPORTED}")
        column, *values = node.expressions
        if len(values) == 1 and isinstance(values[0], exp.Array):
            values = list(values[0].expressions)
        return self._predicate(column, ops[name], values)


def _is_column(node: exp.Expr) -> bool:
    return isinstance(node, exp.Column | exp.Bracket | exp.JSONExtractScalar | exp.JSONExtract | exp.Dot)


def _array(node: exp.Expr) -> list[exp.Expr]:
    if isinstance(node, exp.Array):
        return list(node.expressions)
    if isinstance(node, exp.Paren | exp.Tuple):
        return list(node.expressions) if isinstance(node, exp.Tuple) else [node.this]
    raise SqlError(f"{at(node)}expected a list of values, as in ARRAY['42', '43']")


def like_prefix(pattern: str, node: exp.Expr | None = None) -> str:
    """The prefix of a LIKE pattern 'abc%' (`\\%`, `\\_` and `\\\\` stand for themselves)."""
    prefix: list[str] = []
    chars = iter(enumerate(pattern))
    for index, char in chars:
        if char == "\\":
            escaped = next(chars, None)
            prefix.append(escaped[1] if escaped else "\\")
        elif char == "%" and index == len(pattern) - 1:
            return "".join(prefix)
        elif char in "%_":
            break
        else:
            prefix.append(char)
    hint = ""
    underscores = re.sub(r"(?<!\\)_", r"\\_", pattern)  # each '_' escaped: the pattern meant, likely
    if underscores != pattern and underscores.endswith("%") and "%" not in underscores[:-1].replace("\\%", ""):
        hint = f": '_' matches any one character in SQL; for the underscore itself write '{underscores[:60]}'"
    raise SqlError(f"{at(node)}LIKE takes a prefix pattern such as 'abc%' (one % at the end; \\% and \\_ for "
                   f"the characters themselves), not {pattern[:60]!r}{hint}")


def column_name(node: exp.Expr, album: str = "") -> str:
    """The filter language's name of a column reference: a built-in or declared column (`price`, or
    `shoes.price` for album `shoes`), or an undeclared attribute (`attributes.kind`, `attributes['kind']`,
    `attributes->>'kind'`)."""
    if isinstance(node, exp.Bracket | exp.JSONExtractScalar | exp.JSONExtract):
        base = node.this
        keys = node.expressions if isinstance(node, exp.Bracket) else _path_keys(node.expression)
        if _identifier(base) == "attributes" and len(keys) == 1:
            key = literal(keys[0]) if isinstance(keys[0], exp.Expr) else keys[0]
            if isinstance(key, str):
                return ATTRIBUTES_PREFIX + key
        raise SqlError(f"{at(node)}name an undeclared attribute as attributes.key or attributes['key']")
    if isinstance(node, exp.Column):
        table = node.table
        name = _identifier(node.this)
        if not table:
            return name
        if table.lower() == "attributes":
            return ATTRIBUTES_PREFIX + str(node.this.this if isinstance(node.this, exp.Identifier) else node.name)
        if album and table.lower() == album:
            return name
        raise SqlError(f"{at(node)}{table}.{name} names another table; statements read one album")
    raise SqlError(f"{at(node)}expected a column, not {node.sql(dialect='postgres')[:60]!r}")


def _path_keys(node: exp.Expr) -> list[exp.Expr | str]:
    """The keys of a JSON path (`attributes->>'kind'` has one)."""
    if isinstance(node, exp.JSONPath):
        return [str(part.this) for part in node.expressions if isinstance(part, exp.JSONPathKey)]
    return [node]


def _identifier(node: exp.Expr) -> str:
    """An identifier as SQL reads it: unquoted ones in lower case."""
    if isinstance(node, exp.Identifier):
        return str(node.this) if node.quoted else str(node.this).lower()
    if isinstance(node, exp.Column):
        return _identifier(node.this) if not node.table else f"{node.table}.{_identifier(node.this)}"
    return str(node.name)


def literal(node: exp.Expr) -> Scalar | list[Any] | None:
    """A literal's value: strings, numbers (int when written without a point), TRUE/FALSE, NULL,
    TIMESTAMP '...' / DATE '...', ARRAY[...] and negative numbers."""
    if isinstance(node, exp.Literal):
        if node.is_string:
            return str(node.this)
        text = str(node.this)
        try:
            return int(text) if text.lstrip("-").isdigit() else float(text)
        except ValueError:
            raise SqlError(f"{at(node)}{text!r} is not a number") from None
    if isinstance(node, exp.Boolean):
        return bool(node.this)
    if isinstance(node, exp.Null):
        return None
    if isinstance(node, exp.Neg):
        value = literal(node.this)
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise SqlError(f"{at(node)}only a number can be negated")
        return -value
    if isinstance(node, exp.Paren):
        return literal(node.this)
    if isinstance(node, exp.Cast):
        return _cast(node)
    if isinstance(node, exp.Array):
        return [literal(v) for v in node.expressions]
    raise SqlError(f"{at(node)}expected a value (a string, number, TRUE/FALSE, NULL, TIMESTAMP '...' or "
                   f"ARRAY[...]), not {node.sql(dialect='postgres')[:60]!r}")


def scalar(node: exp.Expr) -> Scalar:
    """A literal that a predicate compares with: not NULL, not a list."""
    value = literal(node)
    if value is None:
        raise SqlError(f"{at(node)}a comparison with NULL is never true; write IS NULL or IS NOT NULL")
    if isinstance(value, list):
        raise SqlError(f"{at(node)}expected one value, not a list")
    return value


def _cast(node: exp.Cast) -> Scalar | list[Any] | None:
    value = literal(node.this)
    target = node.to.this.name if isinstance(node.to.this, exp.DataType.Type) else str(node.to.this)
    kind = SQL_TYPES.get(target.upper())
    if kind is ColumnType.TIMESTAMP and isinstance(value, str):
        try:
            stamp: datetime = parse_timestamp(value)
        except ValueError as exc:
            raise SqlError(f"{at(node)}{value!r} is {exc}") from None
        return stamp
    if kind is ColumnType.FLOAT and isinstance(value, int | float | str) and not isinstance(value, bool):
        return float(value)
    if kind is ColumnType.INT and isinstance(value, int | str) and not isinstance(value, bool):
        return int(value)
    if kind is ColumnType.STRING and value is not None:
        return str(value)
    raise SqlError(f"{at(node)}cannot cast {node.this.sql(dialect='postgres')[:40]} to {target}")
