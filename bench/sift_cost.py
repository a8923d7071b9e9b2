"""Where the local features' (SIFT's) CPU goes, in process: detection against description, by the side
the image is brought to and the keypoints kept.

    .venv/bin/python bench/sift_cost.py [--set .cache/evalset] [--images 60] [--big .cache/whiten-data]

For each (side, max keypoints): the median grey pixels and keypoints, and CPU ms per image of
detectAndCompute (what the extractor runs), of detect alone (the scale space and its extrema), and
their difference (the descriptors), over the gallery's photos and, with --big, over large wallpapers
of the whitening pictures (photos of camera size, which the gallery's ~320 px ones are not). One
OpenCV thread, as the extractor runs it. The last line is a JSON object of the figures.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import cv2
import numpy as np
from numpy.typing import NDArray
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import gallery_files, print_json_line

SETTINGS = ((680, 1000), (512, 1000), (384, 500), (320, 500), (256, 500), (224, 500))


def greys(paths: list[Path], side: int) -> list[NDArray[np.uint8]]:
    """Each picture in grey, its longer side brought down to `side` (as keypoints.grey_for_features)."""
    out = []
    for path in paths:
        grey = Image.open(path).convert("L")
        scale = side / max(grey.size)
        if scale < 1:
            grey = grey.resize((max(8, round(grey.width * scale)), max(8, round(grey.height * scale))),
                               Image.Resampling.BILINEAR)
        out.append(np.asarray(grey))
    return out


def cost(images: list[NDArray[np.uint8]], keypoints: int) -> dict[str, float]:
    sift = cv2.SIFT.create(keypoints, 3, 0.04, 10.0, 1.6, cv2.CV_8U)
    started = time.process_time()
    found = [len(sift.detectAndCompute(image, None)[0]) for image in images]
    both = time.process_time() - started
    started = time.process_time()
    for image in images:
        sift.detect(image, None)
    detect = time.process_time() - started
    n = len(images)
    return {"pixels": float(np.median([i.size for i in images])), "keypoints": float(np.median(found)),
            "ms": round(both * 1000 / n, 1), "detect_ms": round(detect * 1000 / n, 1),
            "describe_ms": round((both - detect) * 1000 / n, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--set", type=Path, default=Path(".cache/evalset"))
    parser.add_argument("--images", type=int, default=60)
    parser.add_argument("--big", type=Path, default=None, help="whitening pictures (fit_whitening's --work)")
    args = parser.parse_args()
    cv2.setNumThreads(1)
    sets = {"gallery": gallery_files(args.set, args.images)}
    if args.big:
        sets["big"] = sorted(p for p in (args.big / "unpacked").rglob("*.jpg")
                             if max(Image.open(p).size) >= 1280)[: args.images]
    figures: dict[str, dict[str, dict[str, float]]] = {}
    for name, paths in sets.items():
        for side, keypoints in SETTINGS:
            row = cost(greys(paths, side), keypoints)
            figures.setdefault(name, {})[f"{side}/{keypoints}"] = row
            print(f"{name:8s} {side:4d} px / {keypoints:4d}: {row['pixels']:8.0f} px {row['keypoints']:5.0f} keypoints "
                  f"{row['ms']:6.1f} ms = detect {row['detect_ms']:5.1f} + describe {row['describe_ms']:5.1f}")
    print_json_line({"bench": "sift_cost", "sets": figures})


if __name__ == "__main__":
    main()
