"""Local features of an encoded image, for verifying copies (see services.common.local_features).

The image is decoded the way the network's input is (`preprocess.decode_rgb`: EXIF orientation,
transparency on white, 16-bit scaled, the same byte and pixel limits), then described in grey.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray
from PIL import Image

from services.common.local_features import FeatureConfig, LocalFeatures, describe
from services.extractor.preprocess import Decoded, PreprocessConfig, decode_rgb


def grey_for_features(data: bytes, preprocess: PreprocessConfig, side: int,
                      decoded: Decoded | None = None) -> NDArray[np.uint8]:
    """The encoded image as 8-bit grey with its longer side at most `side` (smaller ones kept).
    An image already decoded for the network serves unless it was decoded at a reduced scale that
    left it smaller than `side` (then the bytes are decoded again, finer)."""
    if decoded is not None and (not decoded.reduced or max(decoded.image.size) >= side):
        rgb = decoded.image
    else:
        rgb = decode_rgb(data, preprocess, side)
    grey = rgb.convert("L")
    scale = side / max(grey.size)
    if scale < 1:
        size = (max(8, round(grey.width * scale)), max(8, round(grey.height * scale)))
        grey = grey.resize(size, Image.Resampling.BILINEAR)
    return np.asarray(grey)


def describe_image(data: bytes, preprocess: PreprocessConfig, config: FeatureConfig,
                   mirrored: bool = False, decoded: Decoded | None = None) -> list[LocalFeatures]:
    """The image's features, and with `mirrored` also those of its left-right mirror image; raises
    InvalidImage / ImageTooLarge as the decoder does. `decoded`: the image as decoded for the network
    (see `grey_for_features`)."""
    grey = grey_for_features(data, preprocess, config.side, decoded)
    out = [describe(grey, config)]
    if mirrored:
        out.append(describe(grey[:, ::-1], config))
    return out
