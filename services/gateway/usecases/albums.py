"""Albums: create (recording the extractor's model, and what the album keeps beside its vectors: faces, a
keypoint index), list, describe, delete."""

from __future__ import annotations

import asyncio
import logging

from services.common.errors import FaceModelUnavailable, StoreUnavailable
from services.common.schema import NO_COLUMNS, AlbumSchema
from services.gateway.blobstore import album_prefix
from services.gateway.companions import (
    FACES_SUFFIX,
    KEYPOINTS_SUFFIX,
    companions_of,
    faces_collection,
    is_companion,
)
from services.gateway.deps import Deps, check_album_name
from services.gateway.records import Album, Collection
from services.gateway.usecases import faces as face_usecases

log = logging.getLogger(__name__)


def album_of(c: Collection, face_model: str = "", details: bool = False) -> Album:
    return Album(name=c.name, image_count=c.count, model=c.model, dim=c.dim, metric=c.metric,
                 created_at_ms=c.created_at_ms, schema=c.schema, face_model=face_model, details=details)


async def create(deps: Deps, name: str, schema: AlbumSchema = NO_COLUMNS, faces: bool = False,
                 details: bool = False) -> Album:
    """Creates an empty album with these declared columns, recording the extractor's model (with `faces`,
    indexing the faces of its images; with `details`, keeping a keypoint index of them, so that a close-up
    of a detail finds its image); AlreadyExists if the name is taken."""
    check_album_name(name)
    schema = AlbumSchema.of(schema.columns)
    info = await deps.model_info(fresh=True)
    if faces and not info.face_model:
        raise FaceModelUnavailable("the extractor has no face models installed (dlib-bin and "
                                   "face_recognition_models; scripts/setup.sh installs them)")
    collection = await deps.search.create_collection(name, info.dim, info.model, schema)
    face_model = ""
    try:
        if details:
            await deps.keypoints.create(name)
        if faces:
            face_model = await face_usecases.enable(deps, name)
    except BaseException:
        await deps.keypoints.drop(name)
        await deps.search.drop_collection(name)  # no album half made
        raise
    log.info("created album %s (model %s, dim %d, columns %s%s%s)", name, info.model, info.dim, schema.names,
             ", faces" if faces else "", ", keypoint index" if details else "")
    return album_of(collection, face_model, details)


async def list_all(deps: Deps) -> list[Album]:
    collections = await deps.search.list_collections()
    faces = {c.name.removesuffix(FACES_SUFFIX): c.model for c in collections
             if c.name.endswith(FACES_SUFFIX)}
    details = {c.name.removesuffix(KEYPOINTS_SUFFIX) for c in collections if c.name.endswith(KEYPOINTS_SUFFIX)}
    return sorted((album_of(c, faces.get(c.name, ""), c.name in details) for c in collections
                   if not is_companion(c.name)), key=lambda a: a.name)


async def get(deps: Deps, name: str) -> Album:
    collection, companions = await asyncio.gather(deps.collection(name, with_count=True),
                                                  companions_of(deps.search, name))
    return album_of(collection, companions.faces.model if companions.faces is not None else "",
                    companions.keypoints is not None)


async def delete(deps: Deps, name: str) -> bool:
    """Drops the album's faces, keypoints and vectors, then its blobs (left over blobs are only logged)."""
    await deps.collection(name)
    await deps.search.drop_collection(faces_collection(name))
    await deps.keypoints.drop(name)
    await deps.search.drop_collection(name)
    try:
        removed = await deps.blobs.delete_prefix(album_prefix(name))
    except StoreUnavailable as exc:
        log.warning("album %s dropped but its blobs were not deleted: %s", name, exc.message)
    else:
        log.info("deleted album %s and %d blob(s)", name, removed)
    return True
