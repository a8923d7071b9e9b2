"""End-to-end speed of the whole system on this machine: ingest rate and search latency.

    .venv/bin/python bench/e2e.py [--images 600] [--queries 100] [--rounds 5] [--set .cache/evalset] [--details]
                                  [--on-duplicate keep|skip|replace]

Starts a fresh stack (real Milvus, S3, Redis, the three services) on free ports, then measures,
in the same run:
  ingest     images/s of an import of the photos as a tar archive (what `imagesearch ingest FOLDER`
             sends): from the upload to the job done, every image embedded, its blobs in the object
             store and its row in Milvus (`ingest_img_s`); and images/s of the same photos added to a
             second album by HTTP multipart batches, one request at a time (`add_img_s`)
  its peer   the extractor alone doing the same work for the same photos over gRPC: database rows and
             local features (purpose INDEX, local_features), in batches of the import's size, 1, 2 and
             as many at once as the gateway's import workers, each in turn; the fastest of them is the
             ceiling of ingest (`ingest_peer_img_s`; each in `ingest_peer_by_concurrency`)
  rounds     the import and its peer `--rounds` times (5), each import into a new album and its peer
             right after it, since the machine's speed drifts between moments; the round of the median
             ratio gives `ingest_img_s`, `ingest_peer_img_s`, `ingest_ratio` and the CPU figures, every
             round is in `ingest_rounds`
  search     latency of `POST /v1/albums/A/search` with a new (uncached) edited photo each time,
             p50/p95, against its parts measured alone: one extractor Embed of the query (with its
             local features, as a copy search asks), one search-service Search over gRPC, and the
             verification of the nearest 5 as the gateway runs it (their features read from the
             object store and matched: `CopyVerifier.check`) (`search_parts_ms`), each query's parts
             measured right before or after it (in turn) so that both meet the machine alike; and the
             same queries again, answered from the embedding cache
  CPU        CPU time of each process (and its children) per imported image during the import, and
             their sum (`ingest_cpu_ms`): what bounds ingest on a machine of few cores, and less
             swayed by other load than a rate; the same during the peer's run (`peer_cpu_ms`)
  memory     RSS of each process after the run
With --details the albums are made with a keypoint index (and the peer asks for the finer local
features such an album stores: EmbedRequest.fine_local_features). With --on-duplicate skip (or replace)
the imports also look for each photo's near-duplicates in the album, as the web page's imports do by default
(the peer does not: that look is ingest's own work).
The last line is a JSON object of the figures.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
# One BLAS thread, as the gateway runs its matching (services/gateway/__init__.py): the verification part
# is timed in this process. OpenBLAS reads it once, when numpy loads; the servers started later do not
# inherit it (Milvus has its own threads).
_blas = os.environ.get("OPENBLAS_NUM_THREADS")
os.environ["OPENBLAS_NUM_THREADS"] = "1"
import numpy  # noqa: E402, F401  (loaded now, with one BLAS thread)

if _blas is None:
    del os.environ["OPENBLAS_NUM_THREADS"]
else:
    os.environ["OPENBLAS_NUM_THREADS"] = _blas

from bench.common import (  # noqa: E402
    edited_copy,
    gallery_files,
    percentiles,
    print_json_line,
    running_stack,
    stack_cpu_seconds,
    stack_rss,
)
from services.cli import pack_images  # noqa: E402
from services.client import GatewayClient, Upload  # noqa: E402
from services.devstack import Stack  # noqa: E402
from services.gateway.settings import GatewaySettings  # noqa: E402


def measure_import(client: GatewayClient, album: str, files: list[Path], on_duplicate: str = "keep") -> float:
    """Images/s of one import of the photos as a tar archive, from the upload to the job done: the time the
    gateway recorded the job finished (`finished_at_ms`, this machine's clock), not when a poll every 0.5 s
    noticed it (up to 0.5 s later; polling more often costs the gateway CPU the import needs)."""
    with tempfile.TemporaryDirectory(prefix="bench-e2e-") as tmp:
        archive = Path(tmp) / "photos.tar"
        with open(archive, "wb") as out:
            pack_images(files, out)
        started = time.time()
        job = client.start_import(album, archive=archive, on_duplicate=on_duplicate)
        while job["status"] not in ("done", "failed", "cancelled"):
            time.sleep(0.5)
            job = client.get_import(job["id"])
        elapsed = (job["finished_at_ms"] or time.time() * 1000) / 1000 - started
    counts = job["counts"]
    if job["status"] != "done" or counts["failed"]:
        print(f"  import {job['status']}: {counts}", file=sys.stderr)
    return counts["added"] / elapsed


def measure_add(client: GatewayClient, album: str, files: list[Path], batch: int) -> float:
    """Images/s added by HTTP multipart batches, one request at a time."""
    uploads = [Upload.from_path(p) for p in files]
    started = time.perf_counter()
    for i in range(0, len(uploads), batch):
        answer = client.add_images(album, uploads[i:i + batch])
        if answer["failed"]:
            print(f"  {answer['failed']} images failed to ingest", file=sys.stderr)
    return len(uploads) / (time.perf_counter() - started)


async def measure_extractor(stack: Stack, contents: list[bytes], batch: int, concurrency: int,
                            fine: bool = False) -> float:
    """Images/s of the extractor alone doing ingest's work (database rows and local features, batches of
    `batch`, `concurrency` at once)."""
    from imagesearch.v1 import extractor_pb2, extractor_pb2_grpc

    from services.common.grpc_client import open_channel

    async with open_channel(f"127.0.0.1:{stack.ports.extractor}") as channel:
        stub = extractor_pb2_grpc.ExtractorStub(channel)
        batches = [contents[i:i + batch] for i in range(0, len(contents), batch)]

        async def worker() -> None:
            while batches:
                await stub.Embed(extractor_pb2.EmbedRequest(images=batches.pop(0), local_features=True,
                                                            purpose=extractor_pb2.EmbedRequest.INDEX,
                                                            fine_local_features=fine))

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return len(contents) / (time.perf_counter() - started)


def measure_peers(stack: Stack, contents: list[bytes], batch: int, workers: int, fine: bool
                  ) -> dict[int, tuple[float, dict[str, float]]]:
    """The extractor alone on ingest's work with 1, 2 and `workers` requests at once: each one's images/s
    and CPU per image of each process."""
    peers = {}
    for concurrency in sorted({1, 2, max(1, workers)}):
        cpu_before = stack_cpu_seconds(stack)
        rate = asyncio.run(measure_extractor(stack, contents, batch, concurrency, fine))
        peers[concurrency] = rate, cpu_ms_per_image(cpu_before, stack_cpu_seconds(stack), len(contents))
    return peers


@dataclass(frozen=True)
class IngestRound:
    """One import's rate and CPU per image, and its peer's at each concurrency, measured right after it."""

    rate: float
    cpu: dict[str, float]
    peers: dict[int, tuple[float, dict[str, float]]]

    @property
    def peer(self) -> tuple[float, dict[str, float]]:
        """The fastest of the peers: the ceiling."""
        return max(self.peers.values(), key=lambda peer: peer[0])

    @property
    def ratio(self) -> float:
        return self.rate / self.peer[0]


@dataclass
class SearchSamples:
    """Latencies (ms) of new-photo searches end to end and of each one's parts alone."""

    e2e: list[float] = field(default_factory=list)
    embed: list[float] = field(default_factory=list)
    search: list[float] = field(default_factory=list)
    verify: list[float] = field(default_factory=list)


async def measure_search_and_parts(stack: Stack, client: GatewayClient, album: str, queries: list[bytes],
                                   top_k: int) -> SearchSamples:
    """Each query searched end to end (`POST /v1/albums/A/search`, a new photo: not in the gateway's
    cache) and its parts alone, one right after the other, in turn first, so that both meet the machine
    in the same state: the query's Embed with its local features (as a copy search asks), the search
    service's Search for its vector, and the verification of the nearest images as the gateway runs it
    (`CopyVerifier.check`: their stored features read from the object store and matched)."""
    from imagesearch.v1 import extractor_pb2, extractor_pb2_grpc, search_pb2, search_pb2_grpc

    from services.common.grpc_client import open_channel
    from services.gateway.blobstore import BlobStore
    from services.gateway.records import ScoredImage
    from services.gateway.usecases.shared import image_record
    from services.gateway.verification import CopyVerifier, parse_features

    settings, env = GatewaySettings(), stack.env()
    blobs = BlobStore.connect(env["GATEWAY_S3_ENDPOINT"], env["GATEWAY_S3_ACCESS_KEY"], env["GATEWAY_S3_SECRET_KEY"],
                              env.get("GATEWAY_S3_BUCKET", settings.s3_bucket))
    verifier = CopyVerifier(blobs, settings.verify_top, settings.verify_min_matches)
    samples = SearchSamples()

    async with open_channel(f"127.0.0.1:{stack.ports.extractor}") as ex, \
            open_channel(f"127.0.0.1:{stack.ports.search}") as se:
        extractor, search = extractor_pb2_grpc.ExtractorStub(ex), search_pb2_grpc.SearchStub(se)

        async def parts(query: bytes) -> None:
            t = time.perf_counter()
            result = (await extractor.Embed(extractor_pb2.EmbedRequest(images=[query], local_features=True))).results[0]
            samples.embed.append((time.perf_counter() - t) * 1000)
            t = time.perf_counter()
            hits = (await search.Search(search_pb2.SearchRequest(
                collection=album, vector=result.vector.values, top_k=max(top_k, verifier.top)))).hits
            samples.search.append((time.perf_counter() - t) * 1000)
            scored = [ScoredImage(image_record(album, h.id, h.name, h.content_hash, {}, 0), h.distance) for h in hits]
            features = parse_features(b"".join(result.local_features))
            t = time.perf_counter()
            await verifier.check(album, features, scored)
            samples.verify.append((time.perf_counter() - t) * 1000)

        for i, query in enumerate(queries):
            if i % 2:
                samples.e2e.extend(measure_search(client, album, [query], top_k))
            await parts(query)
            if not i % 2:
                samples.e2e.extend(measure_search(client, album, [query], top_k))
    return samples


def measure_search(client: GatewayClient, album: str, queries: list[bytes], top_k: int,
                   faces: bool = False) -> list[float]:
    """Latency (ms) of `POST /v1/albums/A/search` with each query, one at a time (`faces`: of
    `POST /v1/albums/A/faces/search`)."""
    search = client.search_faces if faces else client.search
    samples = []
    for query in queries:
        t = time.perf_counter()
        search(album, image=query, top_k=top_k)
        samples.append((time.perf_counter() - t) * 1000)
    return samples


def cpu_ms_per_image(before: dict[str, float], after: dict[str, float], images: int) -> dict[str, float]:
    """Each process's CPU milliseconds per image between two `stack_cpu_seconds`, and their "total"."""
    per = {name: round((after[name] - before.get(name, 0.0)) * 1000 / images, 1) for name in after}
    return {**per, "total": round(sum(per.values()), 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=600, help="album size")
    parser.add_argument("--queries", type=int, default=100)
    parser.add_argument("--batch", type=int, default=GatewaySettings().ingest_batch_size,
                        help="images per add request and per extractor call of the peer (the import's batch)")
    parser.add_argument("--top-k", type=int, default=10)
    parser.add_argument("--set", type=Path, default=Path(".cache/evalset"), help="evaluation set (gallery photos)")
    parser.add_argument("--rounds", type=int, default=5,
                        help="imports, each into a new album and followed by its peer; the median ratio's is reported")
    parser.add_argument("--details", action="store_true", help="albums with a keypoint index (CreateAlbum details)")
    parser.add_argument("--on-duplicate", choices=("keep", "skip", "replace"), default="keep",
                        help="the imports' near-duplicate handling (skip: the web page's default; its look at the "
                             "album is work the extractor alone does not do)")
    args = parser.parse_args()

    files = gallery_files(args.set, args.images)
    contents = [p.read_bytes() for p in files]
    queries = [edited_copy(contents[i % len(contents)], seed=i) for i in range(args.queries)]
    album = "bench"
    workers = GatewaySettings().import_workers
    with running_stack() as stack:
        client = GatewayClient(stack.http_url)
        client.create_album(album, details=args.details)
        client.create_album(f"{album}_add", details=args.details)
        client.search(album, image=contents[0], top_k=1)  # warm up the model and connections
        rounds = []
        for round_ in range(args.rounds):
            name = album if round_ == 0 else f"{album}_{round_}"
            if round_:
                client.create_album(name, details=args.details)
            cpu_before = stack_cpu_seconds(stack)
            rate = measure_import(client, name, files, args.on_duplicate)
            rounds.append(IngestRound(rate, cpu_ms_per_image(cpu_before, stack_cpu_seconds(stack), len(files)),
                                      measure_peers(stack, contents, args.batch, workers, args.details)))
        add_rate = measure_add(client, f"{album}_add", files, args.batch)
        searched = asyncio.run(measure_search_and_parts(stack, client, album, queries, args.top_k))
        cached_ms = measure_search(client, album, queries, args.top_k)
        rss = stack_rss(stack)
        count = client.get_album(album) or {}

    # Each round's import against its own peer, measured right after it (the machine's speed drifts between
    # moments: the same 600 photos cost the extractor 28.8 ms of CPU an image in one run's peer and 35.2 in
    # the next); the round of the median ratio gives the figures.
    middle = sorted(rounds, key=lambda r: r.ratio)[len(rounds) // 2]
    ingest_rate, ingest_cpu, peers = middle.rate, middle.cpu, middle.peers
    peer_rate, peer_cpu = middle.peer
    e2e, cached, embed, search_only, verify = (percentiles(x) for x in (searched.e2e, cached_ms, searched.embed,
                                                                         searched.search, searched.verify))
    # The parts: the query embedded with its local features, the search service's top-k and the verification
    # of the nearest images, each measured alone; what the gateway adds is HTTP, orchestration and waiting.
    parts = round(embed["p50"] + search_only["p50"] + verify["p50"], 2)
    parts_unverified = round(embed["p50"] + search_only["p50"], 2)
    print(f"album: {count.get('image_count')} real photos ({files[0].parent}), model {count.get('model')}")
    for number, r in enumerate(rounds, 1):
        print(f"ingest round {number}: import {r.rate:.1f} img/s, the peer right after {r.peer[0]:.1f} img/s, "
              f"ratio {r.ratio:.2f}")
    print(f"ingest, import of a tar:   {ingest_rate:7.1f} img/s   extractor alone on the same work: "
          f"{peer_rate:7.1f} img/s   ratio {ingest_rate / peer_rate:.2f}")
    print(f"ingest, add batches of {args.batch}: {add_rate:6.1f} img/s   ratio {add_rate / peer_rate:.2f}")
    print(f"search, new query photo:   p50 {e2e['p50']:7.2f} ms  p95 {e2e['p95']:7.2f} ms")
    print(f"  its parts alone:         extractor Embed p50 {embed['p50']:.2f} ms + search p50 "
          f"{search_only['p50']:.2f} ms + verification p50 {verify['p50']:.2f} ms = {parts:.2f} ms   "
          f"end-to-end / parts = {e2e['p50'] / parts:.2f} (without verification {e2e['p50'] / parts_unverified:.2f})")
    print(f"search, cached embedding:  p50 {cached['p50']:7.2f} ms  p95 {cached['p95']:7.2f} ms"
          f"   speed-up {e2e['p50'] / cached['p50']:.1f}x")
    print("ingest CPU per image (ms): " + ", ".join(f"{k} {v}" for k, v in ingest_cpu.items()))
    print("  the peer by requests at once: " + ", ".join(f"{c}: {r:.1f} img/s ({cpu['extractor']} ms of CPU an "
                                                      f"image)" for c, (r, cpu) in peers.items()))
    print(f"  the peer's: extractor {peer_cpu['extractor']}, all processes {peer_cpu['total']}; so ingest's CPU "
          f"is {ingest_cpu['total'] / peer_cpu['total']:.2f}x the peer's, its rate {ingest_rate / peer_rate:.2f}x")
    print("RSS (MB): " + ", ".join(f"{k} {v}" for k, v in rss.items()))
    print_json_line({
        "bench": "e2e", "details": args.details, "on_duplicate": args.on_duplicate,
        "album_images": count.get("image_count"),
        "ingest_img_s": round(ingest_rate, 1),
        "ingest_peer_img_s": round(peer_rate, 1), "ingest_ratio": round(ingest_rate / peer_rate, 2),
        "add_img_s": round(add_rate, 1), "search_ms": e2e, "search_parts_ms": {"p50": parts, "embed_p50": embed["p50"],
                                                                  "search_p50": search_only["p50"],
                                                                  "verify_p50": verify["p50"]},
        "search_ratio": round(e2e["p50"] / parts, 2), "search_cached_ms": cached, "embed_ms": embed,
        "search_service_ms": search_only, "verify_ms": verify, "rss_mb": rss, "model": count.get("model"),
        "ingest_cpu_ms": ingest_cpu, "peer_cpu_ms": peer_cpu,
        "ingest_peer_by_concurrency": {str(c): round(r, 1) for c, (r, _) in peers.items()},
        "ingest_rounds": [{"ingest_img_s": round(r.rate, 1), "ingest_peer_img_s": round(r.peer[0], 1),
                           "ingest_ratio": round(r.ratio, 2)} for r in rounds],
        "cpus": os.cpu_count(), "loadavg": [round(x, 2) for x in os.getloadavg()],
    })


if __name__ == "__main__":
    main()
