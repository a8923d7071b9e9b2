"""The search-service collections that go with an album: "<album>.faces" holds its faces (usecases/faces.py),
"<album>.keypoints" its images' keypoint descriptors (keypoint_index.py).

A companion is never shown as an album (a gateway album name has no "."), and goes when its album goes.
"""

from __future__ import annotations

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
