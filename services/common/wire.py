"""Typed attribute values, columns and filters to and from their wire messages (common.proto).

Used at the gRPC boundaries of the search service and the gateway, so that no domain module sees a
protobuf message. Values keep their kinds across the wire: an int stays an int (64-bit), a float a
float, a timestamp a timestamp (microseconds), JSON objects and arrays nest.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from google.protobuf.struct_pb2 import NULL_VALUE
from imagesearch.v1 import common_pb2

from services.common.errors import InvalidArgument, InvalidAttributes, InvalidFilter
from services.common.filtering import And, Expr, Not, Op, Or, Predicate
from services.common.schema import (
    INT64_MAX,
    INT64_MIN,
    AlbumSchema,
    Column,
    ColumnType,
    from_timestamp_us,
    timestamp_us,
)

_TYPE_PREFIX = "COLUMN_TYPE_"
# Nesting of JSON values on the wire (deeper is refused, as the HTTP API's JSON parser would).
MAX_VALUE_DEPTH = 32


def value_to_wire(value: Any, depth: int = 0) -> common_pb2.Value:
    """An attribute value (None, str, int, float, bool, datetime, list, dict) as a `Value`."""
    if depth > MAX_VALUE_DEPTH:
        raise InvalidArgument(f"attribute value nests deeper than {MAX_VALUE_DEPTH} levels")
    if value is None:
        return common_pb2.Value(null_value=NULL_VALUE)
    if isinstance(value, bool):
        return common_pb2.Value(bool_value=value)
    if isinstance(value, int):
        if not INT64_MIN <= value <= INT64_MAX:
            raise InvalidAttributes(f"attribute value {value} is outside the 64-bit integer range")
        return common_pb2.Value(int_value=value)
    if isinstance(value, float):
        return common_pb2.Value(float_value=value)
    if isinstance(value, str):
        return common_pb2.Value(string_value=value)
    if isinstance(value, datetime):
        wire = common_pb2.Value()
        us = timestamp_us(value)
        wire.timestamp_value.seconds, micros = divmod(us, 1_000_000)
        wire.timestamp_value.nanos = micros * 1000
        return wire
    if isinstance(value, list | tuple):
        return common_pb2.Value(list_value=common_pb2.ValueList(values=[value_to_wire(v, depth + 1) for v in value]))
    if isinstance(value, Mapping):
        return common_pb2.Value(map_value=common_pb2.ValueMap(values=attributes_to_wire(value, depth + 1)))
    raise InvalidArgument(f"an attribute value cannot be {type(value).__name__}")


def value_from_wire(wire: common_pb2.Value, depth: int = 0) -> Any:
    """A `Value` as a Python value (an unset one is None)."""
    if depth > MAX_VALUE_DEPTH:
        raise InvalidArgument(f"attribute value nests deeper than {MAX_VALUE_DEPTH} levels")
    kind = wire.WhichOneof("kind")
    if kind is None or kind == "null_value":
        return None
    if kind == "timestamp_value":
        stamp = wire.timestamp_value
        try:
            return from_timestamp_us(stamp.seconds * 1_000_000 + stamp.nanos // 1000)
        except (OverflowError, ValueError):  # past the years a datetime holds
            raise InvalidArgument(f"timestamp of {stamp.seconds} seconds is out of range") from None
    if kind == "list_value":
        return [value_from_wire(v, depth + 1) for v in wire.list_value.values]
    if kind == "map_value":
        return attributes_from_wire(wire.map_value.values, depth + 1)
    value = getattr(wire, kind)
    if kind == "float_value" and not math.isfinite(value):
        raise InvalidArgument(f"attribute value {value} is not a finite number")
    return value


def attributes_to_wire(attributes: Mapping[str, Any], depth: int = 0) -> dict[str, common_pb2.Value]:
    return {str(k): value_to_wire(v, depth) for k, v in attributes.items()}


def attributes_from_wire(wire: Mapping[str, common_pb2.Value], depth: int = 0) -> dict[str, Any]:
    return {k: value_from_wire(v, depth) for k, v in wire.items()}


# --- columns --------------------------------------------------------------------------------------


def column_type_to_wire(kind: ColumnType) -> int:
    return int(common_pb2.ColumnType.Value(_TYPE_PREFIX + kind.name))


def column_type_from_wire(number: int) -> ColumnType:
    name = common_pb2.ColumnType.Name(number) if number in common_pb2.ColumnType.values() else ""
    try:
        return ColumnType[name.removeprefix(_TYPE_PREFIX)]
    except KeyError:
        raise InvalidArgument(f"column type {name or number} is not one of "
                              f"{', '.join(_TYPE_PREFIX + t.name for t in ColumnType)}") from None


def columns_to_wire(schema: AlbumSchema) -> list[common_pb2.Column]:
    return [common_pb2.Column(name=c.name, type=column_type_to_wire(c.type)) for c in schema.columns]  # type: ignore[arg-type]


def columns_from_wire(columns: Any) -> AlbumSchema:
    """A checked schema from repeated `Column`s."""
    return AlbumSchema.of(Column(c.name, column_type_from_wire(c.type)) for c in columns)


# --- filters --------------------------------------------------------------------------------------

_OPS = {op: common_pb2.Predicate.Op.Value(op.name) for op in Op}
_OPS_BACK = {number: op for op, number in _OPS.items()}


def filter_to_wire(expr: Expr) -> common_pb2.Filter:
    if isinstance(expr, Predicate):
        return common_pb2.Filter(predicate=common_pb2.Predicate(
            column=expr.column, op=_OPS[expr.op], values=[value_to_wire(v) for v in expr.values]))
    if isinstance(expr, Not):
        return common_pb2.Filter(**{"not": filter_to_wire(expr.part)})
    parts = common_pb2.FilterList(filters=[filter_to_wire(p) for p in expr.parts])
    return common_pb2.Filter(all=parts) if isinstance(expr, And) else common_pb2.Filter(any=parts)


def filter_from_wire(wire: common_pb2.Filter, depth: int = 0) -> Expr | None:
    """The tree of a `Filter`; None when the message is unset (no filter)."""
    if depth > 64:
        raise InvalidFilter("the filter nests too deep")
    node = wire.WhichOneof("node")
    if node is None:
        return None
    if node == "predicate":
        p = wire.predicate
        if p.op not in _OPS_BACK:
            raise InvalidFilter(f"predicate on {p.column!r} has no operator")
        values = []
        for v in p.values:
            value = value_from_wire(v)
            if value is None or isinstance(value, list | dict):
                raise InvalidFilter(f"predicate on {p.column!r}: values must be strings, numbers, booleans or "
                                    "timestamps")
            values.append(value)
        return Predicate(p.column, _OPS_BACK[p.op], tuple(values))
    if node == "not":
        part = filter_from_wire(getattr(wire, "not"), depth + 1)
        if part is None:
            raise InvalidFilter("'not' of nothing")
        return Not(part)
    parts = []
    for child in getattr(wire, node).filters:
        part = filter_from_wire(child, depth + 1)
        if part is None:
            raise InvalidFilter(f"an empty filter inside '{node}'")
        parts.append(part)
    return And(tuple(parts)) if node == "all" else Or(tuple(parts))
