from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from services.extractor.descriptors import DescriptorConfig, Purpose, Variant, apply_variant

PIL_TRANSPOSE = {Variant.ROT90: Image.Transpose.ROTATE_90, Variant.ROT180: Image.Transpose.ROTATE_180,
                 Variant.ROT270: Image.Transpose.ROTATE_270, Variant.HFLIP: Image.Transpose.FLIP_LEFT_RIGHT}


@pytest.mark.parametrize("variant", list(Variant))
def test_a_variant_is_the_same_transform_as_pillows(variant: Variant, photos: list[Path]) -> None:
    image = Image.open(photos[1]).convert("RGB").resize((96, 64))
    got = apply_variant(np.asarray(image), variant)
    np.testing.assert_array_equal(got, np.asarray(image.transpose(PIL_TRANSPOSE[variant])))
    assert got.flags.c_contiguous


def test_no_variant_leaves_the_pixels_alone() -> None:
    pixels = np.zeros((4, 6, 3), dtype=np.uint8)
    assert apply_variant(pixels, None) is pixels


def test_only_indexed_images_get_variants_and_regions() -> None:
    config = DescriptorConfig(index_variants=(Variant.ROT90, Variant.HFLIP), index_region_levels=(2,))
    assert config.variants(Purpose.QUERY) == (None,) and config.regions(Purpose.QUERY) == ()
    assert config.variants(Purpose.INDEX) == (None, Variant.ROT90, Variant.HFLIP)
    assert config.index_tag == "db-rot90.hflip-reg2" and DescriptorConfig().index_tag == ""
