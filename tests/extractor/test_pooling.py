from __future__ import annotations

import numpy as np
import pytest
from numpy.typing import NDArray

from services.extractor.pooling import embed_fmap, gem, grid_windows, l2_normalise, region_vectors


def relu6_fmap(seed: int = 0, shape: tuple[int, int, int, int] = (3, 16, 7, 7)) -> NDArray[np.float32]:
    rng = np.random.default_rng(seed)
    return np.clip(rng.normal(1.0, 2.0, shape), 0, 6).astype(np.float32)


def test_gem_with_p_one_is_average_pooling() -> None:
    fmap = relu6_fmap()
    np.testing.assert_allclose(gem(fmap, 1.0), np.maximum(fmap, 1e-6).mean(axis=(2, 3)), rtol=1e-6)


def test_gem_with_a_large_p_approaches_max_pooling() -> None:
    fmap = relu6_fmap()
    np.testing.assert_allclose(gem(fmap, 500.0), fmap.max(axis=(2, 3)), rtol=0.02)


def test_gem_lies_between_average_and_max() -> None:
    fmap = relu6_fmap()
    pooled = gem(fmap, 3.0)
    assert np.all(pooled >= gem(fmap, 1.0) - 1e-6) and np.all(pooled <= fmap.max(axis=(2, 3)) + 1e-6)


def test_gem_of_an_all_zero_map_is_finite() -> None:
    assert np.all(np.isfinite(gem(np.zeros((1, 4, 7, 7), dtype=np.float32), 3.0)))


def test_gem_refuses_a_non_positive_exponent() -> None:
    with pytest.raises(ValueError, match="positive"):
        gem(relu6_fmap(), 0.0)


def test_embedded_vectors_have_unit_norm_and_float32() -> None:
    vectors = embed_fmap(relu6_fmap(), 3.0)
    assert vectors.shape == (3, 16) and vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, rtol=1e-5)


def test_l2_normalise_leaves_a_zero_vector_zero() -> None:
    assert np.array_equal(l2_normalise(np.zeros((1, 4), dtype=np.float32)), np.zeros((1, 4)))


def test_level_two_regions_are_the_four_two_thirds_corner_windows() -> None:
    assert grid_windows(9, 12, 2) == [(0, 6, 0, 8), (0, 6, 4, 12), (3, 9, 0, 8), (3, 9, 4, 12)]


def test_level_three_regions_are_nine_half_windows_covering_the_map() -> None:
    windows = grid_windows(10, 7, 3)
    assert len(windows) == 9 and {(y1 - y0, x1 - x0) for y0, y1, x0, x1 in windows} == {(5, 4)}
    assert min(w[0] for w in windows) == 0 and max(w[1] for w in windows) == 10
    assert min(w[2] for w in windows) == 0 and max(w[3] for w in windows) == 7


def test_a_region_vector_is_the_pooled_window() -> None:
    fmap = relu6_fmap(shape=(2, 16, 9, 12))
    regions = region_vectors(fmap, 3.0, (2, 3))
    assert regions.shape == (2, 13, 16)
    np.testing.assert_allclose(regions[:, 3], embed_fmap(fmap[:, :, 3:9, 4:12], 3.0), rtol=1e-6)


def test_region_grids_need_at_least_two_cells() -> None:
    with pytest.raises(ValueError, match=">= 2"):
        grid_windows(7, 7, 1)
