"""Searching by a photo and by the regions the extractor proposes, over in-memory fakes."""

from __future__ import annotations

import pytest

from services.common.errors import InvalidArgument
from services.gateway.records import NewImage, Proposal, Query, ScoredImage
from services.gateway.regions import Region
from services.gateway.usecases import albums, ingest, search
from services.gateway.usecases.proposals import MAX_PROPOSALS, search_with_proposals
from tests.gateway.conftest import MakeFakes
from tests.gateway.fakes import Fakes, png

pytestmark = pytest.mark.anyio

SIDE = 64  # the query's width and height


@pytest.fixture()
async def fakes(make_fakes: MakeFakes) -> Fakes:
    f = make_fakes(max_image_bytes=100_000)
    await albums.create(f.deps, "demo")
    await ingest.add_images(f.deps, "demo", [NewImage(png(seed, SIDE), f"{seed}.png") for seed in range(4)])
    f.extractor.proposals = [Proposal(0.5, 0.0, 0.5, 0.5, 0.7), Proposal(0.0, 0.25, 0.5, 0.75, 0.4),
                             Proposal(0.0, 0.0, 0.05, 0.05, 0.1)]  # the last is 3 pixels a side
    return f


def ids(hits: list[ScoredImage]) -> list[str]:
    return [h.image.id for h in hits]


async def test_each_proposed_region_is_searched_as_its_box_would_be(fakes: Fakes) -> None:
    query = png(9, SIDE)
    outcome = await search_with_proposals(fakes.deps, "demo", Query(image=query), 3, top_k=3)
    whole = await search.search(fakes.deps, "demo", Query(image=query), 3)
    assert ids(outcome.hits) == ids(whole.hits)
    assert [(r.box, r.score) for r in outcome.regions] == [((32, 0, 32, 32), 0.7), ((0, 16, 32, 48), 0.4)]
    for region in outcome.regions:
        boxed = await search.search(fakes.deps, "demo", Query(image=query), 3, region=Region(*region.box))
        assert ids(region.hits) == ids(boxed.hits) and region.hits


async def test_no_more_regions_than_asked_and_none_when_nothing_stands_out(fakes: Fakes) -> None:
    outcome = await search_with_proposals(fakes.deps, "demo", Query(image=png(9, SIDE)), 1)
    assert [r.box for r in outcome.regions] == [(32, 0, 32, 32)]
    fakes.extractor.proposals = []
    outcome = await search_with_proposals(fakes.deps, "demo", Query(image=png(9, SIDE)), 3)
    assert outcome.regions == [] and outcome.hits


async def test_no_region_is_proposed_where_no_image_could_be_found(fakes: Fakes) -> None:
    """An empty album, or a filter no image matches: the whole photo finds nothing, so no region is offered (the
    page said "0 results · 1 region proposed: click one"); with a max_distance a region may find what the whole did
    not, so they are searched."""
    await albums.create(fakes.deps, "empty")
    outcome = await search_with_proposals(fakes.deps, "empty", Query(image=png(9, SIDE)), 3)
    assert (outcome.hits, outcome.regions) == ([], [])
    far = await search_with_proposals(fakes.deps, "demo", Query(image=png(9, SIDE)), 3, max_distance=0.0)
    assert len(far.regions) == 2


async def test_a_url_query_is_fetched_once_for_the_photo_and_its_regions(fakes: Fakes) -> None:
    fakes.fetcher.pages["http://x/q.png"] = png(9, SIDE)
    by_url = await search_with_proposals(fakes.deps, "demo", Query(url="http://x/q.png"), 2)
    by_bytes = await search_with_proposals(fakes.deps, "demo", Query(image=png(9, SIDE)), 2)
    assert [ids(r.hits) for r in by_url.regions] == [ids(r.hits) for r in by_bytes.regions]


@pytest.mark.parametrize("count", [0, -1, MAX_PROPOSALS + 1])
async def test_a_count_out_of_range_is_an_invalid_argument(fakes: Fakes, count: int) -> None:
    with pytest.raises(InvalidArgument):
        await search_with_proposals(fakes.deps, "demo", Query(image=png(9, SIDE)), count)


async def test_proposals_need_the_photo_itself_not_an_image_id(fakes: Fakes) -> None:
    listed = await search.search(fakes.deps, "demo", Query(image=png(1, SIDE)), 1)
    with pytest.raises(InvalidArgument):
        await search_with_proposals(fakes.deps, "demo", Query(image_id=listed.hits[0].image.id), 2)
