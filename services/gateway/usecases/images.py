"""An album's images: one image's metadata, bytes and thumbnail; listing, counting and grouping them;
changing their attributes without re-embedding; deleting them with their faces and blobs."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import replace
from typing import Any

from services.common.errors import ImageNotFound, InvalidArgument, NotFound, StoreUnavailable
from services.common.filtering import bind, conjoin
from services.gateway import imaging
from services.gateway.blobstore import Blob, features_key, image_key, thumbnail_key
from services.gateway.companions import faces_collection
from services.gateway.deps import Deps
from services.gateway.records import FIRST_PAGE, NO_FILTER, GroupCount, ImageFilter, ImageRecord, Item, Listing
from services.gateway.tags import check_word, tag_filter, tags_set_by_hand
from services.gateway.usecases.shared import record_of

log = logging.getLogger(__name__)

IMAGE_ID = re.compile(r"[0-9a-f]{32}")
MAX_LIST_LIMIT = 1000
# Offsets are 64-bit on the wire; ordering by a column sorts every match, so no real offset comes near.
MAX_OFFSET = 2**62
# Images read per step of an export.
EXPORT_PAGE = 1000
# Images deleted per step of a delete by filter (their vectors, then their blobs).
DELETE_BATCH = 500


def check_image_id(album: str, image_id: str) -> str:
    if not isinstance(image_id, str) or not IMAGE_ID.fullmatch(image_id):
        raise ImageNotFound(f"no image {str(image_id)[:80]!r} in album {album!r} (ids are 32 hex digits)")
    return image_id


async def stored_items(deps: Deps, album: str, image_id: str, with_vectors: bool = False) -> list[Item]:
    """The album's image of that id (a list of one); `ImageNotFound` if there is none."""
    check_image_id(album, image_id)
    await deps.collection(album)
    items = await deps.search.get(album, [image_id], with_vectors=with_vectors)
    if not items:
        raise ImageNotFound(f"no image {image_id} in album {album!r}")
    return items


async def get_image(deps: Deps, album: str, image_id: str) -> ImageRecord:
    """The image's metadata, with the type and size of its stored bytes."""
    item = (await stored_items(deps, album, image_id))[0]
    info = await deps.blobs.stat(image_key(album, item.content_hash))
    return replace(record_of(album, item), content_type=info.content_type, size_bytes=info.size)


async def get_content(deps: Deps, album: str, image_id: str) -> Blob:
    item = (await stored_items(deps, album, image_id))[0]
    return await deps.blobs.get(image_key(album, item.content_hash))


async def get_thumbnail(deps: Deps, album: str, image_id: str, size: int | None = None) -> Blob:
    """A JPEG thumbnail, made on first request and kept in the store."""
    requested = deps.settings.thumbnail_size if size is None else size
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


def next_after(listing: Listing, listed: list[ImageRecord]) -> str | None:
    """The `after` of the page that follows a full page by id (None: the last page, or ordered by a column,
    which pages on by offset)."""
    return listed[-1].id if len(listed) == listing.limit and not listing.order_by else None


async def list_images(deps: Deps, album: str, listing: Listing = FIRST_PAGE) -> list[ImageRecord]:
    """A page of the album's images matching the filter (and tagged with `listing.tag`'s labels), by id
    (from after `listing.after`, for albums of any size) or ordered by a column (content type and size are
    given by `get_image` only). A word no label has finds only images tagged with it by hand."""
    if not 1 <= listing.limit <= MAX_LIST_LIMIT:
        raise InvalidArgument(f"limit must be between 1 and {MAX_LIST_LIMIT}, not {listing.limit}")
    if not 0 <= listing.offset <= MAX_OFFSET:
        raise InvalidArgument(f"offset must be 0 or more (and under 2**62), not {listing.offset}")
    if listing.nulls_first is not None and not listing.order_by:
        raise InvalidArgument("nulls says where images without a value of order_by go: give order_by too")
    if listing.after:
        check_image_id(album, listing.after)
        if listing.order_by:
            raise InvalidArgument("after pages by id; with order_by, page with offset")
    collection = await deps.collection(album)
    expr = deps.filter_of(collection, listing.filter)
    if listing.tag is not None:
        found = tag_filter(collection.schema, (await deps.lexicon()).tag_values(check_word(listing.tag)))
        if found is None:
            return []
        expr = conjoin(expr, bind(found, collection.schema))
    items = await deps.search.query(album, expr, listing.limit, listing.offset, listing.after, listing.order_by,
                                    listing.descending, nulls_first=listing.nulls_first)
    return [record_of(album, i) for i in items]


async def export(deps: Deps, album: str, filter: ImageFilter = NO_FILTER,
                 tag: str | None = None) -> AsyncIterator[list[ImageRecord]]:
    """Every image matching the filter (and tagged with `tag`'s labels), by id, a page at a time (albums of any
    size: each page is read after the last id of the one before). The first page is read at the first step, so a
    missing album or a bad filter fails there."""
    after: str | None = ""
    while after is not None:
        listing = Listing(filter=filter, limit=EXPORT_PAGE, after=after, tag=tag)
        page = await list_images(deps, album, listing)
        if page:
            yield page
        after = next_after(listing, page)


async def count(deps: Deps, album: str, filter: ImageFilter = NO_FILTER) -> int:
    """How many images the album has, or how many match the filter."""
    collection = await deps.collection(album)
    return await deps.search.count(album, deps.filter_of(collection, filter))


async def count_groups(deps: Deps, album: str, columns: Sequence[str],
                       filter: ImageFilter = NO_FILTER) -> list[GroupCount]:
    """How many (matching) images have each combination of the columns' values, most first."""
    if not columns:
        raise InvalidArgument("name at least one column to group by")
    collection = await deps.collection(album)
    return await deps.search.count_groups(album, columns, deps.filter_of(collection, filter))


async def update_image(deps: Deps, album: str, image_id: str, changes: Mapping[str, Any]) -> ImageRecord:
    """Changes one image's attributes (and name; None clears a declared column or removes an undeclared
    attribute); its vectors, blobs and local features are untouched. Returns the image as it is now."""
    collection = await deps.collection(album)
    await stored_items(deps, album, image_id)
    await deps.search.update(album, tags_set_by_hand(collection.schema, changes), ids=[image_id])
    deps.calibrations.changed(album)
    return await get_image(deps, album, image_id)


async def update_images(deps: Deps, album: str, changes: Mapping[str, Any], filter: ImageFilter = NO_FILTER,
                        all: bool = False) -> int:
    """Changes the attributes of the images matching the filter (or all of them, said explicitly with
    `all`); returns how many. Nothing changes when a value does not suit its column."""
    collection = await deps.collection(album)
    selected = _selection(deps, collection, filter, all, "update")
    updated = await deps.search.update(album, tags_set_by_hand(collection.schema, changes), filter=selected,
                                       all=selected is None)
    deps.calibrations.changed(album)
    log.info("updated %d image(s) of album %s: %s", updated, album, sorted(changes))
    return updated


async def delete_image(deps: Deps, album: str, image_id: str) -> bool:
    """Deletes the vector, then the blobs (a blob left over is only logged: the image is gone)."""
    await stored_items(deps, album, image_id)
    await delete_stored(deps, album, [image_id])
    return True


async def delete_stored(deps: Deps, album: str, ids: Sequence[str]) -> int:
    """Deletes these images of the album: their vectors, then their blobs. Returns how many there were."""
    items = await deps.search.get(album, ids) if ids else []
    if not items:
        return 0
    deleted = await deps.search.delete(album, [i.id for i in items])
    await forget_faces(deps, album, [i.id for i in items])
    await deps.keypoints.forget(album, [i.id for i in items])
    await _delete_blobs(deps, album, items)
    return deleted


async def delete_images(deps: Deps, album: str, filter: ImageFilter = NO_FILTER, all: bool = False) -> int:
    """Deletes the images matching the filter (every image only when `all` says so), a batch at a time:
    their vectors, then their blobs, local features and thumbnails. Returns how many.

    A batch's blobs are deleted while the next batch's vectors are (S3 takes ~1 s per 500 images' keys,
    about what the vector store takes for them)."""
    collection = await deps.collection(album)
    selected = _selection(deps, collection, filter, all, "delete")
    deleted = 0
    blobs: asyncio.Task[None] | None = None
    try:
        while batch := await deps.search.query(album, selected, DELETE_BATCH):
            deleted += await deps.search.delete(album, [i.id for i in batch])
            await forget_faces(deps, album, [i.id for i in batch])
            await deps.keypoints.forget(album, [i.id for i in batch])
            if blobs is not None:
                await blobs
            blobs = asyncio.create_task(_delete_blobs(deps, album, batch))
    finally:
        if blobs is not None:
            await blobs
    log.info("deleted %d image(s) of album %s", deleted, album)
    return deleted


def _selection(deps: Deps, collection: Any, filter: ImageFilter, all: bool, what: str) -> Any:
    """The bound filter of an update or delete; None for every image, which must be asked for with `all`."""
    if filter and all:
        raise InvalidArgument(f"{what}: give a filter or all, not both")
    if not filter and not all:
        raise InvalidArgument(f"{what} without a filter would touch every image of album {collection.name!r}; "
                              "say so explicitly (the API's all=true, or delete_all=true with SQL; the CLI's --all or "
                              "--delete-all; WHERE TRUE in SQL) or give a filter")
    return deps.filter_of(collection, filter) if filter else None


async def forget_faces(deps: Deps, album: str, ids: Sequence[str]) -> None:
    """Deletes the faces of these images (nothing if the album indexes none)."""
    if ids:
        with contextlib.suppress(NotFound):  # the album indexes no faces
            await deps.search.delete(faces_collection(album), list(ids))


async def _delete_blobs(deps: Deps, album: str, items: Sequence[Item]) -> None:
    keys = [key for item in items for key in (
        image_key(album, item.content_hash), features_key(album, item.content_hash),
        *(thumbnail_key(album, s, item.content_hash) for s in imaging.THUMBNAIL_SIZES))]
    try:
        await deps.blobs.delete(*keys)
    except StoreUnavailable as exc:
        log.warning("%d image(s) deleted but their blobs were not: %s", len(items), exc.message)
