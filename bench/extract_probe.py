"""In-process probe of the extractor's CPU settings: what each one does to throughput, no gRPC.

    .venv/bin/python bench/extract_probe.py [--images 96] [--set .cache/evalset]

Each configuration runs in its own process (BLAS threads are fixed when numpy loads): a thread pool
of `workers` threads, each decoding one 640 px JPEG and embedding it with the service's pipeline
(`ImageEmbedder.embed_jobs`, whitening included), onnxruntime with `ort_threads` intra-op threads
(0 = all cores) and spinning on or off, numpy's OpenBLAS with `blas` threads (0 = its default).
The first row is the baseline (one worker, every library's default), measured in the same run;
every row prints its ratio to it. The last line is a JSON object of the figures.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

# (label, workers, ort_threads, spinning, blas threads)
CONFIGS = [
    ("baseline: 1 worker, defaults", 1, 0, True, 0),
    ("1 worker, no spinning", 1, 0, False, 0),
    ("2 workers, no spinning, BLAS default", 2, 0, False, 0),
    ("2 workers, no spinning, 1 BLAS thread (service default)", 2, 0, False, 1),
    ("2 workers x 1 onnxruntime thread, 1 BLAS thread", 2, 1, False, 1),
]


def run_one(images: int, evalset: Path, workers: int, ort_threads: int, spinning: bool) -> float:
    """Images/s of one configuration, in this process (its BLAS threads were set by the caller)."""
    from concurrent.futures import ThreadPoolExecutor

    from bench.common import gallery_files
    from bench.extract import jpegs_640
    from services.extractor.model import EmbedJob, ImageEmbedder
    from services.extractor.settings import ExtractorSettings

    contents = jpegs_640(gallery_files(evalset, images))
    embedder = ImageEmbedder.from_settings(ExtractorSettings(intra_op_threads=ort_threads, ort_spinning=spinning))
    embedder.warm_up()

    def one(data: bytes) -> None:
        embedder.embed_jobs([EmbedJob(embedder.decode(data))])

    with ThreadPoolExecutor(workers) as pool:
        list(pool.map(one, contents))  # every input shape seen once
        best = 0.0
        for _ in range(2):
            started = time.perf_counter()
            list(pool.map(one, contents))
            best = max(best, len(contents) / (time.perf_counter() - started))
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=96)
    parser.add_argument("--set", type=Path, default=Path(".cache/evalset"), help="evaluation set (gallery photos)")
    parser.add_argument("--one", help=argparse.SUPPRESS)  # internal: run one configuration, print images/s
    args = parser.parse_args()
    if args.one:
        workers, ort_threads, spinning = json.loads(args.one)
        print(run_one(args.images, args.set, workers, ort_threads, spinning))
        return
    figures = {}
    for label, workers, ort_threads, spinning, blas in CONFIGS:
        env = {k: v for k, v in os.environ.items() if k != "OPENBLAS_NUM_THREADS"}
        if blas:
            env["OPENBLAS_NUM_THREADS"] = str(blas)
        else:  # services.extractor sets 1 unless told otherwise: say "the library's default" explicitly
            env["OPENBLAS_NUM_THREADS"] = str(os.cpu_count() or 1)
        out = subprocess.run(
            [sys.executable, __file__, "--images", str(args.images), "--set", str(args.set),
             "--one", json.dumps([workers, ort_threads, spinning])],
            env=env, check=True, capture_output=True, text=True,
        ).stdout.split()[-1]
        figures[label] = round(float(out), 1)
        baseline = next(iter(figures.values()))
        print(f"{label:58s} {figures[label]:6.1f} img/s   ratio {figures[label] / baseline:.2f}")
    from bench.common import print_json_line

    print_json_line({"bench": "extract_probe", "images": args.images, "img_s": figures})


if __name__ == "__main__":
    main()
