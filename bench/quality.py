"""Retrieval quality of the whole system, scored on the evaluation set of ../shared/eval.

    .venv/bin/python bench/quality.py --set .cache/evalset [--url http://127.0.0.1:8000] [--details]

Ingests the gallery through the gateway into a fresh album, sends every query through the
gateway's search, and prints the tables of eval_retrieval.py: copy detection per edit, natural
queries per kind (when gt_natural.csv has rows), category mAP and P@10 (each labelled photo
queries the album by its image id; the album returns every other image ranked). Copy and natural
queries search in mode "copy"; category queries in --category-mode, "similar" by default (upright
rows, query expansion), "copy" to measure them as before. Without --url it starts its own stack on
free ports. The last line is a JSON object of the figures.
"""

from __future__ import annotations

import argparse
import collections
import csv
import sys
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import print_json_line, running_stack
from services.client import GatewayClient, Upload

Ranking = list[str]  # image ids, nearest first
PARTS = frozenset({"copy", "natural", "category"})


def read_csv(path: Path) -> list[dict[str, str]]:
    if not path.exists():
        return []
    with open(path) as fh:
        return list(csv.DictReader(fh))


def ingest_gallery(client: GatewayClient, album: str, root: Path, gallery: list[dict[str, str]]) -> dict[str, str]:
    """Adds every gallery photo; returns gallery id -> image id (identical files share one image)."""
    image_of: dict[str, str] = {}
    for start in range(0, len(gallery), 16):
        rows = gallery[start:start + 16]
        answer = client.add_images(album, [Upload((root / r["file"]).read_bytes(), r["id"]) for r in rows])
        for result in answer["results"]:
            row = rows[result["index"]]
            if result["status"] == "failed":
                print(f"  gallery photo {row['file']} failed: {result['error']}", file=sys.stderr)
            else:
                image_of[row["id"]] = result["id"]
    return image_of


def rankings(queries: list[Callable[[], dict[str, Any]]], workers: int) -> list[Ranking]:
    return [ranking for ranking, _ in timed_rankings(queries, workers)]


def timed_rankings(queries: list[Callable[[], dict[str, Any]]], workers: int) -> list[tuple[Ranking, float]]:
    """Each query's ranking and the gateway's took_ms for it."""
    def run(query: Callable[[], dict[str, Any]]) -> tuple[Ranking, float]:
        answer = query()
        return [hit["id"] for hit in answer["results"]], float(answer["took_ms"])

    with ThreadPoolExecutor(workers) as pool:
        return list(pool.map(run, queries))


def ap_at(relevant: np.ndarray, n_relevant: int) -> float:
    hits = np.cumsum(relevant)
    precision = hits / np.arange(1, len(relevant) + 1)
    return float((precision * relevant).sum() / max(n_relevant, 1))


def score(ranked: list[Ranking], relevant: list[set[str]]) -> tuple[float, float, float]:
    r1, r10, aps = [], [], []
    for ranking, rel in zip(ranked, relevant, strict=True):
        hits = np.array([i in rel for i in ranking], dtype=np.float32)
        r1.append(bool(hits[:1].sum()))
        r10.append(bool(hits[:10].sum()))
        aps.append(ap_at(hits, len(rel)))
    return float(np.mean(r1)), float(np.mean(r10)), float(np.mean(aps))


def copy_detection(client: GatewayClient, album: str, root: Path, image_of: dict[str, str],
                   workers: int) -> dict[str, tuple[float, float, float]]:
    queries = read_csv(root / "gt_copy.csv")
    ranked = rankings([_upload_query(client, album, root / q["file"], 100) for q in queries], workers)
    by_edit: dict[str, list[int]] = collections.defaultdict(list)
    for i, q in enumerate(queries):
        by_edit[q["transform"]].append(i)
    print(f"{'COPY transform':32s}  R@1   R@10  mAP   (n)")
    results = {}
    for edit, idx in by_edit.items():
        res = score([ranked[i] for i in idx], [{image_of.get(queries[i]["target_id"], "?")} for i in idx])
        results[edit] = res
        print(f"{edit:32s} {res[0]:.3f} {res[1]:.3f} {res[2]:.3f} ({len(idx)})")
    mean = np.mean(list(results.values()), axis=0)
    print(f"{'copy: mean over transforms':32s} " + " ".join(f"{v:.3f}" for v in mean))
    return results


def natural_queries(client: GatewayClient, album: str, root: Path, image_of: dict[str, str],
                    workers: int) -> dict[str, dict[str, float]]:
    """R@1, R@10, mAP and the median took_ms of each kind of natural query."""
    queries = read_csv(root / "gt_natural.csv")
    if not queries:
        return {}
    timed = timed_rankings([_upload_query(client, album, root / q["file"], 100) for q in queries], workers)
    ranked = [ranking for ranking, _ in timed]
    for i, q in enumerate(queries):  # a gallery photo used as a query must not retrieve itself
        own = image_of.get(q["qid"])
        ranked[i] = [r for r in ranked[i] if r != own]
    by_kind: dict[str, list[int]] = collections.defaultdict(list)
    for i, q in enumerate(queries):
        by_kind[q["kind"].split(":")[0]].append(i)
    print(f"\n{'NATURAL kind':32s}  R@1   R@10  R@100 mAP   p50 ms (n)")
    out = {}
    for kind, idx in by_kind.items():
        rel = [{image_of.get(t, "?") for t in queries[i]["target_ids"].split()} for i in idx]
        res = score([ranked[i] for i in idx], rel)
        r100 = float(np.mean([bool(set(ranked[i]) & r) for i, r in zip(idx, rel, strict=True)]))
        took = float(np.median([timed[i][1] for i in idx]))
        out[kind] = {"r1": round(res[0], 4), "r10": round(res[1], 4), "r100": round(r100, 4),
                     "map": round(res[2], 4), "took_ms_p50": round(took, 1)}
        print(f"{kind:32s} {res[0]:.3f} {res[1]:.3f} {r100:.3f} {res[2]:.3f} {took:6.1f} ({len(idx)})")
    return out


def category_retrieval(client: GatewayClient, album: str, gallery: list[dict[str, str]], image_of: dict[str, str],
                       workers: int, mode: str) -> tuple[float, float]:
    labels = {image_of[r["id"]]: f"{r['coarse']}/{r['fine']}" for r in gallery if r["fine"] and r["id"] in image_of}
    counts = collections.Counter(labels.values())
    queries = [i for i, label in labels.items() if counts[label] >= 3]
    top_k = len(image_of)
    ranked = rankings([_id_query(client, album, i, top_k, mode) for i in queries], workers)
    per_class: dict[str, list[tuple[float, float]]] = collections.defaultdict(list)
    for query, ranking in zip(queries, ranked, strict=True):
        label = labels[query]
        hits = np.array([labels.get(i) == label for i in ranking], dtype=np.float32)
        per_class[label].append((ap_at(hits, counts[label] - 1), float(hits[:10].mean())))
    m = np.mean([np.mean(v, axis=0) for v in per_class.values()], axis=0)
    print(f"\nCATEGORY ({len(per_class)} classes, {len(queries)} queries, mode {mode}): "
          f"macro mAP {m[0]:.3f}  macro P@10 {m[1]:.3f}")
    return float(m[0]), float(m[1])


def _upload_query(client: GatewayClient, album: str, path: Path, top_k: int) -> Callable[[], dict[str, Any]]:
    return lambda: client.search(album, image=path.read_bytes(), top_k=top_k)


def _id_query(client: GatewayClient, album: str, image_id: str, top_k: int,
              mode: str) -> Callable[[], dict[str, Any]]:
    return lambda: client.search(album, image_id=image_id, top_k=top_k, mode=mode)


def evaluate(client: GatewayClient, root: Path, workers: int, category_mode: str,
             parts: frozenset[str] = PARTS, details: bool = False) -> dict[str, Any]:
    gallery = read_csv(root / "manifest.csv")
    album = f"quality-{uuid.uuid4().hex[:8]}"
    client.create_album(album, details=details)
    started = time.perf_counter()
    image_of = ingest_gallery(client, album, root, gallery)
    print(f"ingested {len(image_of)} gallery photos in {time.perf_counter() - started:.0f} s")
    try:
        copies = copy_detection(client, album, root, image_of, workers) if "copy" in parts else {}
        natural = natural_queries(client, album, root, image_of, workers) if "natural" in parts else {}
        category = (category_retrieval(client, album, gallery, image_of, workers, category_mode)
                    if "category" in parts else None)
        model = (client.get_album(album) or {}).get("model")
    finally:
        client.delete_album(album)
    r1 = [v[0] for v in copies.values()]
    return {"copy_r1_mean": round(float(np.mean(r1)), 4) if r1 else None,
            "copy_r1_min": round(min(r1), 4) if r1 else None,
            "copy_r1": {k: round(v[0], 4) for k, v in copies.items()},
            "category_map": round(category[0], 4) if category else None,
            "category_p10": round(category[1], 4) if category else None, "category_mode": category_mode,
            "natural": natural, "model": model, "details": details}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--set", type=Path, required=True, help="evaluation set built by make_evalset.sh")
    parser.add_argument("--url", help="a running gateway; default: start a fresh stack")
    parser.add_argument("--workers", type=int, default=4, help="queries in flight")
    parser.add_argument("--category-mode", choices=["similar", "copy"], default="similar",
                        help="search mode of the category queries (default: similar)")
    parser.add_argument("--parts", default="copy,natural,category",
                        help="which query sets to run, comma-separated (default: all three)")
    parser.add_argument("--details", action="store_true",
                        help="make the album with a keypoint index (what finds the natural set's detail crops)")
    args = parser.parse_args()
    parts = frozenset(args.parts.split(","))
    if not parts <= PARTS:
        parser.error(f"--parts takes {', '.join(sorted(PARTS))}")
    if args.url:
        figures = evaluate(GatewayClient(args.url), args.set, args.workers, args.category_mode, parts, args.details)
    else:
        with running_stack() as stack:
            figures = evaluate(GatewayClient(stack.http_url), args.set, args.workers, args.category_mode, parts,
                               args.details)
    print_json_line({"bench": "quality", **figures})


if __name__ == "__main__":
    main()
