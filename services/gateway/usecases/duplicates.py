"""Near-duplicates of an album: groups of images within a distance of each other."""

from __future__ import annotations

from dataclasses import dataclass

from services.common.errors import InvalidArgument
from services.gateway.deps import Deps
from services.gateway.records import ImageRecord, Item
from services.gateway.usecases.shared import nearest_others, record_of

# Images read at once while walking the album, and neighbours looked at per image.
PAGE = 200
NEIGHBOURS = 10
MAX_DISTANCE = 2.0


@dataclass(frozen=True)
class DuplicateGroup:
    """Images linked by near-duplicate pairs; `distance` is the largest distance of such a pair."""

    images: list[ImageRecord]
    distance: float


def distance_limit(deps: Deps, max_distance: float | None) -> float:
    """The distance asked for, else the gateway's near-duplicate distance (the one imports skip by)."""
    return deps.settings.near_duplicate_distance if max_distance is None else max_distance


async def groups(deps: Deps, album: str, max_distance: float) -> list[DuplicateGroup]:
    """Every group of two or more images linked by pairs at most `max_distance` apart (upright vectors),
    the largest groups first. Walks the whole album: a page of images at a time, one search of many queries
    for each page's nearest images."""
    if not 0 <= max_distance <= MAX_DISTANCE:
        raise InvalidArgument(f"max_distance must be between 0 and {MAX_DISTANCE}")
    await deps.collection(album)
    parent: dict[str, str] = {}
    items: dict[str, Item] = {}
    widest: dict[str, float] = {}

    def root(image_id: str) -> str:
        while parent.setdefault(image_id, image_id) != image_id:
            parent[image_id] = parent[parent[image_id]]
            image_id = parent[image_id]
        return image_id

    after = ""
    while page := await deps.search.query(album, None, PAGE, after_id=after):
        after = page[-1].id
        stored = await deps.search.get(album, [i.id for i in page], with_vectors=True)
        items.update((i.id, i) for i in stored)
        described = [i for i in stored if i.vectors]
        found = await nearest_others(deps.search, album, [(item.id, item.vectors[0]) for item in described],
                                     NEIGHBOURS, max_distance)
        for item, hits in zip(described, found, strict=True):
            for hit in hits:
                a, b = root(item.id), root(hit.id)
                if a != b:
                    parent[a] = b
                for image_id in (item.id, hit.id):
                    widest[image_id] = max(widest.get(image_id, 0.0), hit.distance)
    members: dict[str, list[str]] = {}
    for image_id in parent:
        members.setdefault(root(image_id), []).append(image_id)
    result = []
    for ids in members.values():
        if len(ids) < 2:
            continue
        known = [items[i] for i in sorted(ids) if i in items]
        distance = max((widest.get(i, 0.0) for i in ids), default=0.0)
        result.append(DuplicateGroup([record_of(album, i) for i in known], distance))
    return sorted(result, key=lambda g: (-len(g.images), g.images[0].id))
