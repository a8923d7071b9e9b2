"""Feature-level study: does local-feature geometric verification of the system's top candidates
lift copy detection?  Reads the system's top-20 per copy query (dumped by a run through the
gateway) and re-ranks them by RANSAC inliers of local-feature matches.

    .venv/bin/python bench/research/verify_experiment.py --rankings .cache/verify/rankings.json

The system's setting (SIFT 384 px / 500 keypoints, mirrored query, the 5 nearest, matches one to one,
plausible maps only):

    .venv/bin/python bench/research/verify_experiment.py --side 384 --n 500 --top 5 --mirror \
        --one-to-one --plausible --min-inliers 5 6 8 10 20
"""
import argparse
import collections
import csv
import json
import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # as in the gateway: matchings run in threads

import cv2
import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from services.common.local_features import LocalFeatures, Match, match, plausible_affine

cv2.setNumThreads(1)


def load_gray(path, side):
    im = Image.open(path).convert("L")
    w, h = im.size
    s = side / max(w, h)
    if s < 1 or UPSCALE:
        im = im.resize((max(8, round(w * s)), max(8, round(h * s))), Image.BILINEAR)
    return np.asarray(im)


def features(path, kind, side, n, mirror=False):
    img = load_gray(path, side)
    if mirror:
        img = np.ascontiguousarray(img[:, ::-1])
    if kind == "sift":
        det = cv2.SIFT_create(nfeatures=n)
    elif kind == "orb":
        det = cv2.ORB_create(nfeatures=n, fastThreshold=10, edgeThreshold=15, patchSize=15)
    elif kind == "akaze":
        det = cv2.AKAZE_create()
    kps, des = det.detectAndCompute(img, None)
    if des is None:
        return np.zeros((0, 2), np.float32), None
    return np.array([k.pt for k in kps], np.float32), des


def inliers(qf, gf, kind, ratio, thresh, one_to_one=False, plausible=False):
    (qp, qd), (gp, gd) = qf, gf
    if qd is None or gd is None or len(qd) < 3 or len(gd) < 3:
        return 0
    norm = cv2.NORM_L2 if kind == "sift" else cv2.NORM_HAMMING
    m = cv2.BFMatcher(norm).knnMatch(qd, gd, k=2)
    good = [a for a, *b in m if b and a.distance < ratio * b[0].distance]
    if one_to_one:  # the closest match per gallery keypoint only
        best = {}
        for g in good:
            if g.trainIdx not in best or g.distance < best[g.trainIdx].distance:
                best[g.trainIdx] = g
        good = list(best.values())
    if len(good) < 4:
        return 0
    src = qp[[g.queryIdx for g in good]]
    dst = gp[[g.trainIdx for g in good]]
    affine, mask = cv2.estimateAffine2D(src, dst, method=cv2.RANSAC, ransacReprojThreshold=thresh, maxIters=500)
    if mask is None or affine is None or (plausible and not plausible_affine(affine)):
        return 0
    return int(mask.sum())


def main():
    global UPSCALE
    ap = argparse.ArgumentParser()
    ap.add_argument("--rankings", default=".cache/verify/rankings.json")
    ap.add_argument("--set", default=".cache/evalset")
    ap.add_argument("--kind", default="sift")
    ap.add_argument("--side", type=int, default=512)
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--top", type=int, default=10)
    ap.add_argument("--ratio", type=float, default=0.8)
    ap.add_argument("--thresh", type=float, default=8.0)
    ap.add_argument("--min-inliers", type=int, nargs="+", default=[8, 12, 15, 20, 30])
    ap.add_argument("--upscale", action="store_true")
    ap.add_argument("--mirror", action="store_true")
    ap.add_argument("--diag", type=int, default=-1, help="list the misses at this T (0: the vector order)")
    ap.add_argument("--one-to-one", action="store_true",
                    help="keep the closest match per gallery keypoint before RANSAC (as the system does)")
    ap.add_argument("--splits", type=int, default=0,
                    help="also choose T (of --min-inliers) on half the images and score it on the other half, N times")
    ap.add_argument("--system", action="store_true",
                    help="match with the system's code and score its verification rule too (implies the two below)")
    ap.add_argument("--plausible", action="store_true",
                    help="count no inliers for a mirroring, collapsing or extremely stretched affine map (as the system does)")
    args = ap.parse_args()
    UPSCALE = args.upscale
    root = Path(args.set)
    d = json.load(open(args.rankings))
    image_of, ranked = d["image_of"], d["ranked"]
    gallery_file = {}
    for r in csv.DictReader(open(root / "manifest.csv")):
        if r["id"] in image_of:
            gallery_file.setdefault(image_of[r["id"]], root / r["file"])
    qs = list(csv.DictReader(open(root / "gt_copy.csv")))
    t = time.time()
    with ThreadPoolExecutor(2) as pool:
        ids = list(gallery_file)
        gfeat = dict(zip(ids, pool.map(lambda i: features(gallery_file[i], args.kind, args.side, args.n), ids)))
        tg = time.time() - t
        qfeat = list(pool.map(lambda q: features(root / q["file"], args.kind, args.side, args.n), qs))
        if args.mirror:
            qmir = list(pool.map(lambda q: features(root / q["file"], args.kind, args.side, args.n, True), qs))
    tq = time.time() - t - tg
    t = time.time()

    def pair(qf, gf):
        if args.system:
            return match(as_features(qf), as_features(gf), args.ratio, args.thresh)
        return Match(inliers(qf, gf, args.kind, args.ratio, args.thresh, args.one_to_one, args.plausible))

    def verify(i):
        out = [pair(qfeat[i], gfeat[c]) for c, _ in ranked[i][:args.top]]
        if args.mirror:
            out = [max(a, pair(qmir[i], gfeat[c]), key=lambda m: m.inliers) for a, (c, _) in zip(out, ranked[i][:args.top])]
        return out

    with ThreadPoolExecutor(2) as pool:
        found = list(pool.map(verify, range(len(qs))))
    tv = time.time() - t
    inl = [[m.inliers for m in row] for row in found]
    tag = f"{args.kind}_{args.side}_{args.n}_{int(args.mirror)}_{int(args.upscale)}_{args.ratio}_{args.thresh}{'_1to1' * args.one_to_one}{'_plaus' * args.plausible}{'_system' * args.system}"
    np.save(Path(args.rankings).parent / f"inl_{tag}.npy", np.array([[(m.inliers, m.tentative) for m in row] for row in found]))
    print(f"{args.kind} side {args.side} n {args.n}: gallery {tg/len(gfeat)*1000:.1f} ms/img, "
          f"query {tq/len(qs)*1000:.1f} ms/img, verify top{args.top} {tv/len(qs)*1000:.1f} ms/query")

    def score(T, verified, subset=None, label=None):
        """Copy R@1 mean over edits (and the worst, the chance-verification share) of the queries in
        `subset` (all by default) re-ranked at T; printed with `label`."""
        by = collections.defaultdict(list)
        chance = 0
        chosen = range(len(qs)) if subset is None else subset
        for i in chosen:
            q = qs[i]
            target = image_of.get(q["target_id"])
            cands = [c for c, _ in ranked[i]]
            if T:
                top = cands[:args.top]
                ver = sorted([j for j in range(len(top)) if verified(found[i][j])], key=lambda j: -inl[i][j])
                order = [top[j] for j in ver] + [c for j, c in enumerate(top) if j not in ver] + cands[args.top:]
                chance += any(top[j] != target and inl[i][j] < 40 for j in ver)
            else:
                order = cands
            by[q["transform"]].append(bool(order) and order[0] == target)
            if label and T == args.diag and order and order[0] != target:
                pos = cands.index(target) if target in cands else -1
                print(f"  miss {q['qid'][:60]:60s} target pos {pos} inl {inl[i][pos] if 0 <= pos < args.top else '-'}"
                      f" winner inl {inl[i][cands.index(order[0])] if order[0] in cands[:args.top] else '-'}"
                      f" cnn top {cands[0] == target}")
        r1 = {k: np.mean(v) for k, v in by.items()}
        mean = float(np.mean(list(r1.values())))
        if label:
            print(f"{label:>9s} mean {mean:.4f} min {min(r1.values()):.3f} "
                  f"chance {chance / len(chosen):.3f} " + " ".join(f"{k[:8]}={v:.3f}" for k, v in r1.items()))
        return mean

    def rule(T):
        return (lambda m: m.verified(T)) if args.system else (lambda m: m.inliers >= T)

    score(0, None, label="T=0")
    for T in args.min_inliers:
        score(T, lambda m, T=T: m.inliers >= T, label=f"T={T}")
        if args.system:
            score(T, rule(T), label=f"rule T={T}")
    # Is T over-fitted to this set? Pick it on half the gallery images' queries, score the other half.
    targets = sorted({q["target_id"] for q in qs})
    rng = np.random.default_rng(0)
    for split in range(args.splits):
        half = set(rng.permutation(targets)[:len(targets) // 2])
        a = [i for i, q in enumerate(qs) if q["target_id"] in half]
        b = [i for i, q in enumerate(qs) if q["target_id"] not in half]
        best = max(args.min_inliers, key=lambda T: (score(T, rule(T), a), -T))
        print(f"split {split}: T {best} chosen on half A ({score(best, rule(best), a):.4f}); held-out half B at T "
              f"{best}: {score(best, rule(best), b):.4f}, at T 20: {score(20, rule(20), b):.4f}, "
              f"vector order: {score(0, None, b):.4f}")


def as_features(f):
    points, descriptors = f
    if descriptors is None:
        return LocalFeatures.empty()
    return LocalFeatures(points.astype(np.float32), descriptors.astype(np.uint8))


if __name__ == "__main__":
    main()
