"""Recognising a photo by an album's label attribute: its label and a calibrated confidence, the nearest
labelled images as evidence, or `unknown` when the photo is of none of the album's labels.

The label attribute is a declared column (string, int, bool or list of strings) or an undeclared attribute.
The query's nearest labelled images (upright rows) vote; the calibration that turns votes into
probabilities and sets the open-set threshold is learned from the album's own labelled images
(services.gateway.recognition) on first use and kept until the album changes.
"""

from __future__ import annotations

import asyncio
import math
import time
from dataclasses import replace

import numpy as np

from services.common.errors import InvalidArgument, NoLabels, UnknownLabel
from services.common.filtering import ATTRIBUTE_KEY, Expr, Not, Op, Predicate, bind
from services.common.schema import ATTRIBUTES_PREFIX, ColumnType
from services.gateway.deps import Deps
from services.gateway.recognition import Calibration, Neighbour, calibrate, labels_of, recognise
from services.gateway.records import (
    CalibrationReport,
    Collection,
    Evidence,
    FaceBox,
    Hit,
    LabelScore,
    Query,
    RecognizeOutcome,
)
from services.gateway.usecases import faces as face_usecases
from services.gateway.usecases.images import stored_items
from services.gateway.usecases.search import describe_query
from services.gateway.usecases.shared import record_of

LABEL_TYPES = frozenset({ColumnType.STRING, ColumnType.INT, ColumnType.BOOL, ColumnType.STRING_LIST})
DEFAULT_EVIDENCE = 5
MAX_EVIDENCE = 50
MAX_CANDIDATES = 5
# Labelled images read per call when learning a calibration (ids, then vectors).
PAGE = 500
VECTOR_PAGE = 100


async def recognize(deps: Deps, album: str, query: Query, label: str, evidence: int = DEFAULT_EVIDENCE,
                    threshold: float | None = None, faces: bool = False) -> RecognizeOutcome:
    """The label of the album's `label` attribute the query photo most likely has, with its calibrated
    confidence and the nearest labelled images (at most `recognize_k`), or unknown (below the album's
    calibrated threshold, or `threshold` when given: a `known` probability between 0 and 1).

    With `faces` (an album that indexes faces), by the photo's largest face: its nearest labelled faces
    vote (e.g. label=person), and a photo whose nearest labelled face is farther than `face_match_distance`
    is of nobody the album knows."""
    started = time.perf_counter()
    _check_options(evidence, threshold)
    if sum(v is not None for v in (query.image, query.url, query.image_id)) != 1:
        raise InvalidArgument("give exactly one of: an image file, a url, an image_id")
    collection = await deps.collection(album)
    column, key = label_column(collection, label)
    condition = bind(Not(Predicate(column, Op.IS_NULL)), collection.schema)
    face_collection = await face_usecases.enabled(deps, album) if faces else None
    calibration = await album_calibration(deps, collection, column, key, condition, face_collection)
    face: FaceBox | None = None
    if face_collection is None:
        vector, model, exclude = await _query_vector(deps, collection, query)
        hits = await deps.search.search(album, vector, deps.settings.recognize_k, condition, exclude,
                                        primary_only=True)
    else:
        boxes, chosen, _, _, vector, exclude = await face_usecases.query_face(deps, album, face_collection, query)
        face = boxes[chosen] if chosen < len(boxes) else None
        model = face_collection.model
        hits = await _labelled_face_hits(deps, album, face_collection, vector, exclude)
    labelled = [(h, ls) for h in hits if (ls := labels_of(h.attributes.get(key)))]
    answer = recognise([Neighbour(h.distance, ls) for h, ls in labelled], calibration, deps.settings.recognize_tau,
                       threshold)
    candidates = [LabelScore(v.label, c, v.share, v.nearest)
                  for v, c in zip(answer.votes, answer.confidences, strict=True)][:MAX_CANDIDATES]
    unknown = not candidates or answer.unknown
    if face_collection is not None and labelled and labelled[0][0].distance > deps.settings.face_match_distance:
        unknown = True  # the nearest labelled face is another person's
    return RecognizeOutcome(
        album=album, attribute=label, model=model, took_ms=(time.perf_counter() - started) * 1000,
        label=None if unknown else candidates[0].label, unknown=unknown,
        confidence=candidates[0].confidence if candidates else 0.0, known=answer.known, threshold=answer.threshold,
        candidates=candidates,
        evidence=[Evidence(record_of(album, h), h.distance, ls) for h, ls in labelled[:evidence]],
        calibration=_report(calibration), face=face)


def label_column(collection: Collection, label: str) -> tuple[str, str]:
    """(the filter column of the label attribute, its key in an image's attributes)."""
    key = label.removeprefix(ATTRIBUTES_PREFIX) if isinstance(label, str) else ""
    if not key:
        raise InvalidArgument("name the label attribute to recognise by (label=...), e.g. label=category")
    column = collection.schema.get(key) if key == label else None
    if column is not None:
        if column.type not in LABEL_TYPES:
            allowed = ", ".join(sorted(t.value for t in LABEL_TYPES))
            raise InvalidArgument(f"column {key!r} of album {collection.name!r} is a {column.type.value}; a label "
                                  f"attribute is one of: {allowed}")
        return key, key
    if not ATTRIBUTE_KEY.fullmatch(key):
        raise InvalidArgument(f"{key[:80]!r} is not a valid attribute name (letters, digits, _; at most 64)")
    return ATTRIBUTES_PREFIX + key, key


async def _labelled_face_hits(deps: Deps, album: str, faces: Collection, vector: list[float],
                              exclude: list[str]) -> list[Hit]:
    """The album's images nearest by their nearest face, as hits carrying the album's attributes."""
    found = await deps.search.search(faces.name, vector, deps.settings.recognize_k, exclude_ids=exclude)
    images = {i.id: i for i in await deps.search.get(album, [h.id for h in found])} if found else {}
    return [Hit(id=h.id, name=images[h.id].name, distance=h.distance, attributes=images[h.id].attributes,
                content_hash=images[h.id].content_hash, created_at_ms=images[h.id].created_at_ms)
            for h in found if h.id in images]


async def album_calibration(deps: Deps, collection: Collection, column: str, key: str,
                            condition: Expr, faces: Collection | None = None) -> Calibration:
    """The album's calibration for the attribute: kept while the album is as it was (its model, how many
    labelled images it has, read at most every `recognize_state_check_s`; no update through this gateway),
    else learned again, by one request while the others wait for it."""
    within_s = deps.settings.recognize_state_check_s
    space = column if faces is None else f"{column} (faces)"
    kept = deps.calibrations.recent(collection.name, space, time.monotonic(), within_s)
    if kept is not None:
        return kept
    async with deps.calibrations.lock(collection.name, space):
        kept = deps.calibrations.recent(collection.name, space, time.monotonic(), within_s)
        return kept if kept is not None else await _checked_calibration(deps, collection, column, key, condition,
                                                                         faces)


async def _checked_calibration(deps: Deps, collection: Collection, column: str, key: str,
                               condition: Expr, faces: Collection | None = None) -> Calibration:
    """The kept calibration if the album's state is the one it was learned on, else a new one."""
    settings = deps.settings
    now = time.monotonic()
    space = column if faces is None else f"{column} (faces)"
    labelled = await deps.search.count(collection.name, condition)
    state = deps.calibrations.state(collection.name, collection.model, labelled)
    kept = deps.calibrations.get(collection.name, space, state, now, settings.recognize_calibration_ttl_s)
    if kept is not None:
        return kept
    vectors, labels = await _labelled_images(deps, collection.name, key, condition,
                                             faces.name if faces is not None else None)
    if not labels:
        raise _no_labels(collection, column, key)
    calibration = await asyncio.to_thread(calibrate, vectors, labels, settings.recognize_k, settings.recognize_tau,
                                          settings.recognize_known_rejection, settings.recognize_balance)
    deps.calibrations.put(collection.name, space, state, now, calibration)
    return calibration


async def _labelled_images(deps: Deps, album: str, key: str, condition: Expr,
                           faces: str | None = None) -> tuple[np.ndarray, list[tuple[str, ...]]]:
    """The upright vectors (with `faces`, the largest face's descriptor from that collection) and labels of
    up to `recognize_calibration_images` labelled images (by id: ids are content hashes, so a large album
    gives an unbiased sample)."""
    limit = deps.settings.recognize_calibration_images
    ids: list[str] = []
    after = ""
    while len(ids) < limit:
        want = min(PAGE, limit - len(ids))
        page = await deps.search.query(album, condition, want, 0, after)
        ids += [i.id for i in page if labels_of(i.attributes.get(key))]
        if len(page) < want:
            break
        after = page[-1].id
    vectors: list[list[float]] = []
    labels: list[tuple[str, ...]] = []
    for start in range(0, len(ids), VECTOR_PAGE):
        page_ids = ids[start:start + VECTOR_PAGE]
        items = await deps.search.get(album, page_ids, with_vectors=faces is None)
        if faces is not None:
            described = {f.id: f.vectors for f in await deps.search.get(faces, page_ids, with_vectors=True)}
            items = [replace(i, vectors=described.get(i.id, [])) for i in items]
        for item in items:
            if item.vectors and labels_of(item.attributes.get(key)):
                vectors.append(item.vectors[0])
                labels.append(labels_of(item.attributes.get(key)))
    return np.asarray(vectors, dtype=np.float32), labels


def _no_labels(collection: Collection, column: str, key: str) -> Exception:
    if collection.schema.get(column) is not None:
        return NoLabels(f"no image of album {collection.name!r} has a value of {key!r} yet: label some images "
                        f"first (PATCH /v1/albums/{collection.name}/images/{{id}} or UPDATE ... SET {key} = ...)")
    declared = ", ".join(collection.schema.names) or "none"
    return UnknownLabel(f"no image of album {collection.name!r} has an attribute {key!r} (declared columns: "
                        f"{declared}); label some images first, or name another attribute")


async def _query_vector(deps: Deps, collection: Collection, query: Query) -> tuple[list[float], str, list[str]]:
    """(the query's vector, its model, the ids the evidence leaves out: an album image is not its own)."""
    if query.image_id is not None:
        item = (await stored_items(deps, collection.name, query.image_id, with_vectors=True))[0]
        if not item.vectors:
            raise InvalidArgument(f"image {query.image_id} of album {collection.name!r} has no stored vector")
        return item.vectors[0], collection.model, [query.image_id]
    model = await deps.check_model(collection)
    content = query.image if query.image is not None else await deps.fetch_url(query.url or "")
    vector, _ = await describe_query(deps, content, model, collection.name)
    return vector, model, []


def _check_options(evidence: int, threshold: float | None) -> None:
    if not 0 <= evidence <= MAX_EVIDENCE:
        raise InvalidArgument(f"evidence must be between 0 and {MAX_EVIDENCE}, not {evidence}")
    if threshold is not None and not (math.isfinite(threshold) and 0 <= threshold <= 1):
        raise InvalidArgument(f"threshold must be a probability between 0 and 1, not {threshold}")


def _report(c: Calibration) -> CalibrationReport:
    return CalibrationReport(images=c.images, labels=c.labels, calibrated=c.confidence is not None, top1=c.top1,
                             known_rejected=c.known_rejected, unknown_rejected=c.unknown_rejected)
