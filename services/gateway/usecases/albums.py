"""Albums: create (recording the extractor's model), list, describe, delete."""

from __future__ import annotations

import logging

from services.common.errors import StoreUnavailable
from services.common.schema import NO_COLUMNS, AlbumSchema
from services.gateway.blobstore import album_prefix
from services.gateway.deps import Deps, check_album_name
from services.gateway.records import Album, Collection

log = logging.getLogger(__name__)


def album_of(c: Collection) -> Album:
    return Album(name=c.name, image_count=c.count, model=c.model, dim=c.dim, metric=c.metric,
                 created_at_ms=c.created_at_ms, schema=c.schema)


async def create(deps: Deps, name: str, schema: AlbumSchema = NO_COLUMNS) -> Album:
    """Creates an empty album with these declared columns, recording the extractor's model; AlreadyExists
    if the name is taken."""
    check_album_name(name)
    schema = AlbumSchema.of(schema.columns)
    info = await deps.model_info(fresh=True)
    collection = await deps.search.create_collection(name, info.dim, info.model, schema)
    log.info("created album %s (model %s, dim %d, columns %s)", name, info.model, info.dim, schema.names)
    return album_of(collection)


async def list_all(deps: Deps) -> list[Album]:
    return sorted((album_of(c) for c in await deps.search.list_collections()), key=lambda a: a.name)


async def get(deps: Deps, name: str) -> Album:
    return album_of(await deps.collection(name, with_count=True))


async def delete(deps: Deps, name: str) -> bool:
    """Drops the album's vectors, then its blobs (left over blobs are only logged)."""
    await deps.collection(name)
    await deps.search.drop_collection(name)
    try:
        removed = await deps.blobs.delete_prefix(album_prefix(name))
    except StoreUnavailable as exc:
        log.warning("album %s dropped but its blobs were not deleted: %s", name, exc.message)
    else:
        log.info("deleted album %s and %d blob(s)", name, removed)
    return True
