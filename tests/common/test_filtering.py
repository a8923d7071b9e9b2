"""The filter language's tree: the JSON form, checking against an album's columns, and its text."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from services.common.errors import InvalidFilter
from services.common.filtering import (
    FALSE,
    TRUE,
    And,
    Not,
    Op,
    Or,
    Predicate,
    bind,
    conjoin,
    from_json,
    from_json_text,
    to_text,
)
from services.common.schema import NO_COLUMNS, AlbumSchema, Column, ColumnType

SHOES = AlbumSchema.of([Column("price", ColumnType.FLOAT), Column("qty", ColumnType.INT),
                        Column("colour", ColumnType.STRING), Column("sizes", ColumnType.STRING_LIST),
                        Column("in_stock", ColumnType.BOOL), Column("listed_at", ColumnType.TIMESTAMP)])


def p(column: str, op: Op, *values: Any) -> Predicate:
    return Predicate(column, op, tuple(values))


def test_the_json_form_becomes_a_conjunction_of_predicates_on_attributes() -> None:
    assert from_json({"category": "shoes", "price": {"lt": 50}, "in_stock": True}, NO_COLUMNS) == And((
        p("attributes.category", Op.EQ, "shoes"), p("attributes.price", Op.LT, 50),
        p("attributes.in_stock", Op.EQ, True)))


def test_json_form_keys_name_declared_columns_first() -> None:
    assert from_json({"price": {"gte": 10}, "kind": "x"}, SHOES) == And((
        p("price", Op.GE, 10), p("attributes.kind", Op.EQ, "x")))


def test_ne_and_nin_also_hold_where_the_attribute_is_missing_and_exists_tests_presence() -> None:
    assert from_json({"a": {"ne": 1}}, NO_COLUMNS) == Or((Not(p("attributes.a", Op.EQ, 1)),
                                                          p("attributes.a", Op.IS_NULL)))
    assert from_json({"a": {"exists": True}}, NO_COLUMNS) == Not(p("attributes.a", Op.IS_NULL))
    assert from_json({"a": {"exists": False}}, NO_COLUMNS) == p("attributes.a", Op.IS_NULL)


def test_an_empty_in_list_matches_nothing_and_an_empty_nin_list_everything() -> None:
    assert from_json({"a": {"in": []}}, NO_COLUMNS) == FALSE
    assert from_json({"a": {"nin": []}}, NO_COLUMNS) == Or((Not(FALSE), p("attributes.a", Op.IS_NULL)))


def test_an_empty_json_filter_is_no_filter() -> None:
    assert from_json_text("", NO_COLUMNS) is None
    assert from_json_text("  ", NO_COLUMNS) is None
    assert from_json_text("{}", NO_COLUMNS) is None


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("{", "not valid JSON"),
        ("[1]", "must be a JSON object"),
        ('"x"', "must be a JSON object"),
        ('{"1bad": 1}', "not a valid attribute name"),
        ('{"a b": 1}', "not a valid attribute name"),
        ('{"x\\n": 1}', "not a valid attribute name"),
        ('{"' + "k" * 65 + '": 1}', "not a valid attribute name"),
        ('{"a": null}', "not null"),
        ('{"a": [1, 2]}', "not an array"),
        ('{"a": {"eq": {"x": 1}}}', "not an object"),
        ('{"a": {}}', "has no operators"),
        ('{"a": {"like": "x%"}}', "unknown operator"),
        ('{"a": {"lt": true}}', "not a boolean"),
        ('{"a": {"lt": [1]}}', "not an array"),
        ('{"a": {"in": "abc"}}', "takes a list"),
        ('{"a": {"exists": 1}}', "takes true or false"),
    ],
)
def test_an_invalid_json_filter_is_refused_with_a_message_naming_the_problem(text: str, problem: str) -> None:
    with pytest.raises(InvalidFilter) as caught:
        from_json_text(text, NO_COLUMNS)
    assert problem in caught.value.message


@pytest.mark.parametrize(
    ("spec", "problem"),
    [
        ({"a": {"in": ["x", 1]}}, "mix"),
        ({"a": {"nin": [True, 1]}}, "mix"),
        ({"a": 1e400}, "not finite"),
        ({"a": 9223372036854775808}, "64-bit"),
        ({"a": "bell\u0007"}, "control character"),
        ({"a": "x" * 1025}, "longer than"),
        ({"a": {"in": list(range(1025))}}, "1024"),
    ],
)
def test_values_are_checked_when_the_filter_is_bound(spec: Any, problem: str) -> None:
    with pytest.raises(InvalidFilter) as caught:
        bind(from_json(spec, NO_COLUMNS), NO_COLUMNS)
    assert problem in caught.value.message


def test_too_many_conditions_or_too_deep_a_tree_are_refused() -> None:
    many = And(tuple(p("attributes.a", Op.EQ, i) for i in range(257)))
    deep: Any = p("attributes.a", Op.EQ, 1)
    for _ in range(40):
        deep = Not(deep)
    for expr in (many, deep):
        with pytest.raises(InvalidFilter):
            bind(expr, NO_COLUMNS)


def test_bare_names_are_attributes_in_an_album_without_columns() -> None:
    assert bind(p("kind", Op.EQ, "photo"), NO_COLUMNS) == p("attributes.kind", Op.EQ, "photo")
    assert bind(p("name", Op.PREFIX, "a"), NO_COLUMNS) == p("name", Op.PREFIX, "a")


def test_an_album_with_columns_refuses_an_unknown_bare_name_and_says_how_to_name_an_attribute() -> None:
    with pytest.raises(InvalidFilter) as caught:
        bind(Predicate("prcie", Op.LT, (50,), position=7), SHOES)
    assert "at position 7" in caught.value.message and "no column 'prcie'" in caught.value.message
    assert "attributes.prcie" in caught.value.message
    assert bind(p("attributes.prcie", Op.LT, 50), SHOES) == p("attributes.prcie", Op.LT, 50)


def test_values_take_their_columns_types() -> None:
    bound = bind(And((p("price", Op.LT, 50), p("listed_at", Op.GE, "2024-01-01"), p("qty", Op.EQ, 3.0))), SHOES)
    assert bound == And((p("price", Op.LT, 50.0), p("listed_at", Op.GE, datetime(2024, 1, 1, tzinfo=UTC)),
                         p("qty", Op.EQ, 3)))
    assert isinstance(bound.parts[0].values[0], float)  # type: ignore[union-attr]


def test_an_int_column_compared_with_a_fraction_takes_the_integers_it_admits() -> None:
    assert bind(p("qty", Op.LT, 39.5), SHOES) == p("qty", Op.LE, 39)
    assert bind(p("qty", Op.GT, 39.5), SHOES) == p("qty", Op.GE, 40)
    assert bind(p("qty", Op.BETWEEN, 1.5, 4.5), SHOES) == p("qty", Op.BETWEEN, 2, 4)
    with pytest.raises(InvalidFilter, match="never equal"):
        bind(p("qty", Op.EQ, 39.5), SHOES)


@pytest.mark.parametrize(
    ("expr", "problem"),
    [
        (p("price", Op.LT, "cheap"), "float column"),
        (p("colour", Op.EQ, 3), "string column"),
        (p("in_stock", Op.LT, True), "takes"),
        (p("sizes", Op.EQ, "42"), "takes"),
        (p("sizes", Op.CONTAINS, 42), "string column"),
        (p("colour", Op.CONTAINS, "r"), "takes"),
        (p("listed_at", Op.GE, "yesterday"), "ISO 8601"),
        (p("price", Op.BETWEEN, 1), "2 value"),
        (p("attributes.when", Op.GE, datetime(2024, 1, 1, tzinfo=UTC)), "not a declared timestamp"),
        (p("attributes.x", Op.PREFIX, 3), "prefix is a string"),
    ],
)
def test_a_value_or_operator_that_does_not_suit_the_column_is_refused(expr: Predicate, problem: str) -> None:
    with pytest.raises(InvalidFilter) as caught:
        bind(expr, SHOES)
    assert problem in caught.value.message


def test_binding_twice_changes_nothing() -> None:
    given = And((p("qty", Op.LT, 39.5), p("listed_at", Op.GE, "2024-01-01"), p("attributes.kind", Op.IN, "a", "b")))
    bound = bind(given, AlbumSchema.of([*SHOES.columns]))
    assert bind(bound, SHOES) == bound


def test_the_text_form_names_every_operator() -> None:
    expr = And((p("price", Op.LT, 50.0), p("colour", Op.IN, "red", "it's"), Not(p("sizes", Op.CONTAINS, "42")),
                p("listed_at", Op.GE, datetime(2024, 1, 1, tzinfo=UTC)), p("name", Op.PREFIX, "a_%"),
                p("qty", Op.BETWEEN, 1, 5), p("attributes.kind", Op.IS_NULL), TRUE, FALSE))
    assert to_text(expr) == (
        "(price < 50.0) AND (colour IN ('red', 'it''s')) AND (NOT (contains(sizes, '42'))) AND "
        "(listed_at >= TIMESTAMP '2024-01-01T00:00:00Z') AND (name LIKE 'a\\_\\%%') AND (qty BETWEEN 1 AND 5) AND "
        "(attributes.kind IS NULL) AND (TRUE) AND (FALSE)")


def test_conjoin_leaves_out_missing_and_true_filters() -> None:
    a = p("attributes.a", Op.EQ, 1)
    assert conjoin(None, a, TRUE) == a
    assert conjoin() == TRUE
