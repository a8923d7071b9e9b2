"""Speed of the extractor service on this machine, against a naive one-image-at-a-time loop.

    .venv/bin/python bench/extract.py [--images 96] [--batch 16] [--set .cache/evalset]

Makes 640 px JPEGs (longer side) of real photos, starts the extractor alone (settings from the
EXTRACTOR_* environment, as the service reads them) and measures, in the same run:
  cold       images/s of the first QUERY pass over the images (each new input shape costs
             onnxruntime a one-off plan; aspect-kept resizing makes ~20 shapes per scale)
  query      images/s of Embed (purpose QUERY: one vector per image), requests of --batch images,
             two requests in flight (decode overlaps the network), shapes already seen; best of 2
  index      images/s of Embed (purpose INDEX: every database row, as an album ingest asks for)
  single     latency of a one-image QUERY Embed, p50/p95
  naive      images/s of a plain loop in this process: decode, preprocess, run, pool, one image at a
             time, on the same model file and input size (no batching, no decode threads); best of
             a pass before the service starts and one after it stops
  memory     RSS of the service after the run
The last line is a JSON object of the figures.
"""

from __future__ import annotations

import os

# The naive loop gets what the service gets (services/extractor/__init__.py): one BLAS thread, set
# before numpy loads, so the comparison is about the service's design, not this setting.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import argparse
import asyncio
import io
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import gallery_files, percentiles, print_json_line, rss_mb
from services.devstack import Ports, Stack


def jpegs_640(files: list[Path]) -> list[bytes]:
    """Each photo resized to a longer side of 640 px and saved as JPEG quality 90."""
    out = []
    for path in files:
        image = Image.open(path).convert("RGB")
        scale = 640 / max(image.size)
        image = image.resize((max(1, round(image.width * scale)), max(1, round(image.height * scale))))
        buffer = io.BytesIO()
        image.save(buffer, "JPEG", quality=90)
        out.append(buffer.getvalue())
    return out


async def measure_service(port: int, contents: list[bytes], batch: int, purpose: int) -> float:
    """Images/s of Embed requests of `batch` images, two in flight."""
    from imagesearch.v1 import extractor_pb2, extractor_pb2_grpc

    from services.common.grpc_client import open_channel

    async with open_channel(f"127.0.0.1:{port}") as channel:
        stub = extractor_pb2_grpc.ExtractorStub(channel)
        requests = [extractor_pb2.EmbedRequest(images=contents[i:i + batch], purpose=purpose)  # type: ignore[arg-type]
                    for i in range(0, len(contents), batch)]
        await stub.Embed(requests[0])  # warm: first shapes, connections
        gate = asyncio.Semaphore(2)

        async def one(request: extractor_pb2.EmbedRequest) -> None:
            async with gate:
                await stub.Embed(request, timeout=600)

        started = time.perf_counter()
        await asyncio.gather(*(one(r) for r in requests))
        return len(contents) / (time.perf_counter() - started)


async def measure_single(port: int, contents: list[bytes]) -> list[float]:
    from imagesearch.v1 import extractor_pb2, extractor_pb2_grpc

    from services.common.grpc_client import open_channel

    async with open_channel(f"127.0.0.1:{port}") as channel:
        stub = extractor_pb2_grpc.ExtractorStub(channel)
        samples = []
        for content in contents:
            t = time.perf_counter()
            await stub.Embed(extractor_pb2.EmbedRequest(images=[content]))
            samples.append((time.perf_counter() - t) * 1000)
    return samples


def measure_naive(contents: list[bytes]) -> float:
    """Images/s of decode -> preprocess -> run -> pool, one image at a time, onnxruntime defaults."""
    import onnxruntime as ort

    from services.extractor.pooling import embed_fmap
    from services.extractor.preprocess import PreprocessConfig, decode_image
    from services.extractor.session import CPU_PROVIDER, network_name, resolve_precision, sum_int8_exactly
    from services.extractor.settings import ExtractorSettings

    settings = ExtractorSettings()
    # The network file the service runs on the CPU (EXTRACTOR_PRECISION), computed as the service
    # does (on a CPU without VNNI the default integer path is faster and saturates: lighter work).
    name = network_name(settings.model_name, resolve_precision(settings.precision, [CPU_PROVIDER]))
    options = ort.SessionOptions()
    sum_int8_exactly(options)
    session = ort.InferenceSession(str(settings.model_dir / f"{name}.onnx"), options, providers=[CPU_PROVIDER])
    config = PreprocessConfig(image_size=settings.image_size, resize=settings.resize)
    session.run(["fmap"], {"images": decode_image(contents[0], config)[None]})
    started = time.perf_counter()
    for content in contents:
        pixels = decode_image(content, config)
        embed_fmap(np.asarray(session.run(["fmap"], {"images": pixels[None]})[0]), settings.gem_p)
    return len(contents) / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=96)
    parser.add_argument("--batch", type=int, default=16, help="images per Embed request")
    parser.add_argument("--set", type=Path, default=Path(".cache/evalset"), help="evaluation set (gallery photos)")
    args = parser.parse_args()
    contents = jpegs_640(gallery_files(args.set, args.images))
    # Each speed is the best of two passes (the naive loop's before and after the service's), so a
    # moment of noise on a shared machine favours neither side.
    naive_passes = [measure_naive(contents)]
    with tempfile.TemporaryDirectory(prefix="imagesearch-bench-") as tmp:
        stack = Stack(Path(tmp), Ports.free())
        try:
            stack.start(("extractor",))
            port = stack.ports.extractor
            cold = asyncio.run(measure_service(port, contents, args.batch, purpose=0))
            asyncio.run(measure_service(port, contents, args.batch, purpose=1))  # see every index shape once
            query = max(asyncio.run(measure_service(port, contents, args.batch, purpose=0)) for _ in range(2))
            index = asyncio.run(measure_service(port, contents, args.batch, purpose=1))
            single = percentiles(asyncio.run(measure_single(port, contents[:30])))
            proc = stack.processes["extractor"].proc
            rss = rss_mb(proc.pid) if proc is not None else 0.0
            model = _model(port)
        finally:
            stack.stop()
    naive_passes.append(measure_naive(contents))
    naive = max(naive_passes)
    print(f"model {model}: {len(contents)} JPEGs of 640 px")
    print(f"service, query:  {query:6.1f} img/s   naive loop: {naive:6.1f} img/s   ratio {query / naive:.2f}"
          f"   (first pass: {cold:.1f} img/s; naive passes: {', '.join(f'{n:.1f}' for n in naive_passes)})")
    print(f"service, index:  {index:6.1f} img/s (every database row of each image)")
    print(f"single image:    p50 {single['p50']:.1f} ms  p95 {single['p95']:.1f} ms   RSS {rss} MB")
    print_json_line({"bench": "extract", "model": model, "images": len(contents), "query_img_s": round(query, 1),
                     "ratio": round(query / naive, 2), "query_cold_img_s": round(cold, 1),
                     "index_img_s": round(index, 1), "naive_img_s": round(naive, 1), "single_ms": single,
                     "rss_mb": rss})


def _model(port: int) -> str:
    import grpc
    from imagesearch.v1 import extractor_pb2, extractor_pb2_grpc

    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        info = extractor_pb2_grpc.ExtractorStub(channel).GetModelInfo(extractor_pb2.GetModelInfoRequest(), timeout=10)
    return str(info.model)


if __name__ == "__main__":
    main()
