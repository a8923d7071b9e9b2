"""How a filtered search runs on Milvus 2.3's HNSW: with the filter inside the search, or after it.

- Pre-filter (Milvus' own filtered search): exact where the filter keeps at most ~7 % of a segment's
  rows, since knowhere then searches the segment by brute force (kHnswSearchKnnBFFilterThreshold);
  above that it walks the graph skipping the rows filtered out, which leaves the kept ones poorly
  connected: recall@10 0.74-0.84 at 8-20 % kept on 200k rows, and no ef (up to 4096) nor M 32 reaches
  0.95 there (bench/README.md, "Hybrid search").
- Post-filter: the nearest rows of an unfiltered search, deep enough that `top_k` images among them
  should match (rows wanted / the filter's share), the filter then tested on each row as the exact
  index does (`services.search.filters`, the same semantics as the compiled Milvus expression). An
  unfiltered HNSW search keeps its recall at any depth, so this holds wherever the filter keeps
  enough rows for the depth to stay small.

The plan follows the filter's share of the album's images, counted by Milvus and remembered for a
while (`ExpiringCache`). The share only picks the plan: a post-filter that finds fewer than `top_k`
matches (the share had changed, or the matches lie away from the query) is answered by the
pre-filter instead, so a stale share costs time, never results.
"""

from __future__ import annotations

import math
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

from prometheus_client import Counter

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")

FILTERED_SEARCHES = Counter(
    "imagesearch_search_filtered_total",
    "Filtered searches by how the filter was applied: pre (in the search), post (to an unfiltered search's "
    "rows), post_then_pre (too few matches after, so in the search again).",
    ["plan"],
)


class ExpiringCache(Generic[K, V]):
    """Values kept `ttl_s` seconds after they were put; at most `size` of them, the least recently used
    forgotten first. Thread-safe."""

    def __init__(self, ttl_s: float, size: int = 4096, clock: Callable[[], float] = time.monotonic) -> None:
        self.ttl_s = ttl_s
        self.size = size
        self._clock = clock
        self._values: OrderedDict[K, tuple[V, float]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: K) -> V | None:
        """The value put under `key`, None if none or too old."""
        with self._lock:
            found = self._values.get(key)
            if found is None or found[1] <= self._clock():
                self._values.pop(key, None)
                return None
            self._values.move_to_end(key)
            return found[0]

    def put(self, key: K, value: V) -> None:
        with self._lock:
            self._values[key] = (value, self._clock() + self.ttl_s)
            self._values.move_to_end(key)
            while len(self._values) > self.size:
                self._values.popitem(last=False)


def post_filter_depth(share: float, rows_wanted: int, min_share: float, max_rows: int) -> int:
    """Rows of an unfiltered search to post-filter for `rows_wanted` matching rows, when the filter keeps
    `share` of the images; 0 where the pre-filter is the plan: the filter keeps less than `min_share`
    (Milvus answers those exactly) or the depth would pass `max_rows`."""
    if share < min_share or share <= 0:
        return 0
    depth = math.ceil(rows_wanted / min(share, 1.0))
    return depth if depth <= max_rows else 0
