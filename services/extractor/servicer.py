"""The Extractor gRPC servicer: wire types <-> the embedder and the batcher.

Each request's images are decoded concurrently in a thread pool; a bad image becomes an
`ItemError` for that item alone. Each good image goes to the shared `DynamicBatcher` as soon as it
is decoded, so the model starts on a request's first images while the rest decode, and concurrent
requests fill the same batches. A request of purpose INDEX also gets every database row
of each image (`EmbedResult.index_vectors`, first = the upright global vector).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import Executor

import grpc
import numpy as np
from imagesearch.v1 import common_pb2, extractor_pb2, extractor_pb2_grpc
from numpy.typing import NDArray

from services.common.errors import InvalidArgument
from services.extractor.batcher import DynamicBatcher
from services.extractor.descriptors import Purpose
from services.extractor.model import EmbedJob, ImageEmbedder, Scales

SERVICE_NAMES = (extractor_pb2.DESCRIPTOR.services_by_name["Extractor"].full_name,)

Decoded = Scales | InvalidArgument
# Items are decoded images with their purpose; results are each image's rows [R, dim].
VectorBatcher = DynamicBatcher[EmbedJob, NDArray[np.float32]]


class ExtractorServicer(extractor_pb2_grpc.ExtractorServicer):
    """Serves Embed and GetModelInfo over one embedder, batcher and decode pool."""

    def __init__(self, embedder: ImageEmbedder, batcher: VectorBatcher, decode_pool: Executor) -> None:
        self.embedder = embedder
        self.batcher = batcher
        self.decode_pool = decode_pool

    async def Embed(
        self, request: extractor_pb2.EmbedRequest, context: grpc.aio.ServicerContext
    ) -> extractor_pb2.EmbedResponse:
        if not request.images:
            raise InvalidArgument("EmbedRequest.images is empty: send at least one image")
        purpose = Purpose(request.purpose)
        results = await asyncio.gather(*(self._decode_and_embed(data, purpose) for data in request.images))
        return extractor_pb2.EmbedResponse(results=results, model=self.embedder.model_id, dim=self.embedder.dim)

    async def GetModelInfo(
        self, request: extractor_pb2.GetModelInfoRequest, context: grpc.aio.ServicerContext
    ) -> extractor_pb2.ModelInfo:
        return extractor_pb2.ModelInfo(
            model=self.embedder.model_id,
            dim=self.embedder.dim,
            provider=self.embedder.provider,
            image_size=self.embedder.preprocess.image_size,
            max_batch=self.batcher.max_batch,
            index_rows=self.embedder.rows_per_image(Purpose.INDEX),
        )

    async def _decode_and_embed(self, data: bytes, purpose: Purpose) -> extractor_pb2.EmbedResult:
        return await self._embed(await self._decode(data), purpose)

    async def _decode(self, data: bytes) -> Decoded:
        """The decoded pixels, or the caller's error (InvalidImage, ImageTooLarge) for this item."""
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self.decode_pool, self.embedder.decode, data)
        except InvalidArgument as exc:
            return exc

    async def _embed(self, item: Decoded, purpose: Purpose) -> extractor_pb2.EmbedResult:
        if isinstance(item, InvalidArgument):
            return extractor_pb2.EmbedResult(error=common_pb2.ItemError(reason=item.reason, message=item.message))
        rows = await self.batcher.submit(EmbedJob(item, purpose))
        vectors = [extractor_pb2.Vector(values=row.tolist()) for row in rows]
        if purpose is Purpose.INDEX:
            return extractor_pb2.EmbedResult(vector=vectors[0], index_vectors=vectors)
        return extractor_pb2.EmbedResult(vector=vectors[0])


def registrar(servicer: ExtractorServicer) -> Callable[[grpc.aio.Server], None]:
    """What `create_server` calls to add the servicer to the server."""
    return lambda server: extractor_pb2_grpc.add_ExtractorServicer_to_server(servicer, server)
