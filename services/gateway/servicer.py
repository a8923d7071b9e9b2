"""The gRPC Gateway service: wire messages to use-case calls and back, nothing more.

Errors raised by the use cases become status codes in `grpc_server.ServiceInterceptor`.
"""

from __future__ import annotations

import io
import json
from collections.abc import AsyncIterator
from typing import Any, TypeAlias

import grpc
from imagesearch.v1 import common_pb2, gateway_pb2, gateway_pb2_grpc

from services.common.errors import InvalidArgument, InvalidAttributes
from services.common.schema import to_json
from services.common.wire import (
    attributes_from_wire,
    attributes_to_wire,
    columns_from_wire,
    columns_to_wire,
    filter_from_wire,
    value_to_wire,
)
from services.gateway.deps import Deps
from services.gateway.import_queue import ImportJob, ImportQueue
from services.gateway.records import (
    Album,
    FaceBox,
    ImageFilter,
    ImageRecord,
    JsonObject,
    Listing,
    NewImage,
    OnDuplicate,
    Query,
    RecognizeOutcome,
    ScoredImage,
    SearchMode,
    SqlResult,
)
from services.gateway.regions import Region
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
from services.gateway.usecases.imports import ImportSpec
from services.gateway.usecases.ingest import parse_attributes
from services.gateway.usecases.proposals import search_with_proposals

SERVICE_NAME = gateway_pb2.DESCRIPTOR.services_by_name["Gateway"].full_name
Context: TypeAlias = grpc.aio.ServicerContext


def album_message(album: Album) -> gateway_pb2.Album:
    return gateway_pb2.Album(name=album.name, image_count=album.image_count, model=album.model, dim=album.dim,
                             metric=album.metric, created_at_ms=album.created_at_ms,
                             columns=columns_to_wire(album.schema), faces=bool(album.face_model),
                             face_model=album.face_model, details=album.details)


def face_box_message(box: FaceBox) -> gateway_pb2.FaceBox:
    return gateway_pb2.FaceBox(x=box.x, y=box.y, width=box.width, height=box.height, score=box.score,
                               landmarks=[c for point in box.landmarks for c in point])


def image_message(image: ImageRecord) -> gateway_pb2.Image:
    return gateway_pb2.Image(
        album=image.album, id=image.id, name=image.name, content_hash=image.content_hash,
        attributes_json=json.dumps(to_json(image.attributes)), attributes=attributes_to_wire(image.attributes),
        created_at_ms=image.created_at_ms, content_type=image.content_type, size_bytes=image.size_bytes,
        url=image.url, thumbnail_url=image.thumbnail_url,
    )


def search_query(request: gateway_pb2.SearchImagesRequest | gateway_pb2.RecognizeRequest
                 | gateway_pb2.SearchFacesRequest) -> Query:
    which = request.WhichOneof("query")
    return Query(
        image=request.image if which == "image" else None,
        url=request.url if which == "url" else None,
        image_id=request.image_id if which == "image_id" else None,
    )


def search_hits(scored: list[ScoredImage]) -> list[gateway_pb2.SearchHit]:
    return [gateway_pb2.SearchHit(image=image_message(h.image), distance=h.distance, matches=h.matches)
            for h in scored]


def region_of(message: gateway_pb2.Region) -> Region:
    return Region(message.x, message.y, message.width, message.height)


def image_filter(request: Any) -> ImageFilter:
    """The filter of a request with the three fields `filter_json`, `where` and `filter`."""
    tree = filter_from_wire(request.filter) if request.HasField("filter") else None
    return ImageFilter(json=request.filter_json, where=request.where, tree=tree)


def new_image(message: gateway_pb2.NewImage) -> NewImage:
    """An image of AddImages; attributes that cannot be read fail that image alone, as over HTTP."""
    attributes: JsonObject | InvalidAttributes
    if message.attributes and message.attributes_json:
        attributes = InvalidAttributes("give the attributes as a map or as JSON text, not both")
    else:
        try:
            attributes = attributes_from_wire(message.attributes) if message.attributes else \
                parse_attributes(message.attributes_json)
        except InvalidArgument as exc:  # a value nesting too deep, not finite or out of range, too
            attributes = exc if isinstance(exc, InvalidAttributes) else InvalidAttributes(exc.message)
    return NewImage(content=message.content, name=message.name, attributes=attributes)


def recognize_message(o: RecognizeOutcome) -> gateway_pb2.RecognizeResponse:
    c = o.calibration
    return gateway_pb2.RecognizeResponse(
        album=o.album, attribute=o.attribute, model=o.model, took_ms=o.took_ms, label=o.label, unknown=o.unknown,
        confidence=o.confidence, known=o.known, threshold=o.threshold,
        candidates=[gateway_pb2.LabelScore(label=v.label, confidence=v.confidence, share=v.share, nearest=v.nearest)
                    for v in o.candidates],
        evidence=[gateway_pb2.Evidence(image=image_message(e.image), distance=e.distance, labels=list(e.labels))
                  for e in o.evidence],
        calibration=gateway_pb2.Calibration(images=c.images, labels=c.labels, calibrated=c.calibrated, top1=c.top1,
                                            known_rejected=c.known_rejected, unknown_rejected=c.unknown_rejected),
        face=face_box_message(o.face) if o.face is not None else None)


def sql_message(result: SqlResult) -> gateway_pb2.SqlResponse:
    rows = [gateway_pb2.SqlRow(values=[value_to_wire(v) for v in row.values],
                               image=image_message(row.image) if row.image else None) for row in result.rows]
    return gateway_pb2.SqlResponse(statement=result.statement, album=result.album, columns=list(result.columns),
                                   rows=rows, affected=result.affected, took_ms=result.took_ms)


class GatewayServicer(gateway_pb2_grpc.GatewayServicer):
    """Each RPC calls the use case of the same name."""

    def __init__(self, deps: Deps, queue: ImportQueue) -> None:
        self.deps = deps
        self.queue = queue

    async def CreateAlbum(self, request: gateway_pb2.CreateAlbumRequest, context: Context) -> gateway_pb2.Album:
        return album_message(await albums.create(self.deps, request.name, columns_from_wire(request.columns),
                                                 faces=request.faces, details=request.details))

    async def ListAlbums(
        self, request: gateway_pb2.ListAlbumsRequest, context: Context
    ) -> gateway_pb2.ListAlbumsResponse:
        return gateway_pb2.ListAlbumsResponse(albums=[album_message(a) for a in await albums.list_all(self.deps)])

    async def GetAlbum(self, request: gateway_pb2.GetAlbumRequest, context: Context) -> gateway_pb2.Album:
        return album_message(await albums.get(self.deps, request.name))

    async def DeleteAlbum(
        self, request: gateway_pb2.DeleteAlbumRequest, context: Context
    ) -> gateway_pb2.DeleteAlbumResponse:
        return gateway_pb2.DeleteAlbumResponse(deleted=await albums.delete(self.deps, request.name))

    async def AddImages(
        self, request: gateway_pb2.AddImagesRequest, context: Context
    ) -> gateway_pb2.AddImagesResponse:
        results = await ingest.add_images(self.deps, request.album, [new_image(i) for i in request.images],
                                          on_duplicate=on_duplicate(request.on_duplicate))
        return gateway_pb2.AddImagesResponse(results=[
            gateway_pb2.AddedImage(
                index=r.index, name=r.name, status=r.status.value, id=r.id, near=r.near,
                error=common_pb2.ItemError(reason=r.error.reason, message=r.error.message) if r.error else None,
            )
            for r in results
        ])

    async def SearchImages(
        self, request: gateway_pb2.SearchImagesRequest, context: Context
    ) -> gateway_pb2.SearchImagesResponse:
        top_k = request.top_k or None
        max_distance = request.max_distance if request.HasField("max_distance") else None
        region = region_of(request.region) if request.HasField("region") else None
        mode = request.mode or SearchMode.COPY.value
        if request.proposals and region is not None:
            raise InvalidArgument("give a region or ask for proposals, not both")
        if request.proposals:
            outcome = await search_with_proposals(self.deps, request.album, search_query(request), request.proposals,
                                                  top_k, image_filter(request), mode, max_distance)
        else:
            outcome = await search.search(self.deps, request.album, search_query(request), top_k,
                                          image_filter(request), mode, max_distance, region=region)
        return gateway_pb2.SearchImagesResponse(
            hits=search_hits(outcome.hits), metric=outcome.metric, model=outcome.model, took_ms=outcome.took_ms,
            regions=[gateway_pb2.ProposedRegion(region=gateway_pb2.Region(x=r.box[0], y=r.box[1], width=r.box[2],
                                                                          height=r.box[3]),
                                                score=r.score, hits=search_hits(r.hits)) for r in outcome.regions],
        )

    async def SearchFaces(
        self, request: gateway_pb2.SearchFacesRequest, context: Context
    ) -> gateway_pb2.SearchFacesResponse:
        max_distance = request.max_distance if request.HasField("max_distance") else None
        region = region_of(request.region) if request.HasField("region") else None
        o = await faces.search_faces(self.deps, request.album, search_query(request), request.top_k or None,
                                     max_distance, request.face, region)
        return gateway_pb2.SearchFacesResponse(
            hits=[gateway_pb2.FaceHit(image=image_message(h.image), distance=h.distance, face=face_box_message(h.face),
                                      width=h.width, height=h.height) for h in o.hits],
            model=o.model, took_ms=o.took_ms, faces=[face_box_message(b) for b in o.faces], face=o.face,
            width=o.width, height=o.height, max_distance=o.max_distance)

    async def GetImageFaces(
        self, request: gateway_pb2.GetImageFacesRequest, context: Context
    ) -> gateway_pb2.ImageFaces:
        boxes, width, height = await faces.image_faces(self.deps, request.album, request.id)
        return gateway_pb2.ImageFaces(album=request.album, id=request.id, width=width, height=height,
                                      faces=[face_box_message(b) for b in boxes])

    async def Recognize(self, request: gateway_pb2.RecognizeRequest, context: Context) -> gateway_pb2.RecognizeResponse:
        evidence = request.evidence if request.HasField("evidence") else recognize.DEFAULT_EVIDENCE
        threshold = request.threshold if request.HasField("threshold") else None
        outcome = await recognize.recognize(self.deps, request.album, search_query(request), request.label, evidence,
                                            threshold, faces=request.faces)
        return recognize_message(outcome)

    async def GetImage(self, request: gateway_pb2.GetImageRequest, context: Context) -> gateway_pb2.Image:
        return image_message(await images.get_image(self.deps, request.album, request.id))

    async def GetImageContent(
        self, request: gateway_pb2.GetImageContentRequest, context: Context
    ) -> gateway_pb2.ImageContent:
        blob = await images.get_content(self.deps, request.album, request.id)
        return gateway_pb2.ImageContent(content=blob.content, content_type=blob.content_type)

    async def GetThumbnail(
        self, request: gateway_pb2.GetThumbnailRequest, context: Context
    ) -> gateway_pb2.ImageContent:
        blob = await images.get_thumbnail(self.deps, request.album, request.id, request.size or None)
        return gateway_pb2.ImageContent(content=blob.content, content_type=blob.content_type)

    async def ListImages(
        self, request: gateway_pb2.ListImagesRequest, context: Context
    ) -> gateway_pb2.ListImagesResponse:
        listing = Listing(filter=image_filter(request), limit=request.limit or 50, offset=request.offset,
                          after=request.after, order_by=request.order_by, descending=request.descending,
                          tag=request.tag or None,  # proto3: empty is unset
                          nulls_first=request.nulls_first if request.HasField("nulls_first") else None)
        listed = await images.list_images(self.deps, request.album, listing)
        return gateway_pb2.ListImagesResponse(images=[image_message(i) for i in listed],
                                              next_after=images.next_after(listing, listed))

    async def ExportImages(
        self, request: gateway_pb2.ExportImagesRequest, context: Context
    ) -> AsyncIterator[gateway_pb2.Image]:
        async for page in images.export(self.deps, request.album, image_filter(request), request.tag or None):
            for image in page:
                yield image_message(image)

    async def CountImages(
        self, request: gateway_pb2.CountImagesRequest, context: Context
    ) -> gateway_pb2.CountImagesResponse:
        return gateway_pb2.CountImagesResponse(count=await images.count(self.deps, request.album,
                                                                        image_filter(request)))

    async def GroupImages(
        self, request: gateway_pb2.GroupImagesRequest, context: Context
    ) -> gateway_pb2.GroupImagesResponse:
        groups = await images.count_groups(self.deps, request.album, list(request.columns), image_filter(request))
        return gateway_pb2.GroupImagesResponse(groups=[
            gateway_pb2.ImageGroup(key=[value_to_wire(v) for v in g.key], count=g.count) for g in groups])

    async def DeleteImage(
        self, request: gateway_pb2.DeleteImageRequest, context: Context
    ) -> gateway_pb2.DeleteImageResponse:
        return gateway_pb2.DeleteImageResponse(deleted=await images.delete_image(self.deps, request.album,
                                                                                 request.id))

    async def UpdateImage(self, request: gateway_pb2.UpdateImageRequest, context: Context) -> gateway_pb2.Image:
        changes = attributes_from_wire(request.set)
        return image_message(await images.update_image(self.deps, request.album, request.id, changes))

    async def UpdateImages(
        self, request: gateway_pb2.UpdateImagesRequest, context: Context
    ) -> gateway_pb2.UpdateImagesResponse:
        updated = await images.update_images(self.deps, request.album, attributes_from_wire(request.set),
                                             image_filter(request), all=request.all)
        return gateway_pb2.UpdateImagesResponse(updated=updated)

    async def DeleteImages(
        self, request: gateway_pb2.DeleteImagesRequest, context: Context
    ) -> gateway_pb2.DeleteImagesResponse:
        deleted = await images.delete_images(self.deps, request.album, image_filter(request), all=request.all)
        return gateway_pb2.DeleteImagesResponse(deleted=deleted)

    async def Sql(self, request: gateway_pb2.SqlRequest, context: Context) -> gateway_pb2.SqlResponse:
        parts = {image.name: image.content for image in request.images}
        return sql_message(await sql.execute(self.deps, request.statement, parts, request.delete_all))

    async def CreateImport(self, request: gateway_pb2.CreateImportRequest, context: Context) -> gateway_pb2.ImportJob:
        spec = ImportSpec(urls=list(request.urls), archive=io.BytesIO(request.archive) if request.archive else None,
                          archive_name=request.archive_name,
                          manifest=request.manifest,
                          manifest_name="manifest" + manifests.format_suffix(request.manifest_format or "csv"),
                          attributes=attributes_from_wire(request.attributes),
                          on_duplicate=on_duplicate(request.on_duplicate), idempotency_key=request.idempotency_key)
        return import_message(await imports.create(self.deps, self.queue, request.album, spec))

    async def CutManifest(
        self, request: gateway_pb2.CutManifestRequest, context: Context
    ) -> gateway_pb2.CutManifestResponse:
        cut = await manifests.cut(self.deps, request.album, request.manifest, request.manifest_format or "csv",
                                  [list(part.files) for part in request.parts], request.manifest_name)
        return gateway_pb2.CutManifestResponse(manifests=cut)

    async def GetImport(self, request: gateway_pb2.GetImportRequest, context: Context) -> gateway_pb2.ImportJob:
        return import_message(await imports.get(self.queue, request.id))

    async def ListImports(
        self, request: gateway_pb2.ListImportsRequest, context: Context
    ) -> gateway_pb2.ListImportsResponse:
        found = await imports.list_all(self.queue, request.album, request.limit or 50)
        return gateway_pb2.ListImportsResponse(imports=[import_message(j) for j in found])

    async def GetImportResults(
        self, request: gateway_pb2.GetImportResultsRequest, context: Context
    ) -> gateway_pb2.GetImportResultsResponse:
        page = await imports.results(self.queue, request.id, failed_only=request.failed_only,
                                     after=request.after if request.HasField("after") else None,
                                     limit=request.limit or imports.RESULTS_PAGE)
        return gateway_pb2.GetImportResultsResponse(results=[
            gateway_pb2.ImportItem(index=r["index"], name=r["name"], status=r["status"], id=r.get("id") or "",
                                   url=r.get("url") or "", near=r.get("near") or "", file=r.get("file") or "",
                                   error=common_pb2.ItemError(**r["error"]) if r.get("error") else None)
            for r in page.results], next_after=page.next_after)

    async def CancelImport(self, request: gateway_pb2.CancelImportRequest, context: Context) -> gateway_pb2.ImportJob:
        return import_message(await imports.cancel(self.deps, self.queue, request.id))

    async def CancelImportByKey(self, request: gateway_pb2.CancelImportByKeyRequest, context: Context
                                ) -> gateway_pb2.CancelImportByKeyResponse:
        job = await imports.cancel_by_key(self.deps, self.queue, request.album, request.idempotency_key)
        return gateway_pb2.CancelImportByKeyResponse(import_job=None if job is None else import_message(job))

    async def FindDuplicates(
        self, request: gateway_pb2.FindDuplicatesRequest, context: Context
    ) -> gateway_pb2.FindDuplicatesResponse:
        limit = duplicates.distance_limit(self.deps, request.max_distance if request.HasField("max_distance") else None)
        found = await duplicates.groups(self.deps, request.album, limit)
        return gateway_pb2.FindDuplicatesResponse(album=request.album, max_distance=limit, groups=[
            gateway_pb2.DuplicateGroup(images=[image_message(i) for i in g.images], distance=g.distance)
            for g in found])


    async def ReembedAlbum(self, request: gateway_pb2.ReembedAlbumRequest, context: Context) -> gateway_pb2.ImportJob:
        return import_message(await reembed.start(self.deps, self.queue, request.album, faces=request.faces,
                                                  details=request.details))


def on_duplicate(text: str) -> OnDuplicate:
    try:
        return OnDuplicate(text or OnDuplicate.KEEP.value)
    except ValueError:
        raise InvalidArgument(f"on_duplicate is one of {', '.join(o.value for o in OnDuplicate)}") from None


def import_message(job: ImportJob) -> gateway_pb2.ImportJob:
    return gateway_pb2.ImportJob(
        id=job.id, album=job.album, kind=job.kind, status=job.status.value, total=job.total,
        processed=job.processed, rate=job.rate(), eta_s=job.eta_s(), on_duplicate=job.on_duplicate, error=job.error,
        source=job.source,
        created_at_ms=job.created_at_ms, started_at_ms=job.started_at_ms, finished_at_ms=job.finished_at_ms,
        **job.counts)
