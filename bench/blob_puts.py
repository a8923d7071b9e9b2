"""What an import's object store writes cost per image, by how the images' local features are laid out.

    .venv/bin/python bench/blob_puts.py [--images 600] [--batch 32] [--workers 4] [--rounds 3] [--set .cache/evalset]

An import writes two objects per image (services.gateway.usecases.ingest._write): its bytes and its local
features. This bench starts the stack's own S3 server (SeaweedFS) and the extractor on free ports, has the
extractor describe the gallery photos as an import does (purpose INDEX, local features: the real bytes an
import stores), then writes them as the gateway does (its `BlobStore`, a batch's puts at once, `--workers`
batches at once) in three layouts, in turn each round:
  two_objects      today's: per image one put of its bytes and one of its features (the baseline)
  features_packed  per image one put of its bytes; per batch one put of its images' features one after the
                   other (a design whose reads would need each image's offset)
  one_object       per image one put of its bytes and features together (fewest requests; same bytes)
  two_objects_each today's objects, but each put handed to a thread of its own (`BlobStore.put`), as the gateway
                   wrote them before `BlobStore.put_all` (a batch's puts on `PUT_THREADS` threads, one after
                   the other), which the other layouts use
  two_objects_sdk  today's objects and threads, each put made by the minio SDK (`Minio.put_object`), as the
                   gateway made them before its signed requests (services/gateway/s3_requests.py)
and the features read back, a search's 5 at once (`BlobStore.get`), by the signed requests and by the SDK
(`Minio.get_object`), in turn.
For each: the S3 server's CPU and this process's (the client: signing, hashing, HTTP) per image, the
images/s, and each layout's total CPU against the baseline's in the same round (the median round's
ratio; two_objects_each's, the median of the rounds' ratios, its client's too). The last line is a JSON
object of the figures.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Coroutine
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import cpu_seconds, gallery_files, print_json_line
from services.devstack import Ports, Stack
from services.gateway.blobstore import Blob, BlobStore, NewBlob

LAYOUTS = ("two_objects", "features_packed", "one_object", "two_objects_each", "two_objects_sdk")
READS = ("signed", "sdk")


class SdkBlobStore(BlobStore):
    """The store with puts and gets made by the minio SDK, as before `SignedRequests`: the baseline."""

    def _put_sync(self, blob: NewBlob) -> None:
        metadata: dict[str, str | list[str] | tuple[str]] | None = {"original-name": blob.name} if blob.name else None
        self.client.put_object(self.bucket, blob.key, io.BytesIO(blob.content), len(blob.content),
                               content_type=blob.content_type, metadata=metadata)

    async def get(self, key: str) -> Blob:
        def read() -> Blob:
            response = self.client.get_object(self.bucket, key)
            try:
                return Blob(response.read(), response.headers.get("Content-Type") or "application/octet-stream")
            finally:
                response.close()
                response.release_conn()

        return await self._run(read)


async def describe(stack: Stack, contents: list[bytes], batch: int) -> list[bytes]:
    """Each photo's local features as an import stores them."""
    from imagesearch.v1 import extractor_pb2, extractor_pb2_grpc

    from services.common.grpc_client import open_channel

    features: list[bytes] = []
    async with open_channel(f"127.0.0.1:{stack.ports.extractor}") as channel:
        stub = extractor_pb2_grpc.ExtractorStub(channel)
        for i in range(0, len(contents), batch):
            reply = await stub.Embed(extractor_pb2.EmbedRequest(images=contents[i:i + batch], local_features=True,
                                                                purpose=extractor_pb2.EmbedRequest.INDEX))
            features.extend(r.local_features[0] if r.local_features else b"" for r in reply.results)
    return features


async def write(blobs: BlobStore, layout: str, prefix: str, contents: list[bytes], features: list[bytes],
                batch: int, workers: int) -> None:
    """Every image written in the layout, a batch's puts at once, `workers` batches at once."""
    batches = [range(i, min(i + batch, len(contents))) for i in range(0, len(contents), batch)]

    def objects(b: int, indexes: range) -> list[NewBlob]:
        if layout == "one_object":
            return [NewBlob(f"{prefix}/i/{i}", contents[i] + features[i], "image/jpeg") for i in indexes]
        images = [NewBlob(f"{prefix}/i/{i}", contents[i], "image/jpeg") for i in indexes]
        if layout == "features_packed":
            return [*images, NewBlob(f"{prefix}/f/{b}", b"".join(features[i] for i in indexes),
                                     "application/octet-stream")]
        return [*images, *(NewBlob(f"{prefix}/f/{i}", features[i], "application/octet-stream") for i in indexes)]

    async def worker() -> None:
        while batches:
            b = len(batches) - 1
            batch = objects(b, batches.pop())
            if layout == "two_objects_each":
                await asyncio.gather(*(blobs.put(o.key, o.content, o.content_type) for o in batch))
            else:
                await blobs.put_all(batch)

    await asyncio.gather(*(worker() for _ in range(workers)))


def measure(stack: Stack, blobs: BlobStore, layout: str, contents: list[bytes], features: list[bytes],
            batch: int, workers: int) -> dict[str, float]:
    """One layout's CPU (ms) per image of the S3 server and of this process, and its images/s."""
    if layout == "two_objects_sdk":
        blobs = SdkBlobStore(blobs.client, blobs.requests, blobs.bucket, blobs.put_threads)
    return cpu_of(stack, len(contents), write(blobs, layout, f"{layout}-{uuid.uuid4().hex[:8]}", contents, features,
                                              batch, workers))


async def read(blobs: BlobStore, keys: list[str], at_once: int = 5) -> None:
    """Every key read, `at_once` at a time, as a copy search reads its nearest images' features."""
    for start in range(0, len(keys), at_once):
        await asyncio.gather(*(blobs.get(k) for k in keys[start:start + at_once]))


def measure_reads(stack: Stack, blobs: BlobStore, how: str, keys: list[str]) -> dict[str, float]:
    if how == "sdk":
        blobs = SdkBlobStore(blobs.client, blobs.requests, blobs.bucket, blobs.put_threads)
    return cpu_of(stack, len(keys), read(blobs, keys))


def cpu_of(stack: Stack, count: int, work: Coroutine[Any, Any, None]) -> dict[str, float]:
    """The work's CPU (ms) per image of the S3 server and of this process, and its images/s."""
    s3_pid = stack.processes["s3"].proc.pid  # type: ignore[union-attr]
    s3_before, own_before, started = cpu_seconds(s3_pid), time.process_time(), time.perf_counter()
    asyncio.run(work)
    elapsed = time.perf_counter() - started
    s3 = (cpu_seconds(s3_pid) - s3_before) * 1000 / count
    client = (time.process_time() - own_before) * 1000 / count
    return {"s3_cpu_ms": s3, "client_cpu_ms": client, "total_cpu_ms": s3 + client, "img_s": count / elapsed}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=600)
    parser.add_argument("--batch", type=int, default=32, help="images per batch (an import's batch)")
    parser.add_argument("--workers", type=int, default=4, help="batches written at once (an import's workers)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--set", type=Path, default=Path(".cache/evalset"), help="evaluation set (gallery photos)")
    args = parser.parse_args()

    contents = [p.read_bytes() for p in gallery_files(args.set, args.images)]
    rounds: list[dict[str, dict[str, float]]] = []
    reads: list[dict[str, dict[str, float]]] = []
    with tempfile.TemporaryDirectory(prefix="imagesearch-bench-") as tmp:
        stack = Stack(Path(tmp), Ports.free())
        try:
            stack.start(("s3", "extractor"))
            features = asyncio.run(describe(stack, contents, args.batch))
            env = stack.env()
            blobs = BlobStore.connect(env["GATEWAY_S3_ENDPOINT"], env["GATEWAY_S3_ACCESS_KEY"],
                                      env["GATEWAY_S3_SECRET_KEY"], "bench-blob-puts")
            asyncio.run(blobs.ensure_bucket())
            measure(stack, blobs, "two_objects", contents[:64], features[:64], args.batch, args.workers)  # warm up
            for number in range(args.rounds):
                order = LAYOUTS[number % len(LAYOUTS):] + LAYOUTS[:number % len(LAYOUTS)]
                figures = {layout: measure(stack, blobs, layout, contents, features, args.batch, args.workers)
                           for layout in order}
                rounds.append(figures)
                base = figures["two_objects"]["total_cpu_ms"]
                print(f"round {number + 1}: " + ", ".join(
                    f"{layout} S3 {f['s3_cpu_ms']:.2f} + client {f['client_cpu_ms']:.2f} ms an image "
                    f"({f['total_cpu_ms'] / base:.2f}x), {f['img_s']:.0f} img/s" for layout, f in figures.items()))
                written = [k for k in asyncio.run(blobs.list_keys("two_objects-")) if "/f/" in k]
                turn = READS[number % 2:] + READS[:number % 2]
                got = {how: measure_reads(stack, blobs, how, written) for how in turn}
                reads.append(got)
                print("  reads: " + ", ".join(f"{how} S3 {f['s3_cpu_ms']:.2f} + client {f['client_cpu_ms']:.2f} ms "
                                             f"a features blob" for how, f in got.items()))
        finally:
            stack.stop()

    def ratio(r: dict[str, dict[str, float]], layout: str) -> float:
        return r[layout]["total_cpu_ms"] / r["two_objects"]["total_cpu_ms"]

    middle = sorted(rounds, key=lambda r: ratio(r, "features_packed"))[len(rounds) // 2]
    sizes = sorted(len(f) for f in features)
    print(f"{len(contents)} photos, their features {statistics.median(sizes) / 1000:.1f} KB at the median; "
          f"the median round (by features_packed's ratio):")
    for layout in LAYOUTS:
        f = middle[layout]
        print(f"  {layout:16} S3 server {f['s3_cpu_ms']:5.2f} ms + client {f['client_cpu_ms']:5.2f} ms of CPU an "
              f"image = {f['total_cpu_ms']:5.2f} ({ratio(middle, layout):.2f}x two_objects), {f['img_s']:.0f} img/s")
    each = sorted(rounds, key=lambda r: ratio(r, "two_objects_each"))[len(rounds) // 2]
    print(f"each put on a thread of its own against put_all (the median round by its ratio): "
          f"{ratio(each, 'two_objects_each'):.2f}x the CPU, the client's "
          f"{each['two_objects_each']['client_cpu_ms']:.2f} ms against {each['two_objects']['client_cpu_ms']:.2f}")
    sdk = sorted(rounds, key=lambda r: ratio(r, "two_objects_sdk"))[len(rounds) // 2]
    print(f"puts by the signed requests against the SDK's (the median round by its ratio): "
          f"{1 / ratio(sdk, 'two_objects_sdk'):.2f}x the CPU (S3 server {sdk['two_objects']['s3_cpu_ms']:.2f} against "
          f"{sdk['two_objects_sdk']['s3_cpu_ms']:.2f} ms an image, client {sdk['two_objects']['client_cpu_ms']:.2f} "
          f"against {sdk['two_objects_sdk']['client_cpu_ms']:.2f})")

    def read_ratio(r: dict[str, dict[str, float]]) -> float:
        return r["signed"]["total_cpu_ms"] / r["sdk"]["total_cpu_ms"]

    got = sorted(reads, key=read_ratio)[len(reads) // 2]
    print(f"reads by the signed requests against the SDK's (the median round): {read_ratio(got):.2f}x the CPU "
          f"(S3 server {got['signed']['s3_cpu_ms']:.2f} against {got['sdk']['s3_cpu_ms']:.2f} ms a blob, client "
          f"{got['signed']['client_cpu_ms']:.2f} against {got['sdk']['client_cpu_ms']:.2f})")
    print_json_line({
        "bench": "blob_puts", "images": len(contents), "batch": args.batch, "workers": args.workers,
        "features_kb_p50": round(statistics.median(sizes) / 1000, 1),
        **{layout: {k: round(v, 2) for k, v in middle[layout].items()} for layout in LAYOUTS},
        "ratio_features_packed": round(ratio(middle, "features_packed"), 2),
        "ratio_one_object": round(ratio(middle, "one_object"), 2),
        # put_all's gain, each round's ratio (the median), not the median round's by features_packed
        "ratio_two_objects_each": round(statistics.median(ratio(r, "two_objects_each") for r in rounds), 2),
        "client_ratio_two_objects_each": round(statistics.median(
            r["two_objects_each"]["client_cpu_ms"] / r["two_objects"]["client_cpu_ms"] for r in rounds), 2),
        "ratio_signed_to_sdk": round(1 / ratio(sdk, "two_objects_sdk"), 2),
        "reads": {how: {k: round(v, 2) for k, v in got[how].items()} for how in READS},
        "ratio_reads_signed_to_sdk": round(read_ratio(got), 2),
        "rounds": [{layout: round(r[layout]["total_cpu_ms"], 2) for layout in LAYOUTS} for r in rounds],
    })


if __name__ == "__main__":
    main()
