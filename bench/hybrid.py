"""Hybrid search (filters + vectors) in the real Milvus: recall@10 against exact filtered search and
p50/p99 latency per filter selectivity, beside the unfiltered search of the same run.

    .venv/bin/python bench/hybrid.py [--rows 200000] [--queries 200] [--ef 64,128,256,512,1024]
                                     [--set .cache/evalset]
    SEARCH_HNSW_M=32 .venv/bin/python bench/hybrid.py        # another index, as the service reads it
    SEARCH_INDEX_TYPE=IVF_FLAT .venv/bin/python bench/hybrid.py --nprobe 16,32,64,128

  vectors     real 512-d vectors of the service's pipeline (its model and whitening, run in process):
              every picture of the evaluation set (else the whitening pictures of .cache/whiten-data)
              gives its global vector and its 13 grid-region vectors; a sixth of the pictures is held
              out. Each of the album's rows is a random convex combination of 2 or 3 of the other
              pictures' real vectors plus a little Gaussian noise, renormalised (`synthesise`).
  queries     the held-out pictures, edited (crop, rescale, JPEG; bench.common.edited_copy), embedded
              as queries: real vectors that are not in the album
  attributes  declared columns: bucket INT uniform in [0, 1000) (bucket < 1, 10, 80, 100, 200, 500:
              0.1 % to 50 %; 8 % is just above the share below which Milvus searches exactly), price
              FLOAT, colour STRING (the colour of the row's main source picture, so it follows the
              vectors as a real attribute would), in_stock BOOL; one filter on the last three at ~1 %
  splits      the bucket filters keeping 7-30 % of the rows again, as several searches (each the filter
              and a range of ids, at most 5 % of the rows, which Milvus answers exactly) merged
  album       a real Milvus (services.devstack), filled through MilvusIndex.insert, one row per image,
              index and build parameters from SEARCH_* as the service reads them; then flushed, every
              index waited for until it covers every row, and reloaded, so the searches run on sealed,
              indexed segments only (`settle`)
  truth       exact top-10 by numpy (inner product of unit vectors) among the rows the filter's mask
              keeps; each mask's size is checked against MilvusIndex.count with the filter
  measure     for each search breadth (HNSW: SearchSettings.hnsw_ef; IVF: ivf_nprobe), every query
              against every filter through MilvusIndex.search(top_k 10), one call at a time, the filters
              interleaved; recall@10 and p50/p99 latency from the client side

Ends with one JSON line; its top level is the service's default breadth, `by_ef` (`by_nprobe`) has
every one measured.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import hashlib
import math
import os
import signal
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import ROOT, edited_copy, gallery_files, print_json_line
from services.common.errors import InvalidArgument
from services.common.filtering import And, Expr, Op, Predicate
from services.common.schema import AlbumSchema, Column, ColumnType
from services.devstack import MILVUS_CHECK_CHANNEL_MS, Ports, Stack
from services.extractor.descriptors import Purpose
from services.extractor.model import EmbedJob, ImageEmbedder, Scales
from services.extractor.settings import ExtractorSettings
from services.search.index import Hit, IndexType, Item
from services.search.milvus_index import MilvusIndex
from services.search.milvus_layout import collection_name
from services.search.settings import SearchSettings

Matrix = NDArray[np.float32]
Mask = NDArray[np.bool_]
ALBUM = "hybrid"
TOP_K = 10
# Rows of each real picture: its global vector and the windows of region grids 2 and 3 (4 + 9).
REGION_LEVELS = (2, 3)
HOLDOUT_EVERY = 6
# Length of the Gaussian noise vector added to each mixture (before renormalising).
NOISE = 0.1
COLOURS = ("red", "blue", "green", "black", "white", "grey", "brown", "beige", "navy", "olive", "pink", "purple",
           "orange", "yellow", "teal", "maroon", "silver", "gold", "cream", "khaki")
IN_STOCK_SHARE = 0.8
INSERT_ITEMS = 5000
WARM_UP_QUERIES = 20
# Milvus 2.3 searches a segment exactly when a filter drops at least 93 % of its rows (knowhere's
# kHnswSearchKnnBFFilterThreshold; seen here: 6.9 % of the rows kept exact, 7.5 % not): a split keeps
# each part's share below 7 %, with a margin for the share to vary between segments.
SPLIT_ABOVE = 0.07
SPLIT_SHARE = 0.05
GOAL_RECALL = 0.95
GOAL_P99_RATIO = 2.0


# --- real vectors ----------------------------------------------------------------------------------


def pictures(evalset: Path) -> tuple[list[Path], str]:
    """Real pictures: the evaluation set's gallery when built, else the whitening pictures and
    scikit-image's sample photos (the whitening was learned on the former: see bench/README.md)."""
    if (evalset / "manifest.csv").exists():
        return gallery_files(evalset, 10**6), f"evaluation set {evalset}"
    from services.extractor.fit_whitening import select_images

    chosen, _, _ = select_images(ROOT / ".cache" / "whiten-data")
    return chosen + gallery_files(None, 100), "whitening pictures (.cache/whiten-data) + scikit-image photos"


def embedder() -> ImageEmbedder:
    """The service's pipeline (model, pooling, whitening); an indexed image gets region rows instead of
    rotated ones, a query its one global vector."""
    made = ImageEmbedder.from_settings(ExtractorSettings(model_dir=ROOT / ".cache" / "models"))
    made.descriptor = dataclasses.replace(made.descriptor, index_variants=(), index_region_levels=REGION_LEVELS)
    return made


def decoded(model: ImageEmbedder, contents: Iterator[bytes], threads: int = 2) -> Iterator[Scales | None]:
    def decode(content: bytes) -> Scales | None:
        try:
            return model.decode(content)
        except InvalidArgument:
            return None

    with ThreadPoolExecutor(threads) as pool:
        yield from pool.map(decode, contents)


def picture_rows(model: ImageEmbedder, paths: Sequence[Path]) -> list[Matrix]:
    """Each picture's real rows (global + regions); an empty matrix for one that does not decode."""
    out: list[Matrix] = []
    for scales in decoded(model, (p.read_bytes() for p in paths)):
        rows = model.embed_jobs([EmbedJob(scales, Purpose.INDEX)])[0] if scales is not None else None
        out.append(rows if rows is not None else np.zeros((0, model.dim), np.float32))
    return out


def query_vectors(model: ImageEmbedder, paths: Sequence[Path], count: int) -> Matrix:
    """`count` queries: edited copies of the pictures in turn (a new edit each round), embedded."""
    edits = (edited_copy(paths[q % len(paths)].read_bytes(), seed=q) for q in range(count))
    vectors = [model.embed([scales])[0] for scales in decoded(model, edits) if scales is not None]
    return unit(np.stack(vectors))


def unit(vectors: Matrix) -> Matrix:
    return (vectors / np.linalg.norm(vectors, axis=1, keepdims=True)).astype(np.float32)


# --- the album's data -------------------------------------------------------------------------------


def synthesise(base: Matrix, rows: int, rng: np.random.Generator) -> tuple[Matrix, NDArray[np.int64]]:
    """`rows` unit vectors, each w1*a + w2*b (+ w3*c) + noise over random base rows a, b, c (2 or 3 of
    them, even odds; weights Dirichlet(1, ..)), and the base row with the largest weight of each."""
    parts = rng.integers(0, len(base), size=(rows, 3))
    weights = rng.dirichlet(np.ones(3), size=rows)
    two = rng.random(rows) < 0.5
    weights[two, 2] = 0.0
    weights /= weights.sum(axis=1, keepdims=True)
    out = np.empty((rows, base.shape[1]), np.float32)
    sigma = NOISE / np.sqrt(base.shape[1])
    for start in range(0, rows, 20000):
        part = slice(start, start + 20000)
        mixed = np.einsum("nk,nkd->nd", weights[part], base[parts[part]]).astype(np.float32)
        mixed += rng.normal(0.0, sigma, size=mixed.shape).astype(np.float32)
        out[part] = unit(mixed)
    main = parts[np.arange(rows), weights.argmax(axis=1)]
    return out, main


@dataclass(frozen=True)
class Attributes:
    """The album's declared columns, one array each."""

    bucket: NDArray[np.int64]
    price: NDArray[np.float64]
    colour: NDArray[np.int64]  # index into COLOURS
    in_stock: NDArray[np.bool_]

    SCHEMA = AlbumSchema.of([Column("bucket", ColumnType.INT), Column("price", ColumnType.FLOAT),
                             Column("colour", ColumnType.STRING), Column("in_stock", ColumnType.BOOL)])

    @classmethod
    def draw(cls, picture_of_row: NDArray[np.int64], pictures: int, rng: np.random.Generator) -> Attributes:
        rows = len(picture_of_row)
        picture_colour = rng.integers(0, len(COLOURS), size=pictures)
        return cls(bucket=rng.integers(0, 1000, size=rows), price=np.round(rng.uniform(0, 100, size=rows), 2),
                   colour=picture_colour[picture_of_row], in_stock=rng.random(rows) < IN_STOCK_SHARE)

    def of(self, row: int) -> dict[str, Any]:
        return {"bucket": int(self.bucket[row]), "price": float(self.price[row]),
                "colour": COLOURS[int(self.colour[row])], "in_stock": bool(self.in_stock[row])}


@dataclass(frozen=True)
class Case:
    """One filter: its key in the JSON line, how it reads, the filter tree, and the rows it keeps. A
    split case searches each of `parts` (the filter over one range of ids) and merges the answers; it
    stands in for the plain case `replaces`."""

    key: str
    label: str
    filter: Expr | None
    mask: Mask
    parts: tuple[Expr, ...] = ()
    replaces: str = ""


def cases(attrs: Attributes, bounds: Sequence[int], split_above: float, split_below: float) -> list[Case]:
    """No filter, bucket < each bound (bound / 1000 of the rows), one conjunction of three columns at
    ~1 %; and each bucket filter matching between `split_above` and `split_below` of the rows again,
    split into id ranges that each keep at most SPLIT_SHARE of the rows."""
    everything = np.ones(len(attrs.bucket), dtype=bool)
    out = [Case("1", "none (no filter)", None, everything)]
    for bound in sorted(bounds, reverse=True):
        test = Predicate("bucket", Op.LT, (bound,))
        out.append(Case(f"{bound / 1000:g}", f"bucket < {bound}", test, attrs.bucket < bound))
    for bound in sorted(bounds):
        if split_above < bound / 1000 <= split_below:
            test = Predicate("bucket", Op.LT, (bound,))
            ranges = id_ranges(math.ceil(bound / 1000 / SPLIT_SHARE))
            out.append(Case(f"{bound / 1000:g}_split", f"bucket < {bound}, as {len(ranges)} searches by id range",
                            None, attrs.bucket < bound, tuple(And((test, r)) for r in ranges), f"{bound / 1000:g}"))
    picked = ("red", "blue")
    low, high = 40.0, 52.5
    conjunction = And((Predicate("price", Op.BETWEEN, (low, high)), Predicate("colour", Op.IN, picked),
                       Predicate("in_stock", Op.EQ, (True,))))
    mask = ((attrs.price >= low) & (attrs.price <= high) & np.isin(attrs.colour, [COLOURS.index(c) for c in picked])
            & attrs.in_stock)
    out.append(Case("and_0.01", f"price between {low:g} and {high:g} and colour in (red, blue) and in_stock",
                    conjunction, mask))
    return out


def row_id(row: int) -> str:
    """An id as the gateway makes them (the first 32 hex digits of a SHA-256): uniform, in no order."""
    return hashlib.sha256(row.to_bytes(8, "little")).hexdigest()[:32]


def id_ranges(parts: int) -> list[Expr]:
    """Filters splitting the ids into `parts` ranges of equal share (ids are uniform hex strings)."""
    bounds = [f"{256 * j // parts:02x}" for j in range(1, parts)]
    lows: list[str | None] = [None, *bounds]
    highs: list[str | None] = [*bounds, None]
    return [And(tuple(p for p in (Predicate("id", Op.GE, (low,)) if low else None,
                                  Predicate("id", Op.LT, (high,)) if high else None) if p is not None))
            for low, high in zip(lows, highs, strict=True)]


# --- Milvus ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Milvus:
    uri: str
    pid: int


@contextlib.contextmanager
def running_milvus(prefix: str = "imagesearch-hybrid-", config: Sequence[str] = (),
                   check_channel_ms: int = MILVUS_CHECK_CHANNEL_MS) -> Iterator[Milvus]:
    """A fresh Milvus on free loopback ports (with these more "key=value" settings, and its query coordinator's
    checkChannelInterval: see services.devstack), data in a temporary directory; stopped on any exit."""
    with tempfile.TemporaryDirectory(prefix=prefix) as tmp:
        stack = Stack(Path(tmp), Ports.free(), milvus_config=config, milvus_check_channel_ms=check_channel_ms)
        try:
            stack.start(("milvus",))
            proc = stack.processes["milvus"].proc
            assert proc is not None
            yield Milvus(f"http://127.0.0.1:{stack.ports.milvus}", proc.pid)
        finally:
            stack.stop()


def load_album(uri: str, model_id: str, vectors: Matrix, attrs: Attributes) -> float:
    """Creates the album and inserts every row through MilvusIndex; returns the seconds it took."""
    index = MilvusIndex(SearchSettings(milvus_uri=uri))
    started = time.perf_counter()
    try:
        index.create_collection(ALBUM, vectors.shape[1], model_id, schema=Attributes.SCHEMA)
        for start in range(0, len(vectors), INSERT_ITEMS):
            end = min(start + INSERT_ITEMS, len(vectors))
            index.insert(ALBUM, [Item(id=row_id(i), vectors=(vectors[i],), attributes=attrs.of(i))
                                 for i in range(start, end)])
            progress(f"inserted {end:,}/{len(vectors):,} rows, {time.perf_counter() - started:.0f} s")
    finally:
        index.close()
    return time.perf_counter() - started


@dataclass(frozen=True)
class Segment:
    """A segment as the query node serves it."""

    rows: int
    state: str
    indexed: bool


def settle(uri: str, rows: int, timeout_s: float = 1800.0) -> list[Segment]:
    """Returns once Milvus serves the album from sealed segments with every index built.

    A Milvus 2.3 search reads growing segments through a temporary IVF index (nprobe 16), and a sealed
    segment whose HNSW is not built yet by brute force, so neither would measure HNSW. Flush seals every
    segment; the index builder indexes them (describe_index counts the rows indexed); a compaction then
    merges the small ones (Milvus compacts indexed segments only, and would do it on its own a few
    minutes later, in the middle of the measurements: seen here, 20k + 90k + 90k rows became 110k +
    90k), and its segments are indexed in turn; a reload makes the query node load each segment with
    its indexes before `load_collection` returns."""
    from pymilvus import MilvusClient

    client = MilvusClient(uri=uri)
    deadline = time.monotonic() + timeout_s
    try:
        cname = physical_name(client)
        client.flush(cname)
        while not all_indexed(client, cname, rows):
            wait_until(deadline, "indexes")
        job = client.compact(cname)
        while client.get_compaction_state(job) != "Completed":
            wait_until(deadline, "compaction")
        while not all_indexed(client, cname, rows):
            wait_until(deadline, "indexes")
        client.release_collection(cname)
        client.load_collection(cname, timeout=timeout_s)
    finally:
        client.close()
    segments = served_segments(uri)
    if sum(s.rows for s in segments) != rows or not all(s.indexed and s.state == "Sealed" for s in segments):
        raise RuntimeError(f"Milvus serves {segments}, not {rows} rows in sealed, indexed segments")
    return segments


def physical_name(client: Any) -> str:
    """The album's collection: the one its name (an alias) points to, or the name itself."""
    from pymilvus.exceptions import MilvusException

    cname = collection_name(SearchSettings().collection_prefix, ALBUM)
    try:
        return str(client.describe_alias(cname)["collection_name"])
    except MilvusException:  # no such alias: the album's collection bears its name
        return cname


def wait_until(deadline: float, what: str) -> None:
    if time.monotonic() > deadline:
        raise TimeoutError(f"{what} not done in time")
    time.sleep(5)


def all_indexed(client: Any, cname: str, rows: int) -> bool:
    """Whether every index of the collection (vector and scalar) covers all `rows`."""
    states = [client.describe_index(cname, name) for name in client.list_indexes(cname)]
    progress("indexes: " + ", ".join(f"{s['index_name']} {s['indexed_rows']:,}/{s['total_rows']:,} "
                                     f"({s['pending_index_rows']:,} pending)" for s in states))
    return all(s["indexed_rows"] >= rows and s["pending_index_rows"] == 0 for s in states)


def served_segments(uri: str) -> list[Segment]:
    from pymilvus import MilvusClient, connections, utility
    from pymilvus.grpc_gen import common_pb2

    client = MilvusClient(uri=uri)
    try:
        cname = physical_name(client)
    finally:
        client.close()
    alias = f"hybrid-{uuid.uuid4().hex[:8]}"
    connections.connect(alias=alias, uri=uri)
    try:
        infos = utility.get_query_segment_info(cname, using=alias)
        return [Segment(int(i.num_rows), common_pb2.SegmentState.Name(i.state), bool(i.indexID)) for i in infos]
    finally:
        connections.disconnect(alias)


# --- measuring ---------------------------------------------------------------------------------------


def exact_top_k(scores: Matrix, mask: Mask, k: int) -> list[set[int]]:
    """Per query (a column of `scores`, rows x queries), the rows of its k best scores among `mask`."""
    kept = np.flatnonzero(mask)
    if len(kept) <= k:
        return [set(kept.tolist()) for _ in range(scores.shape[1])]
    sub = scores[kept]
    best = np.argpartition(-sub, k - 1, axis=0)[:k]
    return [set(kept[best[:, q]].tolist()) for q in range(scores.shape[1])]


@dataclass
class Run:
    """What one filter's searches found and took."""

    found: list[set[int]] = dataclasses.field(default_factory=list)
    ms: list[float] = dataclasses.field(default_factory=list)

    def figures(self, truth: list[set[int]], matching: float) -> dict[str, float]:
        recall = [len(f & t) / max(1, min(TOP_K, len(t))) for f, t in zip(self.found, truth, strict=True)]
        short = sum(len(f) < min(TOP_K, len(t)) for f, t in zip(self.found, truth, strict=True))
        return {"recall_at_10": round(float(np.mean(recall)), 4),
                "p50_ms": round(float(np.percentile(self.ms, 50)), 2),
                "p99_ms": round(float(np.percentile(self.ms, 99)), 2),
                "matching": round(matching, 5), "short_answers": short}


def search(index: MilvusIndex, query: Matrix, case: Case, pool: ThreadPoolExecutor) -> list[Hit]:
    """The case's top-k: one search, or one per part at the same time (as the service's threads would
    run them), merged by distance."""
    if not case.parts:
        return index.search(ALBUM, query, TOP_K, filter=case.filter)
    answers = pool.map(lambda part: index.search(ALBUM, query, TOP_K, filter=part), case.parts)
    return sorted((hit for hits in answers for hit in hits), key=lambda hit: hit.distance)[:TOP_K]


def measure(uri: str, setting: dict[str, int], queries: Matrix, filters: Sequence[Case], rounds: int,
            row_of: dict[str, int]) -> dict[str, Run]:
    """Every query against every filter, one search at a time, `rounds` times over (the filters
    interleaved per query, so slow moments of a shared machine fall on all of them alike), after a few
    untimed searches; the answers of the first round are kept."""
    index = MilvusIndex(SearchSettings(milvus_uri=uri).model_copy(update=setting))
    runs = {case.key: Run() for case in filters}
    pool = ThreadPoolExecutor(max(len(case.parts) for case in filters) or 1)
    try:
        for query in queries[:WARM_UP_QUERIES]:
            for case in filters:
                search(index, query, case, pool)
        for round_ in range(rounds):
            for query in queries:
                for case in filters:
                    started = time.perf_counter()
                    hits = search(index, query, case, pool)
                    runs[case.key].ms.append((time.perf_counter() - started) * 1000)
                    if round_ == 0:
                        runs[case.key].found.append({row_of[hit.id] for hit in hits})
    finally:
        pool.shutdown()
        index.close()
    return runs


def check_counts(uri: str, filters: Sequence[Case]) -> None:
    """The filters keep in Milvus exactly the rows their masks keep (the truth is computed from these)."""
    index = MilvusIndex(SearchSettings(milvus_uri=uri))
    try:
        for case in filters:
            counted = sum(index.count(ALBUM, part) for part in case.parts or (case.filter,))
            if counted != int(case.mask.sum()):
                raise RuntimeError(f"{case.label}: Milvus counts {counted} rows, the mask {int(case.mask.sum())}")
    finally:
        index.close()


@dataclass(frozen=True)
class Sweep:
    """The search setting measured at several values: HNSW's ef, or IVF's nprobe."""

    field: str  # the SearchSettings field
    name: str
    values: tuple[int, ...]
    default: int

    @classmethod
    def of(cls, settings: SearchSettings, efs: str, nprobes: str) -> Sweep:
        if IndexType(settings.index_type.upper()) is IndexType.HNSW:
            field, name, text, default = "hnsw_ef", "ef", efs, settings.hnsw_ef
        else:
            field, name, text, default = "ivf_nprobe", "nprobe", nprobes, settings.ivf_nprobe
        return cls(field, name, tuple(sorted({default, *(int(v) for v in text.split(","))})), default)


def index_description(settings: SearchSettings) -> str:
    kind = IndexType(settings.index_type.upper())
    if kind is IndexType.HNSW:
        return f"HNSW M {settings.hnsw_m} efConstruction {settings.hnsw_ef_construction}"
    return f"{kind.value} nlist {settings.ivf_nlist}" + (f" m {settings.ivf_pq_m}" if kind is IndexType.IVF_PQ else "")


# --- reporting ---------------------------------------------------------------------------------------

Figures = dict[str, dict[str, float]]  # filter key -> recall and latency


def plain(figures: Figures, filters: Sequence[Case]) -> Figures:
    """The figures of the single-search cases."""
    return {c.key: figures[c.key] for c in filters if not c.parts}


def with_splits(figures: Figures, filters: Sequence[Case]) -> Figures:
    """The figures of the single-search cases, those of the split cases in place of the ones they split."""
    split = {c.replaces: c.key for c in filters if c.parts}
    return {c.key: figures[split.get(c.key, c.key)] for c in filters if not c.parts}


def meets(figures: Figures, unfiltered_p99: float) -> bool:
    return all(f["recall_at_10"] >= GOAL_RECALL and f["p99_ms"] <= GOAL_P99_RATIO * unfiltered_p99
               for f in figures.values())


def recommend(swept: dict[int, Figures]) -> dict[str, Any]:
    """The smallest value meeting the goal for every search; and the smallest pair (value without a
    filter, value with one) that does, the filtered p99 then compared with the unfiltered p99 at the first."""
    values = sorted(swept)
    same = next((v for v in values if meets(swept[v], swept[v]["1"]["p99_ms"])), None)
    for bare in (v for v in values if swept[v]["1"]["recall_at_10"] >= GOAL_RECALL):
        baseline = swept[bare]["1"]["p99_ms"]
        filtered = next((v for v in values if meets({k: f for k, f in swept[v].items() if k != "1"}, baseline)), None)
        if filtered is not None:
            return {"same": same, "unfiltered": bare, "filtered": filtered}
    return {"same": same, "unfiltered": None, "filtered": None}


def print_table(sweep: Sweep, value: int, figures: Figures, filters: Sequence[Case]) -> None:
    mark = " (the service's default)" if value == sweep.default else ""
    base = figures["1"]["p99_ms"]
    print(f"\n{sweep.name} {value}{mark}")
    print(f"  {'filter':<68} {'matching':>9} {'recall@10':>9} {'p50 ms':>7} {'p99 ms':>7} {'p99/unf.':>8} "
          f"{'<10 hits':>8}")
    for case in filters:
        f = figures[case.key]
        print(f"  {case.label:<68} {f['matching'] * 100:8.2f}% {f['recall_at_10']:9.3f} {f['p50_ms']:7.2f} "
              f"{f['p99_ms']:7.2f} {f['p99_ms'] / base:8.2f} {f['short_answers']:8.0f}")


def progress(message: str) -> None:
    print(f"  [{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# --- main --------------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=200_000, help="rows (= images) in the album")
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--ef", default="64,128,256,512,1024", help="HNSW ef values to measure (with the default)")
    parser.add_argument("--nprobe", default="16,32,64,128", help="IVF nprobe values to measure (with the default)")
    parser.add_argument("--buckets", default="1,10,80,100,200,500",
                        help="filters bucket < B for each B, comma-separated (B / 1000 of the rows match)")
    parser.add_argument("--split-below", type=float, default=0.3,
                        help="also search each bucket filter keeping 7 %% to this share of the rows as several "
                             "searches over id ranges (0: never)")
    parser.add_argument("--rounds", type=int, default=2, help="times each query is timed (latency samples)")
    parser.add_argument("--set", type=Path, default=ROOT / ".cache" / "evalset",
                        help="evaluation set whose gallery gives the real vectors (else the whitening pictures)")
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    # Milvus is stopped on Ctrl-C (even when started in the background, where SIGINT comes ignored) and kill.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    settings = SearchSettings()  # the index and its defaults as the service reads them (SEARCH_* variables)
    sweep = Sweep.of(settings, args.ef, args.nprobe)
    started = time.perf_counter()
    rng = np.random.default_rng(args.seed)

    paths, source = pictures(args.set)
    held = set(rng.permutation(len(paths))[: len(paths) // HOLDOUT_EVERY].tolist())
    model = embedder()
    progress(f"embedding {len(paths)} pictures of {source} ({len(held)} held out for queries)")
    per_picture = picture_rows(model, [p for i, p in enumerate(paths) if i not in held])
    base = np.concatenate(per_picture)
    picture_of_base = np.concatenate([np.full(len(r), n) for n, r in enumerate(per_picture)])
    queries = query_vectors(model, [p for i, p in enumerate(paths) if i in held], args.queries)
    embed_s = time.perf_counter() - started

    vectors, main_row = synthesise(base, args.rows, rng)
    row_of = {row_id(i): i for i in range(args.rows)}
    attrs = Attributes.draw(picture_of_base[main_row], len(per_picture), rng)
    filters = cases(attrs, [int(b) for b in args.buckets.split(",")], SPLIT_ABOVE, args.split_below)
    scores = vectors @ queries.T
    truth = {case.key: exact_top_k(scores, case.mask, TOP_K) for case in filters}
    shape = neighbourhoods(scores, base @ queries.T)
    del scores
    progress(f"{args.rows:,} rows made from {len(base):,} real rows; exact answers computed")

    with running_milvus() as milvus:
        uri = milvus.uri
        insert_s = load_album(uri, model.model_id, vectors, attrs)
        settle_started = time.perf_counter()
        segments = settle(uri, args.rows)
        settle_s = time.perf_counter() - settle_started
        check_counts(uri, filters)
        progress(f"served: {len(segments)} sealed, indexed segment(s) {[s.rows for s in segments]}")
        swept: dict[int, Figures] = {}
        load_before = os.getloadavg()[1]
        for value in sweep.values:
            runs = measure(uri, {sweep.field: value}, queries, filters, args.rounds, row_of)
            swept[value] = {c.key: runs[c.key].figures(truth[c.key], float(c.mask.mean())) for c in filters}
            progress(f"{sweep.name} {value} measured")
        load_after = os.getloadavg()[1]
        segments_after = served_segments(uri)
    total_s = time.perf_counter() - started

    print(f"album: {args.rows:,} images, 1 row per image (the search's over-fetch, x{settings.search_overfetch} "
          f"rows, then changes no answer), dim {vectors.shape[1]}, {index_description(settings)}, IP; Milvus "
          f"served {len(segments)} sealed indexed segment(s) of {', '.join(f'{s.rows:,}' for s in segments)} rows"
          + ("" if sorted(segments_after, key=str) == sorted(segments, key=str)
             else f" (after the searches: {segments_after})"))
    print(f"vectors: mixtures of {len(base):,} real rows ({len(per_picture)} pictures of {source}, global + "
          f"13 regions each); queries: {len(queries)} edited copies of {len(held)} held-out pictures")
    print(f"neighbourhoods (cosine, median over queries): {shape}")
    print(f"time: embed {embed_s:.0f} s, insert {insert_s:.0f} s ({args.rows / insert_s:,.0f} rows/s), flush + "
          f"index + reload {settle_s:.0f} s, whole run {total_s:.0f} s")
    print(f"machine: {os.cpu_count()} CPUs, load average (5 min) {load_before:.1f} before the searches, "
          f"{load_after:.1f} after; latency: {len(queries) * args.rounds} samples per filter and {sweep.name}, "
          f"single searches, top_k {TOP_K}, client side (MilvusIndex.search)")
    for value in sweep.values:
        print_table(sweep, value, swept[value], filters)
    views = {"plain": plain, "with_splits": with_splits}
    advice = {name: recommend({v: view(f, filters) for v, f in swept.items()}) for name, view in views.items()}
    met = {name: meets(view(swept[sweep.default], filters), swept[sweep.default]["1"]["p99_ms"])
           for name, view in views.items()}
    print(f"\ngoal: recall@10 >= {GOAL_RECALL} for every filter and p99 <= {GOAL_P99_RATIO:g}x the unfiltered p99")
    for name, words in (("plain", "one search per filter"), ("with_splits", "split searches where measured")):
        print(f"  {words}: met at the default {sweep.name} {sweep.default}: {met[name]}; smallest {sweep.name} "
              f"meeting it for every search: {advice[name]['same']}; smallest {sweep.name} without a filter / "
              f"with one: {advice[name]['unfiltered']} / {advice[name]['filtered']}")
    default = swept[sweep.default]
    print_json_line({
        "bench": "hybrid", "rows": args.rows, "rows_per_image": 1, "dim": int(vectors.shape[1]),
        "index": index_description(settings), "queries": len(queries), "top_k": TOP_K,
        sweep.name: sweep.default, "unfiltered_p99_ms": default["1"]["p99_ms"], "by_selectivity": default,
        f"by_{sweep.name}": {str(v): f for v, f in swept.items()}, "goal_met_at_default": met,
        "recommended": advice, "segments": [s.rows for s in segments], "real_rows": len(base), "source": source,
        "neighbourhoods": shape, "insert_s": round(insert_s, 1), "settle_s": round(settle_s, 1),
        "total_s": round(total_s, 1), "rounds": args.rounds,
        "loadavg_5min": [round(load_before, 2), round(load_after, 2)],
    })


def neighbourhoods(scores: Matrix, real_scores: Matrix) -> dict[str, float]:
    """How clustered the data looks from the queries: cosine of the 1st and 10th nearest album row, and
    of the nearest real row (global or region) of the source pictures, median over the queries."""
    top = -np.sort(-np.partition(scores, scores.shape[0] - TOP_K, axis=0)[-TOP_K:], axis=0)
    return {"album_1st": round(float(np.median(top[0])), 3), "album_10th": round(float(np.median(top[-1])), 3),
            "real_1st": round(float(np.median(real_scores.max(axis=0))), 3)}


if __name__ == "__main__":
    main()
