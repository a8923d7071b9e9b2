"""The gRPC Gateway service: wire messages to pipeline calls and back, nothing more.

Errors raised by the use cases become status codes in `grpc_server.ServiceInterceptor`.
"""

from __future__ import annotations

import json

import grpc
from imagesearch.v1 import common_pb2, gateway_pb2, gateway_pb2_grpc

from services.gateway.deps import Deps
from services.gateway.records import Album, ImageRecord, NewImage, Query, SearchMode
from services.gateway.usecases import albums, images, ingest, search

SERVICE_NAME = gateway_pb2.DESCRIPTOR.services_by_name["Gateway"].full_name


def album_message(album: Album) -> gateway_pb2.Album:
    return gateway_pb2.Album(name=album.name, image_count=album.image_count, model=album.model, dim=album.dim,
                             metric=album.metric, created_at_ms=album.created_at_ms)


def image_message(image: ImageRecord) -> gateway_pb2.Image:
    return gateway_pb2.Image(
        album=image.album, id=image.id, name=image.name, content_hash=image.content_hash,
        attributes_json=json.dumps(image.attributes), created_at_ms=image.created_at_ms,
        content_type=image.content_type, size_bytes=image.size_bytes, url=image.url,
        thumbnail_url=image.thumbnail_url,
    )


def search_query(request: gateway_pb2.SearchImagesRequest) -> Query:
    which = request.WhichOneof("query")
    return Query(
        image=request.image if which == "image" else None,
        url=request.url if which == "url" else None,
        image_id=request.image_id if which == "image_id" else None,
    )


class GatewayServicer(gateway_pb2_grpc.GatewayServicer):
    """Each RPC calls the use case of the same name."""

    def __init__(self, deps: Deps) -> None:
        self.deps = deps

    async def CreateAlbum(
        self, request: gateway_pb2.CreateAlbumRequest, context: grpc.aio.ServicerContext
    ) -> gateway_pb2.Album:
        return album_message(await albums.create(self.deps, request.name))

    async def ListAlbums(
        self, request: gateway_pb2.ListAlbumsRequest, context: grpc.aio.ServicerContext
    ) -> gateway_pb2.ListAlbumsResponse:
        return gateway_pb2.ListAlbumsResponse(albums=[album_message(a) for a in await albums.list_all(self.deps)])

    async def GetAlbum(
        self, request: gateway_pb2.GetAlbumRequest, context: grpc.aio.ServicerContext
    ) -> gateway_pb2.Album:
        return album_message(await albums.get(self.deps, request.name))

    async def DeleteAlbum(
        self, request: gateway_pb2.DeleteAlbumRequest, context: grpc.aio.ServicerContext
    ) -> gateway_pb2.DeleteAlbumResponse:
        return gateway_pb2.DeleteAlbumResponse(deleted=await albums.delete(self.deps, request.name))

    async def AddImages(
        self, request: gateway_pb2.AddImagesRequest, context: grpc.aio.ServicerContext
    ) -> gateway_pb2.AddImagesResponse:
        new = [NewImage(content=i.content, name=i.name, attributes_json=i.attributes_json) for i in request.images]
        results = await ingest.add_images(self.deps, request.album, new)
        return gateway_pb2.AddImagesResponse(results=[
            gateway_pb2.AddedImage(
                index=r.index, name=r.name, status=r.status.value, id=r.id,
                error=common_pb2.ItemError(reason=r.error.reason, message=r.error.message) if r.error else None,
            )
            for r in results
        ])

    async def SearchImages(
        self, request: gateway_pb2.SearchImagesRequest, context: grpc.aio.ServicerContext
    ) -> gateway_pb2.SearchImagesResponse:
        top_k = request.top_k or None
        outcome = await search.search(self.deps, request.album, search_query(request), top_k, request.filter_json,
                                      request.mode or SearchMode.COPY.value)
        return gateway_pb2.SearchImagesResponse(
            hits=[gateway_pb2.SearchHit(image=image_message(h.image), distance=h.distance, matches=h.matches)
                  for h in outcome.hits],
            metric=outcome.metric, model=outcome.model, took_ms=outcome.took_ms,
        )

    async def GetImage(
        self, request: gateway_pb2.GetImageRequest, context: grpc.aio.ServicerContext
    ) -> gateway_pb2.Image:
        return image_message(await images.get_image(self.deps, request.album, request.id))

    async def GetImageContent(
        self, request: gateway_pb2.GetImageContentRequest, context: grpc.aio.ServicerContext
    ) -> gateway_pb2.ImageContent:
        blob = await images.get_content(self.deps, request.album, request.id)
        return gateway_pb2.ImageContent(content=blob.content, content_type=blob.content_type)

    async def GetThumbnail(
        self, request: gateway_pb2.GetThumbnailRequest, context: grpc.aio.ServicerContext
    ) -> gateway_pb2.ImageContent:
        blob = await images.get_thumbnail(self.deps, request.album, request.id, request.size or None)
        return gateway_pb2.ImageContent(content=blob.content, content_type=blob.content_type)

    async def ListImages(
        self, request: gateway_pb2.ListImagesRequest, context: grpc.aio.ServicerContext
    ) -> gateway_pb2.ListImagesResponse:
        listed = await images.list_images(self.deps, request.album, request.limit or 50, request.offset)
        return gateway_pb2.ListImagesResponse(images=[image_message(i) for i in listed])

    async def DeleteImage(
        self, request: gateway_pb2.DeleteImageRequest, context: grpc.aio.ServicerContext
    ) -> gateway_pb2.DeleteImageResponse:
        return gateway_pb2.DeleteImageResponse(deleted=await images.delete_image(self.deps, request.album, request.id))
