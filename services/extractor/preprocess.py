"""Encoded image bytes -> a uint8 HWC RGB array of the network's input size.

Untrusted input is checked before it costs anything: the byte size first, then width x height from
the header before a single pixel is decoded (decompression bombs). Then the first frame only
(GIF, animated WebP), EXIF orientation applied, every mode made 8-bit RGB (alpha composited on
white), and one resize: to a square (squash) or keeping the aspect ratio with both sides multiples
of 32 (aspect). Every Pillow failure becomes `InvalidImage` or `ImageTooLarge`.
"""

from __future__ import annotations

import io
import struct
from dataclasses import dataclass
from enum import StrEnum
from typing import assert_never

import numpy as np
from numpy.typing import NDArray
from PIL import Image, ImageOps, UnidentifiedImageError

from services.common.errors import ImageTooLarge, InvalidImage

# Formats we accept; Pillow can open more (EPS, PSD, ...), but each plugin is attack surface.
# (Those this Pillow build lacks, e.g. AVIF without libavif, are left out.)
Image.init()
ACCEPTED_FORMATS = tuple(f for f in ("JPEG", "MPO", "PNG", "WEBP", "GIF", "BMP", "TIFF", "AVIF") if f in Image.OPEN)
WHITE = (255, 255, 255)
# What Pillow raises on malformed input (besides UnidentifiedImageError), across its plugins.
_DECODE_ERRORS = (OSError, SyntaxError, ValueError, EOFError, struct.error, IndexError, KeyError, TypeError)


class ResizeMode(StrEnum):
    """How an image becomes the network's input; part of the model id."""

    # Stretch to image_size x image_size, aspect ratio not kept (whole image seen, shapes distorted).
    SQUASH = "squash"
    # Longer side image_size, shorter side rounded to a multiple of 32 (at least 32): shapes kept, and
    # the network's static "SAME" padding stays exact. Images of a batch then differ in shape.
    ASPECT = "aspect"


# Both sides of an ASPECT input are multiples of this (the network's total stride).
STRIDE = 32


@dataclass(frozen=True)
class PreprocessConfig:
    """The limits and the target of `decode_image`."""

    image_size: int = 224
    resize: ResizeMode = ResizeMode.SQUASH
    max_image_bytes: int = 20 * 1024 * 1024
    max_image_pixels: int = 50_000_000


def decode_image(data: bytes, config: PreprocessConfig) -> NDArray[np.uint8]:
    """Decodes, orients, converts and resizes one image; returns uint8 [H, W, 3] RGB (H = W = size
    when squashed).

    Raises `ImageTooLarge` over the byte or pixel limit, `InvalidImage` for anything undecodable.
    """
    return decode_image_scales(data, config, (config.image_size,))[0]


def decode_image_scales(data: bytes, config: PreprocessConfig, sizes: tuple[int, ...]) -> list[NDArray[np.uint8]]:
    """Decodes once and resizes to each size (multi-scale descriptors); same errors as `decode_image`."""
    return network_inputs(decode_oriented(data, config, max(sizes)).image, config, sizes)


def network_inputs(rgb: Image.Image, config: PreprocessConfig, sizes: tuple[int, ...]) -> list[NDArray[np.uint8]]:
    """A decoded image resized to each of the network's input sizes."""
    return [np.asarray(resize(rgb, size, config.resize), dtype=np.uint8) for size in sizes]


@dataclass(frozen=True)
class Decoded:
    """An image decoded as 8-bit RGB, oriented; `reduced` when a JPEG was decoded at a reduced scale
    (the bytes hold finer detail than `image`)."""

    image: Image.Image
    reduced: bool


def decode_rgb(data: bytes, config: PreprocessConfig, min_side: int) -> Image.Image:
    """Decodes and orients one image as 8-bit RGB (transparency on white), JPEGs at a reduced scale
    while both sides stay >= min_side; same errors as `decode_image`."""
    return decode_oriented(data, config, min_side).image


def decode_oriented(data: bytes, config: PreprocessConfig, min_side: int) -> Decoded:
    """`decode_rgb`, saying whether the image was decoded at a reduced scale."""
    check_byte_size(data, config.max_image_bytes)
    try:
        with _open(data) as image:
            check_pixel_count(image.size, pixel_limit(config))
            full_size = image.size
            _prefer_reduced_jpeg(image, min_side)
            image.load()
            reduced = image.size != full_size
            # exif_transpose and to_rgb make a new image: it outlives the closed file
            return Decoded(to_rgb(ImageOps.exif_transpose(image)), reduced)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageTooLarge(f"image has too many pixels: {exc}") from exc
    except _DECODE_ERRORS as exc:
        raise InvalidImage(f"corrupt or truncated image: {exc}") from exc


def check_byte_size(data: bytes, max_bytes: int) -> None:
    if not data:
        raise InvalidImage("image is empty (0 bytes)")
    if len(data) > max_bytes:
        raise ImageTooLarge(f"image is {len(data)} bytes; the limit is {max_bytes}")


def pixel_limit(config: PreprocessConfig) -> int:
    """Our limit, capped by Pillow's: Pillow only *warns* between its MAX_IMAGE_PIXELS and twice that
    (and raises above), and a warning cannot be turned into an error per call thread-safely, so an
    image Pillow would warn about is refused here instead."""
    pillow = Image.MAX_IMAGE_PIXELS
    return config.max_image_pixels if pillow is None else min(config.max_image_pixels, pillow)


def check_pixel_count(size: tuple[int, int], max_pixels: int) -> None:
    """Checks the header's dimensions, before any pixel is decoded."""
    width, height = size
    if width <= 0 or height <= 0:
        raise InvalidImage(f"image has no pixels ({width}x{height})")
    if width * height > max_pixels:
        raise ImageTooLarge(f"image is {width}x{height} = {width * height} pixels; the limit is {max_pixels}")


def _open(data: bytes) -> Image.Image:
    """Reads the header only (Pillow decodes lazily); the first frame is the current one."""
    try:
        return Image.open(io.BytesIO(data), formats=ACCEPTED_FORMATS)
    except UnidentifiedImageError as exc:
        raise InvalidImage(f"not a recognised image (accepted: {', '.join(ACCEPTED_FORMATS)})") from exc


def _prefer_reduced_jpeg(image: Image.Image, size: int) -> None:
    """Lets libjpeg decode at 1/2, 1/4 or 1/8 scale while both sides stay >= size (much faster)."""
    if image.format in ("JPEG", "MPO"):
        image.draft(None, (size, size))


def to_rgb(image: Image.Image) -> Image.Image:
    """Any Pillow mode -> 8-bit RGB; transparency is composited on white."""
    if image.mode == "RGB":
        return image
    if image.mode in ("I", "I;16", "I;16L", "I;16B", "I;16N", "F"):
        image = _high_depth_to_l(image)
    if (image.mode == "P" and "transparency" in image.info) or image.mode in ("PA", "LA", "La", "RGBa"):
        image = image.convert("RGBA")
    if image.mode == "RGBA":
        return _on_white(image)
    return image.convert("RGB")


def _high_depth_to_l(image: Image.Image) -> Image.Image:
    """16/32-bit greyscale -> 8-bit by scaling (Pillow's own convert clips everything above 255)."""
    values = np.asarray(image, dtype=np.float64)
    top = float(values.max()) if values.size else 0.0
    if image.mode == "F" and top <= 1.0:
        scale = 255.0
    elif top <= 255.0:
        scale = 1.0
    else:
        scale = 255.0 / 65535.0
    return Image.fromarray(np.clip(values * scale + 0.5, 0, 255).astype(np.uint8), mode="L")


def _on_white(image: Image.Image) -> Image.Image:
    background = Image.new("RGB", image.size, WHITE)
    background.paste(image, mask=image.getchannel("A"))
    return background


def target_size(width: int, height: int, size: int, mode: ResizeMode) -> tuple[int, int]:
    """The (width, height) an image of the given size becomes."""
    if mode is ResizeMode.SQUASH:
        return size, size
    if mode is ResizeMode.ASPECT:
        if width >= height:
            return size, _short_side(size, height / width)
        return _short_side(size, width / height), size
    assert_never(mode)


def _short_side(size: int, ratio: float) -> int:
    return max(STRIDE, round(size * ratio / STRIDE) * STRIDE)


def resize(image: Image.Image, size: int, mode: ResizeMode) -> Image.Image:
    """Makes the network input. Pillow's bilinear filter widens with the scale factor, so
    downscaling is antialiased."""
    return image.resize(target_size(*image.size, size, mode), Image.Resampling.BILINEAR)
