"""Regions of a query worth searching on their own, read from the feature map the network computed anyway.

The saliency of a cell of the last feature map [C, h, w] is its channels' summed activation (post
ReLU6, non-negative): where the network "sees something". Each local peak of it grows into the
connected cells holding at least a few fractions of the peak's value (a low fraction finds a whole
object, a high one its most salient part); the box around those cells is a proposal, scored by its
contrast: the mean saliency inside it less the mean outside. Boxes that cover nearly the whole
image (the whole-image search answers for those), that are too small to describe, or that overlap a
better box are dropped, and the best `count` are kept. Boxes are fractions of the image as shown
(after its EXIF orientation): the resize maps the whole image onto the network's input, so a cell's
share of the map is its share of the image.

bench/proposals.py measures this against other maps of the same activations (components of the
whole map at fixed thresholds, class activation maps of the ImageNet head, each cell's own class,
k-means of the cells, every window by contrast) on real photos placed in real scenes; this one found
the placed object best among its first proposals at the least cost (bench/README.md).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray
from scipy import ndimage


@dataclass(frozen=True)
class Proposal:
    """A box as fractions of the image's width and height (left, top, width, height), with its score
    (mean saliency inside less mean saliency outside, the map scaled to a peak of 1)."""

    x: float
    y: float
    width: float
    height: float
    score: float

    def iou(self, other: Proposal) -> float:
        """Intersection over union of the two boxes."""
        left, top = max(self.x, other.x), max(self.y, other.y)
        right = min(self.x + self.width, other.x + other.width)
        bottom = min(self.y + self.height, other.y + other.height)
        inter = max(0.0, right - left) * max(0.0, bottom - top)
        union = self.width * self.height + other.width * other.height - inter
        return inter / union if union > 0 else 0.0


@dataclass(frozen=True)
class ProposalConfig:
    # A peak's region: the connected cells at or above these fractions of the peak's saliency.
    fractions: tuple[float, ...] = (0.5, 0.65, 0.8)
    # Local peaks below this fraction of the map's highest are not grown.
    min_peak: float = 0.3
    # A box wider and taller than this share of the image is the whole photo again.
    max_side: float = 0.85
    # Neither side under this share of the image (a cell and a half of a 10-cell map).
    min_side: float = 0.15
    # A box overlapping a better one more than this (intersection over union) is dropped.
    nms_iou: float = 0.5


def propose(fmap: NDArray[np.float32], count: int, config: ProposalConfig = ProposalConfig()) -> list[Proposal]:
    """At most `count` boxes of one feature map [C, h, w], best first."""
    if count <= 0:
        return []
    saliency = fmap.sum(axis=0, dtype=np.float32)
    peak = float(saliency.max())
    if peak <= 0:
        return []
    saliency /= peak
    found = [box for r, c in _peaks(saliency, config.min_peak) for box in _grown(saliency, r, c, config)]
    return best_boxes(found, count, config)


def best_boxes(found: list[Proposal], count: int, config: ProposalConfig = ProposalConfig()) -> list[Proposal]:
    """The `count` best-scored boxes that fit (neither nearly the whole image nor too small), each
    overlapping no better one by more than `config.nms_iou`."""
    fitting = [box for box in found if _fits(box, config)]
    return _suppress(sorted(fitting, key=lambda p: -p.score), config.nms_iou, count)


def _peaks(saliency: NDArray[np.float32], floor: float) -> list[tuple[int, int]]:
    """Cells that are the highest of their 3x3 neighbourhood and at least `floor`."""
    local = saliency == ndimage.maximum_filter(saliency, size=3, mode="constant", cval=-1.0)
    return [(int(r), int(c)) for r, c in np.argwhere(local & (saliency >= floor))]


def _grown(saliency: NDArray[np.float32], row: int, col: int, config: ProposalConfig) -> list[Proposal]:
    """The peak's region at each fraction, as boxes."""
    height, width = saliency.shape
    boxes = []
    for fraction in config.fractions:
        labelled, _ = ndimage.label(saliency >= fraction * saliency[row, col])
        region = labelled == labelled[row, col]
        rows, cols = np.flatnonzero(region.any(axis=1)), np.flatnonzero(region.any(axis=0))
        top, bottom, left, right = rows[0], rows[-1] + 1, cols[0], cols[-1] + 1
        inside = np.zeros_like(region)
        inside[top:bottom, left:right] = True
        outside = float(saliency[~inside].mean()) if (~inside).any() else 0.0
        boxes.append(Proposal(left / width, top / height, (right - left) / width, (bottom - top) / height,
                              float(saliency[inside].mean()) - outside))
    return boxes


def _fits(box: Proposal, config: ProposalConfig) -> bool:
    whole = box.width > config.max_side and box.height > config.max_side
    return not whole and min(box.width, box.height) >= config.min_side


def _suppress(ranked: list[Proposal], max_iou: float, count: int) -> list[Proposal]:
    kept: list[Proposal] = []
    for box in ranked:
        if all(box.iou(k) <= max_iou for k in kept):
            kept.append(box)
        if len(kept) == count:
            break
    return kept
