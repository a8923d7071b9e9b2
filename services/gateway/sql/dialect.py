"""The SQL dialect: PostgreSQL's, as sqlglot parses it, with pgvector's three distance operators.

    feature <-> image(...)    L2 distance between unit vectors: sqrt(2 * cosine distance)
    feature <=> image(...)    cosine distance: 1 - cosine similarity (what the API calls `distance`)
    feature <#> image(...)    negative inner product: -(cosine similarity), from -1 (same) to 1

All three bind like `*` and `/` (tighter than comparisons), so `feature <=> image('q.jpg') < 0.3` reads as
pgvector's does. Positions in errors are 1-based character offsets into the statement.
"""

from __future__ import annotations

import re
from typing import Any, ClassVar

import sqlglot
from sqlglot import exp
from sqlglot.dialects.postgres import Postgres
from sqlglot.errors import ParseError, TokenError
from sqlglot.tokens import TokenType

from services.common.errors import InvalidArgument

_CLASS = re.compile(r"<class 'sqlglot\.expressions\.(?:\w+\.)*(\w+)'>")
_SYMBOLS = {"LT": "'<'", "GT": "'>'", "LTE": "'<='", "GTE": "'>='", "EQ": "'='", "NEQ": "'<>'", "And": "AND",
            "Or": "OR", "Not": "NOT", "Paren": "a parenthesis", "In": "IN", "Between": "BETWEEN", "Like": "LIKE",
            "Distance": "'<->'", "NullSafeEQ": "'<=>'", "DistanceNd": "'<#>'", "Mul": "'*'", "Div": "'/'",
            "Add": "'+'", "Sub": "'-'"}


class SqlError(InvalidArgument):
    """A statement that cannot be parsed or is not supported (400)."""

    reason = "invalid_sql"


_Operators = dict[TokenType, type[exp.Expr]]


class ImageSql(Postgres):
    """PostgreSQL with `<#>` (pgvector's negative inner product) and `<=>` as distance operators."""

    class Tokenizer(Postgres.Tokenizer):
        KEYWORDS: ClassVar[dict[str, TokenType]] = {
            **{k: v for k, v in Postgres.Tokenizer.KEYWORDS.items() if k != "<<->>"},
            "<#>": TokenType.LLRR_ARROW,
        }

    class Parser(Postgres.Parser):  # type: ignore[misc,valid-type]
        FACTOR: ClassVar[_Operators] = {**Postgres.Parser.FACTOR, TokenType.NULLSAFE_EQ: exp.NullSafeEQ}
        EQUALITY: ClassVar[_Operators] = {
            k: v for k, v in Postgres.Parser.EQUALITY.items() if k != TokenType.NULLSAFE_EQ}


# The expression each distance operator parses to, and the metric it means.
DISTANCE_OPERATORS: dict[type[exp.Expr], str] = {
    exp.Distance: "l2",
    exp.NullSafeEQ: "cosine",
    exp.DistanceNd: "negative_inner_product",
}
OPERATOR_OF_METRIC = {"l2": "<->", "cosine": "<=>", "negative_inner_product": "<#>"}


def parse_statements(text: str) -> list[exp.Expr]:
    """Every statement of the text; `SqlError` with the position of a syntax error."""
    try:
        return [s for s in sqlglot.parse(text, dialect=ImageSql) if s is not None]
    except ParseError as exc:
        raise SqlError(syntax_message(text, exc.errors[0] if exc.errors else {}, str(exc))) from None
    except TokenError as exc:
        raise SqlError(f"syntax error: {exc}") from None


STATEMENT_WORDS = frozenset({TokenType.SELECT, TokenType.INSERT, TokenType.UPDATE, TokenType.DELETE,
                             TokenType.CREATE, TokenType.DROP, TokenType.WITH, TokenType.L_PAREN})


def check_statement_start(text: str) -> None:
    """Refuses text whose first word starts no statement (so that `SELEC * FROM t` is named as such rather
    than read as an expression)."""
    try:
        tokens = ImageSql().tokenize(text)
    except TokenError as exc:
        raise SqlError(f"syntax error: {exc}") from None
    if tokens and tokens[0].token_type not in STATEMENT_WORDS:
        first = tokens[0]
        raise SqlError(f"syntax error at position {first.start + 1} near {first.text[:40]!r}: a statement starts "
                       "with SELECT, INSERT, UPDATE, DELETE, CREATE TABLE or DROP TABLE")


def parse_expression(text: str) -> exp.Expr:
    """One expression (a WHERE clause's body); `SqlError` at the position of a syntax error."""
    statements = parse_statements(text)
    if len(statements) != 1:
        raise SqlError("give one expression")
    return statements[0]


def syntax_message(text: str, error: dict[str, Any], fallback: str) -> str:
    """A parse error as "syntax error at position P near 'x': what was expected"."""
    line, col, highlight = error.get("line"), error.get("col"), str(error.get("highlight") or "")
    description = str(error.get("description") or fallback.split("\n")[0])
    description = _CLASS.sub(lambda m: _SYMBOLS.get(m.group(1), m.group(1)), description)
    description = description.replace("Required keyword: 'expression' missing for", "an operand is missing after")
    description = description.replace("Required keyword: 'this' missing for", "something is missing in")
    if not isinstance(line, int) or not isinstance(col, int):
        return f"syntax error: {description}"
    position = position_of(text, line, col) - max(len(highlight) - 1, 0)
    near = f" near {highlight[:40]!r}" if highlight else " at the end"
    return f"syntax error at position {max(position, 1)}{near}: {description}"


def position_of(text: str, line: int, col: int) -> int:
    """The 1-based character offset of a 1-based line and column."""
    lines = text.split("\n")
    return sum(len(lines[i]) + 1 for i in range(min(line - 1, len(lines)))) + col


def position(node: exp.Expr | None) -> int | None:
    """Where a node starts in the text (1-based), from the first identifier or literal under it."""
    if node is None:
        return None
    for child in node.walk():
        meta = child.meta if child._meta else {}
        if "start" in meta:
            return int(meta["start"]) + 1
    return None


def at(node: exp.Expr | None) -> str:
    """"at position P: " for a node whose position is known, else ""."""
    where = position(node)
    return f"at position {where}: " if where is not None else ""
