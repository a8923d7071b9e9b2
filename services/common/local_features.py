"""Local features (SIFT keypoints) and geometric verification of a candidate copy.

The global vector finds the right image among the nearest few almost always; which of those few is
the copy is best told by matching keypoints: an edited copy (cropped, rescaled, rotated, stretched,
recompressed) of an image shares dozens of keypoints with it that one affine map explains, a
different image of the same kind of thing does not. The extractor describes each image
(services/extractor/keypoints.py; a query also mirrored, so a mirrored copy verifies too); the
gateway stores an album image's features next to its bytes and re-ranks the nearest images of a
copy search by `best_match`, those that pass `Match.verified` first.
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


@dataclass(frozen=True)
class Match:
    """The keypoints of a query that one affine map carries onto a candidate (`inliers`), out of the
    `tentative` matches it was fitted to (nearest descriptors, ratio test passed, one to one)."""

    inliers: int = 0
    tentative: int = 0

    def verified(self, min_inliers: int) -> bool:
        """A copy: at least `CONFIDENT_INLIERS` inliers, or at least `min_inliers` that are at least
        `MIN_INLIER_SHARE` of the tentative matches. A chance fit takes a few of many tentative
        matches; a small image's copy can have few keypoints, most of them in the fit."""
        if self.inliers < min_inliers:
            return False
        return self.inliers >= CONFIDENT_INLIERS or self.inliers >= MIN_INLIER_SHARE * self.tentative


# bench/research/verify_experiment.py: with a plain 6-inlier threshold 6.0 % of copy queries had an
# unrelated image in their nearest 5 verified by chance; with this rule 3.4 %, at the same R@1.
CONFIDENT_INLIERS = 20
MIN_INLIER_SHARE = 0.5


def match(query: LocalFeatures, candidate: LocalFeatures, ratio: float = 0.8, threshold_px: float = 8.0) -> Match:
    """The query's keypoints that match the candidate's under one plausible affine map (RANSAC).

    Tentative matches are nearest descriptors passing Lowe's ratio test, kept one to one (the closest
    match of each candidate keypoint: straight edges, such as the fill around a rotated photo, give
    many query keypoints the same nearest candidate keypoint, and an affine fit takes them all). The
    affine model covers crops, rescaling, rotation and stretching; a fitted map that mirrors,
    collapses or stretches one way more than `MAX_ANISOTROPY` times the other is no copy (0
    inliers). No inliers when either side has too few keypoints.
    """
    if len(query) < 3 or len(candidate) < 3:
        return Match()
    nearest, distance = nearest_two(query.matchable, candidate.matchable)
    passed = np.flatnonzero(distance[:, 0] < ratio * distance[:, 1])  # Lowe's ratio test
    query_idx, train_idx = _one_to_one(passed, nearest[passed, 0], distance[passed, 0])
    if len(query_idx) < 4:
        return Match(0, len(query_idx))
    source, target = query.points[query_idx], candidate.points[train_idx]
    affine, mask = cv2.estimateAffine2D(source, target, method=cv2.RANSAC, ransacReprojThreshold=threshold_px,
                                        maxIters=500, refineIters=0)
    if affine is None or mask is None or not plausible_affine(affine):
        return Match(0, len(query_idx))
    return Match(int(mask.sum()), len(query_idx))


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


def best_match(query: list[LocalFeatures], candidate: LocalFeatures) -> Match:
    """The match with the most inliers of any of the query's orientations (upright, mirrored) against
    the candidate. Every orientation is tried: a mirrored copy of a near-symmetric image also matches
    upright, with fewer inliers than mirrored, and stopping there would let another image outrank it."""
    return max((match(q, candidate) for q in query), key=lambda m: m.inliers, default=Match())


def verified_order(matches: list[Match], min_inliers: int) -> list[int]:
    """Positions of the candidates, re-ranked: the verified ones first (most inliers first), then the
    rest in their given order."""
    verified = [m.verified(min_inliers) for m in matches]
    first = sorted((i for i, v in enumerate(verified) if v), key=lambda i: -matches[i].inliers)
    return first + [i for i, v in enumerate(verified) if not v]
