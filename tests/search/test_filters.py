"""The filter language evaluated on one image (the exact index's side): SQL's three-valued logic,
nulls of declared columns, and Milvus' semantics for undeclared JSON attributes."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from services.common.filtering import FALSE, TRUE, And, Expr, Not, Op, Or, Predicate, bind, from_json
from services.common.schema import NO_COLUMNS, AlbumSchema, Column, ColumnType
from services.search.filters import Row, matches, truth

SCHEMA = AlbumSchema.of([Column("price", ColumnType.FLOAT), Column("colour", ColumnType.STRING),
                         Column("sizes", ColumnType.STRING_LIST), Column("when", ColumnType.TIMESTAMP)])
ATTRS: dict[str, Any] = {"s": "shoes", "n": 10, "f": 2.5, "b": True, "one": 1, "nothing": None, "tags": ["x", 1],
                         "obj": {"x": 1}}


def row(**attributes: Any) -> Row:
    return Row("id1", "photo.jpg", "hash", 1_700_000_000_000, attributes)


def p(column: str, op: Op, *values: Any) -> Predicate:
    return Predicate(column, op, tuple(values))


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ({"s": "shoes"}, True),
        ({"n": 10.0}, True),
        ({"one": True}, False),
        ({"b": 1}, False),
        ({"b": True}, True),
        ({"missing": {"ne": 1}}, True),
        ({"missing": {"nin": [1]}}, True),
        ({"missing": {"lt": 1}}, False),
        ({"s": {"ne": 3}}, True),
        ({"s": {"lt": 5}}, False),
        ({"s": {"lt": "z"}}, True),
        ({"n": {"gt": 2.5, "lte": 10}}, True),
        ({"f": {"in": [1, 2.5]}}, True),
        ({"nothing": {"exists": True}}, True),
        ({"missing": {"exists": False}}, True),
        ({"nothing": 1}, False),
        ({"tags": "x"}, False),
    ],
)
def test_the_json_form_keeps_its_meaning_on_undeclared_attributes(spec: Any, expected: bool) -> None:
    assert matches(bind(from_json(spec, NO_COLUMNS), NO_COLUMNS), row(**ATTRS)) is expected


@pytest.mark.parametrize(
    ("expr", "expected"),
    [
        (p("attributes.missing", Op.EQ, 1), None),
        (Not(p("attributes.missing", Op.EQ, 1)), None),
        (p("attributes.s", Op.EQ, 3), False),
        (p("attributes.s", Op.LT, 3), None),
        (Not(p("attributes.s", Op.LT, 3)), None),
        (p("attributes.obj", Op.EQ, 1), False),
        (p("attributes.tags", Op.CONTAINS, "x"), True),
        (p("attributes.tags", Op.CONTAINS, 1.0), True),
        (p("attributes.tags", Op.CONTAINS_ALL, "x", "y"), False),
        (p("attributes.tags", Op.CONTAINS_ANY, "y", "x"), True),
        (p("attributes.s", Op.CONTAINS, "s"), False),
        (p("attributes.s", Op.PREFIX, "sho"), True),
        (p("attributes.n", Op.PREFIX, "1"), None),
        (p("attributes.n", Op.BETWEEN, 10, 20), True),
        (p("attributes.nothing", Op.IS_NULL), False),
    ],
)
def test_undeclared_attributes_are_unknown_when_missing_or_of_another_kind_to_order(expr: Expr, expected: Any) -> None:
    assert truth(expr, row(**ATTRS)) is expected


def test_and_or_not_follow_three_valued_logic() -> None:
    unknown = p("attributes.missing", Op.EQ, 1)
    yes, no = TRUE, FALSE
    assert truth(And((yes, unknown)), row()) is None
    assert truth(And((no, unknown)), row()) is False
    assert truth(Or((yes, unknown)), row()) is True
    assert truth(Or((no, unknown)), row()) is None
    assert truth(Not(unknown), row()) is None
    assert truth(TRUE, row()) is True and truth(FALSE, row()) is False


def test_a_null_declared_value_makes_every_test_but_is_null_unknown() -> None:
    empty = row(price=None, colour=None, sizes=None, when=None)
    for expr in (p("price", Op.LT, 50.0), p("colour", Op.PREFIX, ""), p("sizes", Op.CONTAINS, "42"),
                 p("when", Op.GE, datetime(2000, 1, 1, tzinfo=UTC))):
        assert truth(expr, empty) is None
        assert truth(Not(expr), empty) is None
    assert truth(p("price", Op.IS_NULL), empty) is True


def test_declared_values_compare_by_their_type() -> None:
    shoe = row(price=39.5, colour="red", sizes=["42", "43"], when=datetime(2024, 5, 1, tzinfo=UTC))
    assert truth(p("price", Op.BETWEEN, 30.0, 40.0), shoe) is True
    assert truth(p("colour", Op.IN, "red", "blue"), shoe) is True
    assert truth(p("sizes", Op.CONTAINS_ALL, "42", "43"), shoe) is True
    assert truth(p("sizes", Op.CONTAINS_ANY, "44"), shoe) is False
    assert truth(p("when", Op.LT, datetime(2024, 1, 1, tzinfo=UTC)), shoe) is False


def test_created_at_compares_in_milliseconds() -> None:
    made = datetime.fromtimestamp(1_700_000_000, tz=UTC)
    assert truth(bind(p("created_at", Op.EQ, made), SCHEMA), row()) is True
    assert truth(bind(p("created_at", Op.GT, made.replace(microsecond=999)), SCHEMA), row()) is False
    assert truth(p("name", Op.PREFIX, "photo"), row()) is True
    assert truth(p("id", Op.IS_NULL), row()) is False
