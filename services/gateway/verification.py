"""Geometric verification of a copy search's nearest images.

The search service ranks by global vectors; among the few nearest, the copy of the query is the
image whose stored keypoints the query's keypoints match under one affine map. `CopyVerifier`
reads those images' local features from the object store, counts the matches in worker threads
(OpenCV and numpy release the GIL) and re-ranks: verified images first (at least `min_matches`
inliers, and a majority of their tentative matches below 20: `Match.verified`), most first, then
the rest in the search service's order. An image without stored features (added before they
existed, or its blob unreadable) is simply not verified; the search never fails for it.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import replace

from services.common.errors import ImageSearchError
from services.common.local_features import (
    LocalFeatures,
    LocalFeaturesError,
    Match,
    best_match,
    verified_order,
)
from services.gateway.blobstore import Blobs, features_key
from services.gateway.records import ScoredImage

log = logging.getLogger(__name__)


def parse_features(serialised: bytes) -> list[LocalFeatures]:
    """The query's features (upright, mirrored), serialised one after the other; none if unreadable
    (the search then goes on unverified)."""
    try:
        return LocalFeatures.all_from_bytes(serialised)
    except LocalFeaturesError as exc:
        log.warning("query features ignored: %s", exc)
        return []


class CopyVerifier:
    """Re-ranks the first `top` hits of a copy search by verified keypoint matches."""

    def __init__(self, blobs: Blobs, top: int, min_matches: int) -> None:
        self.blobs = blobs
        self.top = top
        self.min_matches = min_matches

    @property
    def enabled(self) -> bool:
        return self.top > 0

    async def stored(self, album: str, content_hash: str) -> LocalFeatures | None:
        """An album image's stored features, or None when it has none that can be read."""
        try:
            blob = await self.blobs.get(features_key(album, content_hash))
            return LocalFeatures.from_bytes(blob.content)
        except (ImageSearchError, LocalFeaturesError) as exc:
            log.debug("no local features for %s in %s: %s", content_hash, album, exc)
            return None

    async def rerank(self, album: str, query: list[LocalFeatures], hits: list[ScoredImage]) -> list[ScoredImage]:
        """The hits with the first `top` re-ranked by verification and given their match counts."""
        head, tail = hits[:self.top], hits[self.top:]
        if not query or not head:
            return hits
        stored = await asyncio.gather(*(self.stored(album, h.image.content_hash) for h in head))
        matches = await asyncio.gather(*(self._match(query, s) for s in stored))
        order = verified_order(list(matches), self.min_matches)
        checked = [replace(head[i], matches=matches[i].inliers if stored[i] is not None else None) for i in order]
        return checked + tail

    @staticmethod
    async def _match(query: list[LocalFeatures], candidate: LocalFeatures | None) -> Match:
        if candidate is None:
            return Match()
        return await asyncio.to_thread(best_match, query, candidate)
