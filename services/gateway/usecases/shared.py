"""Pieces more than one use case needs: image ids, records as the API shows them, album embeddings."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import TypeVar

from services.common.errors import ERRORS_BY_REASON, ImageSearchError, InvalidImage, ModelMismatch
from services.gateway.clients import VectorSearch
from services.gateway.deps import Deps, reembed_hint
from services.gateway.records import (
    Collection,
    Embedding,
    EmbedPurpose,
    Hit,
    ImageRecord,
    Item,
    ItemFailure,
    JsonObject,
)

# Stored local features are opaque bytes to the object store.
FEATURES_CONTENT_TYPE = "application/octet-stream"

T = TypeVar("T")
U = TypeVar("U")


def image_id_of(content_hash: str) -> str:
    """An image's id: the first 32 hex digits (128 bits) of the SHA-256 of its bytes."""
    return content_hash[:32]


def now_ms() -> int:
    return int(time.time() * 1000)


async def nearest_others(search: VectorSearch, album: str, images: Sequence[tuple[str, Sequence[float]]], count: int,
                         max_distance: float) -> list[list[Hit]]:
    """For each image (its id and upright vector): the `count` images of the album nearest to it by their upright
    rows, at most `max_distance` away, nearest first, the image itself left out (it may be in the album). One
    search of many queries for them all: a search per image cost Milvus and the search service ~10x the CPU
    (bench/near_duplicate_lookups.py)."""
    if not images:
        return []
    found = await search.search_many(album, [vector for _, vector in images], count + 1, primary_only=True)
    return [[hit for hit in hits if hit.id != image and hit.distance <= max_distance][:count]
            for (image, _), hits in zip(images, found, strict=True)]


def failure(exc: ImageSearchError) -> ItemFailure:
    return ItemFailure(exc.reason, exc.message)


def item_error(failed: ItemFailure) -> ImageSearchError:
    """The error an item's failure stands for (invalid_image when its reason is unknown)."""
    return ERRORS_BY_REASON.get(failed.reason, InvalidImage)(failed.message)


def image_record(album: str, image_id: str, name: str, content_hash: str, attributes: JsonObject,
                 created_at_ms: int) -> ImageRecord:
    """An album's image as the API shows it, with the gateway paths of its bytes and thumbnail."""
    base = f"/v1/albums/{album}/images/{image_id}"
    return ImageRecord(album=album, id=image_id, name=name, content_hash=content_hash, attributes=attributes,
                       created_at_ms=created_at_ms, url=f"{base}/content", thumbnail_url=f"{base}/thumbnail")


def record_of(album: str, item: Item | Hit) -> ImageRecord:
    return image_record(album, item.id, item.name, item.content_hash, item.attributes, item.created_at_ms)


async def embed_for_album(deps: Deps, collection: Collection, model: str, contents: list[bytes],
                          fine: bool = False) -> list[Embedding | ItemFailure]:
    """Each image's rows to store (upright global vector first) and local features (`fine`: made finer, for
    an album with a keypoint index), or why it has none."""
    batch = await deps.extractor.embed(contents, EmbedPurpose.INDEX, local_features=True, fine_local_features=fine)
    if batch.model != model:
        raise ModelMismatch(f"the extractor embedded with {batch.model!r}, album {collection.name!r} "
                            f"holds {model!r}; {reembed_hint(collection.name)}")
    out: list[Embedding | ItemFailure] = []
    for embedding in batch.results:
        rows = embedding.stored_vectors
        if not rows:
            out.append(embedding.error or ItemFailure("invalid_image", "the extractor gave no vector"))
        elif any(len(row) != collection.dim for row in rows):
            raise ModelMismatch(f"the extractor gave {len(rows[0])} dimensions, album "
                                f"{collection.name!r} holds {collection.dim}; {reembed_hint(collection.name)}")
        else:
            out.append(embedding)
    return out


async def meanwhile_if_slow(first: Awaitable[T], second: Callable[[], Awaitable[U]], after_s: float
                            ) -> tuple[T, U | None]:
    """`first`'s answer, and `second`'s if `first` had not answered within `after_s`: started then, to run beside
    it (None when it was not started). On an error or a cancellation, the one still running is stopped and
    waited for."""
    leading = asyncio.ensure_future(first)
    following: asyncio.Future[U] | None = None
    try:
        done, _ = await asyncio.wait({leading}, timeout=after_s)
        if not done:
            following = asyncio.ensure_future(second())
        answer = await leading
        return answer, await following if following is not None else None
    finally:
        tasks = [task for task in (leading, following) if task is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
