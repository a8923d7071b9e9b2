"""Feature function for /work/shared/eval/eval_retrieval.py that returns CACHED descriptors (no network),
looked up by image file name, to check that rlib's scoring reproduces the official script exactly:

    PYTHONPATH=bench/research RESEARCH_FMAPS=.cache/research/fmaps \
      python3 /work/shared/eval/eval_retrieval.py --set .cache/evalset --features cached_features:embed
(default descriptor: average-pooled Lite0 squash-224 maps, which experiments.py calls 'baseline avg squash224').
"""
import os
import pickle

import numpy as np

_CACHE = os.environ.get("RESEARCH_FMAPS", ".cache/research/fmaps")
_TAG = os.environ.get("RESEARCH_TAG", "lite0_squash224")
_table = {}


def _load():
    for which in ("gallery", "queries"):
        with open(os.path.join(_CACHE, f"{_TAG}_{which}_none.pkl"), "rb") as fh:
            d = pickle.load(fh)
        for f, m in zip(d["files"], d["maps"]):
            _table[os.path.basename(f)] = m.astype(np.float32).mean((1, 2))


def embed(images):
    if not _table:
        _load()
    return np.stack([_table[os.path.basename(im.filename)] for im in images])
