"""The extractor service: image bytes in, retrieval descriptors out.

numpy's BLAS gets one thread here, set before numpy loads: the service's parallelism is onnxruntime's
threads, the decode threads and concurrent batches. OpenBLAS's own pool busy-waits after every call,
and its small per-batch products (whitening) then took the cores from the model: 2 workers on 2 cores
ran 67 images/s with its default and 107 with one thread (bench/extract_probe.py).
"""

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
