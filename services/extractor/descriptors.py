"""What a descriptor recipe is: scales, pooling, and the transformed runs that find rotated and
mirrored copies.

A query is one vector. Rotated and mirrored copies are found from the query side by default: a copy
search whose upright vector finds no verified copy asks for the query's variants (purpose
QUERY_VARIANTS: the image re-run rotated and mirrored, `Variant`) and searches with each, so an
album stores one row per image and ingest runs the network once per image. A recipe may instead
store variants on the database side (`index_variants`, each image re-run at ingest) and region rows;
the search service keeps every row and ranks an image by its best one. Row 0 of an indexed image is
always its upright global vector, the same vector a query of it would get.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum, StrEnum

import numpy as np
from numpy.typing import NDArray

Pixels = NDArray[np.uint8]


class Purpose(IntEnum):
    """Why an image is embedded; the values are those of the wire enum `EmbedRequest.Purpose`."""

    QUERY = 0
    INDEX = 1
    QUERY_VARIANTS = 2


class Variant(StrEnum):
    """A transform of the decoded image whose vector an indexed image also stores."""

    ROT90 = "rot90"  # counter-clockwise, as PIL's ROTATE_90
    ROT180 = "rot180"
    ROT270 = "rot270"
    HFLIP = "hflip"


def apply_variant(pixels: Pixels, variant: Variant | None) -> Pixels:
    """The HWC image transformed (None: as it is); a contiguous copy, ready for the network."""
    if variant is None:
        return pixels
    if variant is Variant.HFLIP:
        out = pixels[:, ::-1]
    else:
        out = np.rot90(pixels, k={Variant.ROT90: 1, Variant.ROT180: 2, Variant.ROT270: 3}[variant])
    return np.ascontiguousarray(out)


@dataclass(frozen=True)
class DescriptorConfig:
    """Pooling and rows of one recipe. Input sizes: the preprocess size first, then `extra_scales`."""

    gem_p: float = 3.0
    extra_scales: tuple[int, ...] = ()
    index_variants: tuple[Variant, ...] = ()
    index_region_levels: tuple[int, ...] = ()
    query_variants: tuple[Variant, ...] = ()

    def variants(self, purpose: Purpose) -> tuple[Variant | None, ...]:
        """The transforms run for an image: upright (None) first."""
        if purpose is Purpose.INDEX:
            return (None, *self.index_variants)
        if purpose is Purpose.QUERY_VARIANTS:
            return (None, *self.query_variants)
        return (None,)

    def regions(self, purpose: Purpose) -> tuple[int, ...]:
        return self.index_region_levels if purpose is Purpose.INDEX else ()

    @property
    def index_tag(self) -> str:
        """The database-side part of the model id, e.g. "db-rot90.rot180.rot270.hflip-reg2" ("" if none)."""
        parts = []
        if self.index_variants:
            parts.append(".".join(v.value for v in self.index_variants))
        if self.index_region_levels:
            parts.append("reg" + ".".join(str(n) for n in self.index_region_levels))
        return "db-" + "-".join(parts) if parts else ""
