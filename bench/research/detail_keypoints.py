"""Feature-level study (issue 11): why does a detail crop find its whole photo so rarely by keypoints,
and which description of the gallery and of the crop lifts it?  No services: the gallery and the
natural detail-crop queries of an evaluation set built with --natural, described with the system's
own SIFT settings (services.common.local_features) or variants of them, then matched exhaustively
(every crop against every gallery photo, the system's `match`) and through a keypoint index (each
crop keypoint's k nearest gallery descriptors vote for their photos, the most voted are verified).

    nice -n 19 .venv/bin/python bench/research/detail_keypoints.py --set .cache/evalset-natural \
        --gallery 384:500 680:1000 --upscale 1 2 --mask 0 1

Each configuration prints a JSON line: exhaustive R@1 (ranked by inliers), verified R@1 (the first
also passes `Match.verified`), the keypoint index's candidate recall at --candidates and its R@1
after verifying them, gallery keypoints per image and describe ms per image.
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import cv2
import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from services.common.local_features import LocalFeatures, Match, match

cv2.setNumThreads(1)
CACHE = Path(".cache/detail_kp")


def grey(path: Path, side: int, upscale: float = 1.0) -> np.ndarray:
    im = Image.open(path).convert("L")
    s = side / max(im.size) if side else 1.0
    s = min(s, 1.0) * upscale
    if s != 1.0:
        im = im.resize((max(8, round(im.width * s)), max(8, round(im.height * s))), Image.Resampling.BICUBIC)
    return np.asarray(im)


def sift(img: np.ndarray, n: int, mask: np.ndarray | None = None, contrast: float = 0.04) -> LocalFeatures:
    det = cv2.SIFT.create(n, 3, contrast, 10.0, 1.6, cv2.CV_8U)
    kps, des = det.detectAndCompute(np.ascontiguousarray(img), mask)
    h, w = img.shape[:2]
    if des is None or not kps:
        return LocalFeatures(np.zeros((0, 2), np.float32), np.zeros((0, 128), np.uint8), w, h)
    return LocalFeatures(np.array([k.pt for k in kps], np.float32), des.astype(np.uint8), w, h)


def circle_mask(img: np.ndarray, margin: float) -> np.ndarray:
    """The inside of the crop's circle less `margin` pixels: keypoints on the circle's edge against the
    white describe the cut, not the photo."""
    h, w = img.shape[:2]
    yy, xx = np.mgrid[0:h, 0:w]
    r = min(w, h) / 2 - margin
    return (((xx - (w - 1) / 2) ** 2 + (yy - (h - 1) / 2) ** 2) <= r * r).astype(np.uint8) * 255


def gallery_features(root: Path, names: list[str], side: int, n: int) -> tuple[list[LocalFeatures], float]:
    key = CACHE / f"gallery_{side}_{n}.npz"
    if key.exists():
        z = dict(np.load(key))  # each read of an NpzFile's array reads it again: once each
        feats, at = [], 0
        for c, w, h in zip(z["counts"], z["w"], z["h"], strict=True):
            feats.append(LocalFeatures(z["points"][at:at + c], z["desc"][at:at + c], int(w), int(h)))
            at += c
        return feats, float(z["ms"])
    t0 = time.perf_counter()
    feats = [sift(grey(root / "gallery" / f"{name}.jpg", side), n) for name in names]
    ms = (time.perf_counter() - t0) * 1000 / len(names)
    CACHE.mkdir(parents=True, exist_ok=True)
    np.savez(key, counts=[len(f) for f in feats], w=[f.width for f in feats], h=[f.height for f in feats],
             points=np.concatenate([f.points for f in feats]),
             desc=np.concatenate([f.descriptors for f in feats]), ms=ms)
    return feats, ms


def vote(query: LocalFeatures, stacked: np.ndarray, owner: np.ndarray, norms: np.ndarray, k: int,
         n_images: int) -> np.ndarray:
    """Votes per gallery image: each query keypoint's k nearest gallery descriptors (L2) vote once
    for each photo among them."""
    q = query.matchable
    d = norms[None, :] - 2.0 * (q @ stacked.T)
    near = np.argpartition(d, k, axis=1)[:, :k]
    votes = np.zeros(n_images, np.float32)
    for row in owner[near]:
        votes[np.unique(row)] += 1
    return votes


def index_rows(count: int, cap: int) -> np.ndarray:
    """Which of a photo's keypoints the index holds: all, or `cap` of them evenly spread over the list."""
    if not cap or count <= cap:
        return np.arange(count)
    return np.linspace(0, count - 1, cap).round().astype(int)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--set", default=".cache/evalset-natural")
    ap.add_argument("--gallery", nargs="+", default=["384:500"], help="side:max_keypoints (side 0: native)")
    ap.add_argument("--upscale", nargs="+", type=float, default=[1.0])
    ap.add_argument("--mask", nargs="+", type=float, default=[0.0], help="circle margin px (0: no mask)")
    ap.add_argument("--query-n", type=int, default=1000)
    ap.add_argument("--ratio", nargs="+", type=float, default=[0.8])
    ap.add_argument("--k", type=int, default=5)
    ap.add_argument("--candidates", type=int, default=10)
    ap.add_argument("--exhaustive", type=int, default=1)
    ap.add_argument("--index-rows", nargs="+", type=int, default=[0],
                    help="at most this many of each photo's keypoints in the index, evenly spread (0: all)")
    args = ap.parse_args()
    root = Path(args.set)
    with open(root / "gt_natural.csv") as f:
        rows = list(csv.DictReader(f))
    queries = [r for r in rows if r["kind"] == "detail_crop"]
    names = sorted(p.stem for p in (root / "gallery").glob("*.jpg"))
    index = {n: i for i, n in enumerate(names)}
    for spec in args.gallery:
        side, n = (int(x) for x in spec.split(":"))
        gallery, ms = gallery_features(root, names, side, n)
        for rows_cap, up in ((r, u) for r in args.index_rows for u in args.upscale):
            indexed = [g.matchable[index_rows(len(g), rows_cap)] for g in gallery]
            stacked = np.concatenate(indexed)
            owner = np.repeat(np.arange(len(gallery)), [len(x) for x in indexed])
            norms = (stacked * stacked).sum(axis=1)
            for margin in args.mask:
                for ratio in args.ratio:
                    res = {"gallery_side": side, "gallery_n": n, "index_rows": rows_cap, "upscale": up,
                           "mask_margin": margin, "ratio": ratio,
                           "gallery_kp_mean": float(np.mean([len(g) for g in gallery])), "describe_ms": round(ms, 1)}
                    ex1 = exv = cand = idx1 = 0
                    qkp = []
                    for r in queries:
                        img = grey(root / r["file"], 0, up)
                        q = sift(img, args.query_n, circle_mask(img, margin * up) if margin else None)
                        qkp.append(len(q))
                        target = index[r["target_ids"]]
                        if args.exhaustive:
                            ms_ = [match(q, g, ratio) for g in gallery]
                            best = int(np.argmax([m.inliers for m in ms_]))
                            ex1 += best == target and ms_[best].inliers > 0
                            exv += best == target and ms_[best].verified(6)
                        if len(q) == 0:
                            continue
                        votes = vote(q, stacked, owner, norms, args.k, len(gallery))
                        top = np.argsort(-votes, kind="stable")[:args.candidates]
                        cand += target in top
                        found = [match(q, gallery[i], ratio) for i in top]
                        ok = [i for i, m in zip(top, found, strict=True) if m.verified(6)]
                        best_m = max(found, key=lambda m: m.inliers, default=Match())
                        order = sorted(ok, key=lambda i: -found[list(top).index(i)].inliers)
                        idx1 += bool(order) and order[0] == target and best_m.inliers > 0
                    nq = len(queries)
                    res.update(query_kp_median=float(np.median(qkp)), exhaustive_r1=round(ex1 / nq, 3),
                               exhaustive_verified_r1=round(exv / nq, 3),
                               index_candidate_recall=round(cand / nq, 3), index_verified_r1=round(idx1 / nq, 3))
                    print(json.dumps(res), flush=True)


if __name__ == "__main__":
    main()
