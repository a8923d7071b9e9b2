"""Faces of an album: found in each image as it is added, searched by a portrait.

An album that indexes faces (chosen when it is created) has a companion collection in the search
service, "<album>.faces": one item per image that shows a face, one row per face (the extractor's face
descriptor, largest face first), the faces' boxes and landmarks in its attributes. A face search ranks
the album's images by their face nearest to the query's face (cosine distance of the descriptors) and
keeps those within `face_match_distance`: the images where that person appears, with the box of the
face that matched.

Face rows are written before the image's vectors (as its blobs are) and deleted with them, so an image
of the album always has its faces; rows of an image whose add failed half-way are never shown (a face
hit must be an image of the album) and are written over by the add that succeeds.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from dataclasses import replace

from services.common.errors import (
    FaceModelUnavailable,
    FacesNotEnabled,
    InvalidArgument,
    NoFaceFound,
)
from services.gateway.companions import FACES_SUFFIX, companion, faces_collection
from services.gateway.deps import Deps
from services.gateway.records import (
    Collection,
    FaceBox,
    FaceHit,
    FaceSearchOutcome,
    ImageFaces,
    Item,
    JsonObject,
    Query,
)
from services.gateway.regions import Region, crop, shown_size
from services.gateway.usecases.images import stored_items
from services.gateway.usecases.search import check_max_distance
from services.gateway.usecases.shared import item_error, record_of

log = logging.getLogger(__name__)

# Faces listed per image in an item's attributes, beside the image's size (the frame of the boxes).
FACES_KEY = "faces"
# Images to be stored are described this many a call, one call after the other: the extractor finds faces one
# image at a time, an add's in turns with face searches, and 256 of them in one call outlasted the call's
# deadline while searches kept coming (bench/search_during_import.py --faces --during add).
FACES_PER_CALL = 32


async def faces_of(deps: Deps, album: str) -> Collection | None:
    """The album's face collection; None if the album does not index faces."""
    return await companion(deps.search, faces_collection(album))


async def enable(deps: Deps, album: str) -> str:
    """Makes a new album index faces (its face collection, empty); returns the face model's id."""
    info = await deps.model_info(fresh=True)
    if not info.face_model:
        raise FaceModelUnavailable("the extractor has no face models installed (dlib-bin and "
                                   "face_recognition_models; scripts/setup.sh installs them)")
    await deps.search.create_collection(faces_collection(album), info.face_dim, info.face_model)
    log.info("album %s indexes faces (%s)", album, info.face_model)
    return info.face_model


async def describe(deps: Deps, faces: Collection, contents: Sequence[bytes], to_store: bool = False
                   ) -> list[ImageFaces]:
    """Each image's faces by the album's face model (`FaceModelUnavailable` if the extractor runs none);
    `to_store`: images to be stored (an add's, an import's, a re-embed's), not a face search's; described
    `FACES_PER_CALL` a call."""
    per_call = FACES_PER_CALL if to_store else max(len(contents), 1)
    found: list[ImageFaces] = []
    for start in range(0, len(contents), per_call):
        batch = await deps.extractor.describe_faces(contents[start:start + per_call], to_store=to_store)
        if batch.model != faces.model:
            raise FaceModelUnavailable(f"the extractor describes faces with {batch.model!r}, album "
                                       f"{faces.name.removesuffix(FACES_SUFFIX)!r} holds faces of {faces.model!r}")
        found.extend(batch.results)
    return found


def face_item(item: Item, found: ImageFaces) -> Item | None:
    """The face collection's item of an image: one row per face (None: it shows no face)."""
    if not found.faces:
        return None
    attributes: JsonObject = {"width": found.width, "height": found.height,
                              FACES_KEY: [_box_json(f.box) for f in found.faces]}
    return Item(id=item.id, name=item.name, content_hash=item.content_hash, attributes=attributes,
                created_at_ms=item.created_at_ms, vectors=[f.descriptor for f in found.faces])


async def write(deps: Deps, album: str, items: Sequence[Item]) -> None:
    if items:
        await deps.search.insert(faces_collection(album), list(items))


async def image_faces(deps: Deps, album: str, image_id: str) -> tuple[list[FaceBox], int, int]:
    """The faces found in one image of the album: (boxes, image width, image height)."""
    await enabled(deps, album)
    await stored_items(deps, album, image_id)
    items = await deps.search.get(faces_collection(album), [image_id])
    if not items:
        return [], 0, 0
    attributes = items[0].attributes
    return ([_box_of(b) for b in attributes.get(FACES_KEY, [])], int(attributes.get("width", 0)),
            int(attributes.get("height", 0)))


async def search_faces(deps: Deps, album: str, query: Query, top_k: int | None = None,
                       max_distance: float | None = None, face: int = 0,
                       region: Region | None = None) -> FaceSearchOutcome:
    """The album's images where the person of the query's face appears, nearest first: each ranked by its
    face nearest to it, within `max_distance` (default `face_match_distance`). `face` chooses which of the
    query's faces (0: the largest)."""
    started = time.perf_counter()
    top_k = deps.settings.default_top_k if top_k is None else top_k
    if not 1 <= top_k <= deps.settings.max_top_k:
        raise InvalidArgument(f"top_k must be between 1 and {deps.settings.max_top_k}, not {top_k}")
    limit = check_max_distance(max_distance)
    limit = deps.settings.face_match_distance if limit is None else limit
    faces = await enabled(deps, album)
    boxes, chosen, width, height, descriptor, exclude = await query_face(deps, album, faces, query, face, region)
    hits = await deps.search.search(faces.name, descriptor, top_k, exclude_ids=exclude, max_distance=limit)
    albums_images = {i.id: i for i in await deps.search.get(album, [h.id for h in hits])} if hits else {}
    found = []
    for hit in hits:
        image = albums_images.get(hit.id)
        matched = hit.attributes.get(FACES_KEY, [])
        if image is None or hit.row >= len(matched):
            continue  # faces of an image whose add did not finish
        found.append(FaceHit(record_of(album, image), hit.distance, _box_of(matched[hit.row]),
                             int(hit.attributes.get("width", 0)), int(hit.attributes.get("height", 0))))
    return FaceSearchOutcome(album=album, model=faces.model, took_ms=(time.perf_counter() - started) * 1000,
                             faces=boxes, face=chosen, width=width, height=height, max_distance=limit, hits=found)


async def query_face(deps: Deps, album: str, faces: Collection, query: Query, face: int = 0,
                     region: Region | None = None
                     ) -> tuple[list[FaceBox], int, int, int, list[float], list[str]]:
    """The query's faces and the one chosen: (boxes, its index, width, height, its descriptor, the ids a
    search leaves out: an album image is not its own match)."""
    given = [v for v in (query.image, query.url, query.image_id) if v is not None]
    if len(given) != 1:
        raise InvalidArgument("give exactly one of: an image file, a url, an image_id")
    if face < 0:
        raise InvalidArgument(f"face must be 0 (the largest) or more, not {face}")
    if query.image_id is not None:
        if region is not None:
            raise InvalidArgument("a region needs the query image itself (a file or a url), not an image_id")
        await stored_items(deps, album, query.image_id)
        items = await deps.search.get(faces.name, [query.image_id], with_vectors=True)
        if not items or not items[0].vectors:
            raise NoFaceFound(f"image {query.image_id} of album {album!r} shows no face the detector found")
        attributes = items[0].attributes
        boxes = [_box_of(b) for b in attributes.get(FACES_KEY, [])]
        chosen = _chosen(face, len(items[0].vectors))
        return (boxes, chosen, int(attributes.get("width", 0)), int(attributes.get("height", 0)),
                items[0].vectors[chosen], [query.image_id])
    photo = query.image if query.image is not None else await deps.fetch_url(query.url or "")
    if not photo:
        raise InvalidArgument("the query image is empty")
    content = photo if region is None else await asyncio.to_thread(crop, photo, region)
    found = (await describe(deps, faces, [content]))[0]
    if found.error is not None:
        raise item_error(found.error)
    if not found.faces:
        raise NoFaceFound(f"no face found in the query image ({found.width} x {found.height} px): the detector "
                          "finds frontal faces at least ~5 % of the image's longer side (about 40 px at 800 px); "
                          "try a closer or larger photo of the face")
    chosen = _chosen(face, len(found.faces))
    boxes, (width, height) = [f.box for f in found.faces], (found.width, found.height)
    if region is not None:  # in the photo's pixels, as the region was given, not the cut part's
        boxes = [_in_photo(b, region, found.width, found.height) for b in boxes]
        width, height = shown_size(photo)
    return boxes, chosen, width, height, found.faces[chosen].descriptor, []


def _in_photo(box: FaceBox, region: Region, cut_width: int, cut_height: int) -> FaceBox:
    """A face found in the cut region (`cut_width` x `cut_height`: the region, made smaller if it was large) where
    it is in the whole photo."""
    sx, sy = region.width / max(cut_width, 1), region.height / max(cut_height, 1)
    return replace(box, x=region.x + round(box.x * sx), y=region.y + round(box.y * sy), width=round(box.width * sx),
                   height=round(box.height * sy),
                   landmarks=tuple((region.x + x * sx, region.y + y * sy) for x, y in box.landmarks))


def _chosen(face: int, count: int) -> int:
    if face >= count:
        raise InvalidArgument(f"face {face} asked for, but the query image shows {count} face(s) (0 to {count - 1})")
    return face


async def enabled(deps: Deps, album: str) -> Collection:
    """The album's face collection; `FacesNotEnabled` if it indexes no faces."""
    await deps.collection(album)
    faces = await faces_of(deps, album)
    if faces is None:
        raise FacesNotEnabled(f"album {album!r} does not index faces: re-embed it with faces on, which finds the "
                              f"faces of the images it holds (POST /v1/albums/{album}/reembed?faces=true, "
                              f"`imagesearch reembed --album {album} --faces`, the page's Re-embed...)")
    return faces


def _box_json(box: FaceBox) -> JsonObject:
    return {"x": box.x, "y": box.y, "width": box.width, "height": box.height, "score": box.score,
            "landmarks": [[x, y] for x, y in box.landmarks]}


def _box_of(value: object) -> FaceBox:
    data = value if isinstance(value, dict) else {}
    return FaceBox(int(data.get("x", 0)), int(data.get("y", 0)), int(data.get("width", 0)),
                   int(data.get("height", 0)), float(data.get("score", 0.0)),
                   tuple((float(p[0]), float(p[1])) for p in data.get("landmarks", [])))
