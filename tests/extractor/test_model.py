from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from numpy.typing import NDArray

from services.extractor.model import ImageEmbedder
from services.extractor.preprocess import PreprocessConfig
from services.extractor.session import OnnxSession
from services.extractor.settings import ExtractorSettings


class FakeSession:
    """A feature-map model whose maps are the mean pixel value per channel-group (no network)."""

    name = "fake-net"
    provider = "FakeExecutionProvider"
    channels = 6

    def run(self, images: NDArray[np.uint8]) -> NDArray[np.float32]:
        x = images.astype(np.float32).transpose(0, 3, 1, 2)[:, :, :7, :7] + 1.0
        return np.concatenate([x, x * 2], axis=1)


def embedder(p: float = 3.0, size: int = 224) -> ImageEmbedder:
    return ImageEmbedder(FakeSession(), PreprocessConfig(image_size=size), gem_p=p)


def test_model_id_names_network_pooling_size_and_resize() -> None:
    assert embedder().model_id == "fake-net/gem3/224/squash/v1"


@pytest.mark.parametrize(("other", "why"), [(embedder(p=1.0), "pooling"), (embedder(size=256), "input size")])
def test_a_pipeline_change_changes_the_model_id(other: ImageEmbedder, why: str) -> None:
    assert other.model_id != embedder().model_id, why


def test_embed_returns_one_unit_vector_per_image(photos: list[Path]) -> None:
    e = embedder()
    vectors = e.embed([e.decode(p.read_bytes()) for p in photos[:3]])
    assert vectors.shape == (3, 6) and vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, rtol=1e-5)


def test_embedding_nothing_gives_an_empty_matrix() -> None:
    assert embedder().embed([]).shape == (0, 6)


def test_settings_build_the_real_pipeline(model_dir: Path) -> None:
    e = ImageEmbedder.from_settings(ExtractorSettings(model_dir=model_dir))
    assert isinstance(e.session, OnnxSession)
    assert e.model_id == "efficientnet-lite0/gem3/224/squash/v1"


def test_a_batch_gives_the_same_vectors_as_one_image_at_a_time(model_dir: Path, photos: list[Path]) -> None:
    e = ImageEmbedder.from_settings(ExtractorSettings(model_dir=model_dir, intra_op_threads=1))
    pixels = [e.decode(p.read_bytes()) for p in photos[:4]]
    together = e.embed(pixels)
    alone = np.concatenate([e.embed([p]) for p in pixels])
    np.testing.assert_allclose(together, alone, atol=1e-5)
