"""Describing an encoded image by keypoints: decoded as the network input is."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from services.common.errors import ImageTooLarge, InvalidImage
from services.common.local_features import FeatureConfig
from services.extractor.keypoints import describe_image, grey_for_features
from services.extractor.preprocess import Decoded, PreprocessConfig, decode_oriented
from tests.extractor.images import encode, exif_rotated_jpeg, grey16_gradient

CONFIG = PreprocessConfig()


def test_transparent_pixels_are_described_on_white() -> None:
    grey = grey_for_features(encode(Image.new("RGBA", (64, 32), (0, 0, 0, 0)), "PNG"), CONFIG, 384)
    assert grey.shape == (32, 64) and grey.min() == 255


def test_large_images_are_brought_down_to_the_side_and_small_ones_kept() -> None:
    assert grey_for_features(encode(Image.new("RGB", (1600, 900)), "JPEG"), CONFIG, 384).shape == (216, 384)
    assert grey_for_features(encode(Image.new("RGB", (100, 60)), "JPEG"), CONFIG, 384).shape == (60, 100)


def test_the_exif_orientation_is_applied_as_for_the_network_input() -> None:
    grey = grey_for_features(exif_rotated_jpeg(), CONFIG, 384)
    assert grey.shape == (200, 100)  # stored 200 x 100, displayed turned a quarter
    assert grey[:100].mean() > grey[100:].mean() + 20  # red (grey ~80) on top, blue (~43) below


def test_sixteen_bit_grey_is_scaled_not_clipped() -> None:
    grey = grey_for_features(grey16_gradient(), CONFIG, 384)
    assert grey[:, 0].max() < 10 and grey[:, -1].min() > 245 and grey[:, 128].mean() < 200


def test_bad_bytes_get_the_decoders_errors() -> None:
    with pytest.raises(InvalidImage):
        describe_image(b"not an image", CONFIG, FeatureConfig())
    with pytest.raises(ImageTooLarge):
        describe_image(encode(Image.new("L", (400, 300)), "PNG"), PreprocessConfig(max_image_pixels=1000),
                       FeatureConfig())


def test_a_query_is_described_upright_and_mirrored() -> None:
    image = Image.effect_mandelbrot((256, 192), (-2.0, -1.2, 1.0, 1.2), 60).convert("RGB")
    upright, mirrored = describe_image(encode(image, "PNG"), CONFIG, FeatureConfig(), mirrored=True)
    assert len(upright) > 20 and len(mirrored) > 20
    assert (upright.width, upright.height) == (mirrored.width, mirrored.height) == (256, 192)
    assert len(describe_image(encode(image, "PNG"), CONFIG, FeatureConfig())) == 1


@pytest.mark.parametrize("size", [(1600, 900), (2800, 2800), (700, 500)])
def test_the_image_decoded_for_the_network_serves_the_features_unless_decoded_too_coarse(
        photos: list[Path], size: tuple[int, int]) -> None:
    # The network decodes a JPEG at a reduced scale (1/2 ... 1/8) while both sides stay >= 320 px.
    # 1600x900 decodes at 800x450 (fine enough: used); 2800x2800 at 350x350 (< 384: decoded again).
    with Image.open(photos[0]) as image:
        data = encode(image.convert("RGB").resize(size), "JPEG")
    decoded: Decoded = decode_oriented(data, CONFIG, 320)
    assert decoded.reduced is (size != (700, 500))
    shared = grey_for_features(data, CONFIG, 384, decoded)
    assert np.array_equal(shared, grey_for_features(data, CONFIG, 384))
