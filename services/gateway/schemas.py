"""The JSON shapes of the HTTP API (they make its OpenAPI document), built from the domain records."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field

from services.gateway.jobs import Job
from services.gateway.records import AddResult, AddStatus, Album, ImageRecord, ReembedReport, SearchOutcome


class ErrorDetail(BaseModel):
    reason: str = Field(description="Stable machine-readable reason, e.g. album_not_found, invalid_image.")
    message: str
    request_id: str = ""


class ErrorBody(BaseModel):
    error: ErrorDetail


class AlbumCreate(BaseModel):
    name: str = Field(description="1-63 of a-z, 0-9, '_' and '-', starting with a letter or digit.",
                      examples=["demo"])


class AlbumOut(BaseModel):
    name: str
    image_count: int
    model: str = Field(description="The model and pipeline whose vectors the album holds.")
    dim: int
    metric: str
    created_at_ms: int

    @classmethod
    def of(cls, album: Album) -> AlbumOut:
        return cls(name=album.name, image_count=album.image_count, model=album.model, dim=album.dim,
                   metric=album.metric, created_at_ms=album.created_at_ms)


class AlbumList(BaseModel):
    albums: list[AlbumOut]


class Deleted(BaseModel):
    deleted: bool


class ImageOut(BaseModel):
    album: str
    id: str
    name: str
    content_hash: str
    attributes: dict[str, Any]
    created_at_ms: int
    url: str
    thumbnail_url: str
    content_type: str | None = None
    size_bytes: int | None = None

    @classmethod
    def of(cls, image: ImageRecord) -> ImageOut:
        return cls(album=image.album, id=image.id, name=image.name, content_hash=image.content_hash,
                   attributes=image.attributes, created_at_ms=image.created_at_ms, url=image.url,
                   thumbnail_url=image.thumbnail_url, content_type=image.content_type or None,
                   size_bytes=image.size_bytes or None)


class ImageList(BaseModel):
    images: list[ImageOut]
    limit: int
    offset: int


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
    attributes: dict[str, Any]
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
                             attributes=h.image.attributes,
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
