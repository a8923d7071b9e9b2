"""Feature map -> one unit vector per image: GeM pooling over the spatial dims, then L2 norm."""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray


def gem(fmap: NDArray[np.float32], p: float, eps: float = 1e-6) -> NDArray[np.float32]:
    """Generalised-mean pooling, (mean over h, w of clamp(x, eps)^p)^(1/p): [N, C, h, w] -> [N, C].

    p = 1 is average pooling and p -> infinity approaches max pooling. Values are divided by their
    per-channel max before the power, so a large p neither overflows nor underflows float32.
    """
    if p <= 0:
        raise ValueError(f"GeM exponent must be positive, got {p}")
    x = np.maximum(fmap, np.float32(eps))
    if p == 1:
        return x.mean(axis=(2, 3), dtype=np.float32)
    top = x.max(axis=(2, 3), keepdims=True)
    pooled = np.power(np.power(x / top, p).mean(axis=(2, 3), keepdims=True), 1.0 / p) * top
    return pooled[:, :, 0, 0].astype(np.float32, copy=False)


def l2_normalise(vectors: NDArray[np.float32], eps: float = 1e-12) -> NDArray[np.float32]:
    """Scales each row to unit length (an all-zero row stays zero)."""
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return (vectors / np.maximum(norms, eps)).astype(np.float32, copy=False)


def embed_fmap(fmap: NDArray[np.float32], p: float) -> NDArray[np.float32]:
    """The pooled, unit-length vectors of a batch's feature maps."""
    return l2_normalise(gem(fmap, p))


Window = tuple[int, int, int, int]


def grid_windows(height: int, width: int, level: int) -> list[Window]:
    """An n x n grid (n = level >= 2) of overlapping windows (y0, y1, x0, x1) on an h x w feature
    map, each 2/(n+1) of each side: level 2 gives the four 2/3 x 2/3 corner windows."""
    if level < 2:
        raise ValueError(f"region grid level must be >= 2, got {level}")
    win_h = max(1, round(2 * height / (level + 1)))
    win_w = max(1, round(2 * width / (level + 1)))
    ys = np.linspace(0, height - win_h, level).round().astype(int)
    xs = np.linspace(0, width - win_w, level).round().astype(int)
    return [(int(y), int(y) + win_h, int(x), int(x) + win_w) for y in ys for x in xs]


def region_vectors(fmap: NDArray[np.float32], p: float, levels: tuple[int, ...]) -> NDArray[np.float32]:
    """GeM unit vectors of the grid regions of one batch of maps: [N, C, h, w] -> [N, R, C]."""
    _, channels, height, width = fmap.shape
    windows = [w for level in levels for w in grid_windows(height, width, level)]
    if not windows:
        return np.zeros((fmap.shape[0], 0, channels), dtype=np.float32)
    pooled = [embed_fmap(np.ascontiguousarray(fmap[:, :, y0:y1, x0:x1]), p) for y0, y1, x0, x1 in windows]
    return np.stack(pooled, axis=1)
