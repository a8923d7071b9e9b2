"""The JSON shapes of the HTTP API (they make its OpenAPI document), built from the domain records."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, Field, WithJsonSchema

from services.common.schema import AlbumSchema, Column, ColumnType, to_json
from services.gateway.deps import ALBUM_NAME
from services.gateway.jobs import Job
from services.gateway.records import (
    AddResult,
    AddStatus,
    Album,
    GroupCount,
    ImageRecord,
    ReembedReport,
    SearchOutcome,
    SqlResult,
)

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


class ErrorDetail(BaseModel):
    reason: str = Field(description="Stable machine-readable reason, e.g. album_not_found, invalid_image.")
    message: str
    request_id: str = ""


class ErrorBody(BaseModel):
    error: ErrorDetail


ALBUM_NAME_SCHEMA: dict[str, Any] = {"pattern": f"^{ALBUM_NAME.pattern}$", "minLength": 1, "maxLength": 63}


class ColumnSpec(BaseModel):
    """A declared column: every image of the album has a value of this type, or null."""

    name: str = Field(description="1-63 of a-z, 0-9 and '_', not starting with a digit; not a built-in name.",
                      json_schema_extra={"pattern": "^[a-z_][a-z0-9_]{0,62}$"}, examples=["price"])
    type: ColumnType

    @classmethod
    def of(cls, column: Column) -> ColumnSpec:
        return cls(name=column.name, type=column.type)


class AlbumCreate(BaseModel):
    name: str = Field(description="1-63 of a-z, 0-9, '_' and '-', starting with a letter or digit.",
                      examples=["shoes"], json_schema_extra=ALBUM_NAME_SCHEMA)
    columns: list[ColumnSpec] = Field(default_factory=list, description="Declared (typed) attribute columns.")

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

    @classmethod
    def of(cls, album: Album) -> AlbumOut:
        return cls(name=album.name, image_count=album.image_count, model=album.model, dim=album.dim,
                   metric=album.metric, created_at_ms=album.created_at_ms,
                   columns=[ColumnSpec.of(c) for c in album.schema.columns])


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


class ImageChanges(BaseModel):
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

    @classmethod
    def of(cls, result: AddResult) -> AddedImage:
        error = ItemError(reason=result.error.reason, message=result.error.message) if result.error else None
        return cls(index=result.index, name=result.name, status=result.status, id=result.id or None, error=error)


class AddImagesOut(BaseModel):
    results: list[AddedImage]
    added: int
    duplicates: int
    failed: int

    @classmethod
    def of(cls, results: list[AddResult]) -> AddImagesOut:
        def count(status: AddStatus) -> int:
            return sum(1 for r in results if r.status == status)

        return cls(results=[AddedImage.of(r) for r in results], added=count(AddStatus.ADDED),
                   duplicates=count(AddStatus.DUPLICATE), failed=count(AddStatus.FAILED))


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


class SearchOut(BaseModel):
    album: str
    metric: str
    model: str
    took_ms: float
    results: list[SearchHitOut]

    @classmethod
    def of(cls, outcome: SearchOutcome) -> SearchOut:
        hits = [SearchHitOut(id=h.image.id, name=h.image.name, distance=h.distance, matches=h.matches,
                             attributes=to_json(h.image.attributes),
                             url=h.image.url, thumbnail_url=h.image.thumbnail_url) for h in outcome.hits]
        return cls(album=outcome.album, metric=outcome.metric, model=outcome.model,
                   took_ms=round(outcome.took_ms, 3), results=hits)


class JobCreate(BaseModel):
    urls: list[str] = Field(min_length=1, description="http(s) URLs of images to add.")
    attributes: dict[str, Any] = Field(default_factory=dict, description="Attributes given to every image.")


class JobCreated(BaseModel):
    job_id: str
    status_url: str


class JobOut(BaseModel):
    job_id: str
    album: str
    status: str = Field(description="queued, running, done or failed.")
    total: int
    done: int
    failed: int
    error: str | None = None
    created_at_ms: int
    updated_at_ms: int
    results: list[dict[str, Any]]

    @classmethod
    def of(cls, job: Job) -> JobOut:
        return cls(job_id=job.id, album=job.album, status=job.status.value, total=job.total, done=job.done,
                   failed=job.failed, error=job.error or None, created_at_ms=job.created_at_ms,
                   updated_at_ms=job.updated_at_ms, results=job.results)


class ReembedFailure(BaseModel):
    id: str
    error: ItemError


class ReembedOut(BaseModel):
    """The album after re-embedding: its new model, and the images left out (their bytes failed)."""

    album: str
    model: str
    dim: int
    previous_model: str
    images: int
    failed: list[ReembedFailure]
    took_s: float

    @classmethod
    def of(cls, report: ReembedReport) -> ReembedOut:
        failed = [ReembedFailure(id=i, error=ItemError(reason=f.reason, message=f.message)) for i, f in report.failed]
        return cls(album=report.album, model=report.model, dim=report.dim, previous_model=report.previous_model,
                   images=report.images, failed=failed, took_s=round(report.took_s, 3))


class SqlIn(BaseModel):
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
