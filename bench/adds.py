"""How long the search service takes for its part of an add of one photo, added right after the previous one,
against the way it read before.

    .venv/bin/python bench/adds.py [--images 300] [--adds 30] [--gap-ms 30]

Starts a Milvus of the local stack and two search-service indexes on it (`MilvusIndex`), each with an album of
`--images` images of one 512-d row, then adds `--adds` new images to each, one at a time, as a user adding photos
one by one does (`POST /v1/albums/{album}/images`, a photo each), the two in turn. The search service's part of an
add: its look at which of the images the album holds (`get`: none, they are new), then the insert, which looks at
the images' rows before it upserts them. Between adds the gateway embeds and writes blobs (`--gap-ms`).
  now       reads by id of images this process has not written lately at Bounded (SEARCH_RECENT_WRITES_S=10)
  baseline  the way before: every read at Session (SEARCH_RECENT_WRITES_S=0), which waits until Milvus makes the
            previous add's insert visible, on its next time tick (every 200 ms)
Each figure is the look and the insert together. The last line is a JSON object: `add_ms` and `baseline_add_ms`
(p50, p95), `add_ratio` (p50s).
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
from services.search.milvus_index import MilvusIndex
from services.search.settings import SearchSettings

DIM = 512
WAYS = {"now": 10.0, "baseline": 0.0}  # SearchSettings.recent_writes_s


def unit_vectors(rng: np.random.Generator, n: int) -> np.ndarray:
    vectors = rng.standard_normal((n, DIM)).astype(np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=300)
    parser.add_argument("--adds", type=int, default=30, help="adds each way")
    parser.add_argument("--gap-ms", type=float, default=30.0, help="pause between adds (the gateway's own work)")
    args = parser.parse_args()
    logging.getLogger("pymilvus").setLevel(logging.CRITICAL)

    rng = np.random.default_rng(11)
    taken: dict[str, list[float]] = {way: [] for way in WAYS}
    with running_milvus("imagesearch-adds-") as milvus:
        setup = MilvusIndex(SearchSettings(milvus_uri=milvus.uri))
        indexes = {way: MilvusIndex(SearchSettings(milvus_uri=milvus.uri, recent_writes_s=window))
                   for way, window in WAYS.items()}
        try:
            for way in WAYS:  # albums filled by another process: neither index has written to its own
                setup.create_collection(way, DIM, "bench")
                setup.insert(way, [Item(id=f"old{i}", vectors=(v,)) for i, v in
                                   enumerate(unit_vectors(rng, args.images))])
            for way, index in indexes.items():
                assert index.count(way) == args.images  # loaded, its rows visible, its first read's check made
            new = unit_vectors(rng, 2 * args.adds)
            for number in range(2 * args.adds):
                way = "now" if number % 2 == 0 else "baseline"
                index, image = indexes[way], f"new{number}"
                started = time.perf_counter()
                held = index.get(way, [image])
                index.insert(way, [Item(id=image, vectors=(new[number],), content_hash=f"h{number}")])
                taken[way].append((time.perf_counter() - started) * 1000)
                assert held == [], f"{image} found before it was added ({way})"
                time.sleep(args.gap_ms / 1000)
            for way, index in indexes.items():
                count = index.count(way)
                assert count == args.images + args.adds, f"{count} images in {way}"
        finally:
            for index in [setup, *indexes.values()]:
                index.close()

    now, baseline = percentiles(taken["now"]), percentiles(taken["baseline"])
    ratio = round(now["p50"] / baseline["p50"], 2)
    print(f"adding one image at a time to an album of {args.images}, {args.adds} each way, in turn "
          f"({args.gap_ms:g} ms apart):")
    print(f"  reads by id at Bounded unless written lately (now)  p50 {now['p50']:6.1f} ms  p95 {now['p95']:6.1f} ms")
    print(f"  every read at Session (before)                    p50 {baseline['p50']:6.1f} ms  "
          f"p95 {baseline['p95']:6.1f} ms   ratio {ratio}")
    print_json_line({"bench": "adds", "images": args.images, "adds": args.adds, "gap_ms": args.gap_ms,
                     "add_ms": now, "baseline_add_ms": baseline, "add_ratio": ratio})


if __name__ == "__main__":
    main()
