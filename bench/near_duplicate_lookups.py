"""What an add's near-duplicate look costs (on_duplicate skip or replace, the web page's import default), one search
of many queries against the way before: a search per image.

    .venv/bin/python bench/near_duplicate_lookups.py [--images 2000] [--batch 32] [--batches 30]

Starts a Milvus and the search service of the local stack, fills an album with `--images` images of one 512-d row
through the service, then looks up the nearest other image of `--batch` new images (half of them near one of the
album's: a near-duplicate each) within the near-duplicate distance, as the gateway does for each batch of an add or
an import (services.gateway.usecases.ingest.near_duplicates), `--batches` times each way, in turn:
  many      one SearchMany over gRPC: every image's nearest two by first rows (`primary_only`)
  baseline  the way before: a Search per image (nearest one, itself excluded, within the distance), all at once
Both must find the same near-duplicates. The figures: each lookup's time from call to answer, and the CPU of
Milvus and the search service per image looked up. The last line is a JSON object: `lookup_ms` and
`baseline_lookup_ms` (p50, p95), `cpu_ms` and `baseline_cpu_ms` (per image), `lookup_ratio` and `cpu_ratio`.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import percentiles, print_json_line, stack_cpu_seconds
from services.common.grpc_client import open_channel
from services.devstack import Ports, Stack
from services.gateway.clients import GrpcVectorSearch
from services.gateway.records import Item
from services.gateway.settings import GatewaySettings
from services.gateway.usecases.shared import nearest_others

DIM = 512
ALBUM = "near"
LIMIT = GatewaySettings().near_duplicate_distance


def unit(vectors: np.ndarray) -> np.ndarray:
    return (vectors / np.linalg.norm(vectors, axis=-1, keepdims=True)).astype(np.float32)


async def by_many(search: GrpcVectorSearch, ids: list[str], vectors: list[list[float]]) -> dict[str, str]:
    """The gateway's own look (`nearest_others`, as `near_duplicates` asks it)."""
    found = await nearest_others(search, ALBUM, list(zip(ids, vectors, strict=True)), 1, LIMIT)
    return {image: hits[0].id for image, hits in zip(ids, found, strict=True) if hits}


async def by_each(search: GrpcVectorSearch, ids: list[str], vectors: list[list[float]]) -> dict[str, str]:
    found = await asyncio.gather(*(search.search(ALBUM, v, 1, exclude_ids=[image], primary_only=True,
                                                 max_distance=LIMIT) for image, v in zip(ids, vectors, strict=True)))
    return {image: hits[0].id for image, hits in zip(ids, found, strict=True) if hits}


async def run(stack: Stack, args: argparse.Namespace) -> tuple[dict[str, list[float]], dict[str, float]]:
    """Each way's lookup times (ms) and the CPU of Milvus and the search service per image looked up (ms)."""
    rng = np.random.default_rng(5)
    album = unit(rng.standard_normal((args.images, DIM)))
    channel = open_channel(f"127.0.0.1:{stack.ports.search}")
    search = GrpcVectorSearch(channel, timeout_s=60)
    try:
        await search.create_collection(ALBUM, DIM, "bench")
        for start in range(0, args.images, 500):
            await search.insert(ALBUM, [Item(id=f"old{i}", name="", content_hash=f"h{i}", attributes={},
                                             created_at_ms=0, vectors=[album[i].tolist()])
                                        for i in range(start, min(start + 500, args.images))])
        await search.count(ALBUM)
        ways = {"many": by_many, "baseline": by_each}
        taken: dict[str, list[float]] = {way: [] for way in ways}
        cpu: dict[str, float] = dict.fromkeys(ways, 0.0)
        for number in range(2 * args.batches):
            way = "many" if number % 2 == 0 else "baseline"
            base = album[rng.integers(0, args.images, args.batch)]
            scale = np.where(np.arange(args.batch) % 2 == 0, 0.005, 1.0)[:, None]  # every other one a near copy
            noise = rng.standard_normal((args.batch, DIM)) * scale
            vectors = unit(base + noise).tolist()
            ids = [f"new{number}-{k}" for k in range(args.batch)]
            before = stack_cpu_seconds(stack)
            started = time.perf_counter()
            found = await ways[way](search, ids, vectors)
            taken[way].append((time.perf_counter() - started) * 1000)
            after = stack_cpu_seconds(stack)
            cpu[way] += sum(after[p] - before[p] for p in ("milvus", "search"))
            other = await ways["baseline" if way == "many" else "many"](search, ids, vectors)
            assert found == other, f"the two ways disagree on batch {number}: {found} against {other}"
            assert len(found) >= args.batch // 2, f"only {len(found)} near-duplicates found in batch {number}"
    finally:
        await channel.close()
    return taken, {way: round(1000 * cpu[way] / (args.batches * args.batch), 2) for way in cpu}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=2000)
    parser.add_argument("--batch", type=int, default=GatewaySettings().ingest_batch_size, help="images a lookup")
    parser.add_argument("--batches", type=int, default=30, help="lookups each way")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="imagesearch-near-") as tmp:
        stack = Stack(Path(tmp), Ports.free())
        try:
            stack.start(("milvus", "search"))
            taken, cpu = asyncio.run(run(stack, args))
        finally:
            stack.stop()
    lookup, baseline = percentiles(taken["many"]), percentiles(taken["baseline"])
    lookup_ratio = round(lookup["p50"] / baseline["p50"], 2)
    cpu_ratio = round(cpu["many"] / cpu["baseline"], 2)
    print(f"near-duplicate look of {args.batch} new images in an album of {args.images}, {args.batches} each way, "
          "in turn:")
    print(f"  one search of many queries (now)  p50 {lookup['p50']:6.1f} ms  p95 {lookup['p95']:6.1f} ms  "
          f"CPU {cpu['many']} ms an image (Milvus + search service)")
    print(f"  a search per image (before)       p50 {baseline['p50']:6.1f} ms  p95 {baseline['p95']:6.1f} ms  "
          f"CPU {cpu['baseline']} ms an image   ratios {lookup_ratio} / {cpu_ratio}")
    print_json_line({"bench": "near_duplicate_lookups", "images": args.images, "batch": args.batch,
                     "batches": args.batches, "lookup_ms": lookup, "baseline_lookup_ms": baseline,
                     "lookup_ratio": lookup_ratio, "cpu_ms": cpu["many"], "baseline_cpu_ms": cpu["baseline"],
                     "cpu_ratio": cpu_ratio})


if __name__ == "__main__":
    main()
