"""Declared columns: names, types, and values checked on every write."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest

from services.common.errors import InvalidAttributes
from services.common.schema import (
    MAX_COLUMNS,
    AlbumSchema,
    Column,
    ColumnType,
    coerce,
    from_timestamp_us,
    iso,
    timestamp_us,
    to_json,
)

SHOES = AlbumSchema.of([Column("price", ColumnType.FLOAT), Column("qty", ColumnType.INT),
                        Column("tags", ColumnType.STRING_LIST), Column("when", ColumnType.TIMESTAMP)])


@pytest.mark.parametrize(("kind", "value", "expected"), [
    (ColumnType.FLOAT, 3, 3.0), (ColumnType.INT, 3.0, 3), (ColumnType.BOOL, False, False),
    (ColumnType.STRING, "é", "é"), (ColumnType.STRING_LIST, ("a", "b"), ["a", "b"]),
    (ColumnType.TIMESTAMP, "2024-01-31", datetime(2024, 1, 31, tzinfo=UTC)),
    (ColumnType.TIMESTAMP, "2024-01-31T12:00:00+02:00", datetime(2024, 1, 31, 10, tzinfo=UTC)),
    (ColumnType.TIMESTAMP, "2024-01-31T12:00:00Z", datetime(2024, 1, 31, 12, tzinfo=UTC)),
    (ColumnType.TIMESTAMP, datetime(2024, 1, 31, 12, tzinfo=timezone(timedelta(hours=-5))),
     datetime(2024, 1, 31, 17, tzinfo=UTC)),
    (ColumnType.INT, None, None),
])
def test_values_take_their_columns_type(kind: ColumnType, value: Any, expected: Any) -> None:
    assert coerce(kind, value) == expected and type(coerce(kind, value)) is type(expected)


@pytest.mark.parametrize(("kind", "value"), [
    (ColumnType.FLOAT, "3"), (ColumnType.FLOAT, True), (ColumnType.FLOAT, float("inf")), (ColumnType.INT, 3.5),
    (ColumnType.INT, 2**63), (ColumnType.BOOL, 1), (ColumnType.BOOL, "true"), (ColumnType.STRING, 5),
    (ColumnType.STRING, "x" * 1025), (ColumnType.STRING, "bell\x07"), (ColumnType.STRING_LIST, "a"),
    (ColumnType.STRING_LIST, ["a", 1]), (ColumnType.STRING_LIST, ["x"] * 65), (ColumnType.STRING_LIST, ["y" * 257]),
    (ColumnType.TIMESTAMP, 1700000000), (ColumnType.TIMESTAMP, "yesterday"), (ColumnType.TIMESTAMP, ""),
])
def test_a_value_of_the_wrong_type_is_refused_naming_it(kind: ColumnType, value: Any) -> None:
    with pytest.raises(InvalidAttributes) as caught:
        coerce(kind, value, "col", "image 'a.jpg'")
    assert "image 'a.jpg'" in caught.value.message and "'col'" in caught.value.message


def test_attributes_split_into_declared_values_with_nulls_and_the_rest() -> None:
    typed, extra = SHOES.split({"price": 2, "kind": "x", "gone": None})
    assert typed == {"price": 2.0, "qty": None, "tags": None, "when": None}
    assert extra == {"kind": "x"}
    assert SHOES.check({"qty": 1}) == {"price": None, "qty": 1, "tags": None, "when": None}


@pytest.mark.parametrize("columns", [
    [Column("Price", ColumnType.FLOAT)], [Column("1x", ColumnType.FLOAT)], [Column("name", ColumnType.STRING)],
    [Column("distance", ColumnType.FLOAT)], [Column("a", ColumnType.INT), Column("a", ColumnType.FLOAT)],
    [Column(f"c{i}", ColumnType.INT) for i in range(MAX_COLUMNS + 1)], [Column("x\n", ColumnType.INT)],
])
def test_bad_column_declarations_are_refused(columns: list[Column]) -> None:
    with pytest.raises(InvalidAttributes):
        AlbumSchema.of(columns)


def test_timestamps_are_kept_to_the_microsecond_and_written_in_iso_with_z() -> None:
    stamp = datetime(1969, 7, 20, 20, 17, 40, 5, tzinfo=UTC)
    assert from_timestamp_us(timestamp_us(stamp)) == stamp
    assert iso(stamp) == "1969-07-20T20:17:40.000005Z"
    assert to_json({"a": [stamp.replace(microsecond=0)]}) == {"a": ["1969-07-20T20:17:40Z"]}


def test_the_json_schema_of_each_type_names_its_json_kind() -> None:
    kinds = {t: t.json_schema["type"] for t in ColumnType}
    assert kinds == {ColumnType.STRING: "string", ColumnType.INT: "integer", ColumnType.FLOAT: "number",
                     ColumnType.BOOL: "boolean", ColumnType.TIMESTAMP: "string", ColumnType.STRING_LIST: "array"}
