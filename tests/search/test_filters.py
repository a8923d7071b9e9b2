"""Attribute filters: their Milvus expressions, escaping, evaluation, and every way to get one wrong."""

from __future__ import annotations

from typing import Any

import pytest

from services.common.errors import InvalidFilter
from services.search.filters import AttributeFilter, parse_filter, parse_filter_json, quote_string


def expr(spec: Any) -> str:
    return parse_filter(spec).to_expr()


def test_the_documented_example_translates_to_an_and_of_json_field_tests() -> None:
    assert expr({"category": "shoes", "price": {"lt": 50}, "in_stock": True}) == (
        'attributes["category"] == "shoes" and attributes["price"] < 50 and attributes["in_stock"] == true'
    )


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ({"a": {"eq": 1}}, 'attributes["a"] == 1'),
        ({"a": {"ne": "x"}}, 'attributes["a"] != "x"'),
        ({"a": {"lte": 2.5}}, 'attributes["a"] <= 2.5'),
        ({"a": {"gt": -3}}, 'attributes["a"] > -3'),
        ({"a": {"gte": 1e-05}}, 'attributes["a"] >= 1e-05'),
        ({"a": {"in": ["x", "y"]}}, 'attributes["a"] in ["x", "y"]'),
        ({"a": {"nin": [1, 2]}}, 'attributes["a"] not in [1, 2]'),
        ({"a": {"in": [True]}}, 'attributes["a"] in [true]'),
        ({"a": {"exists": True}}, 'exists attributes["a"]'),
        ({"a": {"exists": False}}, 'not exists attributes["a"]'),
        ({"a": False}, 'attributes["a"] == false'),
        ({"a": {"gte": 10, "lt": 50}}, 'attributes["a"] >= 10 and attributes["a"] < 50'),
    ],
)
def test_each_operator_translates_to_its_milvus_form(spec: Any, expected: str) -> None:
    assert expr(spec) == expected


def test_a_list_mixing_ints_and_floats_is_written_all_as_floats_because_milvus_needs_one_type() -> None:
    assert expr({"p": {"in": [10, 2.5]}}) == 'attributes["p"] in [10.0, 2.5]'


def test_quotes_backslashes_and_line_breaks_in_strings_are_escaped() -> None:
    assert quote_string('a"b\\c\nd\te\r') == '"a\\"b\\\\c\\nd\\te\\r"'
    assert expr({"s": '" or 1 == 1 or "'}) == 'attributes["s"] == "\\" or 1 == 1 or \\""'


def test_non_ascii_strings_pass_through_unchanged() -> None:
    assert expr({"s": "é😀"}) == 'attributes["s"] == "é😀"'


def test_an_empty_filter_matches_everything_and_renders_nothing() -> None:
    for empty in (parse_filter_json(""), parse_filter_json("  "), parse_filter({}), parse_filter(None)):
        assert not empty
        assert empty.to_expr() == ""
        assert empty.matches({"anything": 1})


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("{", "not valid JSON"),
        ("[1]", "must be a JSON object"),
        ('"x"', "must be a JSON object"),
        ('{"1bad": 1}', "not a valid attribute name"),
        ('{"a b": 1}', "not a valid attribute name"),
        ('{"a]\\"": 1}', "not a valid attribute name"),
        ('{"' + "k" * 65 + '": 1}', "not a valid attribute name"),
        ('{"a": null}', "not null"),
        ('{"a": [1, 2]}', "not an array"),
        ('{"a": {"eq": {"x": 1}}}', "not an object"),
        ('{"a": {}}', "has no operators"),
        ('{"a": {"like": "x%"}}', "unknown operator"),
        ('{"a": {"lt": true}}', "not a boolean"),
        ('{"a": {"lt": [1]}}', "not an array"),
        ('{"a": {"in": "abc"}}', "takes a list"),
        ('{"a": {"in": 3}}', "takes a list"),
        ('{"a": {"in": ["x", 1]}}', "mixes"),
        ('{"a": {"nin": [true, 1]}}', "mixes"),
        ('{"a": {"in": [[1]]}}', "not an array"),
        ('{"a": {"exists": 1}}', "takes true or false"),
        ('{"a": 1e400}', "not finite"),
        ('{"a": NaN}', "not finite"),
        ('{"a": -Infinity}', "not finite"),
        ('{"a": 9223372036854775808}', "64-bit"),
        ('{"a": "bell\\u0007"}', "control character"),
        ('{"a": "nul\\u0000"}', "control character"),
    ],
)
def test_an_invalid_filter_is_refused_with_a_message_naming_the_problem(text: str, problem: str) -> None:
    with pytest.raises(InvalidFilter) as caught:
        parse_filter_json(text)
    assert problem in caught.value.message


def test_overlong_strings_lists_and_filters_are_refused() -> None:
    for spec in ({"a": "x" * 1025}, {"a": {"in": list(range(1025))}}, {f"k{i}": i for i in range(65)}):
        with pytest.raises(InvalidFilter):
            parse_filter(spec)


ATTRS: dict[str, Any] = {"s": "shoes", "n": 10, "f": 2.5, "b": True, "one": 1, "nothing": None, "tags": ["x"]}


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
def test_evaluation_on_a_dict_follows_milvus_json_semantics(spec: Any, expected: bool) -> None:
    assert parse_filter(spec).matches(ATTRS) is expected


def test_a_filter_is_a_plain_value_usable_as_a_default() -> None:
    assert AttributeFilter().conditions == ()
