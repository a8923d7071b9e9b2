"""The gateway: the public HTTP/JSON and gRPC API, image blobs, caching, ingest jobs.

numpy's BLAS gets one thread here, set before numpy loads: copy verification runs several keypoint
matchings (one matrix product each) at once in worker threads, and OpenBLAS's own pool, busy-waiting
between calls, made five candidates take 24 ms instead of 11 ms on 2 cores (bench/verify_match.py).
"""

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
