"""A box on a query image: read from "x,y,w,h", checked against the image, cut out of it.

The box is in the pixels of the image as it is shown, after its EXIF orientation. The gateway cuts it
out and hands the crop on as a new image (JPEG quality 95, no chroma subsampling, longer side at most
MAX_CROP_SIDE: the extractor looks at 320 px and its keypoints at 384), so everything a query image
goes through downstream (its cache entry, named by the bytes' hash; the extractor's decode; local
features; rotated and mirrored variants) holds for the crop unchanged. A JPEG is decoded at the
smallest reduced scale that keeps the box at least MAX_CROP_SIDE (libjpeg's 1/2, 1/4, 1/8).
"""

from __future__ import annotations

import io
import re
import warnings
from dataclasses import dataclass

from PIL import Image, ImageOps, UnidentifiedImageError

from services.common.errors import ImageTooLarge, InvalidArgument, InvalidImage, InvalidRegion

# The form a region takes in a query parameter, a form field, the CLI and SQL.
REGION_PATTERN = r"^\s*\d+\s*,\s*\d+\s*,\s*\d+\s*,\s*\d+\s*$"
REGION_FORMAT = "x,y,w,h: the box's left and top edges and its width and height in the query image's pixels " \
                "(after EXIF orientation), e.g. 10,20,200,150"
# A region smaller than this on either side carries too little for the network or keypoints.
MIN_SIDE = 8
MAX_PIXELS = 100_000_000
CROP_QUALITY = 95
MAX_CROP_SIDE = 768


@dataclass(frozen=True)
class Region:
    """A box in an image's pixels: left, top, width, height."""

    x: int
    y: int
    width: int
    height: int

    def __post_init__(self) -> None:
        if min(self.x, self.y) < 0:
            raise InvalidArgument(f"region {self} starts at a negative pixel")
        if min(self.width, self.height) < MIN_SIDE:
            raise InvalidArgument(f"region {self} is smaller than {MIN_SIDE} pixels on a side")

    def __str__(self) -> str:
        return f"{self.x},{self.y},{self.width},{self.height}"

    @classmethod
    def parse(cls, text: str) -> Region:
        """Reads "x,y,w,h" (whole pixels); anything else is InvalidArgument."""
        if not re.match(REGION_PATTERN, text):
            raise InvalidArgument(f"region {text[:80]!r} is not {REGION_FORMAT}")
        x, y, w, h = (int(part) for part in text.split(","))
        return cls(x, y, w, h)

    def box(self) -> tuple[int, int, int, int]:
        return self.x, self.y, self.x + self.width, self.y + self.height


def parse_region(text: str | None) -> Region | None:
    """An optional region: None or an empty string is no region."""
    return Region.parse(text) if text and text.strip() else None


def check_inside(region: Region, size: tuple[int, int]) -> None:
    """InvalidRegion unless the region lies inside an image of `size` (width, height)."""
    width, height = size
    if region.x + region.width > width or region.y + region.height > height:
        raise InvalidRegion(f"region {region} (x,y,w,h) is not inside the {width}x{height} image")


def shown_size(content: bytes) -> tuple[int, int]:
    """(width, height) of the encoded image as shown, after its EXIF orientation, read from its header;
    InvalidImage when the bytes are no image."""
    try:
        with Image.open(io.BytesIO(content)) as image:
            return _shown_size(image)
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:
        raise InvalidImage(f"cannot read the query image's size: {exc}") from exc


def box_of(x: float, y: float, width: float, height: float, size: tuple[int, int]) -> Region | None:
    """The region of an image of `size` (width, height) that a box in fractions of it covers, in whole
    pixels inside the image; None when it is under MIN_SIDE on a side."""
    left, top = max(0, round(x * size[0])), max(0, round(y * size[1]))
    right, bottom = min(size[0], round((x + width) * size[0])), min(size[1], round((y + height) * size[1]))
    if min(right - left, bottom - top) < MIN_SIDE:
        return None
    return Region(left, top, right - left, bottom - top)


def crop(content: bytes, region: Region) -> bytes:
    """The region of the encoded image as a JPEG; InvalidRegion when it is not inside the image,
    InvalidImage when the bytes do not decode."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(content)) as image:
                if image.width * image.height > MAX_PIXELS:
                    raise ImageTooLarge(f"image has {image.width}x{image.height} pixels")
                full = _shown_size(image)
                check_inside(region, full)
                _prefer_reduced_jpeg(image, region)
                upright = ImageOps.exif_transpose(image) if _orientation(image) not in (None, 1) else image
                part = _on_white(upright.crop(_scaled_box(region, full, upright.size)))
                part.thumbnail((MAX_CROP_SIDE, MAX_CROP_SIDE), Image.Resampling.BICUBIC, reducing_gap=2.0)
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, Image.DecompressionBombWarning,
            Image.DecompressionBombError) as exc:
        raise InvalidImage(f"cannot decode the query image to cut its region: {exc}") from exc
    out = io.BytesIO()
    part.save(out, format="JPEG", quality=CROP_QUALITY, subsampling=0)
    return out.getvalue()


def _shown_size(image: Image.Image) -> tuple[int, int]:
    """(width, height) as shown: swapped when the EXIF orientation turns the image a quarter."""
    turned = _orientation(image) in (5, 6, 7, 8)
    return (image.height, image.width) if turned else image.size


def _orientation(image: Image.Image) -> int | None:
    value = image.getexif().get(0x0112)
    return value if isinstance(value, int) else None


def _prefer_reduced_jpeg(image: Image.Image, region: Region) -> None:
    """Lets libjpeg decode at a reduced scale while the box keeps MAX_CROP_SIDE on its longer side."""
    factor = MAX_CROP_SIDE / max(region.width, region.height)
    if image.format in ("JPEG", "MPO") and factor < 1:
        image.draft("RGB", (max(1, int(image.width * factor)), max(1, int(image.height * factor))))


def _scaled_box(region: Region, full: tuple[int, int], decoded: tuple[int, int]) -> tuple[int, int, int, int]:
    """The region's box in an image decoded at `decoded` rather than its full size."""
    sx, sy = decoded[0] / full[0], decoded[1] / full[1]
    x0, y0, x1, y1 = region.box()
    left, top = round(x0 * sx), round(y0 * sy)
    return left, top, max(round(x1 * sx), left + 1), max(round(y1 * sy), top + 1)


def _on_white(image: Image.Image) -> Image.Image:
    """8-bit RGB, transparency composited on white (as the extractor does)."""
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        white = Image.new("RGB", rgba.size, (255, 255, 255))
        white.paste(rgba, mask=rgba.getchannel("A"))
        return white
    return image.convert("RGB")
