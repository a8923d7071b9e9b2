"""Local features (SIFT keypoints) and geometric verification of a candidate copy.

The global vector finds the right image among the nearest few almost always; which of those few is
the copy is best told by matching keypoints: an edited copy (cropped, rescaled, rotated, stretched,
recompressed) of an image shares dozens of keypoints with it that one affine map explains, a
different image of the same kind of thing does not. The extractor describes each image
(services/extractor/keypoints.py; a query also mirrored, so a mirrored copy verifies too); the
gateway stores an album image's features next to its bytes and re-ranks the nearest images of a
copy search by `matched_inliers`.
Measured in bench/research/verify_experiment.py and bench/quality.py.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, replace
from functools import cached_property

import cv2
import numpy as np
from numpy.typing import NDArray

# One OpenCV thread per call: the callers run many calls in their own thread pools.
cv2.setNumThreads(1)

_MAGIC = b"LF1\0"
_HEADER = struct.Struct("<4sIHH")  # magic, keypoints, described width, described height
DESCRIPTOR_BYTES = 128


class LocalFeaturesError(ValueError):
    """Bytes that are not serialised local features."""


@dataclass(frozen=True, eq=False)
class LocalFeatures:
    """Keypoint positions [n, 2] (pixels of the described image) and SIFT descriptors [n, 128]."""

    points: NDArray[np.float32]
    descriptors: NDArray[np.uint8]
    width: int = 0
    height: int = 0

    def __len__(self) -> int:
        return len(self.points)

    @cached_property
    def matchable(self) -> NDArray[np.float32]:
        """The descriptors as float32, made once: OpenCV's L2 matching of byte descriptors is ~6x
        slower than of the same values as floats, and a query is matched against several images."""
        return self.descriptors.astype(np.float32)

    def to_bytes(self) -> bytes:
        head = _HEADER.pack(_MAGIC, len(self.points), self.width, self.height)
        return head + self.points.astype("<f4").tobytes() + self.descriptors.astype(np.uint8).tobytes()

    @classmethod
    def from_bytes(cls, data: bytes) -> LocalFeatures:
        features, end = cls._read(data, 0)
        if end != len(data):
            raise LocalFeaturesError("not local features of this version")
        return features

    @classmethod
    def all_from_bytes(cls, data: bytes) -> list[LocalFeatures]:
        """Several features serialised one after the other (each `to_bytes` knows its own length)."""
        out, at = [], 0
        while at < len(data):
            features, at = cls._read(data, at)
            out.append(features)
        return out

    @classmethod
    def _read(cls, data: bytes, at: int) -> tuple[LocalFeatures, int]:
        """The features serialised at offset `at`, and the offset after them."""
        if len(data) - at < _HEADER.size:
            raise LocalFeaturesError("too short for local features")
        magic, n, width, height = _HEADER.unpack_from(data, at)
        end = at + _HEADER.size + n * (8 + DESCRIPTOR_BYTES)
        if magic != _MAGIC or len(data) < end:
            raise LocalFeaturesError("not local features of this version")
        points = np.frombuffer(data, "<f4", n * 2, at + _HEADER.size).reshape(n, 2)
        descriptors = np.frombuffer(data, np.uint8, n * DESCRIPTOR_BYTES, at + _HEADER.size + n * 8)
        return cls(points, descriptors.reshape(n, DESCRIPTOR_BYTES), width, height), end

    @classmethod
    def empty(cls) -> LocalFeatures:
        return cls(np.zeros((0, 2), np.float32), np.zeros((0, DESCRIPTOR_BYTES), np.uint8))


@dataclass(frozen=True)
class FeatureConfig:
    """How images are described: the longer side they are brought down to, and at most how many
    keypoints are kept (the strongest)."""

    side: int = 512
    max_keypoints: int = 1000


def describe(grey: NDArray[np.uint8], config: FeatureConfig) -> LocalFeatures:
    """SIFT keypoints of a grey image (the strongest `config.max_keypoints`)."""
    # OpenCV's defaults (3 layers per octave, contrast 0.04, edge 10, sigma 1.6), descriptors as bytes.
    sift = cv2.SIFT.create(config.max_keypoints, 3, 0.04, 10.0, 1.6, cv2.CV_8U)
    keypoints, descriptors = sift.detectAndCompute(np.ascontiguousarray(grey), None)
    height, width = grey.shape[:2]
    if descriptors is None or not keypoints:
        return replace(LocalFeatures.empty(), width=width, height=height)
    points = np.array([k.pt for k in keypoints], np.float32).reshape(-1, 2)
    return LocalFeatures(points, descriptors.astype(np.uint8), width, height)


def matched_inliers(query: LocalFeatures, candidate: LocalFeatures, ratio: float = 0.8,
                    threshold_px: float = 8.0) -> int:
    """How many of the query's keypoints match the candidate's under one plausible affine map (RANSAC).

    Matches are nearest descriptors passing Lowe's ratio test, kept one to one (the closest match of
    each candidate keypoint: straight edges, such as the fill around a rotated photo, give many query
    keypoints the same nearest candidate keypoint, and an affine fit takes them all). The affine
    model covers crops, rescaling, rotation and stretching; a fitted map that mirrors, collapses or
    stretches one way more than `MAX_ANISOTROPY` times the other is no copy (0). 0 when either side
    has too few keypoints.
    """
    if len(query) < 3 or len(candidate) < 3:
        return 0
    nearest, distance = nearest_two(query.matchable, candidate.matchable)
    passed = np.flatnonzero(distance[:, 0] < ratio * distance[:, 1])  # Lowe's ratio test
    if len(passed) < 4:
        return 0
    query_idx, train_idx = _one_to_one(passed, nearest[passed, 0], distance[passed, 0])
    if len(query_idx) < 4:
        return 0
    source, target = query.points[query_idx], candidate.points[train_idx]
    affine, mask = cv2.estimateAffine2D(source, target, method=cv2.RANSAC, ransacReprojThreshold=threshold_px,
                                        maxIters=500, refineIters=0)
    if affine is None or mask is None or not plausible_affine(affine):
        return 0
    return int(mask.sum())


def nearest_two(query: NDArray[np.float32], candidate: NDArray[np.float32]
                ) -> tuple[NDArray[np.intp], NDArray[np.float32]]:
    """For each query descriptor, the indices [n, 2] and L2 distances [n, 2] of its two nearest
    candidate descriptors (nearest first); the candidate needs at least two. One matrix product:
    SIFT's byte-valued descriptors make every dot product an integer below 2^24, exact in float32,
    so the distances are exact too (and this is faster than OpenCV's brute-force knnMatch)."""
    squared = (candidate * candidate).sum(axis=1)[None, :] - 2.0 * (query @ candidate.T)  # less |q|^2
    two = np.argpartition(squared, 1, axis=1)[:, :2]
    pair = np.take_along_axis(squared, two, axis=1)
    order = np.argsort(pair, axis=1)
    two, pair = np.take_along_axis(two, order, axis=1), np.take_along_axis(pair, order, axis=1)
    pair += (query * query).sum(axis=1)[:, None]
    return two, np.sqrt(np.maximum(pair, 0.0))


def _one_to_one(query_idx: NDArray[np.intp], train_idx: NDArray[np.intp], distance: NDArray[np.float32]
                ) -> tuple[NDArray[np.intp], NDArray[np.intp]]:
    """The matches (query_idx[i] -> train_idx[i]) less all but the closest one per candidate keypoint."""
    order = np.argsort(distance, kind="stable")
    _, first = np.unique(train_idx[order], return_index=True)
    keep = order[first]
    return query_idx[keep], train_idx[keep]


# The most one axis of a copy's affine map may be stretched relative to the other, and the most
# either may scale (edits stretch by 1.5x, crops magnify by ~3x, small images are not upscaled).
MAX_ANISOTROPY = 4.0
MAX_SCALE = 12.0


def plausible_affine(affine: NDArray[np.floating | np.integer]) -> bool:
    """Whether a 2x3 affine map (query -> candidate pixels) could be an edit of a copy: no mirroring
    (a mirrored copy matches the query's mirrored features), no collapse, no extreme stretch."""
    linear = affine[:, :2]
    if np.linalg.det(linear) <= 0:
        return False
    largest, smallest = np.linalg.svd(linear, compute_uv=False)
    return bool(largest <= MAX_SCALE and smallest >= 1 / MAX_SCALE and largest <= MAX_ANISOTROPY * smallest)


def best_inliers(query: list[LocalFeatures], candidate: LocalFeatures) -> int:
    """The most inliers of any of the query's orientations (upright, mirrored) against the candidate.
    Every orientation is tried: a mirrored copy of a near-symmetric image also matches upright, with
    fewer inliers than mirrored, and stopping there would let another image outrank it."""
    return max((matched_inliers(q, candidate) for q in query), default=0)


def verified_order(inliers: list[int], min_inliers: int) -> list[int]:
    """Positions of the candidates, re-ranked: those with at least `min_inliers` first (most inliers
    first), then the rest in their given order."""
    verified = sorted((i for i, n in enumerate(inliers) if n >= min_inliers), key=lambda i: -inliers[i])
    return verified + [i for i, n in enumerate(inliers) if n < min_inliers]
