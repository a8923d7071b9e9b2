"""The near-duplicate distance, measured on the evaluation set (../shared/eval):

    .venv/bin/python bench/near_duplicates.py --set .cache/evalset [--limit 0.05]

Embeds the gallery and every copy query with the extractor's own embedder (in process, the service's
code and settings: the upright query vector an image is compared by), then prints, for thresholds
from 0.01 to 0.30 of cosine distance, the share of each edit's copies within it of their original
(what "near-duplicate" should catch), beside the share of gallery photos whose nearest *other*
gallery photo is within it (what it should not: different photos, some of the same subject). The
gallery holds a few true near-duplicate pairs (the same picture in two packages), so that share has a
floor above zero: the pairs under 0.01 are listed. Ends with one JSON line; `--limit` names the
threshold the JSON line reports on (the system's default, GATEWAY_NEAR_DUPLICATE_DISTANCE).
"""

from __future__ import annotations

import argparse
import collections
import csv
import sys
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import print_json_line
from services.extractor.model import ImageEmbedder
from services.extractor.settings import ExtractorSettings

THRESHOLDS = (0.01, 0.02, 0.03, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3)


def embed(embedder: ImageEmbedder, files: list[Path]) -> NDArray[np.float32]:
    vectors = []
    for start in range(0, len(files), 16):
        scales = [embedder.decode(f.read_bytes()) for f in files[start:start + 16]]
        vectors.append(embedder.embed(scales))
    return np.concatenate(vectors).astype(np.float32)


def mild_copies(files: list[Path]) -> dict[str, list[bytes]]:
    """Everyday duplicates the evaluation set's strong edits leave out: re-saved as JPEG q85, halved."""
    import io

    from PIL import Image

    made: dict[str, list[bytes]] = {"resaved_jpeg_q85": [], "half_size": []}
    for path in files:
        with Image.open(path) as image:
            rgb = image.convert("RGB")
        for name, version in (("resaved_jpeg_q85", rgb), ("half_size", rgb.resize((max(1, rgb.width // 2),
                                                                                   max(1, rgb.height // 2))))):
            out = io.BytesIO()
            version.save(out, format="JPEG", quality=85)
            made[name].append(out.getvalue())
    return made


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--set", type=Path, default=Path(".cache/evalset"))
    parser.add_argument("--limit", type=float, default=0.05, help="the threshold the JSON line reports")
    args = parser.parse_args()
    with open(args.set / "manifest.csv") as fh:
        gallery = list(csv.DictReader(fh))
    with open(args.set / "gt_copy.csv") as fh:
        copies = list(csv.DictReader(fh))
    embedder = ImageEmbedder.from_settings(ExtractorSettings())
    embedder.warm_up()
    print(f"model {embedder.model_id}: {len(gallery)} gallery photos, {len(copies)} copies", file=sys.stderr)
    ids = [row["id"] for row in gallery]
    g = embed(embedder, [args.set / row["file"] for row in gallery])
    q = embed(embedder, [args.set / row["file"] for row in copies])
    position = {image_id: i for i, image_id in enumerate(ids)}
    to_original = np.array([1 - float(q[i] @ g[position[row["target_id"]]]) for i, row in enumerate(copies)])
    similarity = g @ g.T
    np.fill_diagonal(similarity, -1.0)
    nearest_other = 1 - similarity.max(axis=1)
    edits = sorted({row["transform"] for row in copies})
    by_edit: dict[str, NDArray[np.float64]] = collections.OrderedDict(
        (e, to_original[[row["transform"] == e for row in copies]]) for e in edits)
    sample = list(range(0, len(gallery), max(1, len(gallery) // 200)))
    for name, contents in mild_copies([args.set / gallery[i]["file"] for i in sample]).items():
        vectors = embedder.embed([embedder.decode(c) for c in contents])
        by_edit[name] = np.array([1 - float(v @ g[i]) for v, i in zip(vectors, sample, strict=True)])

    header = f"{'edit':<28s}" + "".join(f"{t:>7.3f}" for t in THRESHOLDS) + "   median"
    print(header)
    for edit, distances in by_edit.items():
        shares = "".join(f"{np.mean(distances <= t):>7.2f}" for t in THRESHOLDS)
        print(f"{edit:<28s}{shares}   {np.median(distances):.3f}")
    shares = "".join(f"{np.mean(nearest_other <= t):>7.2f}" for t in THRESHOLDS)
    print(f"{'distinct: nearest other':<28s}{shares}   {np.median(nearest_other):.3f}")
    twins = [(ids[i], ids[int(np.argmax(similarity[i]))]) for i in np.flatnonzero(nearest_other <= 0.01)]
    print(f"gallery pairs within 0.01 (the same picture twice): {len(twins) // 2}", file=sys.stderr)
    limit = args.limit
    print_json_line({
        "limit": limit,
        "copies_within": {e: round(float(np.mean(d <= limit)), 4) for e, d in by_edit.items()},
        "distinct_within": round(float(np.mean(nearest_other <= limit)), 4),
        "distinct_nearest_p01": round(float(np.quantile(nearest_other, 0.01)), 4),
        "distinct_nearest_p05": round(float(np.quantile(nearest_other, 0.05)), 4),
        "gallery_twins": len(twins) // 2,
    })


if __name__ == "__main__":
    main()
