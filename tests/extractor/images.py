"""Test images made with Pillow (and by hand, for the ones Pillow will not write)."""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
from PIL import Image

RED = (220, 20, 20)
BLUE = (20, 20, 220)


def encode(image: Image.Image, fmt: str, **params: object) -> bytes:
    out = io.BytesIO()
    image.save(out, fmt, **params)
    return out.getvalue()


def halves(size: tuple[int, int], left: tuple[int, int, int], right: tuple[int, int, int]) -> Image.Image:
    """An RGB image whose left half is one colour and right half another."""
    image = Image.new("RGB", size, left)
    image.paste(right, (size[0] // 2, 0, size[0], size[1]))
    return image


def exif_rotated_jpeg() -> bytes:
    """Stored red-left/blue-right, with EXIF orientation 6 (display rotated 90° clockwise: red on top)."""
    exif = Image.Exif()
    exif[0x0112] = 6
    return encode(halves((200, 100), RED, BLUE), "JPEG", quality=95, exif=exif.tobytes())


def animated(fmt: str) -> bytes:
    """Two frames, red then blue."""
    frames = [Image.new("RGB", (64, 64), RED), Image.new("RGB", (64, 64), BLUE)]
    return encode(frames[0], fmt, save_all=True, append_images=frames[1:], duration=100, loop=0)


def grey16_gradient() -> bytes:
    """16-bit greyscale PNG, 0 on the left to 65535 on the right."""
    row = np.linspace(0, 65535, 256).astype(np.uint16)
    return encode(Image.fromarray(np.tile(row, (64, 1))), "PNG")


def _chunk(tag: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data))


def png_from_header(width: int, height: int, idat: bytes, bit_depth: int = 1, colour_type: int = 0) -> bytes:
    ihdr = struct.pack(">IIBBBBB", width, height, bit_depth, colour_type, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", idat) + _chunk(b"IEND", b"")


def bilevel_bomb_png(side: int) -> bytes:
    """A valid all-black 1-bit PNG of side x side pixels: ~100 KB that would decode to side² pixels."""
    row = bytes(1 + (side + 7) // 8)  # filter byte + packed bits
    packer = zlib.compressobj(9)
    idat = b"".join(packer.compress(row) for _ in range(side)) + packer.flush()
    return png_from_header(side, side, idat)
