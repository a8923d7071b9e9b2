"""End-to-end speed of the whole system on this machine: ingest rate and search latency.

    .venv/bin/python bench/e2e.py [--images 200] [--queries 100] [--set .cache/evalset]

Starts a fresh stack (real Milvus, S3, Redis, the three services) on free ports, then measures,
in the same run:
  ingest     images/s added through the gateway (HTTP multipart, batches), against its peer:
             the extractor alone embedding the same images over gRPC (the ceiling of ingest)
  search     latency of `POST /v1/albums/A/search` with a new (uncached) edited photo each time,
             p50/p95, against its parts measured alone: one extractor Embed and one search-service
             Search over gRPC; and the same queries again, answered from the embedding cache
  memory     RSS of each process after the run
The last line is a JSON object of the figures.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import edited_copy, gallery_files, percentiles, print_json_line, running_stack, stack_rss
from services.client import GatewayClient, Upload
from services.devstack import Stack


def measure_ingest(client: GatewayClient, album: str, files: list[Path], batch: int) -> float:
    uploads = [Upload.from_path(p) for p in files]
    started = time.perf_counter()
    for i in range(0, len(uploads), batch):
        answer = client.add_images(album, uploads[i:i + batch])
        if answer["failed"]:
            print(f"  {answer['failed']} images failed to ingest", file=sys.stderr)
    return len(uploads) / (time.perf_counter() - started)


async def measure_extractor(stack: Stack, contents: list[bytes], batch: int) -> tuple[float, list[float]]:
    """Images/s of the extractor alone in batches, and single-image Embed latencies (ms)."""
    from imagesearch.v1 import extractor_pb2, extractor_pb2_grpc

    from services.common.grpc_client import open_channel

    async with open_channel(f"127.0.0.1:{stack.ports.extractor}") as channel:
        stub = extractor_pb2_grpc.ExtractorStub(channel)
        started = time.perf_counter()
        for i in range(0, len(contents), batch):
            await stub.Embed(extractor_pb2.EmbedRequest(images=contents[i:i + batch]))
        rate = len(contents) / (time.perf_counter() - started)
        singles = []
        for content in contents[: min(50, len(contents))]:
            t = time.perf_counter()
            await stub.Embed(extractor_pb2.EmbedRequest(images=[content]))
            singles.append((time.perf_counter() - t) * 1000)
    return rate, singles


async def measure_search_service(stack: Stack, album: str, vectors: list[list[float]]) -> list[float]:
    """Latency (ms) of the search service alone: top-10 for stored vectors."""
    from imagesearch.v1 import search_pb2, search_pb2_grpc

    from services.common.grpc_client import open_channel

    async with open_channel(f"127.0.0.1:{stack.ports.search}") as channel:
        stub = search_pb2_grpc.SearchStub(channel)
        samples = []
        for vector in vectors:
            t = time.perf_counter()
            await stub.Search(search_pb2.SearchRequest(collection=album, vector=vector, top_k=10))
            samples.append((time.perf_counter() - t) * 1000)
    return samples


async def stored_vectors(stack: Stack, album: str, ids: list[str]) -> list[list[float]]:
    from imagesearch.v1 import search_pb2, search_pb2_grpc

    from services.common.grpc_client import open_channel

    async with open_channel(f"127.0.0.1:{stack.ports.search}") as channel:
        reply = await search_pb2_grpc.SearchStub(channel).Get(
            search_pb2.GetRequest(collection=album, ids=ids, with_vectors=True))
    return [list(item.vectors[0].values) for item in reply.items]


def measure_search(client: GatewayClient, album: str, queries: list[bytes], top_k: int) -> tuple[list[float], int]:
    samples, first_hits = [], 0
    for query in queries:
        t = time.perf_counter()
        answer = client.search(album, image=query, top_k=top_k)
        samples.append((time.perf_counter() - t) * 1000)
        first_hits += bool(answer["results"])
    return samples, first_hits


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=200, help="album size")
    parser.add_argument("--queries", type=int, default=100)
    parser.add_argument("--batch", type=int, default=16, help="images per ingest request")
    parser.add_argument("--top-k", type=int, default=10)
    parser.add_argument("--set", type=Path, default=Path(".cache/evalset"), help="evaluation set (gallery photos)")
    args = parser.parse_args()

    files = gallery_files(args.set, args.images)
    contents = [p.read_bytes() for p in files]
    queries = [edited_copy(contents[i % len(contents)], seed=i) for i in range(args.queries)]
    album = "bench"
    with running_stack() as stack:
        client = GatewayClient(stack.http_url)
        client.create_album(album)
        client.search(album, image=contents[0], top_k=1)  # warm up the model and connections
        ingest_rate = measure_ingest(client, album, files, args.batch)
        extract_rate, embed_ms = asyncio.run(measure_extractor(stack, contents, args.batch))
        listed = client.http.get(f"/v1/albums/{album}/images", params={"limit": 50}).json()["images"]
        vectors = asyncio.run(stored_vectors(stack, _collection_name(client, album), [i["id"] for i in listed]))
        search_only_ms = asyncio.run(measure_search_service(stack, _collection_name(client, album), vectors))
        e2e_ms, _ = measure_search(client, album, queries, args.top_k)
        cached_ms, _ = measure_search(client, album, queries, args.top_k)
        rss = stack_rss(stack)
        count = client.get_album(album) or {}

    e2e, cached, embed, search_only = (percentiles(x) for x in (e2e_ms, cached_ms, embed_ms, search_only_ms))
    print(f"album: {count.get('image_count')} real photos ({files[0].parent}), model {count.get('model')}")
    print(f"ingest through the gateway: {ingest_rate:7.1f} img/s   extractor alone: {extract_rate:7.1f} img/s"
          f"   ratio {ingest_rate / extract_rate:.2f}")
    print(f"search, new query photo:   p50 {e2e['p50']:7.2f} ms  p95 {e2e['p95']:7.2f} ms")
    parts = embed["p50"] + search_only["p50"]
    print(f"  its parts alone:         extractor Embed p50 {embed['p50']:.2f} ms + search p50 "
          f"{search_only['p50']:.2f} ms   end-to-end / parts = {e2e['p50'] / parts:.2f}")
    print(f"search, cached embedding:  p50 {cached['p50']:7.2f} ms  p95 {cached['p95']:7.2f} ms"
          f"   speed-up {e2e['p50'] / cached['p50']:.1f}x")
    print("RSS (MB): " + ", ".join(f"{k} {v}" for k, v in rss.items()))
    print_json_line({
        "bench": "e2e", "album_images": count.get("image_count"), "ingest_img_s": round(ingest_rate, 1),
        "extractor_img_s": round(extract_rate, 1), "search_ms": e2e, "search_cached_ms": cached,
        "embed_ms": embed, "search_service_ms": search_only, "rss_mb": rss, "model": count.get("model"),
    })


def _collection_name(client: GatewayClient, album: str) -> str:
    """The search service's collection of an album: the gateway names collections by album."""
    return album


if __name__ == "__main__":
    main()
