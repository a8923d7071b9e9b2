"""Content-type sniffing and thumbnails."""

from __future__ import annotations

import io

import pytest
from PIL import Image

from services.common.errors import InvalidImage
from services.gateway.imaging import make_thumbnail, sniff_content_type, thumbnail_size
from tests.gateway.fakes import png


def test_content_type_comes_from_the_bytes_before_the_claim() -> None:
    assert sniff_content_type(png(1), "application/octet-stream") == "image/png"
    assert sniff_content_type(b"hello", "text/plain") == "text/plain"
    assert sniff_content_type(b"hello") == "application/octet-stream"


def test_thumbnail_sizes_round_up_to_a_standard_size() -> None:
    assert [thumbnail_size(s) for s in (1, 64, 65, 256, 900, 5000)] == [64, 64, 128, 256, 1024, 1024]


def test_a_thumbnail_is_a_jpeg_within_the_size_keeping_the_aspect_ratio() -> None:
    out = io.BytesIO()
    Image.new("RGB", (400, 200), "red").save(out, format="PNG")
    with Image.open(io.BytesIO(make_thumbnail(out.getvalue(), 128))) as thumb:
        assert (thumb.format, thumb.size) == ("JPEG", (128, 64))


def test_a_thumbnail_of_garbage_is_invalid_image() -> None:
    with pytest.raises(InvalidImage):
        make_thumbnail(b"garbage", 64)
