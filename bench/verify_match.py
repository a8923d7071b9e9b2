"""Speed of copy verification's keypoint matching, as the gateway runs it: a query (upright and
mirrored features) matched against 5 candidates at once in worker threads.

    .venv/bin/python bench/verify_match.py [--queries 30]

Real photos (scikit-image's samples): the coffee photo cropped, turned 15 degrees and recompressed
as the query, five sample photos (its original among them) as the candidates, all described as the
extractor does (SIFT, 384 px, 500 keypoints). Each configuration runs in its own process (BLAS
threads are fixed when numpy loads):
- baseline: the nearest two descriptors by OpenCV's brute-force knnMatch (the first version), one
  BLAS thread;
- the system: `local_features.nearest_two` (one matrix product), one BLAS thread (the gateway's setting);
- the same with OpenBLAS's default threads (one per core).
Every row prints ms per query and its ratio to the baseline, measured in the same run, and checks
the inlier counts agree with it. The last line is a JSON object of the figures.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

# (label, nearest-two implementation, BLAS threads; 0 = OpenBLAS's default, one per core)
CONFIGS = [
    ("baseline: OpenCV knnMatch, 1 BLAS thread", "opencv", 1),
    ("matrix product, 1 BLAS thread (gateway default)", "matrix", 1),
    ("matrix product, OpenBLAS default threads", "matrix", 0),
]
CANDIDATES = ("coffee", "astronaut", "chelsea", "motorcycle_left", "rocket")


def opencv_nearest_two(query: NDArray[np.float32], candidate: NDArray[np.float32]
                       ) -> tuple[NDArray[np.intp], NDArray[np.float32]]:
    """The first version's matching: OpenCV's brute-force L2 knnMatch, k = 2."""
    import cv2

    pairs = cv2.BFMatcher(cv2.NORM_L2).knnMatch(query, candidate, k=2)
    nearest = np.array([[m[0].trainIdx, m[1].trainIdx] for m in pairs], np.intp).reshape(-1, 2)
    distance = np.array([[m[0].distance, m[1].distance] for m in pairs], np.float32).reshape(-1, 2)
    return nearest, distance


def run_one(queries: int, nearest: str) -> tuple[float, list[int]]:
    """ms per query (5 candidates, 5 threads) and the inlier counts, in this process."""
    import io
    from concurrent.futures import ThreadPoolExecutor

    from PIL import Image

    from services.common import local_features
    from services.common.local_features import FeatureConfig, best_match
    from services.extractor.keypoints import describe_image
    from services.extractor.preprocess import PreprocessConfig
    from tests.conftest import sample_photos

    if nearest == "opencv":
        local_features.nearest_two = opencv_nearest_two  # the function `match` calls
    config, preprocess = FeatureConfig(384, 500), PreprocessConfig()
    photos = {p.stem: p for p in sample_photos()}
    with Image.open(photos["coffee"]) as image:
        rgb = image.convert("RGB")
    w, h = rgb.size
    out = io.BytesIO()
    rgb.crop((w // 10, h // 10, w * 9 // 10, h * 9 // 10)).rotate(15, expand=True).save(out, "JPEG", quality=70)
    query = describe_image(out.getvalue(), preprocess, config, mirrored=True)
    candidates = [describe_image(photos[n].read_bytes(), preprocess, config)[0] for n in CANDIDATES]
    for features in [*query, *candidates]:
        features.matchable  # made once per features, as in the gateway  # noqa: B018
    with ThreadPoolExecutor(len(candidates)) as pool:
        counts = [m.inliers for m in pool.map(lambda c: best_match(query, c), candidates)]  # warm up
        started = time.perf_counter()
        for _ in range(queries):
            list(pool.map(lambda c: best_match(query, c), candidates))
    return (time.perf_counter() - started) / queries * 1000, counts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--queries", type=int, default=30)
    parser.add_argument("--one", help=argparse.SUPPRESS)  # internal: run one configuration
    args = parser.parse_args()
    if args.one:
        print(json.dumps(run_one(args.queries, args.one)))
        return
    figures: dict[str, float] = {}
    baseline_counts: list[int] = []
    for label, nearest, blas in CONFIGS:
        env = {**os.environ, "OPENBLAS_NUM_THREADS": str(blas or os.cpu_count() or 1)}
        out = subprocess.run([sys.executable, __file__, "--queries", str(args.queries), "--one", nearest],
                             env=env, check=True, capture_output=True, text=True).stdout.splitlines()[-1]
        ms, counts = json.loads(out)
        baseline_counts = baseline_counts or counts
        figures[label] = round(ms, 2)
        baseline = next(iter(figures.values()))
        same = "same inliers" if counts == baseline_counts else f"INLIERS DIFFER: {counts} vs {baseline_counts}"
        print(f"{label:50s} {ms:6.2f} ms/query   ratio to baseline {ms / baseline:.2f}   {same}")
    from bench.common import print_json_line

    print_json_line({"bench": "verify_match", "queries": args.queries, "candidates": len(CANDIDATES),
                     "ms_per_query": figures, "inliers": baseline_counts})


if __name__ == "__main__":
    main()
