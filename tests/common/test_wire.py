"""Typed values, columns and filters across the wire: the one schema definition and its proto agree, and
everything round-trips with its kind kept."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from imagesearch.v1 import common_pb2

from services.common.errors import InvalidArgument, InvalidFilter
from services.common.filtering import FALSE, TRUE, And, Not, Op, Or, Predicate
from services.common.schema import AlbumSchema, Column, ColumnType
from services.common.wire import (
    attributes_from_wire,
    attributes_to_wire,
    columns_from_wire,
    columns_to_wire,
    filter_from_wire,
    filter_to_wire,
    value_from_wire,
    value_to_wire,
)


def test_the_proto_column_types_are_the_schemas_one_to_one() -> None:
    names = set(common_pb2.ColumnType.keys()) - {"COLUMN_TYPE_UNSPECIFIED"}
    assert names == {f"COLUMN_TYPE_{t.name}" for t in ColumnType}
    schema = AlbumSchema.of([Column(f"c_{t.value}", t) for t in ColumnType])
    assert columns_from_wire(columns_to_wire(schema)) == schema


def test_the_proto_operators_are_the_filter_languages_one_to_one() -> None:
    names = set(common_pb2.Predicate.Op.keys()) - {"OP_UNSPECIFIED"}
    assert names == {op.name for op in Op}


@pytest.mark.parametrize("value", [
    None, "", "é😀", 0, -(2**63), 2**63 - 1, 1.5, -0.0, True, False,
    datetime(2024, 1, 31, 12, 0, 0, 123456, tzinfo=UTC),
    ["a", "b"], [], [1, "x", None, [True]], {"nested": {"x": [1.5, None]}}, {},
])
def test_values_round_trip_with_their_kind(value: Any) -> None:
    back = value_from_wire(value_to_wire(value))
    assert back == value and type(back) is type(value)


def test_an_int_and_a_float_stay_apart() -> None:
    assert value_to_wire(10).WhichOneof("kind") == "int_value"
    assert value_to_wire(10.0).WhichOneof("kind") == "float_value"
    assert attributes_from_wire(attributes_to_wire({"n": 10, "f": 10.0})) == {"n": 10, "f": 10.0}


def test_values_that_json_cannot_carry_are_refused() -> None:
    with pytest.raises(InvalidArgument):
        value_to_wire(object())
    with pytest.raises(InvalidArgument):
        value_from_wire(common_pb2.Value(float_value=float("nan")))
    for seconds in (10**15, -10**15):  # past the years a datetime holds: refused, not an internal error
        with pytest.raises(InvalidArgument, match="out of range"):
            value_from_wire(common_pb2.Value(timestamp_value={"seconds": seconds}))
    deep: Any = "x"
    for _ in range(40):
        deep = [deep]
    with pytest.raises(InvalidArgument):
        value_to_wire(deep)


def test_filters_round_trip() -> None:
    expr = And((Predicate("price", Op.BETWEEN, (1.0, 2.5)), Not(Predicate("attributes.k", Op.IS_NULL)),
                Or((Predicate("sizes", Op.CONTAINS_ANY, ("41", "42")), TRUE, FALSE)),
                Predicate("listed_at", Op.LT, (datetime(2024, 1, 1, tzinfo=UTC),))))
    assert filter_from_wire(filter_to_wire(expr)) == expr
    assert filter_from_wire(common_pb2.Filter()) is None


@pytest.mark.parametrize("wire", [
    common_pb2.Filter(predicate=common_pb2.Predicate(column="a")),
    common_pb2.Filter(predicate=common_pb2.Predicate(column="a", op=1, values=[common_pb2.Value()])),
    common_pb2.Filter(**{"not": common_pb2.Filter()}),
    common_pb2.Filter(all=common_pb2.FilterList(filters=[common_pb2.Filter()])),
])
def test_malformed_filter_messages_are_invalid_filters(wire: common_pb2.Filter) -> None:
    with pytest.raises(InvalidFilter):
        filter_from_wire(wire)
