from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from numpy.typing import NDArray
from PIL import Image

from services.common.errors import ImageTooLarge, InvalidImage
from services.extractor.preprocess import PreprocessConfig, ResizeMode, decode_image, decode_image_scales, target_size
from tests.extractor import images
from tests.extractor.images import BLUE, RED

CONFIG = PreprocessConfig(image_size=224)


def decode(data: bytes, config: PreprocessConfig = CONFIG) -> NDArray[np.uint8]:
    return decode_image(data, config)


def is_near(pixels: NDArray[np.uint8], colour: tuple[int, int, int], tolerance: int = 30) -> bool:
    return bool(np.abs(pixels.reshape(-1, 3).mean(axis=0) - np.array(colour)).max() < tolerance)


def test_every_sample_photo_becomes_a_224_square_of_rgb_bytes(photos: list[Path]) -> None:
    for path in photos:
        pixels = decode(path.read_bytes())
        assert pixels.shape == (224, 224, 3), path.name
        assert pixels.dtype == np.uint8
        assert pixels.std() > 5, f"{path.name} decoded to a flat image"


def test_output_size_follows_the_configured_image_size(photos: list[Path]) -> None:
    assert decode(photos[0].read_bytes(), PreprocessConfig(image_size=160)).shape == (160, 160, 3)


@pytest.mark.parametrize(("size", "expected"), [
    ((640, 480), (320, 256)),   # 240 -> 256: the short side is rounded to a multiple of 32
    ((480, 640), (256, 320)),
    ((1000, 1000), (320, 320)),
    ((3000, 100), (320, 32)),   # never below 32
    ((50, 40), (320, 256)),     # small images are enlarged
])
def test_aspect_resize_keeps_the_shape_with_sides_multiples_of_32(
    size: tuple[int, int], expected: tuple[int, int]
) -> None:
    assert target_size(*size, 320, ResizeMode.ASPECT) == expected


def test_aspect_mode_decodes_a_photo_to_its_shape(photos: list[Path]) -> None:
    config = PreprocessConfig(image_size=320, resize=ResizeMode.ASPECT)
    for path in photos:
        with Image.open(path) as image:
            w, h = image.size
        pixels = decode(path.read_bytes(), config)
        assert max(pixels.shape[:2]) == 320 and pixels.shape[0] % 32 == 0 and pixels.shape[1] % 32 == 0, path.name
        assert abs(pixels.shape[1] / pixels.shape[0] - w / h) < 0.15 * w / h, path.name


def test_several_scales_come_from_one_decode(photos: list[Path]) -> None:
    config = PreprocessConfig(image_size=320, resize=ResizeMode.ASPECT)
    big, small = decode_image_scales(photos[1].read_bytes(), config, (320, 224))
    assert max(big.shape[:2]) == 320 and max(small.shape[:2]) == 224


def test_a_large_jpeg_decodes_through_draft_mode_to_the_same_picture() -> None:
    big = images.halves((4000, 3000), RED, BLUE)
    pixels = decode(images.encode(big, "JPEG", quality=90))
    assert pixels.shape == (224, 224, 3)
    assert is_near(pixels[:, :100], RED) and is_near(pixels[:, -100:], BLUE)


def test_exif_orientation_is_applied() -> None:
    pixels = decode(images.exif_rotated_jpeg())
    assert is_near(pixels[:100], RED), "the top should be red once rotated"
    assert is_near(pixels[-100:], BLUE), "the bottom should be blue once rotated"


@pytest.mark.parametrize("fmt", ["GIF", "WEBP"])
def test_only_the_first_frame_of_an_animation_is_used(fmt: str) -> None:
    assert is_near(decode(images.animated(fmt)), RED)


@pytest.mark.parametrize("fmt", ["WEBP", "BMP", "PNG", "TIFF"])
def test_common_formats_decode_to_the_same_picture(fmt: str) -> None:
    pixels = decode(images.encode(images.halves((300, 200), RED, BLUE), fmt))
    assert is_near(pixels[:, :100], RED) and is_near(pixels[:, -100:], BLUE)


def test_transparent_pixels_are_composited_on_white() -> None:
    rgba = Image.new("RGBA", (100, 100), (0, 0, 0, 0))
    rgba.paste((220, 20, 20, 255), (0, 0, 50, 100))
    pixels = decode(images.encode(rgba, "PNG"))
    assert is_near(pixels[:, :100], RED)
    assert is_near(pixels[:, -100:], (255, 255, 255), tolerance=2)


def test_a_palette_image_with_a_transparent_colour_is_composited_on_white() -> None:
    palette = Image.new("P", (64, 64), 0)
    palette.putpalette([0, 0, 0, *RED] + [0] * (256 - 2) * 3)
    palette.paste(1, (0, 0, 32, 64))
    pixels = decode(images.encode(palette, "PNG", transparency=0))
    assert is_near(pixels[:, :100], RED)
    assert is_near(pixels[:, -100:], (255, 255, 255), tolerance=2)


def test_sixteen_bit_greyscale_keeps_its_range_instead_of_clipping_to_white() -> None:
    pixels = decode(images.grey16_gradient())
    assert pixels[:, :10].mean() < 20 and pixels[:, -10:].mean() > 235
    assert np.array_equal(pixels[..., 0], pixels[..., 2])


@pytest.mark.parametrize("mode", ["L", "1", "CMYK", "LA"])
def test_other_modes_become_rgb(mode: str, photos: list[Path]) -> None:
    image = Image.open(photos[0]).convert(mode)
    fmt = "JPEG" if mode == "CMYK" else "PNG"
    pixels = decode(images.encode(image, fmt))
    assert pixels.shape == (224, 224, 3)
    if mode in ("L", "1", "LA"):
        assert np.array_equal(pixels[..., 0], pixels[..., 1])


def test_a_cmyk_jpeg_keeps_its_colours() -> None:
    cmyk = images.halves((200, 100), RED, BLUE).convert("CMYK")
    pixels = decode(images.encode(cmyk, "JPEG", quality=95))
    assert is_near(pixels[:, :100], RED, tolerance=40) and is_near(pixels[:, -100:], BLUE, tolerance=40)


def test_empty_bytes_are_an_invalid_image() -> None:
    with pytest.raises(InvalidImage, match="empty"):
        decode(b"")


def test_random_bytes_are_not_a_recognised_image() -> None:
    noise = np.random.default_rng(0).integers(0, 256, 5000, dtype=np.uint8).tobytes()
    with pytest.raises(InvalidImage, match="not a recognised image"):
        decode(noise)


def test_a_truncated_jpeg_is_an_invalid_image(photos: list[Path]) -> None:
    jpeg = images.encode(Image.open(photos[0]).convert("RGB"), "JPEG", quality=90)
    with pytest.raises(InvalidImage, match="truncated"):
        decode(jpeg[: len(jpeg) // 2])


def test_a_png_with_corrupt_pixel_data_is_an_invalid_image() -> None:
    with pytest.raises(InvalidImage):
        decode(images.png_from_header(64, 64, b"definitely not zlib", bit_depth=8))


def test_an_unsupported_format_is_refused_even_if_pillow_could_read_it() -> None:
    with pytest.raises(InvalidImage, match="not a recognised image"):
        decode(images.encode(Image.new("RGB", (32, 32)), "PCX"))


def test_input_over_the_byte_limit_is_too_large(photos: list[Path]) -> None:
    data = photos[0].read_bytes()
    with pytest.raises(ImageTooLarge, match="bytes"):
        decode(data, PreprocessConfig(max_image_bytes=len(data) - 1))


def test_a_decompression_bomb_is_too_large_without_being_decoded() -> None:
    bomb = images.bilevel_bomb_png(30_000)  # 900 megapixels
    assert len(bomb) < 200_000
    with pytest.raises(ImageTooLarge):
        decode(bomb)


def test_the_pixel_limit_is_checked_from_the_header_before_decoding() -> None:
    # The pixel data is garbage: decoding it would fail as InvalidImage, so ImageTooLarge proves it never ran.
    header_only = images.png_from_header(2000, 1000, b"garbage", bit_depth=8)
    with pytest.raises(ImageTooLarge, match="2000x1000"):
        decode(header_only, PreprocessConfig(max_image_pixels=1_000_000))


@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")
def test_an_image_pillow_only_warns_about_is_too_large_even_when_our_limit_is_higher() -> None:
    bomb = images.bilevel_bomb_png(10_000)  # 100 Mpx: over Pillow's warning threshold, under its error one
    assert Image.MAX_IMAGE_PIXELS is not None and Image.MAX_IMAGE_PIXELS < 100_000_000 < 2 * Image.MAX_IMAGE_PIXELS
    with pytest.raises(ImageTooLarge):
        decode(bomb, PreprocessConfig(max_image_pixels=10**9))

