"""The little the gateway does with pixels: tell an image's type, and make JPEG thumbnails.

Decoding for embedding is the extractor's job; here Pillow only reads headers, and decodes an image
already accepted into an album when its thumbnail is first asked for.
"""

from __future__ import annotations

import io
import warnings

from PIL import Image, ImageOps, UnidentifiedImageError

from services.common.errors import ImageTooLarge, InvalidImage

DEFAULT_CONTENT_TYPE = "application/octet-stream"
# Sizes a thumbnail can have: a request is rounded up to one, so the cache holds few variants.
THUMBNAIL_SIZES = (64, 128, 256, 512, 1024)
MAX_THUMBNAIL_SOURCE_PIXELS = 100_000_000


def sniff_content_type(content: bytes, fallback: str = "") -> str:
    """The MIME type Pillow reads from the header, else the caller's claim, else octet-stream."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with Image.open(io.BytesIO(content)) as image:
                mime = Image.MIME.get(image.format or "")
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError):
        mime = None
    return mime or fallback or DEFAULT_CONTENT_TYPE


def thumbnail_size(requested: int) -> int:
    """The smallest standard size at least as large as the request (the largest if none is)."""
    if requested < 1:
        raise ValueError("size must be positive")
    return next((s for s in THUMBNAIL_SIZES if s >= requested), THUMBNAIL_SIZES[-1])


def make_thumbnail(content: bytes, size: int, quality: int = 85) -> bytes:
    """A JPEG no larger than size x size, upright per EXIF, aspect ratio kept."""
    try:
        with Image.open(io.BytesIO(content)) as image:
            if image.width * image.height > MAX_THUMBNAIL_SOURCE_PIXELS:
                raise ImageTooLarge(f"image has {image.width}x{image.height} pixels")
            image.draft("RGB", (size, size))
            upright = ImageOps.exif_transpose(image) or image
            rgb = upright.convert("RGB")
            rgb.thumbnail((size, size), Image.Resampling.LANCZOS)
            out = io.BytesIO()
            rgb.save(out, format="JPEG", quality=quality, optimize=True)
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:
        raise InvalidImage(f"cannot decode the image: {exc}") from exc
    return out.getvalue()
