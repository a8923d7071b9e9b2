"""Re-embedding an album from its stored bytes with the extractor's current model."""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import replace

from services.common.errors import ImageNotFound
from services.gateway.blobstore import features_key, image_key
from services.gateway.deps import Deps
from services.gateway.records import Collection, Item, ItemFailure, ReembedReport
from services.gateway.usecases.shared import FEATURES_CONTENT_TYPE, embed_for_album

log = logging.getLogger(__name__)

# Items listed per call while reading the album.
PAGE = 1000


async def reembed_album(deps: Deps, name: str) -> ReembedReport:
    """Re-embeds every image of the album from its stored bytes with the extractor's current model,
    then recreates the album's vectors under that model (names, attributes and times kept).

    No vector is changed until every image is embedded, so a failure (extractor down, model changed
    under us) leaves the album searchable as it was (local features, which depend on the image
    alone, are rewritten batch by batch). Images whose bytes cannot be read or embedded are left
    out of the new album and reported. While the old model's album is refused by add_images, no
    image can be added meanwhile; re-embedding an album already of the current model is allowed
    but should not run alongside adds to it.
    """
    started = time.perf_counter()
    old = await deps.collection(name)
    info = await deps.model_info(fresh=True)
    target = Collection(name=name, dim=info.dim, metric=old.metric, model=info.model,
                        created_at_ms=old.created_at_ms, count=0, schema=old.schema)
    items, failed = await _reembedded_items(deps, target, await _all_items(deps, name))
    await deps.search.drop_collection(name)
    await deps.search.create_collection(name, info.dim, info.model, old.schema)
    for start in range(0, len(items), deps.settings.max_images_per_request):
        await deps.search.insert(name, items[start:start + deps.settings.max_images_per_request])
    log.info("re-embedded album %s: %d image(s) from %s to %s, %d failed", name, len(items), old.model,
             info.model, len(failed))
    return ReembedReport(album=name, model=info.model, dim=info.dim, previous_model=old.model,
                         images=len(items), failed=failed, took_s=time.perf_counter() - started)


async def _all_items(deps: Deps, album: str) -> list[Item]:
    """Every item's metadata, a page at a time by id (any number of them)."""
    items: list[Item] = []
    while page := await deps.search.query(album, None, PAGE, after_id=items[-1].id if items else ""):
        items.extend(page)
    return items


async def _reembedded_items(
    deps: Deps, target: Collection, items: list[Item]
) -> tuple[list[Item], list[tuple[str, ItemFailure]]]:
    """The items with their new vectors (a batch of blobs at a time), and those that failed. Each
    batch's local features are stored as it is embedded: they depend on the image alone, so the
    album as it is keeps working with them, and only a batch of them is held at a time."""
    done: list[Item] = []
    failed: list[tuple[str, ItemFailure]] = []
    batch_size = deps.settings.ingest_batch_size  # one Embed call each, well inside the RPC timeout
    for start in range(0, len(items), batch_size):
        batch = items[start:start + batch_size]
        blobs = await asyncio.gather(*(deps.blobs.get(image_key(target.name, i.content_hash)) for i in batch),
                                     return_exceptions=True)
        readable: list[tuple[Item, bytes]] = []
        for item, blob in zip(batch, blobs, strict=True):
            if isinstance(blob, ImageNotFound):
                failed.append((item.id, ItemFailure(blob.reason, blob.message)))
            elif isinstance(blob, BaseException):
                raise blob
            else:
                readable.append((item, blob.content))
        if not readable:
            continue
        rows = await embed_for_album(deps, target, target.model, [content for _, content in readable])
        features: dict[str, bytes] = {}
        for (item, _), embedding in zip(readable, rows, strict=True):
            if isinstance(embedding, ItemFailure):
                failed.append((item.id, embedding))
            else:
                done.append(replace(item, vectors=embedding.stored_vectors))
                if embedding.local_features:
                    features[item.content_hash] = embedding.local_features[0]
        await _put_features(deps, target.name, features)
    return done, failed


async def _put_features(deps: Deps, album: str, features: dict[str, bytes]) -> None:
    """Stores re-made local features; one that cannot be written only leaves its image unverified."""
    puts = [deps.blobs.put(features_key(album, h), f, FEATURES_CONTENT_TYPE) for h, f in features.items()]
    failed = [o for o in await asyncio.gather(*puts, return_exceptions=True) if isinstance(o, BaseException)]
    if failed:
        log.warning("album %s: %d image(s) re-embedded without stored local features: %s", album, len(failed),
                    failed[0])
