"""The first images of an album in a column's order (`ORDER BY column LIMIT n`), without reading every value.

Milvus 2.3 returns a query's rows in primary key order and has no ORDER BY: ordering by a column meant reading
that column of every matching image and sorting here (`MilvusIndex.query`), which grows with the album: ~2 s an
order at 100,000 images, for the web page's newest images of an album or SQL's `ORDER BY price DESC LIMIT 10`.

For a number, a time or a string (any column but a boolean or a list), where more than a few thousand images match,
the rows past a threshold are read instead. The first rows by key are a sample of the album that says nothing of
the order, image ids being the hashes of their bytes; it holds as many rows as the square root of the matches, so
that the first threshold lets about as many through. That threshold is the value at the sample's rank that about
twice the wanted rows of the whole album pass, and only the rows at or past it are read. When fewer pass, the next
threshold, four times as deep in the sample, then the next, until the sample's last value, after which every value
is read as before. The order is exact, ties by id: every row at or past the threshold is read, and the wanted rows
are all among them once enough pass. Nulls, which come first in a descending order, are read apart then: the first
by id, which are the first by key (`first_by_id`). Booleans are read whole as before.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from services.common.filtering import Op, Predicate
from services.common.schema import AlbumSchema, ColumnType
from services.search.index import key_order_is_id_order, ordered_ids
from services.search.milvus_filter import all_of, compile_filter

Row = Mapping[str, Any]
# The kinds whose order a threshold can cut (booleans, two values, are read whole).
CUT_KINDS = frozenset({ColumnType.INT, ColumnType.FLOAT, ColumnType.TIMESTAMP, ColumnType.STRING})
# The first threshold's rank lets about this many times the wanted rows through; each next one this many times
# deeper in the sample.
FIRST_MARGIN = 2
DEEPER = 4
# A sample holds the square root of the matches (the first threshold then lets about as many through as the
# sample held), and at least this many times the wanted rows.
SAMPLE_WANTED = 4


class Rows(Protocol):
    """Reads of one album's images (one row each) matching a Milvus expression."""

    def first(self, expr: str, limit: int) -> Sequence[Row]:
        """The first `limit` matching rows by key."""
        ...

    def every(self, expr: str) -> Iterable[Row]:
        ...

    def count(self, expr: str) -> int:
        ...


@dataclass(frozen=True)
class Sampling:
    """How many matches are read whole (one read) rather than cut, and the most rows a sample reads."""

    whole: int = 2000
    most: int = 16384


def first_ids(rows: Rows, schema: AlbumSchema, kind: ColumnType, expr: str, column: str, descending: bool,
              want: int, value_of: Callable[[Row], Any], sampling: Sampling = Sampling(),
              nulls_first: bool | None = None) -> list[str]:
    """The ids of the first `want` images matching `expr` in the column's order (nulls where `nulls_first` says,
    else first descending and last ascending; ties by id), `value_of` giving a row's value of the column (None:
    null); from a sample and the rows past a threshold where more than `sampling.whole` images match and the
    column is of `CUT_KINDS`."""
    nulls_first = descending if nulls_first is None else nulls_first

    def ordered(found: Iterable[Row]) -> list[str]:
        return ordered_ids(((value_of(row), str(row["image_id"])) for row in found), descending, nulls_first)

    if kind not in CUT_KINDS:
        return ordered(rows.every(expr))[:want]
    sample = rows.first(expr, sampling.whole + 1)
    if len(sample) <= sampling.whole:  # every match
        return ordered(sample)[:want]
    total = rows.count(expr)
    size = min(max(SAMPLE_WANTED * want, math.isqrt(total)), sampling.most)
    if size > len(sample):
        sample = rows.first(expr, size)

    def where(op: Op, *values: Any) -> str:
        return all_of(expr, compile_filter(Predicate(column, op, values), schema))

    nulls = [str(row["image_id"]) for row in first_by_id(rows, where(Op.IS_NULL), want, sampling.most)] \
        if nulls_first else []  # first, by id
    if len(nulls) >= want:
        return nulls[:want]
    need = want - len(nulls)
    values = sorted((v for row in sample if (v := value_of(row)) is not None), reverse=descending)
    rank = FIRST_MARGIN * need * len(sample) // max(total, 1)
    while values and rank < len(values):
        past = list(rows.every(where(Op.GE if descending else Op.LE, values[rank])))
        if len(past) >= need:
            return nulls + ordered(past)[:need]
        rank = rank * DEEPER + DEEPER
    return ordered(rows.every(expr))[:want]


def first_by_id(rows: Rows, expr: str, want: int, most: int) -> list[Row]:
    """The first `want` rows matching `expr` by image id: the first by key, which are those unless their ids say
    otherwise (`key_order_is_id_order`), else every match sorted; every match too if `want` is over the `most`
    rows one read returns."""
    found: Sequence[Row] | None = rows.first(expr, want) if want <= most else None
    if found is None or (len(found) == want and not key_order_is_id_order(str(row["image_id"]) for row in found)):
        found = list(rows.every(expr))
    return sorted(found, key=lambda row: str(row["image_id"]))[:want]
