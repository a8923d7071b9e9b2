from __future__ import annotations

import numpy as np

from services.extractor.classifier import Classifier, average_pool


def classifier(min_score: float = 0.1, top_k: int = 2) -> Classifier:
    """Three classes over two channels: each channel votes for one class, the third gets little."""
    weight = np.array([[4.0, 0.0], [0.0, 4.0], [-4.0, -4.0]], np.float32)
    return Classifier(weight, np.zeros(3, np.float32), ("n1", "n2", "n3"),
                      (("espresso",), ("tabby", "tabby cat"), ("crane",)), top_k, min_score)


def test_labels_are_the_most_probable_classes_first_by_their_first_lemma() -> None:
    labels = classifier(min_score=0.0).labels(np.array([[0.0, 1.0], [1.0, 0.6]], np.float32))
    assert [label.name for label in labels[0]] == ["tabby", "espresso"]
    assert [label.name for label in labels[1]] == ["espresso", "tabby"]
    assert labels[1][0].score > labels[1][1].score


def test_labels_below_the_floor_are_left_out() -> None:
    assert [label.name for label in classifier(min_score=0.5).labels(np.array([[0.0, 1.0]], np.float32))[0]] == \
        ["tabby"]


def test_probabilities_sum_to_one_and_the_head_reads_the_average_pooled_map() -> None:
    fmap = np.arange(2 * 2 * 3 * 3, dtype=np.float32).reshape(2, 2, 3, 3)
    assert np.allclose(average_pool(fmap), fmap.mean(axis=(2, 3)))
    assert np.allclose(classifier().probabilities(average_pool(fmap)).sum(axis=1), 1.0)
