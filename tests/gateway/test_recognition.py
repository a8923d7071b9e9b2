"""Recognition's arithmetic: votes, the calibration learned on an album's own images, the open-set threshold,
the calibration cache."""

from __future__ import annotations

import numpy as np
import pytest

from services.gateway.recognition import (
    Calibration,
    CalibrationCache,
    Logistic,
    Neighbour,
    balancing,
    calibrate,
    fit_logistic,
    labels_of,
    recognise,
    vote,
)


def clusters(per_label: int = 12, labels: int = 4, spread: float = 0.35, seed: int = 0,
             dim: int = 32) -> tuple[np.ndarray, list[tuple[str, ...]], np.ndarray]:
    """Unit vectors around one random centre per label; returns (vectors, labels, centres)."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(labels + 2, dim))
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    rows, names = [], []
    for c in range(labels):
        for _ in range(per_label):
            v = centres[c] + spread * rng.normal(size=dim) / np.sqrt(dim)
            rows.append(v / np.linalg.norm(v))
            names.append((f"label{c}",))
    return np.asarray(rows, dtype=np.float32), names, centres


def neighbours_of(query: np.ndarray, vectors: np.ndarray, labels: list[tuple[str, ...]], k: int) -> list[Neighbour]:
    distances = 1 - vectors @ query
    order = np.argsort(distances)[:k]
    return [Neighbour(float(distances[j]), labels[j]) for j in order]


def test_an_attribute_value_becomes_labels() -> None:
    assert labels_of("cat") == ("cat",)
    assert labels_of(["a", "b", "a"]) == ("a", "b")
    assert labels_of(3) == ("3",)
    assert labels_of(True) == ("true",)
    assert labels_of(None) == labels_of("") == labels_of({"x": 1}) == ()


def test_votes_weigh_nearer_images_more() -> None:
    votes = vote([Neighbour(0.10, ("cat",)), Neighbour(0.30, ("dog",)), Neighbour(0.31, ("dog",))], tau=0.05)
    assert votes[0].label == "cat"
    assert votes[0].share == pytest.approx(1 / (1 + 2 * np.exp(-4.0)), rel=0.05)
    assert sum(v.share for v in votes) == pytest.approx(1.0)
    assert votes[1].nearest == pytest.approx(0.30)


def test_a_wide_tau_lets_the_majority_win() -> None:
    votes = vote([Neighbour(0.10, ("cat",)), Neighbour(0.12, ("dog",)), Neighbour(0.13, ("dog",))], tau=10.0)
    assert votes[0].label == "dog"


def test_the_logistic_fit_learns_a_separating_direction() -> None:
    x = np.array([[0.0], [0.1], [0.2], [0.8], [0.9], [1.0]])
    model = fit_logistic(x, np.array([0.0, 0, 0, 1, 1, 1]))
    assert model([0.05]) < 0.2 < 0.8 < model([0.95])


def test_calibration_on_separated_labels_is_accurate_and_confident() -> None:
    vectors, labels, _ = clusters()
    calibration = calibrate(vectors, labels, k=10, tau=0.05, known_rejection=0.05)
    assert calibration.images == 48 and calibration.labels == 4
    assert calibration.top1 is not None and calibration.top1 > 0.95
    assert calibration.known_rejected is not None and calibration.known_rejected <= 0.1
    answer = recognise(neighbours_of(vectors[0], vectors[1:], labels[1:], 10), calibration, tau=0.05)
    assert answer.votes[0].label == "label0" and not answer.unknown
    assert answer.confidences[0] > 0.8


def test_a_photo_of_no_label_is_unknown() -> None:
    vectors, labels, centres = clusters(spread=0.2)
    calibration = calibrate(vectors, labels, k=10, tau=0.05, known_rejection=0.05)
    stranger = centres[-1]  # a centre no image was drawn around
    answer = recognise(neighbours_of(stranger, vectors, labels, 10), calibration, tau=0.05)
    assert answer.unknown
    assert answer.known < calibration.threshold


def test_a_given_threshold_overrides_the_albums() -> None:
    vectors, labels, centres = clusters(spread=0.2)
    calibration = calibrate(vectors, labels, k=10, tau=0.05, known_rejection=0.05)
    answer = recognise(neighbours_of(centres[-1], vectors, labels, 10), calibration, tau=0.05, threshold=0.0)
    assert not answer.unknown and answer.threshold == 0.0


def test_too_few_images_give_raw_shares_and_no_threshold() -> None:
    vectors, labels, _ = clusters(per_label=2, labels=2)
    calibration = calibrate(vectors, labels, k=10, tau=0.05, known_rejection=0.05)
    assert calibration.confidence is None and calibration.top1 is None
    answer = recognise(neighbours_of(vectors[0], vectors, labels, 10), calibration, tau=0.05)
    assert answer.confidences[0] == answer.votes[0].share and not answer.unknown


def test_the_other_labels_are_listed_by_their_confidence() -> None:
    """The largest share answers; the rest come by confidence, which here weighs only each label's nearest image:
    c (one image, at 0.21) before b (two, at 0.25), though b has the larger share."""
    calibration = Calibration(images=8, labels=3, confidence=Logistic((0.0, -50.0), 10.0), known=None,
                              threshold=0.0, top1=None, known_rejected=None, unknown_rejected=None)
    neighbours = [Neighbour(0.2, ("a",))] * 5 + [Neighbour(0.25, ("b",))] * 2 + [Neighbour(0.21, ("c",))]
    answer = recognise(neighbours, calibration, tau=100.0)
    assert [v.label for v in vote(neighbours, 100.0)] == ["a", "b", "c"]  # by share
    assert [v.label for v in answer.votes] == ["a", "c", "b"]
    assert answer.confidences[1] > answer.confidences[2]


def test_a_single_label_is_calibrated_without_an_open_set_model() -> None:
    vectors, labels, _ = clusters(labels=1)
    calibration = calibrate(vectors, labels, k=10, tau=0.05, known_rejection=0.05)
    assert calibration.labels == 1 and calibration.known is None and calibration.top1 == 1.0


def test_list_labels_vote_for_each_item() -> None:
    votes = vote([Neighbour(0.1, ("red", "shoe")), Neighbour(0.2, ("shoe",))], tau=0.05)
    assert votes[0].label == "shoe" and {v.label for v in votes} == {"red", "shoe"}


def test_the_cache_keeps_a_calibration_while_the_album_is_unchanged() -> None:
    cache = CalibrationCache(max_entries=2)
    vectors, labels, _ = clusters(per_label=3, labels=2)
    calibration = calibrate(vectors, labels, k=5, tau=0.05, known_rejection=0.05)
    state = cache.state("a", "model", 6)
    cache.put("a", "kind", state, 0.0, calibration)
    assert cache.get("a", "kind", cache.state("a", "model", 6), 1.0, ttl_s=60) is calibration
    assert cache.get("a", "kind", cache.state("a", "model", 7), 1.0, ttl_s=60) is None
    assert cache.get("a", "kind", state, 61.0, ttl_s=60) is None
    assert cache.recent("a", "kind", 4.0, within_s=5) is calibration  # checked at 1.0
    assert cache.recent("a", "kind", 6.5, within_s=5) is None
    cache.changed("a")
    assert cache.recent("a", "kind", 2.0, within_s=5) is None
    assert cache.get("a", "kind", cache.state("a", "model", 6), 1.0, ttl_s=60) is None


def test_balanced_votes_let_a_small_label_outvote_a_large_one() -> None:
    neighbours = [Neighbour(0.10, ("rare",)), Neighbour(0.10, ("common",)), Neighbour(0.10, ("common",))]
    assert vote(neighbours, tau=0.05)[0].label == "common"
    balanced = vote(neighbours, tau=0.05, scale=balancing([("rare",)] * 2 + [("common",)] * 50, 1.0))
    assert balanced[0].label == "rare"
    assert sum(v.share for v in balanced) == pytest.approx(1.0)


def test_a_labels_radius_is_its_images_median_nearest_distance() -> None:
    vectors, labels, _ = clusters(per_label=6, labels=2, spread=0.2)
    calibration = calibrate(vectors, labels, k=5, tau=0.05, known_rejection=0.05)
    sims = vectors @ vectors.T
    np.fill_diagonal(sims, -np.inf)
    first = np.arange(6)
    expected = float(np.median(1 - sims[np.ix_(first, first)].max(axis=1)))
    assert calibration.radius_of("label0") == pytest.approx(expected, rel=1e-5)
    assert calibration.radius_of("never") == calibration.default_radius
