"""How soon a new album answers its first read (and what the setting that hastens it costs at idle), and how
soon a new search service is ready over many albums.

    .venv/bin/python bench/album_ready.py [--albums 10] [--idle-albums 30] [--idle-s 15]

Milvus loads a new collection (an album's first version, a re-embed's next one) by ticks of its query
coordinator: until the load is done, the album's first read (an import's first claims, a search) waits.
This bench starts a Milvus of the local stack twice, one after the other: once with
`queryCoord.checkChannelInterval` at Milvus' own default, 1000 ms (the baseline), and once at the stack's
(services.devstack.MILVUS_CHECK_CHANNEL_MS). With each, through the search service's own `MilvusIndex`:
  ready   seconds from the start of `create_collection` (create, index, load asked for) to the answer of
          the album's first read (a `get` of one id, which waits for the load), `--albums` albums one
          after the other (p50, max)
  idle    Milvus' CPU, % of one core, while nothing runs, with `--idle-albums` albums loaded: what the
          shorter interval costs
  restart (the stack's Milvus only) seconds a new search service takes to be ready over those albums
          (`MilvusIndex.ping`: each album loaded and caught up with its log, a Strong read each), its checks
          `AT_ONCE` at a time, against the same checks one after the other (the baseline)
  list    (the stack's Milvus only) milliseconds a search service (warm: each album checked, described once)
          takes to list those albums with their counts (`MilvusIndex.list_collections`: what the gateway's
          `GET /v1/albums` and the web page's album list ask), `AT_ONCE` at a time against one after the other
          (the baseline), median of 9 listings each, taken in turn
The last line is a JSON object of the figures: `ready_s` and `idle_cpu_pct` for the stack's setting,
`baseline_ready_s` and `baseline_idle_cpu_pct` for the default, `ready_ratio` (p50 against p50);
`restart_ready_s`, `baseline_restart_ready_s` (one at a time), `restart_ratio`; `list_ms`,
`baseline_list_ms` (one at a time), `list_ratio`.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import statistics
import sys
import time
from collections.abc import Iterator
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import cpu_seconds, print_json_line
from bench.hybrid import running_milvus
from services.devstack import MILVUS_CHECK_CHANNEL_MS
from services.search import milvus_index
from services.search.milvus_index import MilvusIndex
from services.search.settings import SearchSettings

MILVUS_DEFAULT_MS = 1000
DIM = 512


@contextlib.contextmanager
def collections_at_once(at_once: int) -> Iterator[None]:
    saved, milvus_index.AT_ONCE = milvus_index.AT_ONCE, at_once
    try:
        yield
    finally:
        milvus_index.AT_ONCE = saved


def restart_ready_s(uri: str, at_once: int) -> float:
    """Seconds a new search service (a fresh `MilvusIndex`) takes to check every album, `at_once` at a time."""
    index = MilvusIndex(SearchSettings(milvus_uri=uri))
    try:
        with collections_at_once(at_once):
            started = time.perf_counter()
            index.ping()
            return time.perf_counter() - started
    finally:
        index.close()


def list_ms(uri: str, rounds: int = 9) -> dict[int, float]:
    """Milliseconds a warm search service takes to list every album with its count, by albums at once (1 and
    `AT_ONCE`, in turn): the median of `rounds` listings each."""
    index = MilvusIndex(SearchSettings(milvus_uri=uri))
    times: dict[int, list[float]] = {1: [], milvus_index.AT_ONCE: []}
    try:
        index.ping()
        index.list_collections()  # each album described once
        for _ in range(rounds):
            for at_once in times:
                with collections_at_once(at_once):
                    started = time.perf_counter()
                    index.list_collections()
                    times[at_once].append((time.perf_counter() - started) * 1000)
    finally:
        index.close()
    return {at_once: statistics.median(taken) for at_once, taken in times.items()}


def measure(check_channel_ms: int, albums: int, idle_albums: int, idle_s: float, restart: bool = False
            ) -> tuple[list[float], float, dict[int, float], dict[int, float]]:
    """Seconds to each new album's first answer, Milvus' idle CPU (% of a core) with `idle_albums` albums, and
    (`restart`) seconds a new search service takes to be ready over them and milliseconds to list them, by
    albums at once."""
    with running_milvus("imagesearch-ready-", check_channel_ms=check_channel_ms) as milvus:
        uri, pid = milvus.uri, milvus.pid
        index = MilvusIndex(SearchSettings(milvus_uri=uri))
        try:
            ready = []
            for number in range(max(albums, idle_albums)):
                started = time.perf_counter()
                index.create_collection(f"album_{number}", DIM, "bench")
                index.get(f"album_{number}", ["nothing"])
                if number < albums:
                    ready.append(time.perf_counter() - started)
            time.sleep(3)  # the last loads' aftermath
            before = cpu_seconds(pid)
            time.sleep(idle_s)
            idle = (cpu_seconds(pid) - before) / idle_s * 100
        finally:
            index.close()
        restarts = {at_once: restart_ready_s(uri, at_once) for at_once in (1, milvus_index.AT_ONCE)} \
            if restart else {}
        listings = list_ms(uri) if restart else {}
    return ready, idle, restarts, listings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--albums", type=int, default=10, help="albums whose first answer is timed")
    parser.add_argument("--idle-albums", type=int, default=30, help="albums loaded while idle CPU is measured")
    parser.add_argument("--idle-s", type=float, default=15.0)
    args = parser.parse_args()
    logging.getLogger("pymilvus").setLevel(logging.CRITICAL)  # an ERROR for each alias a new album looks for

    figures = {}
    restarts: dict[int, float] = {}
    listings: dict[int, float] = {}
    for label, interval in (("baseline", MILVUS_DEFAULT_MS), ("stack", MILVUS_CHECK_CHANNEL_MS)):
        ready, idle, restarts, listings = measure(interval, args.albums, args.idle_albums, args.idle_s,
                                                  restart=label == "stack")
        figures[label] = {"p50": round(statistics.median(ready), 2), "max": round(max(ready), 2)}, round(idle, 1)
        print(f"checkChannelInterval {interval} ms: a new album answers after p50 {figures[label][0]['p50']} s "
              f"(max {figures[label][0]['max']} s); Milvus idle with {args.idle_albums} albums: "
              f"{figures[label][1]} % of a core")
    (ready_s, idle_pct), (base_s, base_idle) = figures["stack"], figures["baseline"]
    ratio = round(ready_s["p50"] / base_s["p50"], 2)
    print(f"ready: {ready_s['p50']} s against {base_s['p50']} s ({ratio}x); "
          f"idle CPU {idle_pct} % against {base_idle} %")
    one_by_one, at_once = restarts[1], restarts[milvus_index.AT_ONCE]
    print(f"a new search service ready over {args.idle_albums} albums: {at_once:.2f} s checking "
          f"{milvus_index.AT_ONCE} at once, against {one_by_one:.2f} s one after the other "
          f"({at_once / one_by_one:.2f}x)")
    list_one_by_one, list_at_once = listings[1], listings[milvus_index.AT_ONCE]
    print(f"listing the {args.idle_albums} albums with their counts: {list_at_once:.0f} ms, {milvus_index.AT_ONCE} at "
          f"once, against {list_one_by_one:.0f} ms one after the other ({list_at_once / list_one_by_one:.2f}x)")
    print_json_line({
        "bench": "album_ready", "check_channel_ms": MILVUS_CHECK_CHANNEL_MS, "albums": args.albums,
        "idle_albums": args.idle_albums, "ready_s": ready_s, "baseline_ready_s": base_s, "ready_ratio": ratio,
        "idle_cpu_pct": idle_pct, "baseline_idle_cpu_pct": base_idle, "restart_ready_s": round(at_once, 2),
        "baseline_restart_ready_s": round(one_by_one, 2), "restart_ratio": round(at_once / one_by_one, 2),
        "list_ms": round(list_at_once, 1), "baseline_list_ms": round(list_one_by_one, 1),
        "list_ratio": round(list_at_once / list_one_by_one, 2),
    })


if __name__ == "__main__":
    main()
