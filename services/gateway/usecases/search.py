"""Searching an album by image: copies of the query ("copy") or images like it ("similar").

A copy search ranks the album by the query's upright vector and verifies the nearest few by their
keypoints. An album stores one row per image, so a rotated or mirrored copy is found from the query's
side: when no copy verifies, the query's variants (rotated a quarter, half and three quarters, and
mirrored; one network run each) search too, each album image ranked by the nearest of them, and the
nearest few are verified again. Keypoints need no variants: they match rotated copies, and a query's
features include its mirror image's.
"""

from __future__ import annotations

import asyncio
import hashlib
import math
import time
from dataclasses import dataclass

from services.common.errors import (
    ImageNotFound,
    ImageTooLarge,
    InvalidArgument,
    InvalidImage,
    ModelMismatch,
)
from services.common.filtering import Expr, Op, Predicate, conjoin
from services.common.local_features import LocalFeatures, Match
from services.gateway.deps import Deps, reembed_hint
from services.gateway.records import (
    NO_FILTER,
    EmbedPurpose,
    ImageFilter,
    Item,
    ItemFailure,
    Query,
    ScoredImage,
    SearchMode,
    SearchOutcome,
)
from services.gateway.regions import Region, crop
from services.gateway.usecases.images import stored_items
from services.gateway.usecases.shared import item_error, record_of
from services.gateway.verification import parse_features


def check_search_mode(mode: str) -> SearchMode:
    try:
        return SearchMode(mode)
    except ValueError:
        allowed = ", ".join(repr(m.value) for m in SearchMode)
        raise InvalidArgument(f"search mode {mode[:80]!r} is not one of {allowed}") from None


def check_max_distance(value: float | None) -> float | None:
    if value is not None and not (math.isfinite(value) and value >= 0):
        raise InvalidArgument(f"max_distance must be a number at least 0, not {value}")
    return value


async def search(
    deps: Deps, album: str, query: Query, top_k: int | None = None, filter: ImageFilter = NO_FILTER,
    mode: str = "copy", max_distance: float | None = None, region: Region | None = None,
) -> SearchOutcome:
    """The album's images nearest to the query image, nearest first: copies of it ("copy") or images
    like it ("similar"; see `SearchMode`), among those matching the filter and at most `max_distance`
    away (cosine distance; None: any). With a region, only that box of the query image searches (see
    `services.gateway.regions`)."""
    started = time.perf_counter()
    top_k = _check_top_k(deps, top_k)
    search_mode = check_search_mode(mode)
    check_max_distance(max_distance)
    primary_only, expand_k = _search_options(deps, search_mode)
    given = [v for v in (query.image, query.url, query.image_id) if v is not None]
    if len(given) != 1:
        raise InvalidArgument("give exactly one of: an image file, a url, an image_id")
    if region is not None and query.image_id is not None:
        raise InvalidArgument("a region needs the query image itself (a file or a url), not an image_id")
    verify = search_mode is SearchMode.COPY and deps.verifier.enabled
    # A new query image is embedded while the album is looked up (the extractor's model is checked
    # against the album's once both are known); the album's errors come first.
    described = asyncio.create_task(_describe(deps, query, album, verify, region)) if query.image_id is None else None
    try:
        collection = await deps.collection(album)
        condition = deps.filter_of(collection, filter)
        exclude: list[str] = []
        features: list[LocalFeatures] = []
        content: bytes | None = None
        if described is None:
            # The album's own vector: right whatever model the extractor runs now.
            item = await _stored_item(deps, album, query.image_id or "")
            vector, model = item.vectors[0], collection.model
            exclude.append(query.image_id or "")
            stored = await deps.verifier.stored(album, item.content_hash) if verify else None
            features = [stored] if stored is not None else []
        else:
            model = await deps.check_model(collection)
            content, vector, features = await described
    finally:
        if described is not None and not described.done():
            described.cancel()
        elif described is not None and not described.cancelled():
            described.exception()  # an error the album's came before is not logged as never retrieved
    fetch_k = max(top_k, deps.verifier.depth(features)) if verify else top_k
    nearest = Nearest(deps, album, fetch_k, condition, exclude, max_distance)
    hits = await deps.search.search(album, vector, fetch_k, condition, exclude, primary_only=primary_only,
                                    expand_k=expand_k, max_distance=max_distance)
    scored = [ScoredImage(record_of(album, h), h.distance) for h in hits]
    matches: dict[str, Match | None] = {}
    by_keypoints: dict[str, tuple[ScoredImage, Match]] = {}
    if verify:
        matches = await deps.verifier.check(album, features, scored)
        if deps.verifier.small(features):
            by_keypoints = await _keypoint_matches(deps, nearest, vector, features, set(matches))
            matches.update({image_id: m for image_id, (_, m) in by_keypoints.items()})
    if content is not None and search_mode is SearchMode.COPY and _tries_variants(deps, verify, matches, scored):
        variants = await _query_variants(deps, content, model, album)
        if variants:
            scored = await nearest.merged(scored, variants)
            if verify:
                matches = await deps.verifier.check(album, features, scored, known=matches)
    if verify:
        scored = _with_keypoint_matches(scored, matches, by_keypoints)
        scored = deps.verifier.rerank(scored, matches)
    scored = scored[:top_k]
    took_ms = (time.perf_counter() - started) * 1000
    return SearchOutcome(album=album, metric=collection.metric, model=model, took_ms=took_ms, hits=scored)


@dataclass(frozen=True)
class Nearest:
    """The nearest images of one search's album, filter and exclusions, for more query vectors."""

    deps: Deps
    album: str
    k: int
    condition: Expr | None
    exclude: list[str]
    max_distance: float | None

    async def merged(self, first: list[ScoredImage], vectors: list[list[float]]) -> list[ScoredImage]:
        """The `k` images nearest to any of the vectors or in `first`, each at its least distance: an
        album image is ranked by the query's nearest variant, as it would be by its own nearest row."""
        found = await asyncio.gather(*(
            self.deps.search.search(self.album, v, self.k, self.condition, self.exclude, max_distance=self.max_distance)
            for v in vectors))
        best = {s.image.id: s for s in first}
        for hit in (h for hits in found for h in hits):
            if hit.id not in best or hit.distance < best[hit.id].distance:
                best[hit.id] = ScoredImage(record_of(self.album, hit), hit.distance)
        return sorted(best.values(), key=lambda s: s.distance)[:self.k]


async def _keypoint_matches(deps: Deps, nearest: Nearest, vector: list[float], features: list[LocalFeatures],
                            checked: set[str]) -> dict[str, tuple[ScoredImage, Match]]:
    """The album images a small query's keypoints vote for (services.gateway.keypoint_index) that verify and
    were not `checked` already, each with its distance and match; only images of the album that the
    search's filter, exclusions and distance allow."""
    candidates = await deps.keypoints.candidates_of(nearest.album, features[0])
    ids = tuple(i for i in candidates if i not in checked)
    if not ids:
        return {}
    among = conjoin(nearest.condition, Predicate("id", Op.IN, ids))
    found = await deps.search.search(nearest.album, vector, len(ids), among, nearest.exclude,
                                     max_distance=nearest.max_distance)
    scored = [ScoredImage(record_of(nearest.album, h), h.distance) for h in found]
    matches = await deps.verifier.check_each(nearest.album, features, scored)
    return {s.image.id: (s, m) for s in scored
            if (m := matches[s.image.id]) is not None and m.verified(deps.verifier.min_matches)}


def _with_keypoint_matches(scored: list[ScoredImage], matches: dict[str, Match | None],
                           by_keypoints: dict[str, tuple[ScoredImage, Match]]) -> list[ScoredImage]:
    """The hits with the images verified by keypoints added (those the variants' search did not find
    again), for `rerank` to put among the verified."""
    present = {s.image.id for s in scored}
    return scored + [s for image_id, (s, _) in by_keypoints.items() if image_id not in present and image_id in matches]


def _tries_variants(deps: Deps, verify: bool, matches: dict[str, Match | None], upright: list[ScoredImage]) -> bool:
    """Whether a copy search also tries the query's rotated and mirrored variants (GatewaySettings.copy_variants):
    by default when none of the upright vector's nearest images verifies and the nearest is no near-duplicate
    (a copy too small or too blurred to have keypoints)."""
    when = deps.settings.copy_variants
    if when == "always":
        return True
    if when == "never" or not verify or deps.verifier.any_verified(matches):
        return False
    return not upright or upright[0].distance > deps.settings.near_duplicate_distance


async def _query_variants(deps: Deps, content: bytes, model: str, album: str) -> list[list[float]]:
    """The query's vectors rotated and mirrored (none if the model has no query variants), from the cache
    when the same bytes were turned before."""
    content_hash = hashlib.sha256(content).hexdigest()
    cached = await deps.cache.get_variants(model, content_hash)
    if cached is not None:
        return cached
    if not (await deps.model_info()).query_variants:
        return []
    batch = await deps.extractor.embed([content], EmbedPurpose.QUERY_VARIANTS)
    if batch.model != model:
        raise ModelMismatch(f"the extractor embedded with {batch.model!r}, the album holds {model!r}; "
                            f"{reembed_hint(album or 'A')}")
    variants = batch.results[0].variants
    await deps.cache.put_variants(model, content_hash, variants)
    return variants


def _search_options(deps: Deps, mode: SearchMode) -> tuple[bool, int]:
    """(primary_only, expand_k) of the search service for a mode."""
    if mode is SearchMode.SIMILAR:
        return True, deps.settings.similar_expand_k
    return False, 0


def _check_top_k(deps: Deps, top_k: int | None) -> int:
    value = deps.settings.default_top_k if top_k is None else top_k
    if not 1 <= value <= deps.settings.max_top_k:
        raise InvalidArgument(f"top_k must be between 1 and {deps.settings.max_top_k}, not {value}")
    return value


async def _describe(deps: Deps, query: Query, album: str, with_features: bool, region: Region | None = None
                    ) -> tuple[bytes, list[float], list[LocalFeatures]]:
    """A new query image's bytes (its region's, when given), vector and (when asked) local features,
    embedded with the extractor's model (whether it is the album's is checked by the caller)."""
    content = query.image if query.image is not None else await deps.fetch_url(query.url or "")
    if region is not None:
        content = await asyncio.to_thread(crop, content, region)
    try:
        vector, features = await describe_query(deps, content, (await deps.model_info()).model, album,
                                                with_features=with_features)
    except ModelMismatch:  # the extractor runs another model than it did when last asked
        vector, features = await describe_query(deps, content, (await deps.model_info(fresh=True)).model, album,
                                                with_features=with_features)
    return content, vector, features


async def describe_query(deps: Deps, content: bytes, model: str, album: str = "",
                         with_features: bool = False) -> tuple[list[float], list[LocalFeatures]]:
    """The query image's vector (and, when asked, its local features), from the cache when the same
    bytes were asked for before."""
    if not content:
        raise InvalidImage("the query image is empty")
    if len(content) > deps.settings.max_image_bytes:
        raise ImageTooLarge(f"{len(content)} bytes; the limit is {deps.settings.max_image_bytes}")
    content_hash = hashlib.sha256(content).hexdigest()
    cached = await deps.cache.get(model, content_hash)
    if cached is not None:
        cached_features = await deps.cache.get_features(content_hash) if with_features else b""
        if cached_features is not None:
            return cached, parse_features(cached_features)
    batch = await deps.extractor.embed([content], local_features=with_features)
    if batch.model != model:
        raise ModelMismatch(f"the extractor embedded with {batch.model!r}, the album holds {model!r}; "
                            f"{reembed_hint(album or 'A')}")
    result = batch.results[0]
    if result.vector is None:
        raise item_error(result.error or ItemFailure("invalid_image", "the extractor gave no vector"))
    features = b"".join(result.local_features)  # upright, mirrored: each serialisation knows its length
    await asyncio.gather(deps.cache.put(model, content_hash, result.vector),
                         deps.cache.put_features(content_hash, features) if with_features and features
                         else asyncio.sleep(0))
    return result.vector, parse_features(features)


async def embed_query(deps: Deps, content: bytes, model: str, album: str = "") -> list[float]:
    """The query image's vector, from the cache when the same bytes were asked for before."""
    return (await describe_query(deps, content, model, album))[0]


async def _stored_item(deps: Deps, album: str, image_id: str) -> Item:
    items = await stored_items(deps, album, image_id, with_vectors=True)
    if not items[0].vectors:
        raise ImageNotFound(f"image {image_id} of album {album!r} has no stored vector")
    return items[0]
