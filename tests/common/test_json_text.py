"""The one parser of JSON-object text (attributes, filters) every service uses."""

from __future__ import annotations

import pytest

from services.common.errors import InvalidAttributes, InvalidFilter
from services.common.json_text import json_kind, json_object


@pytest.mark.parametrize("text", ["", "   ", "\n"])
def test_empty_text_is_an_empty_object(text: str) -> None:
    assert json_object(text, "attributes", InvalidAttributes) == {}


def test_an_object_is_returned_as_it_is() -> None:
    assert json_object('{"price": 45, "tags": ["a"]}', "filter", InvalidFilter) == {"price": 45, "tags": ["a"]}


@pytest.mark.parametrize(("text", "message"), [
    ("{", "attributes: not valid JSON (Expecting property name enclosed in double quotes at position 1)"),
    ("[1, 2]", "attributes must be a JSON object, not an array"),
    ('"shoes"', "attributes must be a JSON object, not a string"),
    ("3.5", "attributes must be a JSON object, not a number"),
    ("true", "attributes must be a JSON object, not a boolean"),
    ("null", "attributes must be a JSON object, not null"),
])
def test_anything_else_is_the_callers_error_naming_what_it_was(text: str, message: str) -> None:
    with pytest.raises(InvalidAttributes) as caught:
        json_object(text, "attributes", InvalidAttributes)
    assert caught.value.message == message


def test_kinds_are_named_as_json_names_them() -> None:
    assert [json_kind(v) for v in ({}, [], "", 1, 1.5, False, None)] == [
        "an object", "an array", "a string", "a number", "a number", "a boolean", "null"]
