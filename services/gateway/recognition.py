"""Recognition by the nearest labelled images: votes, a calibration learned on the album itself, open set.

A query's k nearest labelled images vote for their labels, each with weight exp(-(d - d1) / tau), d1 being
the nearest one's cosine distance; a label's share is its part of the votes. Two small logistic models,
fitted per album and label attribute on the album's own images, turn that into probabilities:

- `confidence`: the chance that a label is right for a photo of one of the album's labels (Platt scaling of
  the label's share and its nearest image's distance), fitted on every image queried against the others
  (leave one out).
- `known`: the chance that the photo is of one of the album's labels at all, from the top label's share, the
  nearest distance, the mean distance of the k nearest and the top label's nearest distance relative to
  that label's radius (how far its images usually are from their nearest of the same label), fitted on the
  same leave-one-out queries against the same images queried with every image of their own label held out
  (as if their label were unknown).
  The default threshold turns away `known_rejection` of the album's own leave-one-out queries; a photo
  below it is answered `unknown`.

Everything here is numpy over vectors and label lists: the use case (usecases/recognize.py) fetches them.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
from numpy.typing import NDArray

# Fewer labelled images than this: votes only, no calibration (too few to learn from).
MIN_CALIBRATION_IMAGES = 5
# Ridge on the logistic weights: keeps them finite when the album's queries separate perfectly.
RIDGE = 1e-2
NEWTON_STEPS = 30


@dataclass(frozen=True)
class Vote:
    """One label's part of a query's votes."""

    label: str
    share: float
    # Cosine distance of the nearest image carrying the label.
    nearest: float


@dataclass(frozen=True)
class Neighbour:
    """A labelled image near the query: its distance and its labels."""

    distance: float
    labels: tuple[str, ...]


def labels_of(value: object) -> tuple[str, ...]:
    """An attribute's value as labels: a list's items, a scalar as text; none for null or empty."""
    items = value if isinstance(value, list) else [value]
    out = []
    for item in items:
        if item is None or isinstance(item, (dict, list)):
            continue
        text = ("true" if item else "false") if isinstance(item, bool) else str(item)
        if text and text not in out:
            out.append(text)
    return tuple(out)


def vote(neighbours: Sequence[Neighbour], tau: float, scale: Mapping[str, float] | None = None) -> list[Vote]:
    """The neighbours' distance-weighted votes per label, largest share first; a label's votes count
    `scale[label]` times (1 when not given)."""
    if not neighbours:
        return []
    first = min(n.distance for n in neighbours)
    weights: dict[str, float] = {}
    nearest: dict[str, float] = {}
    total = 0.0
    for n in neighbours:
        w = math.exp(-(n.distance - first) / tau)
        factors = [scale.get(label, 1.0) if scale else 1.0 for label in n.labels]
        total += w * sum(factors) / max(1, len(factors))
        for label, factor in zip(n.labels, factors, strict=True):
            weights[label] = weights.get(label, 0.0) + w * factor
            nearest[label] = min(nearest.get(label, math.inf), n.distance)
    votes = [Vote(label, w / total, nearest[label]) for label, w in weights.items()]
    return sorted(votes, key=lambda v: (-v.share, v.nearest, v.label))


def balancing(labels: Sequence[tuple[str, ...]], power: float) -> dict[str, float]:
    """Each label's vote factor: 1 / (its number of images ** power), so that a large label does not
    outvote a small one by its size alone (0: plain votes; 1: as if every label had as many images)."""
    sizes: dict[str, int] = {}
    for ls in labels:
        for label in ls:
            sizes[label] = sizes.get(label, 0) + 1
    return {label: 1.0 / n ** power for label, n in sizes.items()}


@dataclass(frozen=True)
class Logistic:
    """p = sigmoid(w . x + b)."""

    weights: tuple[float, ...]
    bias: float

    def __call__(self, features: Sequence[float]) -> float:
        z = float(np.dot(self.weights, features)) + self.bias
        return 1.0 / (1.0 + math.exp(-max(-50.0, min(50.0, z))))


def fit_logistic(features: NDArray[np.float64], outcomes: NDArray[np.float64]) -> Logistic:
    """A ridge-regularised logistic regression fitted by Newton's method (a handful of features)."""
    x = np.c_[features, np.ones(len(features))]
    w = np.zeros(x.shape[1])
    ridge = RIDGE * np.eye(x.shape[1])
    for _ in range(NEWTON_STEPS):
        p = 1.0 / (1.0 + np.exp(-np.clip(x @ w, -50, 50)))
        gradient = x.T @ (p - outcomes) + ridge @ w
        hessian = (x * (p * (1 - p))[:, None]).T @ x + ridge
        step = np.linalg.solve(hessian, gradient)
        w -= step
        if float(np.abs(step).max()) < 1e-8:
            break
    return Logistic(tuple(float(v) for v in w[:-1]), float(w[-1]))


def confidence_features(v: Vote) -> list[float]:
    return [v.share, v.nearest]


def known_features(votes: Sequence[Vote], neighbours: Sequence[Neighbour], radius: float) -> list[float]:
    """The top label's share, the nearest and mean distance, and the top label's nearest distance relative
    to `radius`, how far that label's images usually are from their nearest of the same label."""
    distances = [n.distance for n in neighbours]
    return [votes[0].share, min(distances), float(np.mean(distances)), votes[0].nearest / radius]


@dataclass(frozen=True)
class Calibration:
    """What an album's own images taught about recognising one label attribute."""

    images: int
    labels: int
    # None: too few images to learn from (confidence is then the raw share; nothing is turned away).
    confidence: Logistic | None
    known: Logistic | None
    threshold: float
    # Measured on the album: leave-one-out top-1, the share of its leave-one-out queries the threshold
    # turns away, and the share of held-out-label queries it answers unknown (None: a single label).
    top1: float | None
    known_rejected: float | None
    unknown_rejected: float | None
    # Each label's vote factor (`balancing`); a label not in it counts 1.
    scale: Mapping[str, float] = field(default_factory=dict)
    # Each label's radius (`radii`), and the one of a label with a single image.
    radius: Mapping[str, float] = field(default_factory=dict)
    default_radius: float = 1.0

    def confidence_of(self, v: Vote) -> float:
        return v.share if self.confidence is None else self.confidence(confidence_features(v))

    def known_of(self, votes: Sequence[Vote], neighbours: Sequence[Neighbour]) -> float:
        """How likely the photo is of one of the album's labels; `unknown` below `threshold`."""
        if self.known is None:
            return 1.0
        return self.known(known_features(votes, neighbours, self.radius_of(votes[0].label)))

    def radius_of(self, label: str) -> float:
        return self.radius.get(label, self.default_radius)


@dataclass(frozen=True)
class Recognition:
    """A query's votes turned into an answer."""

    votes: list[Vote]
    confidences: list[float]
    known: float
    threshold: float

    @property
    def unknown(self) -> bool:
        return self.known < self.threshold


def recognise(neighbours: Sequence[Neighbour], calibration: Calibration, tau: float,
              threshold: float | None = None) -> Recognition:
    """The labels the neighbours vote for, each with its calibrated confidence, and whether the photo is of
    none of them (below the calibration's threshold, or the given one)."""
    votes = vote(neighbours, tau, calibration.scale)
    if not votes:
        return Recognition([], [], 0.0, 1.0)
    cut = calibration.threshold if threshold is None else threshold
    # The answer is the largest share; the other labels are listed by their confidence (which weighs each one's
    # nearest image too, so it may order them otherwise than their shares).
    scored = [(v, calibration.confidence_of(v)) for v in votes]
    scored[1:] = sorted(scored[1:], key=lambda pair: -pair[1])
    return Recognition([v for v, _ in scored], [c for _, c in scored], calibration.known_of(votes, neighbours), cut)


def calibrate(vectors: NDArray[np.float32], labels: Sequence[tuple[str, ...]], k: int, tau: float,
              known_rejection: float, balance: float = 0.0) -> Calibration:
    """Learns the confidence and open-set models from the album's labelled images (unit vectors, one row
    each, and their labels): each image queries the others, and again with its own labels' images held out.
    Votes are balanced by label size with the power `balance` (see `balancing`)."""
    n = len(labels)
    names = sorted({label for ls in labels for label in ls})
    scale = balancing(labels, balance)
    if n < MIN_CALIBRATION_IMAGES:
        return Calibration(n, len(names), None, None, 0.0, None, None, None, scale)
    sims = vectors.astype(np.float32) @ vectors.astype(np.float32).T
    np.fill_diagonal(sims, -np.inf)
    loo = [_query(sims[i], labels, k, tau, scale) for i in range(n)]
    correct = np.array([float(v[0].label in labels[i]) for i, (v, _) in enumerate(loo)])
    confidence = _fit_confidence(loo, labels)
    if len(names) < 2:
        return Calibration(n, 1, confidence, None, 0.0, float(correct.mean()), None, None, scale)
    membership = _membership(labels, names)
    shares_label = (membership @ membership.T) > 0
    held_out = [_query(np.where(shares_label[i], -np.inf, sims[i]), labels, k, tau, scale) for i in range(n)]
    held_out = [q for q in held_out if q[0]]
    if not held_out:  # every image shares a label with every other: no photo of an unknown label to learn from
        return Calibration(n, len(names), confidence, None, 0.0, float(correct.mean()), None, None, scale)
    radius = radii(sims, membership, names)
    default_radius = float(np.median(list(radius.values()))) if radius else 1.0
    known_x = np.array([known_features(v, nb, radius.get(v[0].label, default_radius)) for v, nb in loo])
    unknown_x = np.array([known_features(v, nb, radius.get(v[0].label, default_radius)) for v, nb in held_out])
    known = fit_logistic(np.r_[known_x, unknown_x], np.r_[np.ones(len(known_x)), np.zeros(len(unknown_x))])
    known_scores = np.array([known(x) for x in known_x])
    threshold = float(np.quantile(known_scores, known_rejection))
    unknown_scores = np.array([known(x) for x in unknown_x])
    return Calibration(n, len(names), confidence, known, threshold, float(correct.mean()),
                       float((known_scores < threshold).mean()),
                       float((unknown_scores < threshold).mean()) if len(unknown_scores) else None, scale,
                       radius, default_radius)


def radii(similarities: NDArray[np.float32], membership: NDArray[np.float32], names: list[str]) -> dict[str, float]:
    """Each label's radius: the median over its images of the distance to their nearest image of the same
    label (similarities with -inf on the diagonal); labels of one image have none."""
    out: dict[str, float] = {}
    for j, name in enumerate(names):
        members = np.flatnonzero(membership[:, j])
        if len(members) >= 2:
            nearest = similarities[np.ix_(members, members)].max(axis=1)
            out[name] = max(float(np.median(1.0 - nearest)), 1e-3)
    return out


def _query(similarities: NDArray[np.float32], labels: Sequence[tuple[str, ...]], k: int, tau: float,
           scale: Mapping[str, float]) -> tuple[list[Vote], list[Neighbour]]:
    """The votes of the k most similar images (finite similarities only)."""
    available = int(np.isfinite(similarities).sum())
    take = min(k, available)
    if take == 0:
        return [], []
    nearest = np.argpartition(-similarities, take - 1)[:take]
    nearest = nearest[np.argsort(-similarities[nearest])]
    neighbours = [Neighbour(float(1.0 - similarities[j]), labels[j]) for j in nearest]
    return vote(neighbours, tau, scale), neighbours


def _fit_confidence(queries: list[tuple[list[Vote], list[Neighbour]]],
                    labels: Sequence[tuple[str, ...]]) -> Logistic:
    """Platt scaling on every label each leave-one-out query voted for: right or not."""
    rows, outcomes = [], []
    for i, (votes, _) in enumerate(queries):
        for v in votes:
            rows.append(confidence_features(v))
            outcomes.append(float(v.label in labels[i]))
    return fit_logistic(np.array(rows), np.array(outcomes))


def _membership(labels: Sequence[tuple[str, ...]], names: list[str]) -> NDArray[np.float32]:
    index = {name: j for j, name in enumerate(names)}
    out = np.zeros((len(labels), len(names)), dtype=np.float32)
    for i, ls in enumerate(labels):
        out[i, [index[label] for label in ls]] = 1.0
    return out


@dataclass
class _Kept:
    state: tuple[object, ...]
    learned_at: float
    checked_at: float
    calibration: Calibration


class CalibrationCache:
    """Calibrations kept per (album, attribute) in this process, each with the album state it was learned
    on (model, labelled images, this process's change counter). An entry is used as it is for a few
    seconds after its state was last checked (`recent`); then the state is read again (`get`), and one
    that differs, or an entry older than the TTL, is learned again."""

    def __init__(self, max_entries: int = 64) -> None:
        self.max_entries = max_entries
        self._kept: dict[tuple[str, str], _Kept] = {}
        self._changes: dict[str, int] = {}
        self._locks: dict[tuple[str, str], asyncio.Lock] = {}

    def lock(self, album: str, attribute: str) -> asyncio.Lock:
        """Held while a calibration of the album and attribute is checked or learned: one at a time."""
        return self._locks.setdefault((album, attribute), asyncio.Lock())

    def state(self, album: str, *parts: object) -> tuple[object, ...]:
        """The album's state as a key: the given parts and the changes seen through `changed`."""
        return (*parts, self._changes.get(album, 0))

    def recent(self, album: str, attribute: str, now: float, within_s: float) -> Calibration | None:
        """The calibration if its state was checked less than `within_s` ago and nothing changed since."""
        kept = self._kept.get((album, attribute))
        if kept is None or now - kept.checked_at >= within_s or kept.state[-1] != self._changes.get(album, 0):
            return None
        return kept.calibration

    def get(self, album: str, attribute: str, state: tuple[object, ...], now: float,
            ttl_s: float) -> Calibration | None:
        """The calibration learned on this state, not older than the TTL."""
        kept = self._kept.get((album, attribute))
        if kept is None or kept.state != state or now - kept.learned_at > ttl_s:
            return None
        kept.checked_at = now
        return kept.calibration

    def put(self, album: str, attribute: str, state: tuple[object, ...], now: float,
            calibration: Calibration) -> None:
        if len(self._kept) >= self.max_entries:
            del self._kept[min(self._kept, key=lambda key: self._kept[key].learned_at)]
        self._kept[(album, attribute)] = _Kept(state, now, now, calibration)

    def changed(self, album: str) -> None:
        """The album's attributes changed (its count did not): learn its calibrations again."""
        self._changes[album] = self._changes.get(album, 0) + 1
