"""The HTTP API and web page (FastAPI): routes turn requests into pipeline calls and records into JSON.

Every response carries X-Request-ID; every error is `{"error": {"reason", "message", "request_id"}}`
with the HTTP status of its class in the project's error tree.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import replace
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import quote

from fastapi import FastAPI, File, Form, Header, Query, Request, UploadFile
from fastapi import Path as PathParam
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response, StreamingResponse
from fastapi_offline import FastAPIOffline
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import ValidationError, WithJsonSchema
from starlette.convertors import StringConvertor, register_url_convertor
from starlette.datastructures import UploadFile as StarletteUpload
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from services.common.errors import ERRORS_BY_REASON, ImageSearchError, InvalidArgument, InvalidAttributes
from services.common.logs import REQUEST_ID_HEADER, new_request_id, request_id_var
from services.common.manifest import MAX_MANIFEST_BYTES
from services.common.metrics import observe_request
from services.gateway import schemas
from services.gateway.deps import Deps, check_album_name
from services.gateway.import_queue import ImportQueue
from services.gateway.records import (
    AddResult,
    AddStatus,
    ImageFilter,
    ImageRecord,
    JsonObject,
    Listing,
    NewImage,
    OnDuplicate,
    SearchMode,
)
from services.gateway.records import Query as SearchQuery
from services.gateway.regions import MIN_SIDE, REGION_FORMAT, REGION_PATTERN, parse_region
from services.gateway.settings import GatewaySettings
from services.gateway.usecases import (
    albums,
    duplicates,
    faces,
    images,
    imports,
    ingest,
    manifests,
    recognize,
    reembed,
    search,
    sql,
)
from services.gateway.usecases.images import MAX_OFFSET
from services.gateway.usecases.imports import ImportSpec
from services.gateway.usecases.ingest import parse_attributes
from services.gateway.usecases.proposals import MAX_PROPOSALS, search_with_proposals

log = logging.getLogger(__name__)

WEB_DIR = Path(__file__).parent / "web"
# Multipart framing and form fields on top of the files themselves.
FORM_OVERHEAD_BYTES = 1024 * 1024
HealthCheck = Callable[[], Awaitable[None]]

MODE_DESCRIPTION = ('"copy" (default): copies of the query, edited, cropped, rotated or mirrored; "similar": '
                    "images like it (upright descriptors only, with query expansion).")
MODE_SCHEMA: dict[str, Any] = {"enum": [m.value for m in SearchMode]}
REGION_DESCRIPTION = f"Search only this box of the query image: {REGION_FORMAT}; inside the image, at least " \
                     f"{MIN_SIDE} pixels a side. Not with image_id."
REGION_SCHEMA: dict[str, Any] = {"pattern": REGION_PATTERN, "examples": ["10,20,200,150"]}
PROPOSALS_DESCRIPTION = f"Also propose up to this many regions of the query image worth searching (objects or " \
                        f"salient parts, 1 to {MAX_PROPOSALS}) and search each on its own: the answer's `regions`, " \
                        "each with its box and results. Each region costs a search. Not with region or image_id."
PROPOSALS_SCHEMA: dict[str, Any] = {"minimum": 0, "maximum": MAX_PROPOSALS}
# An optional file part: left out when not given (multipart has no null, so the document offers none).
BINARY_PART = WithJsonSchema({"type": "string", "contentMediaType": "application/octet-stream"})
# Method names a metric label may take: any other word a client sends is counted as OTHER, so that a
# client cannot make a new time series per request.
HTTP_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
_HTTP_REASONS = {400: "invalid_argument", 404: "not_found", 405: "method_not_allowed", 413: "image_too_large"}


def error_response(status: int, reason: str, message: str, headers: Mapping[str, str] | None = None) -> JSONResponse:
    body = {"error": {"reason": reason, "message": message, "request_id": request_id_var.get()}}
    return JSONResponse(body, status_code=status, headers=headers)


def _valid_request_id(value: str) -> bool:
    return 0 < len(value) <= 128 and value.isascii() and value.isprintable()


class RequestContext:
    """ASGI middleware: request id in and out, metrics per route template, a JSON 500 for the unexpected."""

    def __init__(self, app: ASGIApp, settings: GatewaySettings) -> None:
        self.app = app
        self.settings = settings

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        given = headers.get(REQUEST_ID_HEADER, "")
        request_id = given if _valid_request_id(given) else new_request_id()
        request_id_var.set(request_id)
        started = time.perf_counter()
        status = 500
        response_started = False

        async def send_with_id(message: Message) -> None:
            nonlocal status, response_started
            if message["type"] == "http.response.start":
                response_started = True
                status = message["status"]
                message.setdefault("headers", [])
                message["headers"] = [*message["headers"], (b"x-request-id", request_id.encode())]
            await send(message)

        try:
            too_large = self._too_large(scope, headers)
            if too_large is not None:
                await too_large(scope, receive, send_with_id)
            else:
                await self.app(scope, receive, send_with_id)
        except Exception:
            log.exception("%s %s failed unexpectedly", scope["method"], scope["path"])
            if not response_started:
                await error_response(500, "internal", "internal error")(scope, receive, send_with_id)
        finally:
            route = getattr(scope.get("route"), "path_format", None) or "unmatched"
            method = scope["method"] if scope["method"] in HTTP_METHODS else "OTHER"
            observe_request("gateway", f"{method} {route}", str(status), time.perf_counter() - started)

    def _too_large(self, scope: Scope, headers: dict[str, str]) -> JSONResponse | None:
        """Refuses an upload by its Content-Length before its body is read."""
        declared = headers.get("content-length", "")
        if scope["method"] != "POST" or not declared.isdigit():
            return None
        path = str(scope["path"]).rstrip("/")
        per_file = self.settings.max_image_bytes
        reason, limit_of = "image_too_large", f" ({per_file} per image)"
        if path.endswith("/images"):
            limit = per_file * self.settings.max_images_per_request + FORM_OVERHEAD_BYTES
        elif path.endswith(("/search", "/recognize")):
            limit = per_file + FORM_OVERHEAD_BYTES
        elif path.endswith("/manifest-parts"):
            limit, reason, limit_of = manifests.MAX_REQUEST_BYTES, "request_too_large", " for a manifest cut"
        else:
            return None
        if int(declared) <= limit:
            return None
        return error_response(413, reason, f"the request is {declared} bytes; the limit is {limit}{limit_of}")


def _validation_message(exc: RequestValidationError | ValidationError) -> str:
    parts = []
    for error in exc.errors()[:5]:
        where = ".".join(str(p) for p in error.get("loc", ()) if p != "body") or "request"
        if error.get("type") == "json_invalid":  # FastAPI's: at ("body", <character>); pydantic's: nowhere
            loc = error.get("loc") or ()
            at = f" at character {loc[-1]}" if loc and isinstance(loc[-1], int) else ""
            parts.append(f"the body is not JSON ({(error.get('ctx') or {}).get('error', 'invalid')}{at})")
        elif error.get("type") == "extra_forbidden":
            parts.append(f"{where}: not a field of this request")
        else:
            parts.append(f"{where}: {error.get('msg', 'invalid')}")
    return "; ".join(parts) or "invalid request"


def _install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ImageSearchError)
    async def on_error(request: Request, exc: ImageSearchError) -> JSONResponse:
        return error_response(exc.http_status, exc.reason, exc.message)

    @app.exception_handler(RequestValidationError)
    async def on_invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        return error_response(422, InvalidArgument.reason, _validation_message(exc))

    @app.exception_handler(StarletteHTTPException)
    async def on_http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        reason = _HTTP_REASONS.get(exc.status_code, "internal" if exc.status_code >= 500 else "invalid_argument")
        headers = exc.headers
        if exc.status_code == 405:
            headers = {**(headers or {}), "Allow": _allowed_methods(request)}
        return error_response(exc.status_code, reason, str(exc.detail), headers)


def _allowed_methods(request: Request) -> str:
    """Every method some route of this path takes (Starlette's 405 names only the first route's)."""
    methods: set[str] = set()
    for route in request.app.router.routes:
        if isinstance(route, Route) and route.matches(request.scope)[0] != Match.NONE:
            methods |= route.methods or set()
    return ", ".join(sorted(methods))


def add_status(results: list[AddResult]) -> int:
    """201 when every image is stored, 207 when some failed, else the failures' common status (or 422)."""
    failures = [r for r in results if r.status == AddStatus.FAILED]
    if not failures:
        return 201
    if len(failures) < len(results):
        return 207
    reasons = {r.error.reason for r in failures if r.error}
    if len(reasons) == 1:
        cls = ERRORS_BY_REASON.get(reasons.pop())
        if cls is not None and 400 <= cls.http_status < 500:
            return cls.http_status
    return 422


def _aligned(values: list[str], count: int, field: str) -> list[str]:
    if len(values) == 1 and field == "attributes":
        return values * count
    if len(values) > count:
        raise InvalidArgument(f"{len(values)} '{field}' fields for {count} file(s)")
    return values + [""] * (count - len(values))


async def _read_upload(upload: StarletteUpload, limit: int) -> bytes:
    """At most limit + 1 bytes: enough to tell the pipeline the file is too large."""
    return await upload.read(limit + 1)


async def _run_checks(checks: Mapping[str, HealthCheck], timeout_s: float) -> dict[str, str]:
    async def one(check: HealthCheck) -> str:
        try:
            await asyncio.wait_for(check(), timeout_s)
        except TimeoutError:
            return "timeout"
        except ImageSearchError as exc:
            return f"{exc.reason}: {exc.message}"
        except Exception as exc:
            return f"error: {type(exc).__name__}"
        return "ok"

    outcomes = await asyncio.gather(*(one(c) for c in checks.values()))
    return dict(zip(checks, outcomes, strict=True))


def create_app(
    settings: GatewaySettings, deps: Deps, queue: ImportQueue, checks: Mapping[str, HealthCheck]
) -> FastAPI:
    """The gateway's HTTP application over the given use-case dependencies, job store and readiness checks."""
    # FastAPIOffline: the API docs (/docs) served from the package's own copy of Swagger UI, not a CDN that a
    # machine without internet access cannot reach. (No ReDoc: it fetches its logo from a CDN all the same.)
    app = FastAPIOffline(
        redoc_url=None,
        title="Image search gateway",
        version="1.0.0",
        description="Albums of images searched by image: upload photos, then find the nearest ones to a "
                    "query photo, URL or image of the album. Errors are `{\"error\": {reason, message, request_id}}`.",
        responses={400: {"model": schemas.ErrorBody}, 404: {"model": schemas.ErrorBody},
                   422: {"model": schemas.ErrorBody}, 503: {"model": schemas.ErrorBody}},
    )
    app.add_middleware(RequestContext, settings=settings)
    _install_error_handlers(app)
    _add_operational_routes(app, checks)
    _add_album_routes(app, deps, queue)
    _add_image_routes(app, settings, deps)
    _add_search_routes(app, settings, deps)
    _add_sql_routes(app, settings, deps)
    _add_import_routes(app, settings, deps, queue)
    return app


def _add_operational_routes(app: FastAPI, checks: Mapping[str, HealthCheck]) -> None:
    page = (WEB_DIR / "index.html").read_text(encoding="utf-8")

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def index() -> HTMLResponse:
        return HTMLResponse(page)

    app.mount("/web", PageFiles(directory=WEB_DIR), name="web")  # the page's scripts and style sheet

    @app.get("/healthz", tags=["operations"])
    async def healthz() -> dict[str, str]:
        """The process is up (it says nothing of the services it needs)."""
        return {"status": "ok"}

    @app.get("/readyz", tags=["operations"], responses={503: {"description": "A dependency is down."}})
    async def readyz() -> JSONResponse:
        """Checks the extractor, the search service, the object store and Redis."""
        results = await _run_checks(checks, timeout_s=3.0)
        ready = all(v == "ok" for v in results.values())
        return JSONResponse({"status": "ready" if ready else "not_ready", "checks": results},
                            status_code=200 if ready else 503)

    @app.get("/metrics", tags=["operations"], response_class=Response)
    async def metrics() -> Response:
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)


class PageFiles(StaticFiles):
    """The page's own files, asked again of the gateway each time they are used (answered 304 while unchanged):
    after an upgrade, a browser runs the new scripts with the new page, not yesterday's cached ones."""

    def file_response(self, *args: Any, **kwargs: Any) -> Response:
        response = super().file_response(*args, **kwargs)
        response.headers["Cache-Control"] = "no-cache"
        return response


class ImageIdConvertor(StringConvertor):
    """An image id in a path: any segment but the names of the image routes' own paths, so that PATCH or DELETE
    of /images/count is 405 (GET is its only method), not a change to an image named 'count'."""

    regex = "(?!(?:count|groups)(?:/|$))[^/]+"


register_url_convertor("image_id", ImageIdConvertor())
ALBUM_PATH = PathParam(description="The album's name.", json_schema_extra=schemas.ALBUM_NAME_SCHEMA)
IMAGE_ID_SCHEMA = {"pattern": "^[0-9a-f]{32}$"}
WHERE_DESCRIPTION = ("The filter in its text form, as SQL's WHERE: price < 50 and colour in ('red', 'blue') and "
                     "in_stock (see the README for the language).")
FILTER_DESCRIPTION = 'The filter in its JSON form: {"price": {"lt": 50}, "colour": {"in": ["red", "blue"]}}.'
# An export's lines: JSON objects, one a line.
EXPORT_MEDIA_TYPE = "application/x-ndjson"
AlbumName = Annotated[str, ALBUM_PATH]
ImageId = Annotated[str, PathParam(description="The image's id (32 hex digits).", json_schema_extra=IMAGE_ID_SCHEMA)]
Where = Annotated[str | None, Query(description=WHERE_DESCRIPTION)]
FilterJson = Annotated[str | None, Query(description=FILTER_DESCRIPTION)]
TAG_DESCRIPTION = ("Only images tagged with this word: an ImageNet label whose WordNet lemmas include it "
                   "(case-insensitive; e.g. espresso, tabby cat), or a tag set by hand. A word no image has answers "
                   "no images; combines with where/filter.")
Tag = Annotated[str | None, Query(description=TAG_DESCRIPTION, json_schema_extra={"maxLength": 256})]


def _export_line(image: ImageRecord) -> bytes:
    """An image as an export's line: as listed (less the stored type and size, which a listing does not read),
    with the line and paragraph separators JSON lets through escaped, for readers that split lines at them too
    (Python's str.splitlines: a name holding U+2028 or U+0085 was two lines of broken JSON)."""
    text = schemas.ImageOut.of(image).model_dump_json(exclude={"content_type", "size_bytes"})
    return (text.replace("\u2028", "\\u2028").replace("\u2029", "\\u2029").replace("\u0085", "\\u0085")
            + "\n").encode()


def _add_album_routes(app: FastAPI, deps: Deps, queue: ImportQueue) -> None:
    @app.post("/v1/albums", status_code=201, tags=["albums"], response_model=schemas.AlbumOut,
              responses={409: {"model": schemas.ErrorBody}})
    async def create_album(body: schemas.AlbumCreate) -> schemas.AlbumOut:
        """Creates an empty album, optionally with declared (typed) columns; it records the extractor's model
        and vector length."""
        return schemas.AlbumOut.of(await albums.create(deps, body.name, body.schema_of(), faces=body.faces,
                                                       details=body.details))

    @app.get("/v1/albums", tags=["albums"], response_model=schemas.AlbumList)
    async def list_albums() -> schemas.AlbumList:
        return schemas.AlbumList(albums=[schemas.AlbumOut.of(a) for a in await albums.list_all(deps)])

    @app.get("/v1/albums/{album}", tags=["albums"], response_model=schemas.AlbumOut)
    async def get_album(album: AlbumName) -> schemas.AlbumOut:
        """The album: its image count, model and declared columns."""
        return schemas.AlbumOut.of(await albums.get(deps, album))

    @app.post("/v1/albums/{album}/reembed", status_code=202, tags=["albums"], response_model=schemas.ImportOut,
              responses={404: {"model": schemas.ErrorBody}, 503: {"model": schemas.ErrorBody}})
    async def reembed_album(
        album: AlbumName,
        with_faces: Annotated[bool, Query(alias="faces", description="Make the album index faces (if it does not "
                                          "yet): images added from now have theirs at once, and the re-embed "
                                          "finds the faces of those it holds.")] = False,
        details: Annotated[bool, Query(description="Make the album keep a keypoint index (if it does not yet): "
                                       "images added from now have theirs at once, and the re-embed indexes "
                                       "those it holds.")] = False,
    ) -> schemas.ImportOut:
        """Re-embeds every image from its stored bytes with the extractor's current model (after a model or
        pipeline change, when searches answer 409 model_mismatch), in the background: a new version of the
        album is filled while the album answers from its current vectors, then takes its place at once.
        An album that indexes faces has them found again, and one with a keypoint index its keypoints.
        Survives a killed process; GET the status_url for progress. A re-embed under way is answered as is."""
        return schemas.ImportOut.of(await reembed.start(deps, queue, album, faces=with_faces, details=details))

    @app.delete("/v1/albums/{album}", tags=["albums"], response_model=schemas.Deleted)
    async def delete_album(album: AlbumName) -> schemas.Deleted:
        """Deletes the album: its vectors, then its images and thumbnails."""
        return schemas.Deleted(deleted=await albums.delete(deps, album))


def _filter(where: str | None, filter_json: str | None) -> ImageFilter:
    return ImageFilter(json=filter_json or "", where=where or "")


def _add_image_routes(app: FastAPI, settings: GatewaySettings, deps: Deps) -> None:
    add_failed = {"model": schemas.AddImagesOut | schemas.ErrorBody,
                  "description": "Every image failed (AddImagesOut, each with its reason), or the request itself "
                                 "was refused (ErrorBody)."}

    @app.post("/v1/albums/{album}/images", status_code=201, tags=["images"], response_model=schemas.AddImagesOut,
              responses={207: {"model": schemas.AddImagesOut, "description": "Some images failed."},
                         413: add_failed, 422: add_failed})
    async def add_images(
        album: AlbumName,
        file: Annotated[list[UploadFile], File(description="One part per image.", min_length=1)],
        name: Annotated[list[str], Form(default_factory=list, description="Names aligned with the files.")],
        attributes: Annotated[list[str], Form(default_factory=list, description="JSON objects aligned with the "
                                                                                "files, or one for all.")],
        on_duplicate: Annotated[OnDuplicate, Form(description=schemas.ON_DUPLICATE_DESCRIPTION)] = OnDuplicate.KEEP,
    ) -> JSONResponse:
        """Adds images: 201 when all are stored (added or duplicate), 207 when some failed, 422 when all did.
        Declared attributes must have their column's type (an image with a wrong one fails alone)."""
        check_album_name(album)
        if len(file) > settings.max_images_per_request:
            raise InvalidArgument(f"{len(file)} files; the limit is {settings.max_images_per_request} a request")
        names = _aligned(name, len(file), "name")
        attrs = _aligned(attributes, len(file), "attributes")
        new = []
        for f, n, a in zip(file, names, attrs, strict=True):
            content = await _read_upload(f, settings.max_image_bytes)
            new.append((content, n or f.filename or "", a, f.content_type or ""))
        results = await ingest.add_images(deps, album, [_new_image(*fields) for fields in new],
                                          on_duplicate=on_duplicate)
        body = schemas.AddImagesOut.of(results)
        return JSONResponse(body.model_dump(mode="json"), status_code=add_status(results))

    @app.get("/v1/albums/{album}/images", tags=["images"], response_model=schemas.ImageList)
    async def list_images(
        album: AlbumName,
        where: Where = None,
        filter: FilterJson = None,
        limit: Annotated[int, Query(description="1 to 1000.", json_schema_extra={"minimum": 1, "maximum": 1000})] = 50,
        offset: Annotated[int, Query(description="Images to skip (with order_by; by id, at most 16384 together "
                                                 "with limit: page on with `after`).",
                                     json_schema_extra={"minimum": 0, "maximum": MAX_OFFSET})] = 0,
        after: Annotated[str | None, Query(description="Ordered by id: the page after this id (the previous page's "
                                                       "next_after); empty, like absent, is the first page.",
                                           json_schema_extra={"pattern": "^([0-9a-f]{32})?$"})] = None,
        order_by: Annotated[str | None, Query(description="A column to order by: id, name, content_hash, "
                                                          "created_at or a declared one.")] = None,
        desc: Annotated[bool, Query(description="Order descending.")] = False,
        nulls: Annotated[Literal["first", "last"] | None, Query(
            description="Where images without a value of order_by go; absent: last ascending, first descending "
                        "(as SQL).")] = None,
        tag: Tag = None,
    ) -> schemas.ImageList:
        """A page of the album's images matching the filter (and tag), by id or ordered by a column."""
        listing = Listing(filter=_filter(where, filter), limit=limit, offset=offset, after=after or "",
                          order_by=order_by or "", descending=desc, tag=tag,
                          nulls_first=None if nulls is None else nulls == "first")
        listed = await images.list_images(deps, album, listing)
        return schemas.ImageList(images=[schemas.ImageOut.of(i) for i in listed], limit=limit, offset=offset,
                                 next_after=images.next_after(listing, listed))

    @app.get("/v1/albums/{album}/export", tags=["images"], response_class=StreamingResponse,
             responses={200: {"content": {EXPORT_MEDIA_TYPE: {"schema": {"$ref": "#/components/schemas/ImageOut"}}},
                              "description": "JSON lines: each line one image as listed (the schema is a line's), "
                                             "by id.",
                              "headers": {"Content-Disposition": {
                                  "description": "attachment; filename*=UTF-8''<album>.jsonl",
                                  "schema": {"type": "string"}}}}})
    async def export_images(album: AlbumName, where: Where = None, filter: FilterJson = None,
                            tag: Tag = None) -> StreamingResponse:
        """Every image matching the filter (and tag) as JSON lines, by id, for albums of any size: a download
        (`<album>.jsonl`). A missing album or a bad filter is answered as such before the first line; a failure
        later cuts the download short (no last chunk), which clients report as an error."""
        pages = images.export(deps, album, _filter(where, filter), tag)
        first = await anext(pages, None)  # before the answer begins: its errors answered as such

        async def lines() -> AsyncIterator[bytes]:
            try:
                if first is not None:
                    yield b"".join(_export_line(i) for i in first)
                async for page in pages:
                    yield b"".join(_export_line(i) for i in page)
            except ImageSearchError as exc:  # the answer has begun: cut short (no last chunk), said plainly
                log.warning("export of album %s cut short: %s (%s)", album, exc.message, exc.reason)
                raise

        disposition = f"attachment; filename*=UTF-8''{quote(album)}.jsonl"
        return StreamingResponse(lines(), media_type=EXPORT_MEDIA_TYPE, headers={"Content-Disposition": disposition})

    @app.get("/v1/albums/{album}/images/count", tags=["images"], response_model=schemas.CountOut)
    async def count_images(album: AlbumName, where: Where = None, filter: FilterJson = None) -> schemas.CountOut:
        """How many images the album has, or how many match the filter."""
        return schemas.CountOut(count=await images.count(deps, album, _filter(where, filter)))

    @app.get("/v1/albums/{album}/images/groups", tags=["images"], response_model=schemas.GroupsOut)
    async def group_images(
        album: AlbumName,
        by: Annotated[list[str], Query(description="Columns to group by (built-in or declared).")],
        where: Where = None,
        filter: FilterJson = None,
    ) -> schemas.GroupsOut:
        """How many (matching) images have each combination of the columns' values, most first."""
        groups = await images.count_groups(deps, album, by, _filter(where, filter))
        return schemas.GroupsOut(columns=by, groups=[schemas.GroupOut.of(g) for g in groups])

    @app.patch("/v1/albums/{album}/images", tags=["images"], response_model=schemas.UpdatedOut)
    async def update_images(
        album: AlbumName,
        body: schemas.ImageChanges,
        where: Where = None,
        filter: FilterJson = None,
        all: Annotated[bool, Query(description="Every image: required when no filter is given.")] = False,
    ) -> schemas.UpdatedOut:
        """Changes the attributes of the images matching the filter, without re-embedding them."""
        updated = await images.update_images(deps, album, body.changes(), _filter(where, filter), all=all)
        return schemas.UpdatedOut(updated=updated)

    @app.delete("/v1/albums/{album}/images", tags=["images"], response_model=schemas.DeletedCount)
    async def delete_images(
        album: AlbumName,
        where: Where = None,
        filter: FilterJson = None,
        all: Annotated[bool, Query(description="Every image: required when no filter is given.")] = False,
    ) -> schemas.DeletedCount:
        """Deletes the images matching the filter with their bytes, local features and thumbnails."""
        return schemas.DeletedCount(deleted=await images.delete_images(deps, album, _filter(where, filter), all=all))

    @app.get("/v1/albums/{album}/images/{image_id:image_id}", tags=["images"], response_model=schemas.ImageOut)
    async def get_image(album: AlbumName, image_id: ImageId) -> schemas.ImageOut:
        return schemas.ImageOut.of(await images.get_image(deps, album, image_id))

    @app.patch("/v1/albums/{album}/images/{image_id:image_id}", tags=["images"], response_model=schemas.ImageOut)
    async def update_image(album: AlbumName, image_id: ImageId, body: schemas.ImageChanges) -> schemas.ImageOut:
        """Changes the image's attributes (merged: the others stay) and name; vectors, bytes and local features
        are untouched."""
        return schemas.ImageOut.of(await images.update_image(deps, album, image_id, body.changes()))

    @app.get("/v1/albums/{album}/images/{image_id:image_id}/content", tags=["images"], response_class=Response)
    async def get_content(album: AlbumName, image_id: ImageId) -> Response:
        """The image's original bytes, with the content type it was stored with."""
        blob = await images.get_content(deps, album, image_id)
        return Response(blob.content, media_type=blob.content_type,
                        headers={"Cache-Control": "private, max-age=3600", "ETag": f'"{image_id}"'})

    @app.get("/v1/albums/{album}/images/{image_id:image_id}/thumbnail", tags=["images"], response_class=Response)
    async def get_thumbnail(
        album: AlbumName,
        image_id: ImageId,
        size: int = Query(settings.thumbnail_size, description="1 to 1024, rounded up to 64, 128, 256, 512 or 1024.",
                          json_schema_extra={"minimum": 1, "maximum": 1024}),
    ) -> Response:
        """A JPEG thumbnail; the size is rounded up to one of 64, 128, 256, 512, 1024."""
        blob = await images.get_thumbnail(deps, album, image_id, size)
        return Response(blob.content, media_type="image/jpeg", headers={"Cache-Control": "private, max-age=3600"})

    @app.get("/v1/albums/{album}/images/{image_id:image_id}/faces", tags=["faces"],
             response_model=schemas.ImageFacesOut, responses={409: {"model": schemas.ErrorBody}})
    async def get_image_faces(album: AlbumName, image_id: ImageId) -> schemas.ImageFacesOut:
        """The faces found in the image (an album that indexes faces)."""
        boxes, width, height = await faces.image_faces(deps, album, image_id)
        return schemas.ImageFacesOut(album=album, id=image_id, width=width, height=height,
                                     faces=[schemas.FaceBoxOut.of(b) for b in boxes])

    @app.delete("/v1/albums/{album}/images/{image_id:image_id}", tags=["images"], response_model=schemas.Deleted)
    async def delete_image(album: AlbumName, image_id: ImageId) -> schemas.Deleted:
        return schemas.Deleted(deleted=await images.delete_image(deps, album, image_id))


def _new_image(content: bytes, name: str, attributes: str, content_type: str) -> NewImage:
    """An uploaded image; attributes that are not a JSON object fail that image alone."""
    try:
        parsed: JsonObject | InvalidAttributes = parse_attributes(attributes)
    except InvalidAttributes as exc:
        parsed = exc
    return NewImage(content=content, name=name, attributes=parsed, content_type=content_type)


def _add_search_routes(app: FastAPI, settings: GatewaySettings, deps: Deps) -> None:
    top_k_schema = {"minimum": 1, "maximum": settings.max_top_k}

    @app.post("/v1/albums/{album}/search", tags=["search"], response_model=schemas.SearchOut,
              responses={409: {"model": schemas.ErrorBody}, 413: {"model": schemas.ErrorBody}})
    async def search_album(
        album: AlbumName,
        top_k: int = Query(settings.default_top_k, description=f"1 to {settings.max_top_k}.",
                           json_schema_extra=top_k_schema),
        filter: Annotated[str | None, Query(description=FILTER_DESCRIPTION)] = None,
        where: Where = None,
        max_distance: Annotated[float | None, Query(description="Only images at most this far (cosine distance): "
                                                                "no match rather than unrelated images.",
                                                    json_schema_extra={"minimum": 0})] = None,
        mode: Annotated[str | None, Query(description=MODE_DESCRIPTION, json_schema_extra=MODE_SCHEMA)] = None,
        file: Annotated[UploadFile | None, File(description="The query image."), BINARY_PART] = None,
        url: Annotated[str | None, Form(description="Or: the URL of the query image.")] = None,
        image_id: Annotated[str | None, Form(description="Or: the id of an image of the album.")] = None,
        filter_form: Annotated[str | None, Form(alias="filter", description="The filter, as a form field.")] = None,
        where_form: Annotated[str | None, Form(alias="where", description="The text filter, as a form field.")] = None,
        mode_form: Annotated[str | None, Form(alias="mode", description="The mode, as a form field.",
                                              json_schema_extra=MODE_SCHEMA)] = None,
        region: Annotated[str | None, Query(description=REGION_DESCRIPTION, json_schema_extra=REGION_SCHEMA)] = None,
        region_form: Annotated[str | None, Form(alias="region", description="The region, as a form field.",
                                                json_schema_extra=REGION_SCHEMA)] = None,
        proposals: Annotated[int | None, Query(description=PROPOSALS_DESCRIPTION,
                                               json_schema_extra=PROPOSALS_SCHEMA)] = None,
        # Not nullable: a multipart field has no null (the text "null" is no number).
        proposals_form: Annotated[int, Form(alias="proposals", description="Proposals, as a form field.",
                                            json_schema_extra=PROPOSALS_SCHEMA)] = 0,
    ) -> schemas.SearchOut:
        """The album's images nearest the query, nearest first; give exactly one of file, url, image_id.
        `mode` "copy" (default) finds copies of the query, "similar" images like it; `region` searches
        only that box of the query image; `proposals` also searches that many regions of it worth
        searching (`regions` of the answer)."""
        box = parse_region(region or region_form)
        wanted = proposals or proposals_form or 0
        if wanted:
            if box is not None:
                raise InvalidArgument("give a region or ask for proposals, not both")
            content = await _read_upload(file, settings.max_image_bytes) if file is not None else None
            query = SearchQuery(image=content, url=url or None, image_id=image_id or None)
            return schemas.SearchOut.of(await search_with_proposals(
                deps, album, query, wanted, top_k, _filter(where or where_form, filter or filter_form),
                mode or mode_form or SearchMode.COPY.value, max_distance))
        content = await _read_upload(file, settings.max_image_bytes) if file is not None else None
        query = SearchQuery(image=content, url=url or None, image_id=image_id or None)
        outcome = await search.search(deps, album, query, top_k, _filter(where or where_form, filter or filter_form),
                                      mode or mode_form or SearchMode.COPY.value, max_distance, region=box)
        return schemas.SearchOut.of(outcome)

    @app.post("/v1/albums/{album}/faces/search", tags=["faces"], response_model=schemas.FaceSearchOut,
              responses={409: {"model": schemas.ErrorBody}, 413: {"model": schemas.ErrorBody}})
    async def search_faces(
        album: AlbumName,
        top_k: int = Query(settings.default_top_k, description=f"1 to {settings.max_top_k}.",
                           json_schema_extra=top_k_schema),
        max_distance: float | None = Query(
            None, description=f"Faces farther than this are other people (default {settings.face_match_distance}).",
            json_schema_extra={"minimum": 0}),
        face: Annotated[int, Query(description="Which face of the query searches: 0 the largest, 1 the next...",
                                   json_schema_extra={"minimum": 0})] = 0,
        region: Annotated[str | None, Query(description=REGION_DESCRIPTION, json_schema_extra=REGION_SCHEMA)] = None,
        file: Annotated[UploadFile | None, File(description="A photo of the person."), BINARY_PART] = None,
        url: Annotated[str | None, Form(description="Or: the URL of the photo.")] = None,
        image_id: Annotated[str | None, Form(description="Or: the id of an image of the album.")] = None,
    ) -> schemas.FaceSearchOut:
        """The album's images where the person of the query's face appears, nearest first, each with the box
        of the face that matched; the album must index faces (created with "faces": true). 422 no_face_found
        when the query shows no face; give exactly one of file, url, image_id."""
        content = await _read_upload(file, settings.max_image_bytes) if file is not None else None
        query = SearchQuery(image=content, url=url or None, image_id=image_id or None)
        outcome = await faces.search_faces(deps, album, query, top_k, max_distance, face, parse_region(region))
        return schemas.FaceSearchOut.of(outcome)

    @app.post("/v1/albums/{album}/recognize", tags=["search"], response_model=schemas.RecognizeOut,
              responses={409: {"model": schemas.ErrorBody}, 413: {"model": schemas.ErrorBody}})
    async def recognize_photo(
        album: AlbumName,
        label: Annotated[str | None, Query(description="The label attribute (a declared column or an undeclared "
                                                       "attribute), e.g. category.")] = None,
        evidence: Annotated[int, Query(description=f"Nearest labelled images to return, 0 to {recognize.MAX_EVIDENCE}.",
                                       json_schema_extra={"minimum": 0, "maximum": recognize.MAX_EVIDENCE})] = \
            recognize.DEFAULT_EVIDENCE,
        threshold: Annotated[float | None, Query(description="Answer unknown below this known probability "
                                                             "(default: the album's calibrated threshold).",
                                                 json_schema_extra={"minimum": 0, "maximum": 1})] = None,
        file: Annotated[UploadFile | None, File(description="The photo."), BINARY_PART] = None,
        url: Annotated[str | None, Form(description="Or: the URL of the photo.")] = None,
        image_id: Annotated[str | None, Form(description="Or: the id of an image of the album (left out of its "
                                                         "own evidence).")] = None,
        label_form: Annotated[str | None, Form(alias="label",
                                               description="The label attribute, as a form field.")] = None,
        by_faces: Annotated[bool, Query(alias="faces", description="By the photo's largest face (an album that "
                                        "indexes faces; e.g. label=person): its nearest labelled faces vote, and "
                                        "a face far from all of them is unknown.")] = False,
    ) -> schemas.RecognizeOut:
        """The label the photo most likely has among the album's images' values of `label`, with a confidence
        calibrated on the album and the nearest labelled images as evidence, or unknown when the photo is of
        none of them; give exactly one of file, url, image_id."""
        content = await _read_upload(file, settings.max_image_bytes) if file is not None else None
        query = SearchQuery(image=content, url=url or None, image_id=image_id or None)
        outcome = await recognize.recognize(deps, album, query, label or label_form or "", evidence, threshold,
                                            faces=by_faces)
        return schemas.RecognizeOut.of(outcome)


SQL_REQUEST_BODY: dict[str, Any] = {"requestBody": {"required": True, "content": {
    # Inline: the route reads its body itself, so FastAPI puts no SqlIn among the components to refer to.
    "application/json": {"schema": schemas.SqlIn.model_json_schema()},
    "multipart/form-data": {"schema": {"type": "object", "required": ["statement"], "properties": {
        "statement": {"type": "string", "description": "One SQL statement."},
        "delete_all": {"type": "boolean"},
        "file": {"type": "array", "items": {"type": "string", "format": "binary"},
                 "description": "Images the statement names as image('file name')."}}}},
}}}


def _add_sql_routes(app: FastAPI, settings: GatewaySettings, deps: Deps) -> None:
    @app.post("/v1/sql", tags=["sql"], response_model=schemas.SqlOut, openapi_extra=SQL_REQUEST_BODY,
              responses={409: {"model": schemas.ErrorBody}, 413: {"model": schemas.ErrorBody}})
    async def run_sql(request: Request) -> schemas.SqlOut:
        """Runs one SQL statement: CREATE TABLE, DROP TABLE, INSERT, SELECT (with ORDER BY feature <-> image(...)
        for the nearest images), UPDATE, DELETE. JSON `{"statement": ...}`, or multipart with a `statement` field
        and the images it names as image('file name') as `file` parts."""
        statement, delete_all, parts = await _sql_request(request, settings)
        return schemas.SqlOut.of(await sql.execute(deps, statement, parts, delete_all))


async def _sql_request(request: Request, settings: GatewaySettings) -> tuple[str, bool, dict[str, bytes]]:
    """(statement, delete_all, uploaded images by file name) from a JSON or multipart body."""
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind == "multipart/form-data":
        form = await request.form(max_files=settings.max_images_per_request)
        statement = form.get("statement")
        if not isinstance(statement, str):
            raise InvalidArgument("the form needs a statement field")
        parts: dict[str, bytes] = {}
        for upload in form.getlist("file"):
            if isinstance(upload, StarletteUpload):
                parts[upload.filename or f"file{len(parts) + 1}"] = await _read_upload(upload, settings.max_image_bytes)
        return statement, str(form.get("delete_all", "")).lower() in ("1", "true", "on"), parts
    try:
        body = schemas.SqlIn.model_validate_json(await request.body())
    except ValidationError as exc:
        raise InvalidArgument(f'send JSON {{"statement": "..."}} or a multipart form: {_validation_message(exc)}') \
            from None
    return body.statement, body.delete_all, {}


IMPORT_REQUEST_BODY: dict[str, Any] = {"requestBody": {"required": True, "content": {
    "application/json": {"schema": schemas.ImportCreate.model_json_schema(ref_template="#/components/schemas/{model}")},
    "multipart/form-data": {"schema": {"type": "object", "properties": {
        "archive": {"type": "string", "format": "binary",
                    "description": "A zip or tar archive (gzip, bz2 or xz too) of images: a folder sent as one."},
        "manifest": {"type": "string", "format": "binary",
                     "description": "A CSV or JSONL manifest (by its file name's suffix): a row per file of the "
                                    "archive (by path or name) or per URL, with its attributes."},
        "urls": {"type": "string", "description": "URLs of images, one per line."},
        "attributes": {"type": "string", "description": "A JSON object given to every image."},
        "on_duplicate": {"type": "string", "enum": [o.value for o in OnDuplicate]}}}},
}}}
IMPORT_ID = Annotated[str, PathParam(description="The import's id.", json_schema_extra={"pattern": "^[0-9a-f]{32}$"})]


def _add_import_routes(app: FastAPI, settings: GatewaySettings, deps: Deps, queue: ImportQueue) -> None:
    @app.post("/v1/albums/{album}/imports", status_code=202, tags=["imports"], response_model=schemas.ImportOut,
              openapi_extra=IMPORT_REQUEST_BODY, responses={409: {"model": schemas.ErrorBody}})
    async def create_import(
        album: AlbumName, request: Request,
        idempotency_key: Annotated[str | None, Header(
            alias="Idempotency-Key", max_length=imports.MAX_IDEMPOTENCY_KEY,
            description="Your name for this import, the same each time you send it: sent again after no answer "
                        "came (the gateway stopped), it is answered with the import the first request queued "
                        "instead of being run twice. A fresh one (a UUID) for each new import.")] = None,
    ) -> schemas.ImportOut:
        """Adds images in the background: URLs, an archive (a folder sent as a zip or tar), and/or a CSV/JSONL
        manifest with a row of typed attributes per file or URL. Answers once the images are staged and
        queued; GET the status_url for progress. Survives a killed gateway, extractor, Milvus or object store."""
        spec = replace(await _import_spec(request, settings), idempotency_key=idempotency_key or "")
        return schemas.ImportOut.of(await imports.create(deps, queue, album, spec))

    @app.post("/v1/albums/{album}/manifest-parts", tags=["imports"], response_model=schemas.ManifestCutOut,
              responses={400: {"model": schemas.ErrorBody}, 404: {"model": schemas.ErrorBody},
                         413: {"model": schemas.ErrorBody}, 422: {"model": schemas.ErrorBody}})
    async def cut_manifest(album: AlbumName, body: schemas.ManifestCutIn) -> schemas.ManifestCutOut:
        """A manifest cut for a folder sent in parts, an import each: each part's manifest holds the rows its
        files take (as an import finds them), the first's also the URL rows, the last's also the rows naming no
        file. The whole manifest is read by the album's columns first: a bad cell is refused (422) before any part
        is sent. `imagesearch ingest` and the web page send a large folder so."""
        return schemas.ManifestCutOut(manifests=await manifests.cut(deps, album, body.manifest, body.manifest_format,
                                                                    body.parts, body.manifest_name))

    @app.get("/v1/imports", tags=["imports"], response_model=schemas.ImportList)
    async def list_imports(
        album: Annotated[str | None, Query(description="Only this album's imports.")] = None,
        limit: Annotated[int, Query(json_schema_extra={"minimum": 1, "maximum": 500})] = 50,
    ) -> schemas.ImportList:
        """The newest imports first."""
        found = await imports.list_all(queue, album or "", limit)
        return schemas.ImportList(imports=[schemas.ImportOut.of(j) for j in found])

    @app.get("/v1/imports/{import_id}", tags=["imports"], response_model=schemas.ImportOut)
    async def get_import(import_id: IMPORT_ID) -> schemas.ImportOut:
        """An import's progress: counts by outcome, rate and ETA."""
        return schemas.ImportOut.of(await imports.get(queue, import_id))

    @app.get("/v1/imports/{import_id}/results", tags=["imports"], response_model=schemas.ImportResults)
    async def import_results(
        import_id: IMPORT_ID,
        failed: Annotated[bool, Query(description="Only the images that failed, with their reasons.")] = False,
        after: Annotated[int | None, Query(description="Only items after this index: the `next_after` of the "
                                                       "page before.", json_schema_extra={"minimum": 0})] = None,
        limit: Annotated[int, Query(description=f"At most this many results, 1 to {imports.RESULTS_PAGE_MAX}.",
                                    json_schema_extra={"minimum": 1, "maximum": imports.RESULTS_PAGE_MAX})
                         ] = imports.RESULTS_PAGE,
    ) -> schemas.ImportResults:
        """What happened to each image processed so far, in the import's order, a page at a time."""
        page = await imports.results(queue, import_id, failed_only=failed, after=after,
                                     limit=limit)
        return schemas.ImportResults(results=[schemas.ImportItemOut.model_validate(r) for r in page.results],
                                     next_after=page.next_after)

    @app.post("/v1/imports/{import_id}/cancel", tags=["imports"], response_model=schemas.ImportOut)
    async def cancel_import(import_id: IMPORT_ID) -> schemas.ImportOut:
        """Stops the import; the images it added stay."""
        return schemas.ImportOut.of(await imports.cancel(deps, queue, import_id))

    @app.post("/v1/albums/{album}/imports/cancel", tags=["imports"], response_model=schemas.ImportCancelledByKey,
              response_model_by_alias=True)
    async def cancel_import_by_key(album: AlbumName, body: schemas.ImportCancelByKey) -> schemas.ImportCancelledByKey:
        """Stops the import an import request with this Idempotency-Key made, or will make: for a client that stopped
        its upload midway. What the import added stays."""
        job = await imports.cancel_by_key(deps, queue, album, body.idempotency_key)
        return schemas.ImportCancelledByKey.of(job)

    @app.get("/v1/albums/{album}/duplicates", tags=["images"], response_model=schemas.DuplicatesOut)
    async def album_duplicates(
        album: AlbumName,
        max_distance: Annotated[float | None, Query(description="Near-duplicates: at most this far (cosine distance; "
                                                                "default: the gateway's near-duplicate distance).",
                                                    json_schema_extra={"minimum": 0, "maximum": 2})] = None,
    ) -> schemas.DuplicatesOut:
        """Groups of near-duplicate images of the album, the largest first."""
        limit = duplicates.distance_limit(deps, max_distance)
        groups = await duplicates.groups(deps, album, limit)
        return schemas.DuplicatesOut(album=album, max_distance=limit, groups=[
            schemas.DuplicateGroup(images=[schemas.ImageOut.of(i) for i in g.images], distance=round(g.distance, 5))
            for g in groups])


async def _import_spec(request: Request, settings: GatewaySettings) -> ImportSpec:
    """What to import, from a JSON body or a multipart form."""
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind != "multipart/form-data":
        try:
            body = schemas.ImportCreate.model_validate_json(await request.body())
        except ValidationError as exc:
            raise InvalidArgument(f"send JSON {{\"urls\": [...]}} or a multipart form with an archive: "
                                  f"{_validation_message(exc)}") from None
        return ImportSpec(urls=body.urls, manifest=body.manifest,
                          manifest_name="manifest" + manifests.format_suffix(body.manifest_format),
                          attributes=body.attributes, on_duplicate=body.on_duplicate)
    form = await request.form(max_files=4, max_part_size=MAX_MANIFEST_BYTES)
    archive, manifest = form.get("archive"), form.get("manifest")
    manifest_text, manifest_name = "", ""
    if isinstance(manifest, StarletteUpload):
        raw = await manifest.read(MAX_MANIFEST_BYTES + 1)
        if len(raw) > MAX_MANIFEST_BYTES:
            raise InvalidArgument(f"the manifest is over {MAX_MANIFEST_BYTES} bytes")
        manifest_text, manifest_name = raw.decode("utf-8", errors="replace"), manifest.filename or "manifest.csv"
    elif isinstance(manifest, str):
        manifest_text, manifest_name = manifest, "manifest.csv"
    urls = [u.strip() for u in str(form.get("urls") or "").splitlines() if u.strip()]
    try:
        on_duplicate = OnDuplicate(str(form.get("on_duplicate") or OnDuplicate.KEEP.value))
    except ValueError:
        raise InvalidArgument(f"on_duplicate is one of {', '.join(o.value for o in OnDuplicate)}") from None
    return ImportSpec(urls=urls, archive=archive.file if isinstance(archive, StarletteUpload) else None,
                      archive_name=(archive.filename or "") if isinstance(archive, StarletteUpload) else "",
                      manifest=manifest_text, manifest_name=manifest_name,
                      attributes=parse_attributes(str(form.get("attributes") or "")), on_duplicate=on_duplicate)
