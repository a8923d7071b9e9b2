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
    """Re-ranks the first `top` hits of a copy search by verified keypoint matches (the first `small_top`
    for a query photo whose longer side is under `small_side` pixels, when `small_top` is set)."""

    def __init__(self, blobs: Blobs, top: int, min_matches: int, small_top: int = 0, small_side: int = 0) -> None:
        self.blobs = blobs
        self.top = top
        self.min_matches = min_matches
        self.small_top = small_top
        self.small_side = small_side

    def depth(self, query: list[LocalFeatures]) -> int:
        """How many of the nearest images a query with these features is verified against."""
        return max(self.top, self.small_top) if self.small(query) and self.top > 0 else self.top

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

    async def check(self, album: str, query: list[LocalFeatures], hits: list[ScoredImage],
                    known: dict[str, Match | None] | None = None) -> dict[str, Match | None]:
        """The matches of the first `top` hits by image id (None: the image has no readable features), those
        in `known` taken from it rather than matched again."""
        return await self.check_each(album, query, hits[:self.depth(query)], known)

    async def check_each(self, album: str, query: list[LocalFeatures], head: list[ScoredImage],
                         known: dict[str, Match | None] | None = None) -> dict[str, Match | None]:
        """The matches of every one of the hits (`check` without its depth: candidates found otherwise)."""
        known = known or {}
        if not query:
            return {h.image.id: known.get(h.image.id) for h in head}
        todo = [h for h in head if h.image.id not in known]
        stored = await asyncio.gather(*(self.stored(album, h.image.content_hash) for h in todo))
        found = await asyncio.gather(*(self._match(query, s) for s in stored))
        checked = {h.image.id: (m if s is not None else None) for h, s, m in zip(todo, stored, found, strict=True)}
        return {h.image.id: known[h.image.id] if h.image.id in known else checked[h.image.id] for h in head}

    def small(self, query: list[LocalFeatures]) -> bool:
        """Whether the query photo is small: a detail, a thumbnail (its longer side under `small_side`)."""
        return bool(query) and max(query[0].width, query[0].height) < self.small_side

    def any_verified(self, matches: dict[str, Match | None]) -> bool:
        return any(m is not None and m.verified(self.min_matches) for m in matches.values())

    def rerank(self, hits: list[ScoredImage], matches: dict[str, Match | None]) -> list[ScoredImage]:
        """The hits with those checked (`check`) re-ranked by verification, given their match counts, and
        the rest after them in the search service's order."""
        head = [h for h in hits if h.image.id in matches]
        tail = [h for h in hits if h.image.id not in matches]
        found = [matches[h.image.id] or Match() for h in head]
        order = verified_order(found, self.min_matches)
        checked = [replace(head[i], matches=found[i].inliers if matches[head[i].image.id] is not None else None)
                   for i in order]
        return checked + tail

    @staticmethod
    async def _match(query: list[LocalFeatures], candidate: LocalFeatures | None) -> Match:
        if candidate is None:
            return Match()
        return await asyncio.to_thread(best_match, query, candidate)
