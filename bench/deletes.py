"""How long deleting an image from an album takes in the search service, against the way it deleted before.

    .venv/bin/python bench/deletes.py [--images 300] [--deletes 30] [--rows 1]

Starts a Milvus of the local stack, fills an album of `--images` images (`--rows` vector rows each: 1 in the
default recipe) through the search service's own `MilvusIndex`, then deletes `--deletes` of them one at a time,
as a user deletes a photo (`DELETE /v1/albums/{album}/images/{id}`), each way in turn:
  keys      `MilvusIndex.delete`: the images' rows read, then deleted by primary key
  baseline  the way before (54d6eac): the images read, then their rows deleted by an expression on the image
            id, which Milvus 2.3 answers only after looking the keys up itself on its next time tick
Both end with the same Strong read (`_delete_where`, `_delete_keys`), so that the caller's next read does not
see the rows. Each figure is the time from the call to its return; the same album, deletes alternating.
The last line is a JSON object: `delete_ms` and `baseline_delete_ms` (p50, p95), `delete_ratio` (p50s).
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import percentiles, print_json_line
from bench.hybrid import running_milvus
from services.search.index import Item
from services.search.milvus_filter import all_of
from services.search.milvus_index import MilvusIndex, ids_expr
from services.search.milvus_layout import collection_name
from services.search.settings import SearchSettings

DIM = 512
ALBUM = "deletes"


def delete_by_expression(index: MilvusIndex, ids: list[str]) -> int:
    """The search service's delete before 54d6eac: which images exist, then their rows by image id."""
    cname = collection_name(index.settings.collection_prefix, ALBUM)
    existing = index._query(cname, ALBUM, all_of("ordinal == 0", ids_expr(ids)), ["image_id"])
    if existing:
        index._delete_where(cname, ALBUM, ids_expr([row["image_id"] for row in existing]))
    return len(existing)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=300)
    parser.add_argument("--deletes", type=int, default=30, help="deletes each way")
    parser.add_argument("--rows", type=int, default=1, help="vector rows an image")
    args = parser.parse_args()
    logging.getLogger("pymilvus").setLevel(logging.CRITICAL)

    rng = np.random.default_rng(7)
    taken: dict[str, list[float]] = {"keys": [], "baseline": []}
    with running_milvus("imagesearch-deletes-") as milvus:
        index = MilvusIndex(SearchSettings(milvus_uri=milvus.uri))
        try:
            index.create_collection(ALBUM, DIM, "bench")
            vectors = rng.standard_normal((args.images * args.rows, DIM)).astype(np.float32)
            vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
            index.insert(ALBUM, [Item(id=f"img{i}", name=f"photo {i}", vectors=tuple(
                vectors[i * args.rows:(i + 1) * args.rows])) for i in range(args.images)])
            index.count(ALBUM)  # the album loaded and its rows visible
            for number in range(2 * args.deletes):
                way = "keys" if number % 2 == 0 else "baseline"
                image = f"img{number}"
                started = time.perf_counter()
                deleted = index.delete(ALBUM, [image]) if way == "keys" else delete_by_expression(index, [image])
                taken[way].append((time.perf_counter() - started) * 1000)
                assert deleted == 1 and index.get(ALBUM, [image]) == [], f"{image} not deleted ({way})"
            left = index.count(ALBUM)
            assert left == args.images - 2 * args.deletes, f"{left} images left"
        finally:
            index.close()

    keys, baseline = percentiles(taken["keys"]), percentiles(taken["baseline"])
    ratio = round(keys["p50"] / baseline["p50"], 2)
    print(f"deleting one image of {args.images} ({args.rows} row(s) each), {args.deletes} each way, in turn:")
    print(f"  by key (now)          p50 {keys['p50']:7.1f} ms  p95 {keys['p95']:7.1f} ms")
    print(f"  by expression (before) p50 {baseline['p50']:6.1f} ms  p95 {baseline['p95']:7.1f} ms   ratio {ratio}")
    print_json_line({"bench": "deletes", "images": args.images, "rows": args.rows, "deletes": args.deletes,
                     "delete_ms": keys, "baseline_delete_ms": baseline, "delete_ratio": ratio})


if __name__ == "__main__":
    main()
