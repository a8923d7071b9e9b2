"""An album's images one by one: metadata, bytes, thumbnail; listing, counting and deleting."""

from __future__ import annotations

import asyncio
import logging
import re
from dataclasses import replace

from services.common.errors import ImageNotFound, InvalidArgument, StoreUnavailable
from services.gateway import imaging
from services.gateway.blobstore import Blob, features_key, image_key, thumbnail_key
from services.gateway.deps import Deps
from services.gateway.records import ImageRecord, Item
from services.gateway.usecases.shared import image_record

log = logging.getLogger(__name__)

IMAGE_ID = re.compile(r"^[0-9a-f]{32}$")
MAX_LIST_LIMIT = 1000


async def stored_items(deps: Deps, album: str, image_id: str, with_vectors: bool = False) -> list[Item]:
    """The album's image of that id (a list of one); `ImageNotFound` if there is none."""
    if not IMAGE_ID.match(image_id or ""):
        raise ImageNotFound(f"no image {image_id[:80]!r} in album {album!r} (ids are 32 hex digits)")
    await deps.collection(album)
    items = await deps.search.get(album, [image_id], with_vectors=with_vectors)
    if not items:
        raise ImageNotFound(f"no image {image_id} in album {album!r}")
    return items


async def get_image(deps: Deps, album: str, image_id: str) -> ImageRecord:
    """The image's metadata, with the type and size of its stored bytes."""
    item = (await stored_items(deps, album, image_id))[0]
    info = await deps.blobs.stat(image_key(album, item.content_hash))
    record = image_record(album, item.id, item.name, item.content_hash, item.attributes_json, item.created_at_ms)
    return replace(record, content_type=info.content_type, size_bytes=info.size)


async def get_content(deps: Deps, album: str, image_id: str) -> Blob:
    item = (await stored_items(deps, album, image_id))[0]
    return await deps.blobs.get(image_key(album, item.content_hash))


async def get_thumbnail(deps: Deps, album: str, image_id: str, size: int | None = None) -> Blob:
    """A JPEG thumbnail, made on first request and kept in the store."""
    requested = size or deps.settings.thumbnail_size
    if not 1 <= requested <= imaging.THUMBNAIL_SIZES[-1]:
        raise InvalidArgument(f"thumbnail size must be between 1 and {imaging.THUMBNAIL_SIZES[-1]}")
    side = imaging.thumbnail_size(requested)
    item = (await stored_items(deps, album, image_id))[0]
    key = thumbnail_key(album, side, item.content_hash)
    try:
        return await deps.blobs.get(key)
    except ImageNotFound:
        pass
    original = await deps.blobs.get(image_key(album, item.content_hash))
    content = await asyncio.to_thread(imaging.make_thumbnail, original.content, side)
    try:
        await deps.blobs.put(key, content, "image/jpeg")
    except StoreUnavailable as exc:
        log.warning("thumbnail of %s not cached: %s", image_id, exc.message)
    return Blob(content, "image/jpeg")


async def list_images(deps: Deps, album: str, limit: int = 50, offset: int = 0) -> list[ImageRecord]:
    """A page of the album's images (content type and size are given by `get_image` only)."""
    if not 1 <= limit <= MAX_LIST_LIMIT or offset < 0:
        raise InvalidArgument(f"limit must be between 1 and {MAX_LIST_LIMIT} and offset at least 0")
    await deps.collection(album)
    items = await deps.search.list_items(album, limit, offset)
    return [image_record(album, i.id, i.name, i.content_hash, i.attributes_json, i.created_at_ms) for i in items]


async def delete_image(deps: Deps, album: str, image_id: str) -> bool:
    """Deletes the vector, then the blobs (a blob left over is only logged: the image is gone)."""
    item = (await stored_items(deps, album, image_id))[0]
    await deps.search.delete(album, [image_id])
    keys = [image_key(album, item.content_hash), features_key(album, item.content_hash),
            *(thumbnail_key(album, s, item.content_hash) for s in imaging.THUMBNAIL_SIZES)]
    try:
        await deps.blobs.delete(*keys)
    except StoreUnavailable as exc:
        log.warning("image %s deleted but its blobs were not: %s", image_id, exc.message)
    return True


async def count(deps: Deps, album: str) -> int:
    await deps.collection(album)
    return await deps.search.count(album)
