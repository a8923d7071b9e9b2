"""Recognition through the whole system, scored on the evaluation set's labelled photos (../shared/eval).

    .venv/bin/python bench/recognize.py --set .cache/evalset [--url http://127.0.0.1:8000] [--folds 6]

Adds the gallery through the gateway (POST /v1/albums/{album}/images) into a fresh album, each photo of
the 30 classes with at least 3 photos carrying its class as the undeclared attribute `category`
("coarse/fine" of manifest.csv; other photos unlabelled). Then, all through POST .../recognize:

- closed set, leave one out: every labelled photo queries the album by its image id (an image is left out
  of its own evidence): top-1 of the recognised label, beside the plain nearest labelled image's label
  (the first evidence image) in the same answers; per photo and per class (macro).
- open set: the classes, shuffled, are cut into --folds groups; for each, the group's labels are removed
  from the album (PATCH .../images?where=category IN (...), so its photos stay but carry no label), every
  photo queries again, and the group's photos answered `unknown` are counted against the other photos
  answered `unknown`, at the album's default threshold and along a sweep of thresholds (the curve).

The album's calibration is learned from its own labelled images (the query among them), so the
default threshold is the album's own choice, not tuned on the answers. The last line is a JSON object.
"""

from __future__ import annotations

import argparse
import collections
import csv
import random
import sys
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import print_json_line, running_stack
from services.client import GatewayClient, Upload

ATTRIBUTE = "category"
MIN_PHOTOS = 3
SWEEP = (0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.4, 0.5, 0.6, 0.7)


def labelled_gallery(root: Path) -> list[tuple[dict[str, str], str]]:
    """(manifest row, class or "") of every gallery photo; classes with fewer than 3 photos are ""."""
    with open(root / "manifest.csv") as fh:
        rows = list(csv.DictReader(fh))
    label = {r["id"]: f"{r['coarse']}/{r['fine']}" if r["fine"] else "" for r in rows}
    counts = collections.Counter(label.values())
    return [(r, label[r["id"]] if counts[label[r["id"]]] >= MIN_PHOTOS else "") for r in rows]


def fill(client: GatewayClient, album: str, root: Path, gallery: list[tuple[dict[str, str], str]]) -> dict[str, str]:
    """Adds the gallery; returns image id -> class of every labelled photo added."""
    classes: dict[str, str] = {}
    for start in range(0, len(gallery), 16):
        chunk = gallery[start:start + 16]
        uploads = [Upload((root / r["file"]).read_bytes(), r["id"], {ATTRIBUTE: c} if c else {}) for r, c in chunk]
        for result in client.add_images(album, uploads)["results"]:
            row, label = chunk[result["index"]]
            if result["status"] == "failed":
                print(f"  gallery photo {row['file']} failed: {result['error']}", file=sys.stderr)
            elif label and result["status"] == "added":
                classes[result["id"]] = label
    return classes


def ask_all(client: GatewayClient, album: str, ids: list[str], workers: int) -> list[dict[str, Any]]:
    def one(image_id: str) -> dict[str, Any]:
        return client.recognize(album, ATTRIBUTE, image_id=image_id, evidence=1)

    with ThreadPoolExecutor(workers) as pool:
        return list(pool.map(one, ids))


def closed_set(client: GatewayClient, album: str, classes: dict[str, str], workers: int) -> dict[str, Any]:
    ids = sorted(classes)
    client.recognize(album, ATTRIBUTE, image_id=ids[0])  # learns the calibration outside the timings
    started = time.perf_counter()
    answers = ask_all(client, album, ids, workers)
    elapsed = time.perf_counter() - started
    top1 = [a["candidates"][0]["label"] == classes[i] for i, a in zip(ids, answers, strict=True)]
    nearest = [bool(a["evidence"]) and classes[i] in a["evidence"][0]["labels"]
               for i, a in zip(ids, answers, strict=True)]
    answered = [not a["unknown"] for a in answers]
    right_answered = [t and k for t, k in zip(top1, answered, strict=True)]
    by_class: dict[str, list[tuple[bool, bool]]] = collections.defaultdict(list)
    for i, t, n in zip(ids, top1, nearest, strict=True):
        by_class[classes[i]].append((t, n))
    macro = np.mean([np.mean(v, axis=0) for v in by_class.values()], axis=0)
    confidences = np.array([a["confidence"] for a in answers])
    return {"queries": len(ids), "classes": len(by_class), "workers": workers, "top1": float(np.mean(top1)),
            "top1_nearest": float(np.mean(nearest)), "top1_macro": float(macro[0]),
            "top1_nearest_macro": float(macro[1]), "answered": float(np.mean(answered)),
            "precision_answered": float(np.sum(right_answered) / max(1, np.sum(answered))),
            "mean_confidence": float(confidences.mean()), "calibration": answers[0]["calibration"],
            "threshold": answers[0]["threshold"], "queries_per_s": len(ids) / elapsed,
            "reliability": reliability(confidences, np.array(top1))}


def reliability(confidences: np.ndarray, correct: np.ndarray) -> list[tuple[str, int, float, float]]:
    """(confidence bin, queries, mean confidence, accuracy): a calibrated confidence matches its accuracy."""
    out = []
    for low in (0.0, 0.2, 0.4, 0.6, 0.8):
        mask = (confidences >= low) & (confidences < low + 0.2 if low < 0.8 else confidences <= 1.0)
        if mask.any():
            out.append((f"{low:.1f}-{low + 0.2:.1f}", int(mask.sum()), float(confidences[mask].mean()),
                        float(correct[mask].mean())))
    return out


def open_set(client: GatewayClient, album: str, classes: dict[str, str], folds: int, workers: int,
             seed: int) -> dict[str, Any]:
    names = sorted(set(classes.values()))
    random.Random(seed).shuffle(names)
    groups = [names[f::folds] for f in range(folds)]
    ids = sorted(classes)
    known_scores: list[float] = []
    unknown_scores: list[float] = []
    at_default: list[tuple[bool, bool]] = []  # (held out, answered unknown)
    per_fold = []
    for group in groups:
        where = f"{ATTRIBUTE} IN ({', '.join(repr(g) for g in group)})"
        removed = client.update_images(album, {ATTRIBUTE: None}, where)
        try:
            answers = ask_all(client, album, ids, workers)
        finally:
            for g in group:
                members = ", ".join(repr(i) for i in ids if classes[i] == g)
                restored = client.update_images(album, {ATTRIBUTE: g}, f"id IN ({members})")
                removed -= restored
            assert removed == 0, "the left-out labels were not all restored"
        fold = []
        for i, a in zip(ids, answers, strict=True):
            held = classes[i] in group
            (unknown_scores if held else known_scores).append(a["known"])
            fold.append((held, a["unknown"]))
        at_default += fold
        per_fold.append((*_rates(fold), len(group), answers[0]["threshold"]))
    unknown_rejected, known_rejected = _rates(at_default)
    curve = [(t, float(np.mean(np.array(unknown_scores) < t)), float(np.mean(np.array(known_scores) < t)))
             for t in SWEEP]
    auroc = float(np.mean(np.array(known_scores)[:, None] > np.array(unknown_scores)[None, :]))
    return {"folds": folds, "unknown_rejected": unknown_rejected, "known_rejected": known_rejected,
            "per_fold": per_fold, "curve": curve, "auroc": auroc}


def _rates(answers: list[tuple[bool, bool]]) -> tuple[float, float]:
    """(share of held-out photos answered unknown, share of the others answered unknown)."""
    held = [u for h, u in answers if h]
    kept = [u for h, u in answers if not h]
    return float(np.mean(held)) if held else 0.0, float(np.mean(kept)) if kept else 0.0


def evaluate(client: GatewayClient, root: Path, folds: int, workers: int, seed: int) -> dict[str, Any]:
    gallery = labelled_gallery(root)
    album = f"recognize-{uuid.uuid4().hex[:8]}"
    client.create_album(album)
    try:
        started = time.perf_counter()
        classes = fill(client, album, root, gallery)
        print(f"added {len(gallery)} gallery photos ({len(classes)} labelled, {len(set(classes.values()))} classes) "
              f"in {time.perf_counter() - started:.0f} s")
        closed = closed_set(client, album, classes, workers)
        opened = open_set(client, album, classes, folds, workers, seed)
        model = (client.get_album(album) or {}).get("model")
    finally:
        client.delete_album(album)
    report(closed, opened)
    return {"top1": round(closed["top1"], 4), "top1_nearest": round(closed["top1_nearest"], 4),
            "top1_macro": round(closed["top1_macro"], 4),
            "top1_nearest_macro": round(closed["top1_nearest_macro"], 4),
            "unknown_rejected": round(opened["unknown_rejected"], 4),
            "known_rejected": round(opened["known_rejected"], 4),
            "open_set_auroc": round(opened["auroc"], 4), "threshold_full_album": closed["threshold"],
            "curve": [[t, round(u, 4), round(k, 4)] for t, u, k in opened["curve"]],
            "queries": closed["queries"], "classes": closed["classes"], "folds": folds, "model": model,
            "queries_per_s": round(closed["queries_per_s"], 1)}


def report(closed: dict[str, Any], opened: dict[str, Any]) -> None:
    c = closed
    print(f"\nCLOSED SET, leave one out ({c['queries']} photos, {c['classes']} classes; album threshold "
          f"{c['threshold']:.3f}, calibration {c['calibration']})")
    print(f"{'':28s} per photo  per class")
    print(f"{'recognised label (top-1)':28s} {c['top1']:.3f}      {c['top1_macro']:.3f}")
    print(f"{'nearest image label':28s} {c['top1_nearest']:.3f}      {c['top1_nearest_macro']:.3f}")
    print(f"answered (not unknown) {c['answered']:.3f}, right among answered {c['precision_answered']:.3f}; "
          f"{c['queries_per_s']:.0f} queries/s ({c['workers']} in flight)")
    print("confidence bin  queries  mean confidence  accuracy")
    for name, n, conf, acc in c["reliability"]:
        print(f"{name:15s} {n:7d}  {conf:15.3f}  {acc:8.3f}")
    o = opened
    print(f"\nOPEN SET ({o['folds']} folds of left-out classes; AUROC known vs left out {o['auroc']:.3f})")
    print("fold  classes  threshold  left-out answered unknown  known answered unknown")
    for f, (u, k, n, t) in enumerate(o["per_fold"]):
        print(f"{f:4d}  {n:7d}  {t:9.3f}  {u:25.3f}  {k:21.3f}")
    print(f"{'all at the default':24s} {o['unknown_rejected']:21.3f}  {o['known_rejected']:21.3f}")
    print("threshold  left-out answered unknown  known answered unknown")
    for t, u, k in o["curve"]:
        print(f"{t:9.2f}  {u:25.3f}  {k:21.3f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--set", type=Path, required=True, help="evaluation set built by make_evalset.sh")
    parser.add_argument("--url", help="a running gateway; default: start a fresh stack")
    parser.add_argument("--folds", type=int, default=6, help="groups of left-out classes (30 classes / 6 = 5 each)")
    parser.add_argument("--workers", type=int, default=4, help="queries in flight")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if args.url:
        figures = evaluate(GatewayClient(args.url), args.set, args.folds, args.workers, args.seed)
    else:
        with running_stack() as stack:
            figures = evaluate(GatewayClient(stack.http_url), args.set, args.folds, args.workers, args.seed)
    print_json_line({"bench": "recognize", **figures})


if __name__ == "__main__":
    main()
