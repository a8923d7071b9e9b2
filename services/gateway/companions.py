"""The search-service collections that go with an album: "<album>.faces" holds its faces (usecases/faces.py),
"<album>.keypoints" its images' keypoint descriptors (keypoint_index.py). Each is chosen per album (when it
is made, or by a re-embed that adds it), so what an album has is read from the search service.

A companion is never shown as an album (a gateway album name has no "."), and goes when its album goes.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from services.common.errors import NotFound
from services.gateway.clients import VectorSearch
from services.gateway.records import Collection

FACES_SUFFIX = ".faces"
KEYPOINTS_SUFFIX = ".keypoints"


def faces_collection(album: str) -> str:
    """The search service's collection of the album's faces."""
    return album + FACES_SUFFIX


def keypoints_collection(album: str) -> str:
    """The search service's collection of the album's keypoint descriptors."""
    return album + KEYPOINTS_SUFFIX


def is_companion(name: str) -> bool:
    """Whether a search-service collection is an album's companion rather than an album."""
    return "." in name


@dataclass(frozen=True)
class Companions:
    """What an album keeps beside its vectors: its face collection (None: it does not index faces) and its
    keypoint index (None: it has none)."""

    faces: Collection | None = None
    keypoints: Collection | None = None


async def companion(search: VectorSearch, name: str) -> Collection | None:
    """A companion collection, None if there is none."""
    try:
        return await search.get_collection(name, with_count=False)
    except NotFound:
        return None


async def companions_of(search: VectorSearch, album: str) -> Companions:
    """The album's companions, asked for at once."""
    faces, keypoints = await asyncio.gather(companion(search, faces_collection(album)),
                                            companion(search, keypoints_collection(album)))
    return Companions(faces, keypoints)
