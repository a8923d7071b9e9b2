from __future__ import annotations

from pathlib import Path

import numpy as np

from services.extractor.calibration import network_inputs_of, sample, write
from services.extractor.model import ImageEmbedder
from services.extractor.settings import ExtractorSettings, Precision


def test_the_sample_is_spread_evenly_over_the_sorted_pictures() -> None:
    paths = [Path(f"{i:03d}.jpg") for i in range(10)]
    assert sample(paths, 5) == [Path(f"{i:03d}.jpg") for i in (0, 2, 4, 6, 8)]
    assert sample(paths, 20) == paths


def test_calibration_inputs_are_the_network_inputs_the_service_makes(
        model_dir: Path, photos: list[Path], tmp_path: Path) -> None:
    settings = ExtractorSettings(model_dir=model_dir, precision=Precision.FP32)
    inputs = network_inputs_of(photos[:3], settings)
    embedder = ImageEmbedder.from_settings(settings)
    for photo, pixels in zip(photos[:3], inputs, strict=True):
        np.testing.assert_array_equal(pixels, embedder.decode(photo.read_bytes())[0])
    write(inputs, tmp_path / "calibration.npz")
    with np.load(tmp_path / "calibration.npz") as data:
        for i, pixels in enumerate(inputs):
            np.testing.assert_array_equal(data[f"arr_{i}"], pixels)
