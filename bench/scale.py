"""An album of a million images in the real Milvus: load rate, Milvus' memory, search latency and recall@10
against exact search, with and without a filter keeping 10 % of the album, for HNSW and compressed indexes.

    .venv/bin/python bench/scale.py [--images 1000000] [--indexes HNSW,IVF_SQ8] [--queries 200]
                                    [--ef 128,256,512] [--nprobe 16,32,64,128] [--set .cache/evalset]
    .venv/bin/python bench/scale.py --images 50000 --indexes HNSW,IVF_SQ8,IVF_PQ   # a quick run

  vectors   real-shaped 512-d vectors, as in bench/hybrid.py (`synthesise`): mixtures of 2-3 real vectors
            of the service's pipeline (evaluation-set photos, global + region rows) plus a little noise;
            one row per image, as the default recipe stores; queries are edited copies of held-out photos
  album     for each index in turn, a fresh Milvus (services.devstack; stopped before the next one starts,
            so each memory figure is that index's alone), the album created by MilvusIndex.create_collection
            (its schema, an INT column `bucket` uniform in [0, 1000), its scalar and vector indexes). The
            rows are then inserted straight through pymilvus (MilvusClient.insert, 10,000 rows a call, the
            next batch built while one is sent) with the fields MilvusIndex.insert writes: MilvusIndex.insert
            runs ~940 rows/s (one upsert and a stale-row check per call), 18 minutes a million, which
            measures the client, not Milvus. IVF_SQ8, which MilvusIndex does not create, replaces the
            IVF_FLAT index of the empty collection (same nlist); searches send it IVF's nprobe as for IVF_FLAT
  settle    flush, wait until every index covers every row, compact, wait again, reload: the searches run
            on sealed, indexed segments only (see bench/hybrid.py `settle`)
  memory    resident memory of the Milvus process tree (the wrapper and the milvus binary), sampled every
            second: idle, peak while inserting, peak while indexing, after the reload, peak during searches
  measure   each query through MilvusIndex.search(top_k 10), one call at a time, as the service does: no
            filter, and `bucket < 100` (10 % of the images), which MilvusIndex answers by post-filtering an
            unfiltered HNSW search (services/search/search_plan.py; the plan taken is counted); for HNSW the
            same filter inside Milvus' search (the pre-filter plan) beside it. Every value of the search
            breadth (HNSW ef, IVF nprobe), 20 untimed queries first, each query timed `--rounds` times
  truth     exact top 10 by numpy (inner products of unit vectors), over the rows the filter keeps

Ends with one JSON line: the top level is the service's default (HNSW at its default ef; `--indexes`'s first
index if HNSW is not measured), `by_index` has every index measured.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import ROOT, print_json_line, rss_mb
from bench.hybrid import (
    HOLDOUT_EVERY,
    TOP_K,
    WARM_UP_QUERIES,
    Run,
    Segment,
    all_indexed,
    embedder,
    exact_top_k,
    picture_rows,
    pictures,
    progress,
    query_vectors,
    row_id,
    running_milvus,
    synthesise,
    wait_until,
)
from services.common.filtering import Expr, Op, Predicate
from services.common.schema import AlbumSchema, Column, ColumnType
from services.search.index import row_key
from services.search.milvus_filter import NULLS_FIELD, field_of
from services.search.milvus_index import MilvusIndex
from services.search.milvus_layout import NULL_NAMES_FIELD, collection_name
from services.search.settings import SearchSettings

Matrix = NDArray[np.float32]
Mask = NDArray[np.bool_]
ALBUM = "scale"
SCHEMA = AlbumSchema.of([Column("bucket", ColumnType.INT)])
FILTER_BOUND = 100  # bucket < 100: 10 % of the images
INSERT_ROWS = 10_000  # rows a MilvusClient.insert call (~21 MB of protobuf, under the proxy's 64 MB)
RSS_EVERY_S = 1.0
GOAL_RECALL = 0.95
GOAL_P99_MS = 20.0
GOAL_RSS_MB = 8 * 1024


# --- the indexes ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class IndexSpec:
    """One index measured: how MilvusIndex creates the album, the vector index Milvus then holds, and the
    search breadth swept (a SearchSettings field)."""

    name: str
    created_as: str  # the index type MilvusIndex.create_collection is given
    params: dict[str, int]  # the build parameters Milvus holds
    breadth: str  # "hnsw_ef" or "ivf_nprobe"
    values: tuple[int, ...]
    default: int

    @property
    def breadth_name(self) -> str:
        return "ef" if self.breadth == "hnsw_ef" else "nprobe"

    @property
    def description(self) -> str:
        return f"{self.name} " + " ".join(f"{k} {v}" for k, v in self.params.items())

    @classmethod
    def of(cls, name: str, settings: SearchSettings, efs: Sequence[int], nprobes: Sequence[int]) -> IndexSpec:
        if name == "HNSW":
            params = {"M": settings.hnsw_m, "efConstruction": settings.hnsw_ef_construction}
            return cls(name, name, params, "hnsw_ef", tuple(sorted({*efs, settings.hnsw_ef})), settings.hnsw_ef)
        values = tuple(sorted({*nprobes, settings.ivf_nprobe}))
        if name == "IVF_PQ":
            params = {"nlist": settings.ivf_nlist, "m": settings.ivf_pq_m, "nbits": 8}
            return cls(name, name, params, "ivf_nprobe", values, settings.ivf_nprobe)
        if name in ("IVF_SQ8", "IVF_FLAT"):
            return cls(name, "IVF_FLAT", {"nlist": settings.ivf_nlist}, "ivf_nprobe", values, settings.ivf_nprobe)
        raise SystemExit(f"unknown index {name!r}: HNSW, IVF_SQ8, IVF_PQ or IVF_FLAT")


# --- a Milvus and its memory --------------------------------------------------------------------------


class RssSampler:
    """Samples a process tree's resident memory every RSS_EVERY_S in a thread; the peak of each phase."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.phase = "idle"
        self.peaks: dict[str, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> RssSampler:
        self.sample()
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()

    def enter(self, phase: str) -> float:
        """Starts a phase; returns the memory now (MB)."""
        now = self.sample()
        self.phase = phase
        return now

    def sample(self) -> float:
        mb = rss_mb(self.pid)
        self.peaks[self.phase] = max(self.peaks.get(self.phase, 0.0), mb)
        return mb

    def _run(self) -> None:
        while not self._stop.wait(RSS_EVERY_S):
            self.sample()


# --- loading -------------------------------------------------------------------------------------------


def create_album(uri: str, spec: IndexSpec, model_id: str, dim: int) -> str:
    """Creates the album as the service does; returns its physical collection. For IVF_SQ8, the empty
    collection's vector index is swapped for it."""
    index = MilvusIndex(SearchSettings(milvus_uri=uri))
    try:
        index.create_collection(ALBUM, dim, model_id, index_type=spec.created_as, schema=SCHEMA)
    finally:
        index.close()
    from pymilvus import MilvusClient

    client = MilvusClient(uri=uri)
    try:
        alias = collection_name(SearchSettings().collection_prefix, ALBUM)
        cname = str(client.describe_alias(alias)["collection_name"])
        if spec.created_as != spec.name:
            client.release_collection(cname)
            client.drop_index(cname, vector_index_name(client, cname))
            params = client.prepare_index_params()
            params.add_index("vector", index_type=spec.name, metric_type="IP", params=spec.params)
            client.create_index(cname, params)
            client.load_collection(cname)
        return cname
    finally:
        client.close()


def vector_index_name(client: Any, cname: str) -> str:
    for name in client.list_indexes(cname):
        if client.describe_index(cname, name)["field_name"] == "vector":
            return str(name)
    raise RuntimeError(f"{cname} has no vector index")


def rows_of(vectors: Matrix, bucket: NDArray[np.int64], start: int, end: int,
            created_at_ms: int) -> list[dict[str, Any]]:
    """The rows MilvusIndex.insert writes for images start..end (one row each, ordinal 0, no name)."""
    column = field_of("bucket")
    out = []
    for i in range(start, end):
        image_id = row_id(i)
        out.append({"pk": row_key(image_id, 0), "image_id": image_id, "ordinal": 0, "name": "", "content_hash": "",
                    "created_at_ms": created_at_ms, "attributes": {}, column: int(bucket[i]), NULLS_FIELD: [],
                    NULL_NAMES_FIELD: "", "vector": vectors[i].tolist()})
    return out


def insert(uri: str, cname: str, vectors: Matrix, bucket: NDArray[np.int64]) -> float:
    """Inserts every row, the next batch built while the last is sent; returns the seconds it took."""
    from pymilvus import MilvusClient

    client = MilvusClient(uri=uri)
    created = int(time.time() * 1000)
    started = time.perf_counter()
    pending: Future[Any] | None = None
    try:
        with ThreadPoolExecutor(1) as sender:
            for start in range(0, len(vectors), INSERT_ROWS):
                end = min(start + INSERT_ROWS, len(vectors))
                rows = rows_of(vectors, bucket, start, end, created)
                if pending is not None:
                    pending.result()
                pending = sender.submit(client.insert, cname, rows, timeout=600)
                if end % 100_000 < INSERT_ROWS or end == len(vectors):
                    progress(f"inserted {end:,}/{len(vectors):,} rows, {time.perf_counter() - started:.0f} s")
            if pending is not None:
                pending.result()
    finally:
        client.close()
    return time.perf_counter() - started


@dataclass
class Settled:
    """How long the album took to be served from sealed, indexed segments, by step."""

    flush_s: float = 0.0
    index_s: float = 0.0
    compact_s: float = 0.0
    load_s: float = 0.0
    segments: list[Segment] = field(default_factory=list)

    @property
    def total_s(self) -> float:
        return self.flush_s + self.index_s + self.compact_s + self.load_s


def settle(uri: str, cname: str, rows: int, timeout_s: float) -> Settled:
    """Flush, every index built, compaction and its indexes, reload (bench/hybrid.py `settle`), timed."""
    from pymilvus import MilvusClient

    client = MilvusClient(uri=uri)
    deadline = time.monotonic() + timeout_s
    out = Settled()
    try:
        out.flush_s = timed(lambda: client.flush(cname, timeout=timeout_s))
        out.index_s = timed(lambda: wait_for(lambda: all_indexed(client, cname, rows), deadline, "indexes"))
        job = client.compact(cname)

        def compacted() -> None:
            wait_for(lambda: client.get_compaction_state(job) == "Completed", deadline, "compaction")
            wait_for(lambda: all_indexed(client, cname, rows), deadline, "indexes")

        out.compact_s = timed(compacted)
        client.release_collection(cname)
        out.load_s = timed(lambda: client.load_collection(cname, timeout=timeout_s))
    finally:
        client.close()
    out.segments = served_segments(uri, cname)
    if sum(s.rows for s in out.segments) != rows or not all(s.indexed and s.state == "Sealed" for s in out.segments):
        raise RuntimeError(f"Milvus serves {out.segments}, not {rows} rows in sealed, indexed segments")
    return out


def timed(step: Callable[[], object]) -> float:
    started = time.perf_counter()
    step()
    return time.perf_counter() - started


def wait_for(done: Callable[[], bool], deadline: float, what: str) -> None:
    while not done():
        wait_until(deadline, what)


def served_segments(uri: str, cname: str) -> list[Segment]:
    from pymilvus import connections, utility
    from pymilvus.grpc_gen import common_pb2

    alias = f"scale-{uuid.uuid4().hex[:8]}"
    connections.connect(alias=alias, uri=uri)
    try:
        infos = utility.get_query_segment_info(cname, using=alias)
        return [Segment(int(i.num_rows), common_pb2.SegmentState.Name(i.state), bool(i.indexID)) for i in infos]
    finally:
        connections.disconnect(alias)


# --- searching ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    """One kind of search: its key, what it is, its filter, the settings it adds (the plan), its rows."""

    key: str
    label: str
    filter: Expr | None
    mask: Mask
    settings: dict[str, Any] = field(default_factory=dict)


def cases(spec: IndexSpec, bucket: NDArray[np.int64]) -> list[Case]:
    every = np.ones(len(bucket), dtype=bool)
    ten = Predicate("bucket", Op.LT, (FILTER_BOUND,))
    out = [Case("none", "no filter", None, every),
           Case("filter_10", f"bucket < {FILTER_BOUND} (as the service plans it)", ten, bucket < FILTER_BOUND)]
    if spec.name == "HNSW":
        # A share above 1 is never reached: the filter always goes into Milvus' search.
        out.append(Case("filter_10_pre", f"bucket < {FILTER_BOUND} inside Milvus' search (pre-filter)", ten,
                        bucket < FILTER_BOUND, {"post_filter_min_share": 2.0}))
    return out


def plan_counts() -> dict[str, float]:
    """How many filtered searches MilvusIndex has run by plan (its Prometheus counter), in this process."""
    from prometheus_client import REGISTRY

    return {plan: REGISTRY.get_sample_value("imagesearch_search_filtered_total", {"plan": plan}) or 0.0
            for plan in ("pre", "post", "post_then_pre")}


def measure(uri: str, setting: dict[str, int], queries: Matrix, case: Case, rounds: int,
            row_of: dict[str, int]) -> tuple[Run, dict[str, float]]:
    """One case's searches at one breadth, one at a time; the answers of the first round are kept. Returns
    them with the plans MilvusIndex took for the timed searches."""
    index = MilvusIndex(SearchSettings(milvus_uri=uri).model_copy(update={**setting, **case.settings}))
    run = Run()
    try:
        for query in queries[:WARM_UP_QUERIES]:
            index.search(ALBUM, query, TOP_K, filter=case.filter)
        before = plan_counts()
        for round_ in range(rounds):
            for query in queries:
                started = time.perf_counter()
                hits = index.search(ALBUM, query, TOP_K, filter=case.filter)
                run.ms.append((time.perf_counter() - started) * 1000)
                if round_ == 0:
                    run.found.append({row_of[hit.id] for hit in hits})
        after = plan_counts()
    finally:
        index.close()
    return run, {plan: after[plan] - before[plan] for plan in after if after[plan] > before[plan]}


def check_counts(uri: str, filters: Sequence[Case]) -> None:
    """Milvus keeps exactly the rows each mask keeps (the truth is computed from the masks)."""
    index = MilvusIndex(SearchSettings(milvus_uri=uri))
    try:
        for case in filters:
            counted = index.count(ALBUM, case.filter)
            if counted != int(case.mask.sum()):
                raise RuntimeError(f"{case.label}: Milvus counts {counted} rows, the mask {int(case.mask.sum())}")
    finally:
        index.close()


# --- one index, start to end ---------------------------------------------------------------------------

Figures = dict[str, Any]


@dataclass(frozen=True)
class Data:
    vectors: Matrix
    bucket: NDArray[np.int64]
    queries: Matrix
    row_of: dict[str, int]
    model_id: str


def run_index(spec: IndexSpec, data: Data, rounds: int, settle_timeout_s: float,
              milvus_config: Sequence[str] = ()) -> Figures:
    """A fresh Milvus with the album under `spec`: loaded, settled, searched; its figures."""
    images = len(data.vectors)
    filters = cases(spec, data.bucket)
    scores = data.vectors @ data.queries.T
    truth = {case.key: exact_top_k(scores, case.mask, TOP_K) for case in filters}
    del scores
    with running_milvus("imagesearch-scale-", milvus_config) as milvus, RssSampler(milvus.pid) as rss:
        idle = rss.enter("insert")
        cname = create_album(milvus.uri, spec, data.model_id, data.vectors.shape[1])
        insert_s = insert(milvus.uri, cname, data.vectors, data.bucket)
        rss.enter("index")
        progress(f"{spec.name}: {images:,} rows inserted in {insert_s:.0f} s; flushing and indexing")
        settled = settle(milvus.uri, cname, images, settle_timeout_s)
        check_counts(milvus.uri, filters)
        time.sleep(5 * RSS_EVERY_S)
        loaded = rss.enter("search")
        progress(f"{spec.name}: served from {[s.rows for s in settled.segments]} after {settled.total_s:.0f} s; "
                 f"Milvus RSS {loaded:,.0f} MB; searching")
        swept: dict[str, dict[str, Figures]] = {}
        load_before = os.getloadavg()[1]
        for value in spec.values:
            swept[str(value)] = {}
            for case in filters:
                run, plans = measure(milvus.uri, {spec.breadth: value}, data.queries, case, rounds, data.row_of)
                swept[str(value)][case.key] = {**run.figures(truth[case.key], float(case.mask.mean())),
                                               "plans": plans}
            progress(f"{spec.name} {spec.breadth_name} {value}: " + ", ".join(
                f"{k} {f['recall_at_10']:.3f} / {f['p50_ms']:.1f} / {f['p99_ms']:.1f} ms"
                for k, f in swept[str(value)].items()))
        load_after = os.getloadavg()[1]
        searching = rss.peaks.get("search", loaded)
        rss.enter("done")
    return {
        "index": spec.description, spec.breadth_name: spec.default, "images": images, "rows": images,
        "insert_s": round(insert_s, 1), "insert_rows_s": round(images / insert_s),
        "flush_s": round(settled.flush_s, 1), "index_s": round(settled.index_s, 1),
        "compact_s": round(settled.compact_s, 1), "load_s": round(settled.load_s, 1),
        "settle_s": round(settled.total_s, 1), "segments": [s.rows for s in settled.segments],
        "milvus_rss_mb": {"idle": idle, "insert_peak": rss.peaks.get("insert", 0.0),
                          "index_peak": rss.peaks.get("index", 0.0), "after_load": loaded, "search_peak": searching},
        "milvus_rss_per_row_bytes": round((loaded - idle) * 2**20 / images),
        f"by_{spec.breadth_name}": swept, "loadavg_5min": [round(load_before, 2), round(load_after, 2)],
    }


def summary(figures: Figures, spec: IndexSpec, value: int) -> Figures:
    """The headline figures of one index at one breadth."""
    at = figures[f"by_{spec.breadth_name}"][str(value)]
    plain, ten = at["none"], at["filter_10"]
    rss = figures["milvus_rss_mb"]
    out = {"index": f"{spec.description} {spec.breadth_name} {value}", "recall_at_10": plain["recall_at_10"],
           "p50_ms": plain["p50_ms"], "p99_ms": plain["p99_ms"], "milvus_rss_mb": rss["search_peak"],
           "milvus_rss_after_load_mb": rss["after_load"],
           "filtered": {"share": ten["matching"], "plan": ten["plans"], **pick(ten)}}
    if "filter_10_pre" in at:
        out["filtered_pre"] = {"plan": at["filter_10_pre"]["plans"], **pick(at["filter_10_pre"])}
    out["goal_met"] = all(f["recall_at_10"] >= GOAL_RECALL and f["p99_ms"] <= GOAL_P99_MS for f in (plain, ten)) \
        and rss["search_peak"] <= GOAL_RSS_MB
    return out


def pick(f: Figures) -> Figures:
    return {k: f[k] for k in ("recall_at_10", "p50_ms", "p99_ms", "short_answers")}


def best_value(figures: Figures, spec: IndexSpec) -> int | None:
    """The smallest breadth whose unfiltered and 10 % searches both reach GOAL_RECALL."""
    swept = figures[f"by_{spec.breadth_name}"]
    return next((v for v in spec.values
                 if all(swept[str(v)][k]["recall_at_10"] >= GOAL_RECALL for k in ("none", "filter_10"))), None)


def print_table(spec: IndexSpec, figures: Figures) -> None:
    rss = figures["milvus_rss_mb"]
    print(f"\n{figures['index']}: {figures['images']:,} images in segments {figures['segments']}")
    print(f"  insert {figures['insert_s']:.0f} s ({figures['insert_rows_s']:,} rows/s); flush "
          f"{figures['flush_s']:.0f} s, index {figures['index_s']:.0f} s, compaction + its indexes "
          f"{figures['compact_s']:.0f} s, reload {figures['load_s']:.0f} s")
    print(f"  Milvus RSS (MB): idle {rss['idle']:,.0f}, inserting {rss['insert_peak']:,.0f}, indexing "
          f"{rss['index_peak']:,.0f}, loaded {rss['after_load']:,.0f}, searching {rss['search_peak']:,.0f} "
          f"({figures['milvus_rss_per_row_bytes']:,} bytes a row over idle)")
    print(f"  {spec.breadth_name:>7} {'search':<58} {'recall@10':>9} {'p50 ms':>7} {'p99 ms':>7} {'<10 hits':>8}"
          "  plans")
    labels = {c.key: c.label for c in cases(spec, np.zeros(1, np.int64))}
    for value, at in figures[f"by_{spec.breadth_name}"].items():
        mark = "*" if int(value) == spec.default else " "
        for key, f in at.items():
            print(f"  {value:>6}{mark} {labels[key]:<58} {f['recall_at_10']:9.3f} {f['p50_ms']:7.2f} "
                  f"{f['p99_ms']:7.2f} {f['short_answers']:8d}  {f['plans'] or ''}")


# --- main -------------------------------------------------------------------------------------------------


def make_data(args: argparse.Namespace) -> tuple[Data, dict[str, Any]]:
    rng = np.random.default_rng(args.seed)
    paths, source = pictures(args.set)
    held = set(rng.permutation(len(paths))[: len(paths) // HOLDOUT_EVERY].tolist())
    model = embedder()
    progress(f"embedding {len(paths)} pictures of {source} ({len(held)} held out for queries)")
    base = np.concatenate(picture_rows(model, [p for i, p in enumerate(paths) if i not in held]))
    queries = query_vectors(model, [p for i, p in enumerate(paths) if i in held], args.queries)
    vectors, _ = synthesise(base, args.images, rng)
    bucket = rng.integers(0, 1000, size=args.images)
    progress(f"{args.images:,} rows made from {len(base):,} real rows")
    data = Data(vectors, bucket, queries, {row_id(i): i for i in range(args.images)}, model.model_id)
    return data, {"real_rows": len(base), "source": source, "queries": len(queries)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=1_000_000, help="images (= rows) in the album")
    parser.add_argument("--indexes", default="HNSW,IVF_SQ8", help="indexes to measure, each in a fresh Milvus")
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=2, help="times each query is timed (latency samples)")
    parser.add_argument("--ef", default="128,256,512", help="HNSW ef values (with the service's default)")
    parser.add_argument("--nprobe", default="16,32,64,128", help="IVF nprobe values (with the service's default)")
    parser.add_argument("--settle-timeout", type=float, default=4 * 3600, help="seconds allowed to index")
    parser.add_argument("--set", type=Path, default=ROOT / ".cache" / "evalset",
                        help="evaluation set whose gallery gives the real vectors (else the whitening pictures)")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--milvus-config", action="append", default=[], metavar="KEY=VALUE",
                        help="a Milvus setting for the bench's servers, e.g. dataCoord.segment.maxSize=2048 (MB: "
                             "fewer, larger segments)")
    args = parser.parse_args()
    # Milvus is stopped on Ctrl-C (even when started in the background, where SIGINT comes ignored) and kill.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    settings = SearchSettings()
    efs, nprobes = ([int(v) for v in text.split(",")] for text in (args.ef, args.nprobe))
    specs = [IndexSpec.of(name.strip().upper(), settings, efs, nprobes) for name in args.indexes.split(",")]
    started = time.perf_counter()
    data, source = make_data(args)

    by_index: dict[str, Figures] = {}
    for spec in specs:
        figures = run_index(spec, data, args.rounds, args.settle_timeout, args.milvus_config)
        best = best_value(figures, spec)
        figures["default"] = summary(figures, spec, spec.default)
        figures[f"smallest_{spec.breadth_name}_for_recall"] = best
        if best is not None and best != spec.default:
            figures["at_smallest"] = summary(figures, spec, best)
        by_index[spec.name] = figures
        progress(f"{spec.name} done: {figures['default']}")
        print_table(spec, figures)

    head = by_index.get("HNSW") or by_index[specs[0].name]
    print_json_line({
        "bench": "scale", "images": args.images, "rows": args.images, "rows_per_image": 1,
        "dim": int(data.vectors.shape[1]), **head["default"], "top_k": TOP_K, "rounds": args.rounds,
        "insert_rows_s": head["insert_rows_s"], "index_s": head["index_s"], "settle_s": head["settle_s"],
        "goal": {"recall_at_10": GOAL_RECALL, "p99_ms": GOAL_P99_MS, "milvus_rss_mb": GOAL_RSS_MB},
        "milvus_config": args.milvus_config, "by_index": by_index, **source,
        "total_s": round(time.perf_counter() - started, 1),
    })


if __name__ == "__main__":
    main()
