"""Gateway settings, read from GATEWAY_* environment variables."""

from __future__ import annotations

from typing import Literal

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from services.common.settings import ServiceSettings


class GatewaySettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="GATEWAY_", env_nested_delimiter="__", extra="ignore")

    # gRPC API (the HTTP API and web page are on http_port; /metrics is served there too).
    port: int = 50050
    http_port: int = 8000
    metrics_port: int = 0
    extractor_target: str = "127.0.0.1:50051"
    search_target: str = "127.0.0.1:50052"
    # Seconds for one call to the extractor or search service.
    rpc_timeout_s: float = 60.0
    s3_endpoint: str = "127.0.0.1:9000"
    s3_access_key: str = "imagesearch"
    s3_secret_key: str = "imagesearch-secret"
    s3_secure: bool = False
    s3_bucket: str = "imagesearch"
    s3_region: str = "us-east-1"
    redis_url: str = "redis://127.0.0.1:6379/0"
    # Query embeddings are cached by content hash for this long.
    embedding_cache_ttl_s: int = 7 * 24 * 3600
    max_image_bytes: int = 20 * 1024 * 1024
    max_images_per_request: int = 256
    # Fetching an image by URL (search by URL, ingest from URLs). Only hosts that resolve to public
    # addresses are fetched from (no Redis, Milvus, MinIO or cloud metadata through the gateway),
    # but those listed in url_allowed_hosts (e.g. ["images.internal"]) or, with url_allow_private,
    # any host (a single-user machine, tests). See services/gateway/urlfetch.py.
    url_fetch_timeout_s: float = 10.0
    url_allow_private: bool = False
    url_allowed_hosts: list[str] = Field(default_factory=list)
    default_top_k: int = 10
    # Neighbours a "similar" search expands its query with (0 to 50; 0 = none). 3 was the study's best
    # (bench/research/RESULTS.md, COMBO D): more neighbours drift from the query's category.
    similar_expand_k: int = 3
    # A copy search verifies its nearest images geometrically (keypoints that one plausible affine map
    # carries, one to one, from the query onto the image) and puts the verified ones first, most
    # matches first: at least verify_min_matches, and below 20 only when they are most of the
    # tentative matches (services/common/local_features.Match.verified). 0 turns it off.
    # bench/research/verify_experiment.py --system on the evaluation set: the 5 nearest and 6 matches
    # lift copy R@1 from 0.984 to 0.994, the worst edit from 0.920 to 0.970, with 3.4 % of queries
    # getting an unrelated image verified by chance (10 nearest: no better, twice the work; 8 matches:
    # worst 0.955).
    verify_top: int = 5
    verify_min_matches: int = 6
    # A small query photo (its longer side under verify_small_side pixels: a detail cut out of a larger
    # picture) is verified against its verify_small_top nearest images rather than verify_top: its global
    # vector describes a part, which the whole image's vector does not rank first, while its keypoints
    # still match the part of the whole image. bench/README.md ("Part and whole"): detail crops R@1
    # 0.000 -> 0.066 at 100, copy R@1 0.994 / worst 0.980 (0.970 at 0), category unchanged, their
    # latency 1.09x; every image of the album (1000) gives 0.302 at ~7x. 0 (the default): as any query.
    # Off by default: many ordinary copy queries are small too (a thumbnail, a quarter-scale copy of a
    # 320 px photo), and at 100 each of them reads and matches 100 images' keypoints: bench/e2e.py's
    # new-photo searches went from p50 ~55 to ~320 ms (cached ~250 ms) for +0.066 detail R@1.
    verify_small_top: int = 0
    verify_small_side: int = 160
    # The keypoint index (keypoint_index.py) of an album made with `details`: its images' keypoint
    # descriptors in "<album>.keypoints" (at most keypoint_rows per image, evenly spread; 0: all the
    # extractor gives), and a copy search whose query is small (under verify_small_side) also verifies the
    # keypoint_candidates images its keypoints vote for most (each keypoint's keypoint_votes nearest
    # images one vote each). A detail crop's vector does not find its photo; its keypoints do:
    # bench/research/detail_keypoints.py (10 candidates, 5 votes: the photo among them for 0.95 of the
    # crops with the extractor's index keypoints at 680 px) and bench/README.md ("Part and whole").
    # keypoint_rows trades rows (Milvus bytes and ingest work) for recall: 150 rows 0.51, 300 0.69, all
    # (396 on average there) 0.77.
    keypoint_votes: int = 5
    keypoint_candidates: int = 10
    keypoint_rows: int = 0
    # When a copy search of an uploaded or fetched photo also searches with the photo rotated and
    # mirrored (the extractor's query variants), to find rotated and mirrored copies: "unverified"
    # when its upright vector's nearest images hold no verified copy (never with verification off),
    # "always", or "never". A search that tries them costs one network run per variant more
    # (bench/README.md).
    copy_variants: Literal["unverified", "always", "never"] = "unverified"
    max_top_k: int = 1000
    # Two images at most this far apart (cosine distance of their upright vectors) are near-duplicates:
    # what an add's on_duplicate (keep, skip, replace) and GET /v1/albums/{album}/duplicates go by.
    # bench/near_duplicates.py on the evaluation set (bench/README.md): 0.1 takes in 99 % of photos re-saved
    # as JPEG q85, 98 % of mirrored ones and 47 % of q15 JPEGs, while 1.4 % of gallery photos have another
    # photo that close.
    near_duplicate_distance: float = 0.1
    thumbnail_size: int = 256
    # Faces (usecases/faces.py): two faces at most this far apart (cosine distance of the extractor's
    # L2-normalised dlib descriptors) are taken for one person. dlib's own rule is Euclidean 0.6 on its raw
    # descriptors (norm ~1.4), about 0.09 here; bench/faces.py on the photos of people in packages: one
    # person's three photos 0.027-0.051 apart, 111 pairs of different people at least 0.072 (bench/README.md).
    face_match_distance: float = 0.07
    # Recognition (usecases/recognize.py, bench/recognize.py on the evaluation set, bench/README.md): the
    # nearest labelled images that vote, and how fast a vote's weight falls with its distance beyond the
    # nearest one (exp(-(d - d1) / tau)); 20 and 0.05 gave leave-one-out top-1 0.834 against 0.823 for the
    # nearest image's label alone. The default open-set threshold turns away this share of the album's own
    # leave-one-out queries. Calibration learns from at most calibration_images labelled images, and is
    # kept per album and attribute until its number of labelled images or its model changes (read at most
    # every state_check_s: a count with a filter, ~ms on small albums, more on large ones), an update through
    # this gateway touches it, or calibration_ttl_s pass (an update through another gateway replica).
    recognize_k: int = 20
    recognize_tau: float = 0.05
    recognize_known_rejection: float = 0.08
    recognize_calibration_images: int = 2000
    recognize_calibration_ttl_s: float = 300.0
    recognize_state_check_s: float = 5.0
    # Votes balanced by label size: each label's votes divided by (its images ** balance). 0.5 lifts per-class
    # top-1 on the evaluation set from 0.705 to 0.729 and lowers per-photo top-1 from 0.834 to 0.818 (a
    # label with many images outvotes a small one less often, and is outvoted more).
    recognize_balance: float = 0.0
    # Seconds for one Redis call (the embedding cache and the job queue); Redis down must not stall a search.
    redis_timeout_s: float = 2.0
    # Seconds for one object store call.
    s3_timeout_s: float = 30.0
    # Puts one add or import batch keeps under way at once (`BlobStore.put_all`; its client's connection pool
    # holds 16). 4 costs the least CPU against the stack's local store (bench/blob_puts.py); an object store
    # farther away (a round trip of milliseconds) writes a large add sooner with more.
    s3_put_threads: int = Field(default=4, ge=1, le=16)
    # Images per batch of an import (one Embed call each) and of a re-embed, and import workers in this
    # process (0: none, e.g. to run workers apart from the API). A batch's own steps (its Redis records,
    # the staged pack read from the object store, blobs written, the rows' insert) leave the extractor idle
    # unless other batches are embedding meanwhile: bench/e2e.py, 300 photos imported as a tar on 2 cores
    # (load 2-6): 16 x 2 workers 29.1-30.8 images/s (CPU 41-46 ms an image over all processes), 32 x 2
    # 36.3, 32 x 4 41.7 (bench/README.md, "Ingest").
    ingest_batch_size: int = 32
    import_workers: int = 4
    # Seconds a worker holding batches may go unheard of by Redis (no read, no touch) before another worker
    # takes its batches over: its gateway was killed or stopped. A living worker touches its batch four times
    # as often.
    import_takeover_s: float = Field(default=10.0, gt=0)
    # Seconds a batch may go untouched before another worker takes it over whoever holds it (a worker that
    # lives on but dropped it); a living worker touches its batch every third of it.
    import_visibility_s: float = 60.0
    # Seconds an import may stay staging unheard of before a worker's sweep (every minute) fails it (the gateway
    # that read its upload stopped midway: the upload must be sent again) and deletes what it had staged. A
    # living gateway says its staging goes on four times as often, however long a batch takes (an archive is read
    # in worker threads, the event loop free meanwhile); the margin is for a loop slowed by a busy machine and for
    # the gateways' clocks.
    import_staging_stale_s: float = 180.0
