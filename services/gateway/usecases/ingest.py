"""Adding images to an album: checked, embedded in one extractor call, then blobs, then vectors.

Writes are ordered so that no half state remains: an image's blob (and its local features) is written
before its vector (a blob without a vector is deleted again), and deleted after it.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import Mapping, Sequence, Set
from dataclasses import dataclass, replace

import numpy as np

from services.common.errors import (
    ImageSearchError,
    ImageTooLarge,
    InvalidArgument,
    InvalidAttributes,
    InvalidImage,
)
from services.common.json_text import json_object
from services.common.schema import CONTROL_CHARS
from services.gateway import imaging
from services.gateway.blobstore import NewBlob, features_key, image_key
from services.gateway.companions import companions_of
from services.gateway.deps import Deps
from services.gateway.records import (
    AddResult,
    AddStatus,
    Collection,
    Embedding,
    ImageFaces,
    Item,
    ItemFailure,
    JsonObject,
    NewImage,
    OnDuplicate,
)
from services.gateway.tags import with_tags
from services.gateway.usecases import faces as face_usecases
from services.gateway.usecases.images import delete_stored, forget_faces
from services.gateway.usecases.shared import (
    FEATURES_CONTENT_TYPE,
    embed_for_album,
    failure,
    image_id_of,
    item_error,
    meanwhile_if_slow,
    nearest_others,
    now_ms,
)

log = logging.getLogger(__name__)

MAX_NAME_CHARS = 512
# Which of an add's images the album has answers within milliseconds, unless the album is slow to say: a new one,
# which Milvus loads for 2-3 s after its creation (services.search.milvus_index), stalled the first add to it (and
# every import worker's first batch, whose claims ask it) with the extractor idle. An answer not given after
# this long has the images embedded meanwhile, those the album turns out to have as well (a repeated add's or
# import's answer comes fast: it embeds none of them). bench/e2e.py, 600 photos imported into a new album:
# 49.7 -> 59.7 images/s, ratio to the extractor alone 0.57 -> 0.69.
DESCRIBE_AFTER_S = 0.2


def parse_attributes(text: str) -> JsonObject:
    """A JSON object of attributes given as text (a form field); empty text means {}."""
    return json_object(text, "attributes", InvalidAttributes)


@dataclass(frozen=True)
class _Accepted:
    """An image that passed the gateway's checks and awaits its vector."""

    index: int
    name: str
    content_hash: str
    attributes: JsonObject
    content: bytes
    content_type: str

    @property
    def id(self) -> str:
        return image_id_of(self.content_hash)


async def add_images(deps: Deps, album: str, images: Sequence[NewImage], atomic: bool = False,
                     on_duplicate: OnDuplicate = OnDuplicate.KEEP,
                     present: Set[str] | None = None, described: Described | None = None) -> list[AddResult]:
    """Adds each image or reports why not; the batch is embedded in one call to the extractor. Declared
    attributes are checked against the album's columns (a wrong type fails that image alone). The same
    bytes twice are stored once; an image within `settings.near_duplicate_distance` of one in the album
    (or earlier in the batch) is added, skipped or put in its place, as `on_duplicate` says.

    `atomic` (SQL's INSERT): all or nothing; the first image that fails raises its error, naming it,
    before anything is written. `present`: which of the images' ids the album holds, when the caller has
    just asked (an import's batch), rather than asked again; `described`: the images embedded already
    (`describe`), rather than again."""
    if not images:
        raise InvalidArgument("no images given")
    if len(images) > deps.settings.max_images_per_request:
        raise InvalidArgument(f"{len(images)} images in one request; the limit is "
                              f"{deps.settings.max_images_per_request}")
    collection = await deps.collection(album)
    model = await deps.check_model(collection)
    results, accepted = _accept_all(deps, collection, images, atomic)
    stored: set[str] = set()
    if present is not None:
        stored = {a.id for a in accepted if a.id in present}
    elif accepted:
        lookup = deps.search.get(album, [a.id for a in accepted])
        if described is None:  # embedded meanwhile should the album be slow to answer
            found, described = await meanwhile_if_slow(
                lookup, lambda: _embed(deps, collection, model, {a.content_hash: a.content for a in accepted}),
                DESCRIBE_AFTER_S)
        else:
            found = await lookup
        stored = {i.id for i in found}
    fresh = []
    for item in accepted:
        if item.id in stored:
            results[item.index] = AddResult(item.index, item.name, AddStatus.DUPLICATE, item.id)
        else:
            fresh.append(item)
    for result in await _store(deps, collection, model, fresh, atomic, on_duplicate, described):
        results[result.index] = result
    return [results[i] for i in range(len(images))]


async def restore_images(deps: Deps, album: str, images: Sequence[NewImage],
                         on_duplicate: OnDuplicate = OnDuplicate.KEEP, described: Described | None = None
                         ) -> list[AddResult]:
    """Writes again what images the album holds may lack after an add of them stopped midway: their bytes,
    local features, faces and keypoint rows (an insert of their vectors raised, yet Milvus had applied it,
    and the add undid the rest), and, with `on_duplicate` replace, deletes the near-duplicates they were to
    replace if that add stopped before it did. Their rows (vectors, attributes taken over, time added)
    stay as they are: an import's retry of a batch its earlier try added (services.gateway.usecases.imports).
    Every write is by id or content hash, and nothing is undone on a failure: all of it belongs to images
    in the album. Answers "added" (or "replaced") for the first image of each bytes, "duplicate" for the
    others."""
    if not images:
        return []
    collection = await deps.collection(album)
    model = await deps.check_model(collection)
    results, accepted = _accept_all(deps, collection, images)
    embeddings, faces, fine = await _describe(deps, collection, model, accepted, described)
    items: list[tuple[_Accepted, Item, bytes]] = []
    for image, embedding in zip(accepted, embeddings, strict=True):
        if isinstance(embedding, ItemFailure):
            results[image.index] = AddResult(image.index, image.name, AddStatus.FAILED, image.id, embedding)
        else:
            item = Item(id=image.id, name=image.name, content_hash=image.content_hash, attributes=image.attributes,
                        created_at_ms=now_ms(), vectors=embedding.stored_vectors)  # for its companions' rows
            items.append((image, item, embedding.local_features[0] if embedding.local_features else b""))
    if items:
        await _write(deps, collection.name, items, faces, keypoints=fine, vectors=False)
    replaced: dict[str, str] = {}
    if items and on_duplicate is OnDuplicate.REPLACE:
        ours = {image.id for image, _, _ in items}
        near = await near_duplicates(deps, collection.name, [item for _, item, _ in items])
        replaced = {new: old for new, old in near.items() if old not in ours}
        if replaced:
            await delete_stored(deps, collection.name, sorted(set(replaced.values())))
    for image, _, _ in items:
        results[image.index] = AddResult(image.index, image.name,
                                         AddStatus.REPLACED if image.id in replaced else AddStatus.ADDED, image.id,
                                         near=replaced.get(image.id, ""))
    return [results[i] for i in range(len(images))]


def _accept_all(deps: Deps, collection: Collection, images: Sequence[NewImage], atomic: bool = False
                ) -> tuple[dict[int, AddResult], list[_Accepted]]:
    """The images that pass the checks, each bytes once; the results of the others (failed, duplicate)."""
    results: dict[int, AddResult] = {}
    accepted: list[_Accepted] = []
    seen: set[str] = set()
    for index, image in enumerate(images):
        try:
            item = _accept(deps, collection, index, image)
        except ImageSearchError as exc:
            if atomic:
                raise type(exc)(f"image {index + 1} ({image.name or 'unnamed'}): {exc.message}") from exc
            results[index] = AddResult(index, image.name, AddStatus.FAILED, error=failure(exc))
            continue
        if item.id in seen:
            results[index] = AddResult(index, item.name, AddStatus.DUPLICATE, item.id)
        else:
            seen.add(item.id)
            accepted.append(item)
    return results, accepted


def _accept(deps: Deps, collection: Collection, index: int, image: NewImage) -> _Accepted:
    if not image.content:
        raise InvalidImage("the file is empty")
    if len(image.content) > deps.settings.max_image_bytes:
        raise ImageTooLarge(f"{len(image.content)} bytes; the limit is {deps.settings.max_image_bytes}")
    if len(image.name) > MAX_NAME_CHARS:
        raise InvalidArgument(f"name is longer than {MAX_NAME_CHARS} characters")
    if CONTROL_CHARS.search(image.name):
        raise InvalidArgument("name contains a control character")
    if isinstance(image.attributes, InvalidAttributes):
        raise image.attributes
    if not isinstance(image.attributes, dict):
        raise InvalidAttributes("attributes must be a JSON object")
    content_hash = hashlib.sha256(image.content).hexdigest()
    name = image.name or content_hash
    return _Accepted(
        index=index,
        name=name,
        content_hash=content_hash,
        attributes=collection.schema.check(image.attributes, what=f"image {name!r}"),
        content=image.content,
        content_type=imaging.sniff_content_type(image.content, image.content_type),
    )


async def _store(deps: Deps, collection: Collection, model: str, images: list[_Accepted],
                 atomic: bool = False, on_duplicate: OnDuplicate = OnDuplicate.KEEP,
                 described: Described | None = None) -> list[AddResult]:
    """Embeds, then writes blobs, then vectors; on a failed write, what was written is undone."""
    if not images:
        return []
    embeddings, faces_by_id, fine = await _describe(deps, collection, model, images, described)
    results: list[AddResult] = []
    items: list[tuple[_Accepted, Item, bytes]] = []
    now = now_ms()
    for image, embedding in zip(images, embeddings, strict=True):
        if isinstance(embedding, ItemFailure) and atomic:
            raise item_error(ItemFailure(embedding.reason, f"image {image.index + 1} ({image.name}): "
                                                            f"{embedding.message}"))
        if isinstance(embedding, ItemFailure):
            results.append(AddResult(image.index, image.name, AddStatus.FAILED, image.id, embedding))
        else:
            attributes = with_tags(collection.schema, image.attributes, embedding.tags)
            item = Item(id=image.id, name=image.name, content_hash=image.content_hash,
                        attributes=attributes, created_at_ms=now, vectors=embedding.stored_vectors)
            items.append((image, item, embedding.local_features[0] if embedding.local_features else b""))
    near = await near_duplicates(deps, collection.name, [item for _, item, _ in items]) \
        if on_duplicate is not OnDuplicate.KEEP else {}
    if on_duplicate is OnDuplicate.SKIP:
        results.extend(AddResult(i.index, i.name, AddStatus.SKIPPED, i.id, near=near[i.id]) for i, _, _ in items
                       if i.id in near)
        items = [entry for entry in items if entry[0].id not in near]
    replaced = await _take_over(deps, collection.name, items, near) if near else {}
    if items:
        await _write(deps, collection.name, items, faces_by_id, keypoints=fine)
        results.extend(AddResult(i.index, i.name, AddStatus.REPLACED if i.id in replaced else AddStatus.ADDED, i.id,
                                 near=replaced.get(i.id, "")) for i, _, _ in items)
    if replaced:
        await delete_stored(deps, collection.name, [old for old in replaced.values() if old not in
                                                    {i.id for i, _, _ in items}])
    return results


@dataclass(frozen=True)
class Described:
    """Images embedded for an album ahead of their add, by the SHA-256 of their bytes: each one's embedding
    (or why it has none) and faces (an album indexing faces), and whether the album has a keypoint index
    (its images' local features made finer)."""

    embeddings: Mapping[str, Embedding | ItemFailure]
    faces: Mapping[str, ImageFaces]
    fine: bool


async def describe(deps: Deps, album: str, contents: Sequence[bytes]) -> Described:
    """The images embedded as an add into the album would embed them, for `add_images` or `restore_images`
    to be given: an import's batch embeds while it asks the album which images it has (services.gateway.
    usecases.imports)."""
    collection = await deps.collection(album)
    model = await deps.check_model(collection)
    return await _embed(deps, collection, model, {hashlib.sha256(content).hexdigest(): content for content in contents})


async def _describe(deps: Deps, collection: Collection, model: str, images: Sequence[_Accepted],
                    described: Described | None = None
                    ) -> tuple[list[Embedding | ItemFailure], dict[str, ImageFaces], bool]:
    """The images embedded for the album (with the finer local features of a keypoint index), their faces
    by image id where the album indexes faces, and whether it has a keypoint index; taken from `described`
    where it holds them all."""
    if described is None or any(i.content_hash not in described.embeddings for i in images):
        described = await _embed(deps, collection, model, {i.content_hash: i.content for i in images})
    return ([described.embeddings[i.content_hash] for i in images],
            {i.id: described.faces[i.content_hash] for i in images if i.content_hash in described.faces},
            described.fine)


async def _embed(deps: Deps, collection: Collection, model: str, images: Mapping[str, bytes]) -> Described:
    """The images (by content hash) embedded for the album, and their faces where it indexes faces (looked
    for while the network runs)."""
    contents = list(images.values())
    companions = await companions_of(deps.search, collection.name)
    fine = companions.keypoints is not None
    faces: list[ImageFaces] = []
    if companions.faces is None:
        embeddings = await embed_for_album(deps, collection, model, contents, fine)
    else:
        embeddings, faces = await asyncio.gather(
            embed_for_album(deps, collection, model, contents, fine),
            face_usecases.describe(deps, companions.faces, contents, to_store=True))
    return Described(dict(zip(images, embeddings, strict=True)),
                     dict(zip(images, faces, strict=True)) if companions.faces is not None else {}, fine)


async def near_duplicates(deps: Deps, album: str, items: Sequence[Item]) -> dict[str, str]:
    """New image id -> the id of an image it is a near-duplicate of: one in the album within the
    near-duplicate distance (by their upright rows; the image itself, in the album on an import's retry, is not
    one), or one earlier in the batch."""
    limit = deps.settings.near_duplicate_distance
    found: dict[str, str] = {}
    nearest = await nearest_others(deps.search, album, [(item.id, item.vectors[0]) for item in items], 1, limit)
    for item, hits in zip(items, nearest, strict=True):
        if hits:
            found[item.id] = hits[0].id
    vectors = np.asarray([item.vectors[0] for item in items], dtype=np.float32)
    if len(items) > 1:
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
        similar = vectors @ vectors.T
        for later in range(len(items)):
            for earlier in range(later):
                if items[later].id not in found and 1 - similar[later, earlier] <= limit and \
                        items[earlier].id not in found:
                    found[items[later].id] = items[earlier].id
                    break
    return found


async def _take_over(deps: Deps, album: str, items: list[tuple[_Accepted, Item, bytes]],
                     near: dict[str, str]) -> dict[str, str]:
    """For images replacing a near-duplicate in the album: the new image keeps the old one's attributes
    it does not set itself. Returns new id -> old id."""
    replacing = {i.id: near[i.id] for i, _, _ in items if i.id in near}
    old = {item.id: item for item in await deps.search.get(album, list(set(replacing.values())))}
    for position, (image, item, features) in enumerate(items):
        previous = old.get(replacing.get(image.id, ""))
        if previous is not None:
            merged = {**previous.attributes, **{k: v for k, v in item.attributes.items() if v is not None}}
            items[position] = (image, replace(item, attributes=merged), features)
    return {new: old_id for new, old_id in replacing.items() if old_id in old}


async def _write(deps: Deps, album: str, items: list[tuple[_Accepted, Item, bytes]],
                 faces: Mapping[str, ImageFaces] | None = None, keypoints: bool = False, vectors: bool = True) -> None:
    """Blobs (the image and its local features) first, then the faces (an album indexing them) and the
    keypoint rows (an album with a keypoint index), then the vectors; undone on a failure. Without
    `vectors` (images whose rows the album holds: `restore_images`) nothing is undone."""
    face_items = [f for _, item, _ in items if (found := (faces or {}).get(item.id)) is not None
                  and (f := face_usecases.face_item(item, found)) is not None]
    keypoint_items = deps.keypoints.items([(item, features) for _, item, features in items]) if keypoints else []
    blobs = [NewBlob(image_key(album, image.content_hash), image.content, image.content_type, image.name)
             for image, _, _ in items]
    blobs += [NewBlob(features_key(album, image.content_hash), features, FEATURES_CONTENT_TYPE)
              for image, _, features in items if features]
    keys = [blob.key for blob in blobs]
    inserting = False
    try:
        await deps.blobs.put_all(blobs)
        await face_usecases.write(deps, album, face_items)
        await deps.keypoints.write(album, keypoint_items)
        if not vectors:
            return
        inserting = True
        await deps.search.insert(album, [item for _, item, _ in items])
    except Exception:
        # An insert that raised may still have been applied (Milvus stopped after writing): its vectors are
        # deleted first, and the rest (faces, keypoint rows, blobs) only once they are gone, so that no image
        # is left in the album without its bytes or its rows.
        if vectors and (not inserting or await _forget_vectors(deps, album, [item.id for _, item, _ in items])):
            await _forget_faces(deps, album, [f.id for f in face_items])
            await _forget_keypoints(deps, album, [k.id for k in keypoint_items])
            await _forget_blobs(deps, keys)
        raise
    log.info("added %d image(s) to album %s", len(items), album)


async def _forget_faces(deps: Deps, album: str, ids: list[str]) -> None:
    try:
        await forget_faces(deps, album, ids)
    except ImageSearchError as exc:
        log.warning("could not delete the faces of %d image(s) of a failed add: %s", len(ids), exc.message)


async def _forget_keypoints(deps: Deps, album: str, ids: list[str]) -> None:
    try:
        await deps.keypoints.forget(album, ids)
    except ImageSearchError as exc:
        log.warning("could not delete the keypoint rows of %d image(s) of a failed add: %s", len(ids), exc.message)


async def _forget_vectors(deps: Deps, album: str, ids: list[str]) -> bool:
    """Deletes the vectors of a failed add's images; False (their blobs are then kept) if it cannot."""
    try:
        await deps.search.delete(album, ids)
    except ImageSearchError as exc:
        log.warning("a failed add of %d image(s) keeps their blobs: their vectors may be written and could not "
                    "be deleted: %s", len(ids), exc.message)
        return False
    return True


async def _forget_blobs(deps: Deps, keys: list[str]) -> None:
    try:
        await deps.blobs.delete(*keys)
    except ImageSearchError as exc:
        log.warning("could not delete %d blob(s) of a failed add: %s", len(keys), exc.message)
