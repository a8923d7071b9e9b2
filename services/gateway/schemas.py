"""The JSON shapes of the HTTP API (they make its OpenAPI document), built from the domain records."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, WithJsonSchema

from services.common.schema import AlbumSchema, Column, ColumnType, to_json
from services.gateway.deps import ALBUM_NAME
from services.gateway.import_queue import ImportJob, ImportStatus
from services.gateway.records import (
    AddResult,
    AddStatus,
    Album,
    FaceBox,
    FaceSearchOutcome,
    GroupCount,
    ImageRecord,
    OnDuplicate,
    RecognizeOutcome,
    ScoredImage,
    SearchOutcome,
    SqlResult,
)

ON_DUPLICATE_DESCRIPTION = ("What to do with an image within the near-duplicate distance of one in the album: "
                            "keep it too (default), skip it, or replace the old one with it.")

# An attribute's value: one of the declared column types' JSON forms (services.common.schema), or any
# JSON value for an undeclared attribute (its strings and numbers unbounded: the plain types after the
# declared ones say so).
AttributeValue = Annotated[Any, WithJsonSchema({
    "description": "A declared column's value (string, integer, number, boolean, ISO 8601 timestamp, array of "
                   "strings; null when unset) or any JSON value of an undeclared attribute.",
    "anyOf": [{k: v for k, v in t.json_schema.items() if k != "nullable"} for t in ColumnType] + [
        {"type": "string"}, {"type": "number"}, {"type": "object"}, {"type": "array"}, {"type": "null"}],
})]
Attributes = dict[str, AttributeValue]


class RequestBody(BaseModel):
    """A request's JSON body: a field it does not have is refused (a misspelt "colums" would be left unread)."""

    model_config = ConfigDict(extra="forbid")


class ErrorDetail(BaseModel):
    reason: str = Field(description="Stable machine-readable reason, e.g. album_not_found, invalid_image.")
    message: str
    request_id: str = ""


class ErrorBody(BaseModel):
    error: ErrorDetail


ALBUM_NAME_SCHEMA: dict[str, Any] = {"pattern": f"^{ALBUM_NAME.pattern}$", "minLength": 1, "maxLength": 63}


class ColumnSpec(RequestBody):
    """A declared column: every image of the album has a value of this type, or null."""

    name: str = Field(description="1-63 of a-z, 0-9 and '_', not starting with a digit; not a built-in name.",
                      json_schema_extra={"pattern": "^[a-z_][a-z0-9_]{0,62}$"}, examples=["price"])
    type: ColumnType

    @classmethod
    def of(cls, column: Column) -> ColumnSpec:
        return cls(name=column.name, type=column.type)


class AlbumCreate(RequestBody):
    name: str = Field(description="1-63 of a-z, 0-9, '_' and '-', starting with a letter or digit.",
                      examples=["shoes"], json_schema_extra=ALBUM_NAME_SCHEMA)
    columns: list[ColumnSpec] = Field(default_factory=list, description="Declared (typed) attribute columns.")
    faces: bool = Field(default=False, description="Also find the faces of every image added, for search by a "
                                                   "portrait (POST /v1/albums/{album}/faces/search).")
    details: bool = Field(default=False, description="Also keep a keypoint index of every image added, so that a "
                          "close-up of a detail (a query under 160 px) finds the image it was cut from. Costs ~200 KB "
                          "of search-service memory per image and ~1.6x the ingest CPU: for albums up to some "
                          "100,000 images.")

    def schema_of(self) -> AlbumSchema:
        return AlbumSchema.of(Column(c.name, c.type) for c in self.columns)


class AlbumOut(BaseModel):
    name: str
    image_count: int
    model: str = Field(description="The model and pipeline whose vectors the album holds.")
    dim: int
    metric: str
    created_at_ms: int
    columns: list[ColumnSpec]
    faces: bool = Field(description="Whether the album indexes faces.")
    face_model: str | None = Field(default=None, description="The face detector and descriptor of its faces.")
    details: bool = Field(description="Whether the album keeps a keypoint index (a close-up of a detail finds its "
                                      "image).")

    @classmethod
    def of(cls, album: Album) -> AlbumOut:
        return cls(name=album.name, image_count=album.image_count, model=album.model, dim=album.dim,
                   metric=album.metric, created_at_ms=album.created_at_ms,
                   columns=[ColumnSpec.of(c) for c in album.schema.columns], faces=bool(album.face_model),
                   face_model=album.face_model or None, details=album.details)


class AlbumList(BaseModel):
    albums: list[AlbumOut]


class Deleted(BaseModel):
    deleted: bool


class ImageOut(BaseModel):
    album: str
    id: str
    name: str
    content_hash: str
    attributes: Attributes = Field(description="Every declared column (null when unset), then the undeclared "
                                               "attributes; timestamps as ISO 8601 strings.")
    created_at_ms: int
    url: str
    thumbnail_url: str
    content_type: str | None = None
    size_bytes: int | None = None

    @classmethod
    def of(cls, image: ImageRecord) -> ImageOut:
        return cls(album=image.album, id=image.id, name=image.name, content_hash=image.content_hash,
                   attributes=to_json(image.attributes), created_at_ms=image.created_at_ms, url=image.url,
                   thumbnail_url=image.thumbnail_url, content_type=image.content_type or None,
                   size_bytes=image.size_bytes or None)


class ImageList(BaseModel):
    images: list[ImageOut]
    limit: int
    offset: int
    next_after: str | None = Field(default=None, description="Ordered by id: pass as `after` for the next page "
                                                              "(null on the last page).")


class CountOut(BaseModel):
    count: int


class GroupOut(BaseModel):
    key: list[AttributeValue] = Field(description="The values of the grouped columns, in their order.")
    count: int

    @classmethod
    def of(cls, group: GroupCount) -> GroupOut:
        return cls(key=[to_json(v) for v in group.key], count=group.count)


class GroupsOut(BaseModel):
    columns: list[str]
    groups: list[GroupOut]


class ImageChanges(RequestBody):
    """What to change of images: attributes (null clears a declared column or removes an undeclared
    attribute) and, for one image, its name. Vectors, blobs and local features stay as they are."""

    name: str | None = None
    attributes: Attributes = Field(default_factory=dict)

    def changes(self) -> dict[str, Any]:
        return {**self.attributes, **({"name": self.name} if self.name is not None else {})}


class UpdatedOut(BaseModel):
    updated: int


class DeletedCount(BaseModel):
    deleted: int


class ItemError(BaseModel):
    reason: str
    message: str


class AddedImage(BaseModel):
    index: int = Field(description="The position of the file in the request.")
    name: str
    status: AddStatus
    id: str | None = None
    error: ItemError | None = None
    near: str | None = Field(default=None, description="Skipped or replaced: the near-duplicate in the album.")

    @classmethod
    def of(cls, result: AddResult) -> AddedImage:
        error = ItemError(reason=result.error.reason, message=result.error.message) if result.error else None
        return cls(index=result.index, name=result.name, status=result.status, id=result.id or None, error=error,
                   near=result.near or None)


class AddImagesOut(BaseModel):
    results: list[AddedImage]
    added: int
    duplicates: int
    skipped: int = Field(description="Near-duplicates not added (on_duplicate skip).")
    replaced: int = Field(description="Near-duplicates added in place of the old image (on_duplicate replace).")
    failed: int

    @classmethod
    def of(cls, results: list[AddResult]) -> AddImagesOut:
        def count(status: AddStatus) -> int:
            return sum(1 for r in results if r.status == status)

        return cls(results=[AddedImage.of(r) for r in results], added=count(AddStatus.ADDED),
                   duplicates=count(AddStatus.DUPLICATE), skipped=count(AddStatus.SKIPPED),
                   replaced=count(AddStatus.REPLACED), failed=count(AddStatus.FAILED))


class SearchHitOut(BaseModel):
    id: str
    name: str
    distance: float = Field(description="In the album's metric; for cosine, 1 - similarity (0 = identical).")
    matches: int | None = Field(
        default=None,
        description="Copy search: keypoints of the query that one affine map carries onto this image (geometric "
                    "verification of the nearest few; a copy has dozens, images verified with enough come first). "
                    "null when the image was not verified.")
    attributes: Attributes
    url: str
    thumbnail_url: str


class RegionBoxOut(BaseModel):
    """A box in the query image's pixels as shown (after its EXIF orientation); as `region` it is x,y,w,h."""

    x: int
    y: int
    width: int
    height: int


class ProposedRegionOut(BaseModel):
    region: RegionBoxOut
    score: float = Field(description="The detector's confidence in the object (0-1), or, where no detector is "
                                     "installed, how much the region stands out in the network's activations: "
                                     "its mean saliency less the rest's (the map's peak is 1).")
    results: list[SearchHitOut] = Field(description="What a search of this region alone finds (as `region`).")


class SearchOut(BaseModel):
    album: str
    metric: str
    model: str
    took_ms: float
    results: list[SearchHitOut]
    regions: list[ProposedRegionOut] = Field(
        default_factory=list,
        description="With `proposals`: regions of the query worth searching on their own, best first, each "
                    "with its results; empty otherwise.")

    @classmethod
    def of(cls, outcome: SearchOutcome) -> SearchOut:
        regions = [ProposedRegionOut(region=RegionBoxOut(x=r.box[0], y=r.box[1], width=r.box[2], height=r.box[3]),
                                     score=r.score, results=_hits(r.hits)) for r in outcome.regions]
        return cls(album=outcome.album, metric=outcome.metric, model=outcome.model,
                   took_ms=round(outcome.took_ms, 3), results=_hits(outcome.hits), regions=regions)


def _hits(scored: list[ScoredImage]) -> list[SearchHitOut]:
    return [SearchHitOut(id=h.image.id, name=h.image.name, distance=h.distance, matches=h.matches,
                         attributes=to_json(h.image.attributes), url=h.image.url, thumbnail_url=h.image.thumbnail_url)
            for h in scored]


class FaceBoxOut(BaseModel):
    """A face in its image: box in pixels (EXIF orientation applied), five landmarks, detector score."""

    x: int
    y: int
    width: int
    height: int
    score: float = Field(description="The detector's confidence (above 0 is a face).")
    landmarks: list[list[float]] = Field(description="[x, y] of the eyes' outer and inner corners and the nose.")

    @classmethod
    def of(cls, box: FaceBox) -> FaceBoxOut:
        return cls(x=box.x, y=box.y, width=box.width, height=box.height, score=box.score,
                   landmarks=[[x, y] for x, y in box.landmarks])


class FaceHitOut(BaseModel):
    id: str
    name: str
    distance: float = Field(description="Cosine distance of the two faces' descriptors (same person: below "
                                        "the search's max_distance).")
    face: FaceBoxOut = Field(description="The face of this image that matched.")
    width: int = Field(description="The image's width in pixels (the frame of the face box).")
    height: int
    attributes: Attributes
    url: str
    thumbnail_url: str


class FaceSearchOut(BaseModel):
    album: str
    model: str = Field(description="The face detector and descriptor.")
    took_ms: float
    faces: list[FaceBoxOut] = Field(description="The faces found in the query image, the largest first.")
    face: int = Field(description="Which of them searched (its index in faces).")
    width: int = Field(description="The query image's size in pixels (the frame of its face boxes).")
    height: int
    max_distance: float = Field(description="Faces farther than this were taken for other people.")
    results: list[FaceHitOut] = Field(description="The images where that person appears, nearest first.")

    @classmethod
    def of(cls, o: FaceSearchOutcome) -> FaceSearchOut:
        hits = [FaceHitOut(id=h.image.id, name=h.image.name, distance=round(h.distance, 5), face=FaceBoxOut.of(h.face),
                           width=h.width, height=h.height, attributes=to_json(h.image.attributes), url=h.image.url,
                           thumbnail_url=h.image.thumbnail_url) for h in o.hits]
        return cls(album=o.album, model=o.model, took_ms=round(o.took_ms, 3), faces=[FaceBoxOut.of(f) for f in o.faces],
                   face=o.face, width=o.width, height=o.height, max_distance=o.max_distance, results=hits)


class ImageFacesOut(BaseModel):
    album: str
    id: str
    width: int
    height: int
    faces: list[FaceBoxOut] = Field(description="The faces found in the image, the largest first.")


class LabelScoreOut(BaseModel):
    label: str
    confidence: float = Field(description="Calibrated on the album: the chance the label is right for a photo of "
                                          "one of its labels.")
    share: float = Field(description="The label's share of the nearest labelled images' distance-weighted votes.")
    nearest: float = Field(description="Cosine distance of the nearest image with the label.")


class EvidenceOut(BaseModel):
    id: str
    name: str
    distance: float
    labels: list[str]
    url: str
    thumbnail_url: str


class CalibrationOut(BaseModel):
    images: int = Field(description="Labelled images the calibration learned from.")
    labels: int
    calibrated: bool = Field(description="false: too few labelled images; confidence is then the vote share.")
    top1: float | None = Field(description="Leave-one-out top-1 accuracy on the album's own labelled images.")
    known_rejected: float | None = Field(description="Share of those queries the threshold answers unknown.")
    unknown_rejected: float | None = Field(
        description="Share answered unknown when each query's own label is held out of the album.")


class RecognizeOut(BaseModel):
    album: str
    attribute: str = Field(description="The label attribute recognised by.")
    model: str
    took_ms: float
    label: str | None = Field(description="The predicted label; null when unknown.")
    unknown: bool = Field(description="The photo is of none of the album's labels (known below threshold).")
    confidence: float = Field(description="The top candidate's calibrated confidence (also when unknown).")
    known: float = Field(description="Calibrated chance that the photo is of one of the album's labels.")
    threshold: float = Field(description="unknown when known is below it: the album's default, or the request's.")
    candidates: list[LabelScoreOut] = Field(description="The labels voted for, most votes first (at most 5).")
    evidence: list[EvidenceOut] = Field(description="The nearest labelled images, nearest first.")
    calibration: CalibrationOut
    face: FaceBoxOut | None = Field(None, description="With faces=true: the photo's face recognised (its largest), "
                                                      "in the photo's pixels.")

    @classmethod
    def of(cls, o: RecognizeOutcome) -> RecognizeOut:
        c = o.calibration
        return cls(
            album=o.album, attribute=o.attribute, model=o.model, took_ms=round(o.took_ms, 3), label=o.label,
            unknown=o.unknown, confidence=round(o.confidence, 4), known=round(o.known, 4),
            threshold=round(o.threshold, 4),
            candidates=[LabelScoreOut(label=v.label, confidence=round(v.confidence, 4), share=round(v.share, 4),
                                      nearest=round(v.nearest, 4)) for v in o.candidates],
            evidence=[EvidenceOut(id=e.image.id, name=e.image.name, distance=e.distance, labels=list(e.labels),
                                  url=e.image.url, thumbnail_url=e.image.thumbnail_url) for e in o.evidence],
            calibration=CalibrationOut(images=c.images, labels=c.labels, calibrated=c.calibrated, top1=c.top1,
                                       known_rejected=c.known_rejected, unknown_rejected=c.unknown_rejected),
            face=FaceBoxOut.of(o.face) if o.face is not None else None)


class ImportCreate(RequestBody):
    """An import by JSON: URLs, and/or a manifest's text whose rows name URLs (an archive is sent as a
    multipart form)."""

    urls: list[str] = Field(default_factory=list, description="http(s) URLs of images to add.",
                            json_schema_extra={"maxItems": 1_000_000})
    manifest: str = Field(default="", description="A CSV (header `url,...`) or JSONL manifest: a row per image "
                                                 "with its attributes, typed by the album's columns.")
    manifest_format: str = Field(default="csv", description="csv or jsonl (in any case).", json_schema_extra={
        "enum": ["csv", "jsonl"]})
    attributes: Attributes = Field(default_factory=dict, description="Attributes given to every image (a "
                                                                     "manifest row's win).")
    on_duplicate: OnDuplicate = Field(default=OnDuplicate.KEEP, description=ON_DUPLICATE_DESCRIPTION)


class ManifestCutIn(RequestBody):
    """A manifest to cut for an import sent in parts, an import each (a folder sent as several archives)."""

    manifest: str = Field(description="The CSV or JSONL manifest's text: a row per file (or URL) with its attributes.")
    manifest_format: str = Field(default="csv", description="csv or jsonl (in any case).", json_schema_extra={
        "enum": ["csv", "jsonl"]})
    manifest_name: str = Field(default="", description=(
        "The manifest file's name: its suffix says the format as an import's manifest file's does (.csv; .jsonl, "
        ".ndjson or .json), over manifest_format."), json_schema_extra={"maxLength": 1024})
    parts: list[list[str]] = Field(description="The paths of each part's files, as its archive names them.",
                                   json_schema_extra={"minItems": 1, "maxItems": 10_000})


class ManifestCutOut(BaseModel):
    manifests: list[str] = Field(description="A manifest per part, in the manifest's format (a CSV's header on "
                                             "each): the rows its files take, as its import finds them; the first's "
                                             "also the URL rows, the last's also the rows naming no file sent.")


class ImportCounts(BaseModel):
    added: int
    duplicates: int = Field(description="The same bytes were in the album already.")
    skipped: int = Field(description="Near-duplicates not added (on_duplicate skip).")
    replaced: int = Field(description="Near-duplicates added in place of the old image (on_duplicate replace).")
    failed: int


class ImportOut(BaseModel):
    id: str
    album: str
    kind: str = Field(description="urls, archive or manifest (an import), or reembed (a re-embed of the album).")
    status: ImportStatus
    total: int
    processed: int
    counts: ImportCounts
    rate: float = Field(description="Images per second since the import started.")
    eta_s: float | None = Field(description="Seconds left at that rate (null when unknown or finished).")
    on_duplicate: str
    source: str = Field("", description="What is imported: the archive's and manifest's file names, or the URL (or "
                                        "how many); empty for a re-embed.")
    error: str | None = None
    created_at_ms: int
    started_at_ms: int | None = None
    finished_at_ms: int | None = None
    status_url: str

    @classmethod
    def of(cls, job: ImportJob) -> ImportOut:
        eta = job.eta_s()
        return cls(id=job.id, album=job.album, kind=job.kind, status=job.status, total=job.total,
                   processed=job.processed, counts=ImportCounts(**job.counts), rate=round(job.rate(), 3),
                   eta_s=round(eta, 1) if eta is not None else None, on_duplicate=job.on_duplicate, source=job.source,
                   error=job.error or None, created_at_ms=job.created_at_ms, started_at_ms=job.started_at_ms or None,
                   finished_at_ms=job.finished_at_ms or None, status_url=f"/v1/imports/{job.id}")


class ImportCancelByKey(RequestBody):
    """Which import to cancel: the one an import request into the album with this Idempotency-Key made, or makes
    later (a client that stopped its upload cannot tell whether the gateway read it all)."""

    idempotency_key: str = Field(description="The Idempotency-Key the import request was sent with.",
                                 json_schema_extra={"minLength": 1, "maxLength": 200})


class ImportCancelledByKey(BaseModel):
    import_: ImportOut | None = Field(alias="import", description=(
        "The import the key made, now cancelled (or as it ended, if it had); null when none was made yet: one made "
        "with this key later is cancelled as it starts, nothing of it staged."))

    model_config = ConfigDict(populate_by_name=True)

    @classmethod
    def of(cls, job: ImportJob | None) -> ImportCancelledByKey:
        return cls.model_validate({"import": None if job is None else ImportOut.of(job)})


class ImportList(BaseModel):
    imports: list[ImportOut]


class ImportItemOut(BaseModel):
    """What happened to one image of an import."""

    index: int
    name: str
    status: AddStatus
    id: str | None = None
    url: str = ""
    file: str = Field(default="", description="Its file's path in the archive imported (empty for a URL): a "
                                              "manifest's `name` may name the image otherwise.")
    error: ItemError | None = None
    near: str | None = Field(default=None, description="Skipped or replaced: the near-duplicate in the album.")


class ImportResults(BaseModel):
    results: list[ImportItemOut]
    next_after: int | None = Field(default=None, description="Pass as `after` for the next page (null on the last "
                                                             "page).")


class DuplicateGroup(BaseModel):
    images: list[ImageOut]
    distance: float = Field(description="The largest distance of an image of the group to its nearest one.")


class DuplicatesOut(BaseModel):
    album: str
    max_distance: float
    groups: list[DuplicateGroup]


class SqlIn(RequestBody):
    statement: str = Field(description="One SQL statement (see the README's SQL section).",
                           examples=["SELECT name, distance FROM demo ORDER BY feature <-> image('https://...') "
                                     "LIMIT 5"])
    delete_all: bool = Field(default=False, description="A DELETE without WHERE deletes every image only with "
                                                        "this (or write WHERE TRUE).")


class ImageRef(BaseModel):
    id: str
    name: str
    url: str
    thumbnail_url: str


class SqlRowOut(BaseModel):
    values: list[AttributeValue] = Field(description="One per column of the result.")
    image: ImageRef | None = Field(default=None, description="The image the row is about (null for counts).")


class SqlOut(BaseModel):
    statement: str = Field(description="create_table, drop_table, insert, select, update or delete.")
    album: str
    columns: list[str]
    rows: list[SqlRowOut]
    affected: int | None = Field(default=None, description="Images (or albums) created, changed or deleted.")
    took_ms: float

    @classmethod
    def of(cls, result: SqlResult) -> SqlOut:
        rows = [SqlRowOut(values=[to_json(v) for v in row.values],
                          image=ImageRef(id=row.image.id, name=row.image.name, url=row.image.url,
                                         thumbnail_url=row.image.thumbnail_url) if row.image else None)
                for row in result.rows]
        return cls(statement=result.statement, album=result.album, columns=list(result.columns), rows=rows,
                   affected=result.affected, took_ms=round(result.took_ms, 3))
