"""How long the first images of a large album in a column's order take, against reading every image's value.

    .venv/bin/python bench/ordering.py [--images 100000] [--orders 10] [--dim 512]

Starts a Milvus of the local stack and fills an album of `--images` images (one `--dim` row each, ids the hashes
of their numbers, as image ids are the hashes of their bytes; a declared float `price`, null for a fifth of them;
`created_at` a second apart; a camera's file name) through the search service's own `MilvusIndex`, then asks for
pages in an order, each way in turn, `--orders` times each:
  newest        created_at descending, 12: the web page's newest images of an album
  price_desc    price descending, 10 (nulls first, as SQL's ORDER BY ... DESC)
  price_asc     price ascending, 10
  newest_cheap  created_at descending, 12, among the images with price < 50
  name          name ascending, 50 (names IMG_<8 random digits>.jpg, as a camera's)
  threshold  `MilvusIndex.query(order_by=...)`: the rows past a threshold from a sample (services.search.milvus_order)
  baseline   the way before: every matching image's value read (a window of 16,384 at a time) and sorted here,
             then the page's images read
Both give the same ids (checked every time). Each figure is the time of one call, from the caller's side.
The last line is a JSON object: each order's `ms` and `baseline_ms` (p50, p95) and `ratio` (p50s), and
`newest_ms`, `newest_baseline_ms`, `newest_ratio` for the first.
"""

from __future__ import annotations

import argparse
import hashlib
import logging
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import percentiles, print_json_line
from bench.hybrid import running_milvus
from services.common.filtering import Expr, Op, Predicate
from services.common.schema import AlbumSchema, Column, ColumnType
from services.search.index import Item, ordered_ids
from services.search.milvus_filter import all_of, compile_filter, field_of
from services.search.milvus_index import MilvusIndex
from services.search.milvus_layout import column_of_row
from services.search.settings import SearchSettings

ALBUM = "ordering"
SCHEMA = AlbumSchema.of([Column("price", ColumnType.FLOAT)])
CHEAP = Predicate("price", Op.LT, (50.0,))
ORDERS: dict[str, tuple[str, bool, int, Expr | None]] = {
    "newest": ("created_at", True, 12, None),
    "price_desc": ("price", True, 10, None),
    "price_asc": ("price", False, 10, None),
    "newest_cheap": ("created_at", True, 12, CHEAP),
    "name": ("name", False, 50, None),
}


def read_all(index: MilvusIndex, column: str, descending: bool, limit: int, filter: Expr | None) -> list[str]:
    """The order as `MilvusIndex.query` made it before: every matching image's value read and sorted."""
    cname, stored = index._album(ALBUM)
    expr = all_of("ordinal == 0", compile_filter(filter, SCHEMA) if filter is not None else "")
    fields = ["image_id", field_of(column), *stored.null_fields]
    pairs = ((column_of_row(row, column, SCHEMA), str(row["image_id"])) for row in index._scan(cname, ALBUM, expr,
                                                                                                 fields))
    return ordered_ids(pairs, descending)[:limit]


def fill(index: MilvusIndex, images: int, dim: int) -> None:
    rng = np.random.default_rng(7)
    started, base = time.perf_counter(), 1_700_000_000_000
    for first in range(0, images, 5000):
        count = min(5000, images - first)
        vectors = rng.standard_normal((count, dim)).astype(np.float32)
        prices = rng.uniform(1, 500, count).round(2)
        nulls = rng.random(count) < 0.2
        index.insert(ALBUM, [Item(id=hashlib.sha256(str(n).encode()).hexdigest()[:32], vectors=(vectors[k],),
                                  name=f"IMG_{int(rng.integers(10**8)):08d}.jpg",
                                  attributes={"price": None if nulls[k] else float(prices[k])},
                                  created_at_ms=base + n * 1000)
                             for k, n in enumerate(range(first, first + count))])
        print(f"  {first + count:,} images, {time.perf_counter() - started:.0f} s", end="\r", flush=True)
    print()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=100_000)
    parser.add_argument("--orders", type=int, default=10, help="pages of each order each way")
    parser.add_argument("--dim", type=int, default=512)
    args = parser.parse_args()
    logging.getLogger("pymilvus").setLevel(logging.CRITICAL)

    taken: dict[str, dict[str, list[float]]] = {name: {"threshold": [], "baseline": []} for name in ORDERS}
    with running_milvus("imagesearch-ordering-") as milvus:
        index = MilvusIndex(SearchSettings(milvus_uri=milvus.uri))
        try:
            index.create_collection(ALBUM, args.dim, "bench", schema=SCHEMA)
            fill(index, args.images, args.dim)
            assert index.count(ALBUM) == args.images  # every row visible
            for number in range(args.orders):
                for name, (column, descending, limit, filter) in ORDERS.items():
                    answers = {}
                    for way in ("threshold", "baseline") if number % 2 == 0 else ("baseline", "threshold"):
                        started = time.perf_counter()
                        if way == "threshold":
                            answers[way] = [i.id for i in index.query(ALBUM, filter, limit=limit, order_by=column,
                                                                      descending=descending)]
                        else:  # and the page's images read, as the query does
                            answers[way] = [i.id for i in index.get(ALBUM, read_all(index, column, descending, limit,
                                                                                      filter))]
                        taken[name][way].append((time.perf_counter() - started) * 1000)
                    assert answers["threshold"] == answers["baseline"], (name, answers)
        finally:
            index.close()

    figures: dict[str, object] = {"bench": "ordering", "images": args.images, "dim": args.dim, "orders": args.orders}
    print(f"the first images of {args.images:,} in an order, {args.orders} each way, in turn (ms, p50 / p95):")
    for name, ways in taken.items():
        new, old = percentiles(ways["threshold"]), percentiles(ways["baseline"])
        ratio = round(new["p50"] / old["p50"], 3)
        print(f"  {name:13s} threshold {new['p50']:7.1f} / {new['p95']:7.1f}   every value {old['p50']:7.1f} / "
              f"{old['p95']:7.1f}   ratio {ratio}")
        figures[name] = {"ms": new, "baseline_ms": old, "ratio": ratio}
    newest = figures["newest"]
    assert isinstance(newest, dict)
    print_json_line({**figures, "newest_ms": newest["ms"], "newest_baseline_ms": newest["baseline_ms"],
                     "newest_ratio": newest["ratio"]})


if __name__ == "__main__":
    main()
