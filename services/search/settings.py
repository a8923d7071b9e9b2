"""Search service settings, read from SEARCH_* environment variables."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from services.common.settings import ServiceSettings


class SearchSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="SEARCH_", env_nested_delimiter="__", extra="ignore")

    port: int = 50052
    metrics_port: int = 9102
    milvus_uri: str = "http://127.0.0.1:19530"
    milvus_token: str = ""
    # Seconds for one Milvus call before the service reports it unavailable.
    milvus_timeout_s: float = 10.0
    # Seconds between checks of Milvus; the Search service's gRPC health (not the server's, "")
    # is NOT_SERVING while Milvus does not answer, so the gateway's /readyz says so. 0 = no checks.
    store_check_interval_s: float = 5.0
    # Every collection this service creates gets this prefix, so a shared Milvus stays tidy.
    collection_prefix: str = "imagesearch_"
    # Default index for new collections, whatever the album's size: HNSW, measured to 1M images (one row
    # each, bench/scale.py; bench/README.md "Scale"): recall@10 1.000 at ef 256, 0.999 with a 10 %
    # filter (post-filter plan), 3.6-4.1 GB of Milvus memory. IVF_SQ8 (not offered yet) holds ~2 KB a row
    # less at recall@10 0.99 from nprobe 64 (50k): for albums where memory, not latency, is the bill.
    # IVF_PQ with ivf_pq_m 16 loses too much for 512-d vectors (recall@10 0.31 at 50k images).
    index_type: str = "HNSW"
    hnsw_m: int = 16
    hnsw_ef_construction: int = 200
    # Search-time breadth of HNSW; raised to the rows asked for where more. 256 over 64: recall@10 0.995
    # against 0.961 unfiltered and 0.978 against 0.917 with a filter keeping half the album, for +0.5 ms
    # at the median (bench/hybrid.py, 200k rows).
    hnsw_ef: int = 256
    # A filtered HNSW search tests the filter on the rows of a deeper unfiltered search (top_k x
    # over-fetch / the filter's share of the album) when the filter keeps at least this share and that
    # depth is at most post_filter_max_rows; else Milvus filters inside the search, which is exact when
    # it keeps at most ~7 % of a segment (see services/search/search_plan.py).
    post_filter_min_share: float = 0.06
    post_filter_max_rows: int = 1024
    # Seconds the counts that give a filter's share are reused (they choose the plan, never the hits).
    filter_share_ttl_s: float = 60.0
    max_top_k: int = 1000
    # IVF_FLAT / IVF_PQ: clusters built, clusters probed per search, PQ sub-quantisers (must divide dim).
    ivf_nlist: int = 1024
    ivf_nprobe: int = 32
    ivf_pq_m: int = 16
    # Consistency of reads (search, get, list, count). "Session" (default): read-your-writes for every
    # write made through this process (~4 ms a search); since all writes of an album go through the
    # search service, a client that just ingested sees its images, as long as one search replica
    # serves the deployment (deploy/k8s runs one). "Strong" sees every acknowledged write from any
    # replica, for several replicas, but waits for Milvus' next time tick (~200-400 ms a read on a
    # 2.3 standalone). See MilvusIndex.
    read_consistency: str = "Session"
    # Seconds an image written through this process is read back at `read_consistency`; an image not written for
    # longer, read by its id (an add's look at which images the album holds, an insert's at their rows, a get),
    # is read at Bounded consistency, which does not wait for Milvus' next time tick (services/search/
    # recent_writes.py; bench/adds.py). Must be longer than the Milvus' `common.gracefulTime` (5 s by default),
    # the age of the newest write a Bounded read is sure to see. 0: every read at `read_consistency`.
    recent_writes_s: float = Field(default=10.0, ge=0)
    # Rows fetched per wanted image on the first search round (regional descriptors share an image).
    search_overfetch: int = 2
    # Seconds to wait for a collection to load into memory (first use after a Milvus restart).
    milvus_load_timeout_s: float = 120.0
    # Seconds a collection's first read after (re)connecting (one Strong count) may wait for Milvus to
    # catch up with the collection's log; longer, and the album is reported as loading (503) meanwhile.
    milvus_catch_up_timeout_s: float = 3.0
    # After a failed connect, fail fast with UNAVAILABLE for this long before trying again.
    milvus_reconnect_backoff_s: float = 1.0
