"""The keypoint index: a copy search's candidates found by the query's keypoints, not by its vector.

A detail cut out of a photo (a tower of a castle, a face in a painting) is another picture to the
network: its global vector does not rank its photo among the nearest hundred. Its keypoints still
match the photo's keypoints of that part. So an album made with `details` keeps its images' keypoint
descriptors in a companion collection of the search service, "<album>.keypoints": one item per image,
one row per keypoint (the SIFT descriptors of its stored local features, which the extractor then
makes finer: EmbedRequest.fine_local_features). It costs ~400 rows (~200 KB) per image and ~1.6x the
ingest work, so it is a choice per album, off by default. A small query's keypoints search it in
one call; each keypoint's `votes` nearest images get one vote each, and the `candidates` most voted
are verified geometrically like the vector's nearest (services/gateway/verification.py). An image's
rows are written before its vectors and deleted with it, like its faces: rows of an add that failed
half-way are never shown (a candidate must be an image of the album) and are written over by the
add that succeeds. Measured in bench/research/detail_keypoints.py and bench/README.md ("Part and whole").
"""

from __future__ import annotations

import contextlib
import logging
from collections import Counter
from collections.abc import Sequence

import numpy as np

from services.common.errors import AlreadyExists, NotFound
from services.common.local_features import LocalFeatures, LocalFeaturesError
from services.gateway.clients import VectorSearch
from services.gateway.companions import companion, keypoints_collection
from services.gateway.records import Item

log = logging.getLogger(__name__)

# SIFT's descriptor length: the companion collection's dimension.
KEYPOINT_DIM = 128
# Whose keypoints the companion holds (its "model"): the descriptor, not the network.
KEYPOINT_MODEL = "sift-u8-128"


def descriptor_rows(features: LocalFeatures, limit: int = 0) -> list[list[float]]:
    """The features' descriptors as vectors (at most `limit`, evenly spread over the keypoints, when given:
    OpenCV lists them by position, so a spread keeps every part of the image), less any of zero length
    (the search service refuses a vector without direction)."""
    descriptors = features.matchable
    if limit and len(descriptors) > limit:
        descriptors = descriptors[np.linspace(0, len(descriptors) - 1, limit).round().astype(int)]
    kept = descriptors[np.any(descriptors > 0, axis=1)]
    rows: list[list[float]] = kept.astype(np.float32).tolist()  # 2x faster than float() a value at a time
    return rows


def keypoints_item(image: Item, serialised: bytes, limit: int = 0) -> Item | None:
    """The companion's item of an album image from its serialised local features: one row per keypoint
    (None: the image has no readable keypoints)."""
    try:
        rows = descriptor_rows(LocalFeatures.from_bytes(serialised), limit) if serialised else []
    except LocalFeaturesError as exc:
        log.debug("no keypoint rows for %s: %s", image.id, exc)
        return None
    if not rows:
        return None
    return Item(id=image.id, name="", content_hash=image.content_hash, attributes={},
                created_at_ms=image.created_at_ms, vectors=rows)


class KeypointIndex:
    """An album's keypoint companion: created with the album (or by a re-embed), written and deleted with
    its images, asked for the candidates of a small query."""

    def __init__(self, search: VectorSearch, votes: int, candidates: int, max_rows: int) -> None:
        self.search = search
        self.votes = votes
        self.candidates = candidates
        self.max_rows = max_rows

    async def create(self, album: str) -> None:
        """Gives an album its (empty) keypoint companion."""
        await self.search.create_collection(keypoints_collection(album), KEYPOINT_DIM, KEYPOINT_MODEL)

    async def ensure(self, album: str) -> None:
        """Gives an album made without one its keypoint companion (a re-embed fills it)."""
        if await companion(self.search, keypoints_collection(album)) is None:
            with contextlib.suppress(AlreadyExists):
                await self.create(album)

    def items(self, images: Sequence[tuple[Item, bytes]]) -> list[Item]:
        """The companion's items of album images given with their serialised local features."""
        found = (keypoints_item(image, features, self.max_rows) for image, features in images)
        return [item for item in found if item is not None]

    async def write(self, album: str, items: Sequence[Item]) -> None:
        """Writes the items into the album's companion (nothing if it has gone: the album was deleted)."""
        if items:
            with contextlib.suppress(NotFound):
                await self.search.insert(keypoints_collection(album), list(items))

    async def forget(self, album: str, ids: Sequence[str]) -> None:
        """Deletes the rows of these images (nothing if the album has no companion)."""
        if ids:
            with contextlib.suppress(NotFound):
                await self.search.delete(keypoints_collection(album), list(ids))

    async def drop(self, album: str) -> None:
        await self.search.drop_collection(keypoints_collection(album))

    async def candidates_of(self, album: str, query: LocalFeatures) -> list[str]:
        """The ids of the album images the query's keypoints vote for most, most votes first (none when
        the album has no keypoint index or the query has no keypoints)."""
        rows = descriptor_rows(query)
        if not rows:
            return []
        try:
            found = await self.search.search_many(keypoints_collection(album), rows, self.votes)
        except NotFound:
            return []
        tally = Counter(hit.id for hits in found for hit in hits)
        return [image_id for image_id, _ in tally.most_common(self.candidates)]
