from __future__ import annotations

import numpy as np

from services.extractor.classifier import Classifier, average_pool
from services.extractor.descriptors import DescriptorConfig, Purpose, Variant
from services.extractor.model import EmbedJob, ImageEmbedder
from services.extractor.preprocess import PreprocessConfig
from tests.extractor.test_model import FakeSession


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


def test_the_embedder_labels_indexed_images_only_and_none_without_a_head() -> None:
    weight = np.eye(3, 6, dtype=np.float32) * 10
    head = Classifier(weight, np.zeros(3, np.float32), ("n1", "n2", "n3"), (("a",), ("b",), ("c",)), 2, 0.0)
    pixels = np.zeros((32, 32, 3), np.uint8)
    pixels[..., 1] = 200  # the fake network's channel 1 is the green mean: class "b"
    descriptor = DescriptorConfig(index_variants=(Variant.HFLIP,))
    with_head = ImageEmbedder(FakeSession(), PreprocessConfig(image_size=32), descriptor, classifier=head)
    indexed, query = with_head.embed_and_label([EmbedJob((pixels,), Purpose.INDEX), EmbedJob((pixels,))])
    assert [label.name for label in indexed.labels] == ["b", "a"] and len(indexed.rows) == 2
    assert query.labels == []
    without = ImageEmbedder(FakeSession(), PreprocessConfig(image_size=32), descriptor)
    assert without.embed_and_label([EmbedJob((pixels,), Purpose.INDEX)])[0].labels == []
    assert np.allclose(without.embed_jobs([EmbedJob((pixels,), Purpose.INDEX)])[0], indexed.rows)
