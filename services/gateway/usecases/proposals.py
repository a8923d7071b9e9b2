"""Searching an album by a query image and by the regions of it worth searching on their own.

The extractor proposes the regions (objects or salient parts of the query, read from the feature map
its vector comes from: `services.extractor.proposals`); the whole photo and each region are then
searched as `search.search` would search them, a region exactly as if its box had been given
(`region=x,y,w,h`), so a click on a proposed region shows what drawing that box would. The whole
photo is searched while the regions are proposed; the regions' searches run together. Each region
costs a search of its own (its crop, network run, keypoints and nearest images), so proposals are
asked for per request and ordinary searches keep their latency.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time

from services.common.errors import InvalidArgument
from services.gateway.deps import Deps
from services.gateway.records import (
    NO_FILTER,
    EmbedPurpose,
    ImageFilter,
    ItemFailure,
    Proposal,
    Query,
    RegionOutcome,
    SearchOutcome,
)
from services.gateway.regions import Region, box_of, shown_size
from services.gateway.usecases.search import search
from services.gateway.usecases.shared import item_error

# Regions one search may propose and search.
MAX_PROPOSALS = 5


async def search_with_proposals(
    deps: Deps, album: str, query: Query, proposals: int, top_k: int | None = None,
    filter: ImageFilter = NO_FILTER, mode: str = "copy", max_distance: float | None = None,
) -> SearchOutcome:
    """`search.search` of the whole query image, with up to `proposals` regions of it proposed and each
    searched on its own (`SearchOutcome.regions`, best region first)."""
    started = time.perf_counter()
    if not 1 <= proposals <= MAX_PROPOSALS:
        raise InvalidArgument(f"proposals must be between 1 and {MAX_PROPOSALS}, not {proposals}")
    if query.image_id is not None or (query.image is None) == (query.url is None):
        raise InvalidArgument("proposals need the query image itself: give exactly one of a file or a url")
    content = query.image if query.image is not None else await deps.fetch_url(query.url or "")
    whole_photo = Query(image=content)
    whole, found = await asyncio.gather(search(deps, album, whole_photo, top_k, filter, mode, max_distance),
                                        _proposed(deps, content, proposals))
    if not whole.hits and max_distance is None:  # no image matches (an empty album): no region would find one
        found = []
    outcomes = await asyncio.gather(*(search(deps, album, whole_photo, top_k, filter, mode, max_distance,
                                             region=region) for region, _ in found))
    regions = [RegionOutcome((r.x, r.y, r.width, r.height), round(score, 4), outcome.hits)
               for (r, score), outcome in zip(found, outcomes, strict=True)]
    return dataclasses.replace(whole, regions=regions, took_ms=(time.perf_counter() - started) * 1000)


async def _proposed(deps: Deps, content: bytes, count: int) -> list[tuple[Region, float]]:
    """The extractor's proposals for the image, as regions in its pixels, best first."""
    batch = await deps.extractor.embed([content], EmbedPurpose.QUERY, proposals=count)
    result = batch.results[0]
    if result.vector is None:
        raise item_error(result.error or ItemFailure("invalid_image", "the extractor gave no vector"))
    size = await asyncio.to_thread(shown_size, content)
    return [(region, p.score) for p in result.proposals[:count] if (region := _region(p, size)) is not None]


def _region(p: Proposal, size: tuple[int, int]) -> Region | None:
    return box_of(p.x, p.y, p.width, p.height, size)
