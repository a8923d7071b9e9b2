"""The Extractor gRPC servicer: wire types <-> the embedder and the batcher.

Each request's images are decoded concurrently in a thread pool; a bad image becomes an
`ItemError` for that item alone. Each good image goes to the shared `DynamicBatcher` as soon as it
is decoded, so the model starts on a request's first images while the rest decode, and concurrent
requests fill the same batches. Pool and batcher are those of the request's lane (`lanes.py`): images
to be stored take the bulk lane, searches the interactive one, so that a search never queues behind
an import; the images of an add someone waits for (`EmbedRequest.interactive`) the adds lane. Face detection
runs one image at a time, face searches' and adds' in turns, those of imports and re-embeds when neither
waits (`DescribeFacesRequest.interactive` and `to_store`). A request of purpose INDEX also gets every database row
of each image (`EmbedResult.index_vectors`, first = the upright global vector) and its ImageNet
labels (`EmbedResult.labels`, from the classifier head over the same feature map); one of purpose
QUERY_VARIANTS the vectors of each image's query variants (`EmbedResult.variant_vectors`). A request asking for
local features gets each image's SIFT keypoints too (a query's also mirrored), described in the
decode pool from the same decoded image while the model runs. A request asking for proposals gets up
to that many regions of each image worth searching on their own (`EmbedResult.proposals`, from the
upright feature map the vector comes from, `services.extractor.proposals`, or from the COCO detector
when one is installed, `services.extractor.detector`).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any, TypeVar

import grpc
from imagesearch.v1 import common_pb2, extractor_pb2, extractor_pb2_grpc
from prometheus_client import Counter

from services.common.errors import InvalidArgument
from services.common.local_features import FeatureConfig
from services.extractor.descriptors import Purpose
from services.extractor.detector import Detector
from services.extractor.faces import FACE_DIM, FaceModel, FacesOfImage, decode_full
from services.extractor.keypoints import describe_image
from services.extractor.lanes import FaceTurns, Lane, Lanes
from services.extractor.model import Embedded, EmbedJob, ImageEmbedder, Scales
from services.extractor.preprocess import Decoded
from services.extractor.proposals import Proposal

log = logging.getLogger(__name__)

SERVICE_NAMES = (extractor_pb2.DESCRIPTOR.services_by_name["Extractor"].full_name,)

T = TypeVar("T")
IMAGES_REQUESTED = Counter("imagesearch_extractor_images_requested", "Images sent to Embed, by the lane they took.",
                           ["lane"])
FACE_IMAGES = Counter("imagesearch_extractor_face_images", "Images whose faces were looked for, by lane.", ["lane"])
for _lane in ("interactive", "adds", "bulk"):  # every lane exported from the start, at 0
    IMAGES_REQUESTED.labels(_lane)
for _lane in FaceTurns.LANES:
    FACE_IMAGES.labels(_lane)
# Regions one request may ask to be proposed per image.
MAX_PROPOSALS = 10


class ExtractorServicer(extractor_pb2_grpc.ExtractorServicer):
    """Serves Embed and GetModelInfo over one embedder and its lanes (a decode pool and a batcher each)."""

    def __init__(self, embedder: ImageEmbedder, lanes: Lanes, local_features: FeatureConfig | None = None,
                 faces: FaceModel | None = None, detector: Detector | None = None,
                 *, index_features: FeatureConfig | None = None) -> None:
        self.embedder = embedder
        self.lanes = lanes
        self.local_features = local_features or FeatureConfig()
        # An indexed image's features (stored, and its keypoint rows): finer than a query's (see settings).
        self.index_features = index_features or self.local_features
        # Face detection runs one image at a time in the lanes' face thread, face searches and adds in turns.
        self.faces = faces or FaceModel()
        # Proposals come from the detector when there is one (run in the decode pool beside the network),
        # else from the network's own feature map.
        self.detector = detector

    async def Embed(
        self, request: extractor_pb2.EmbedRequest, context: grpc.aio.ServicerContext
    ) -> extractor_pb2.EmbedResponse:
        if not request.images:
            raise InvalidArgument("EmbedRequest.images is empty: send at least one image")
        purpose = Purpose(request.purpose)
        if not 0 <= request.proposals <= MAX_PROPOSALS:
            raise InvalidArgument(f"EmbedRequest.proposals must be 0 to {MAX_PROPOSALS}, not {request.proposals}")
        lane = self.lanes.of(purpose, request.interactive)
        IMAGES_REQUESTED.labels(lane.name).inc(len(request.images))
        results = await asyncio.gather(
            *(self._decode_and_embed(lane, data, purpose, request.local_features, request.proposals,
                                     request.fine_local_features)
              for data in request.images)
        )
        return extractor_pb2.EmbedResponse(results=results, model=self.embedder.model_id, dim=self.embedder.dim)

    async def GetModelInfo(
        self, request: extractor_pb2.GetModelInfoRequest, context: grpc.aio.ServicerContext
    ) -> extractor_pb2.ModelInfo:
        return extractor_pb2.ModelInfo(
            model=self.embedder.model_id,
            dim=self.embedder.dim,
            provider=self.embedder.provider,
            image_size=self.embedder.preprocess.image_size,
            max_batch=self.lanes.bulk.batcher.max_batch,
            index_rows=self.embedder.rows_per_image(Purpose.INDEX),
            query_variants=[v.value for v in self.embedder.descriptor.query_variants],
            face_model=self.faces.model_id if self.faces.installed() else "",
            face_dim=FACE_DIM if self.faces.installed() else 0,
        )

    async def ListLabels(
        self, request: extractor_pb2.ListLabelsRequest, context: grpc.aio.ServicerContext
    ) -> extractor_pb2.LabelSet:
        classifier = self.embedder.classifier
        if classifier is None:
            return extractor_pb2.LabelSet()
        labels = [extractor_pb2.LabelInfo(name=words[0], lemmas=words, synset=synset)
                  for words, synset in zip(classifier.lemmas, classifier.synsets, strict=True)]
        return extractor_pb2.LabelSet(labels=labels, source=classifier.source)

    async def DescribeFaces(
        self, request: extractor_pb2.DescribeFacesRequest, context: grpc.aio.ServicerContext
    ) -> extractor_pb2.DescribeFacesResponse:
        if not request.images:
            raise InvalidArgument("DescribeFacesRequest.images is empty: send at least one image")
        lane = FaceTurns.lane_of(request.interactive, request.to_store)
        await self._face_turn(lane, self.faces.load)  # FaceModelUnavailable fails the call
        results = await asyncio.gather(*(self._faces(lane, data) for data in request.images))
        return extractor_pb2.DescribeFacesResponse(results=results, model=self.faces.model_id, dim=FACE_DIM)

    async def _face_turn(self, lane: str, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.wrap_future(self.lanes.faces.submit(lane, fn, *args))

    async def _faces(self, lane: str, data: bytes) -> extractor_pb2.FacesResult:
        """One image's faces, or the reason it has none (a bad image fails alone)."""
        try:
            found: FacesOfImage = await self._face_turn(lane, self._find_faces, data)
        except InvalidArgument as exc:
            return extractor_pb2.FacesResult(error=common_pb2.ItemError(reason=exc.reason, message=exc.message))
        FACE_IMAGES.labels(lane).inc()
        faces = [extractor_pb2.Face(x=f.box[0], y=f.box[1], width=f.box[2], height=f.box[3], score=f.score,
                                    landmarks=[extractor_pb2.FacePoint(x=x, y=y) for x, y in f.landmarks],
                                    descriptor=f.descriptor.tolist()) for f in found.faces]
        return extractor_pb2.FacesResult(faces=extractor_pb2.FaceList(faces=faces), width=found.width,
                                         height=found.height)

    def _find_faces(self, data: bytes) -> FacesOfImage:
        """InvalidImage or ImageTooLarge as an embed would answer them, else the image's faces."""
        return self.faces.find(decode_full(data, self.embedder.preprocess))

    async def _decode_and_embed(self, lane: Lane, data: bytes, purpose: Purpose, local: bool, proposals: int = 0,
                                fine: bool = False) -> extractor_pb2.EmbedResult:
        detected = proposals if self.detector is not None else 0
        if not local and not detected:
            return await self._embed(lane, await self._decode(lane, data, self.embedder.decode), purpose, proposals)
        decoded = await self._decode(lane, data, self.embedder.decode_keeping_image)
        if isinstance(decoded, InvalidArgument):
            return await self._embed(lane, decoded, purpose)
        scales, image = decoded
        result, features, boxes = await asyncio.gather(
            self._embed(lane, scales, purpose, proposals - detected),
            self._describe(lane, data, image, purpose, fine) if local else asyncio.sleep(0, []),
            self._detect(lane, image, detected))
        result.local_features.extend(features)
        result.proposals.extend(_proposal_messages(boxes))
        return result

    async def _detect(self, lane: Lane, image: Decoded, count: int) -> list[Proposal]:
        """The detector's boxes of the image, in the lane's decode pool; none when not asked."""
        if not count or self.detector is None:
            return []
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(lane.decode_pool, self.detector.propose, image.image, count)

    async def _describe(self, lane: Lane, data: bytes, image: Decoded, purpose: Purpose, fine: bool = False
                        ) -> list[bytes]:
        """The image's serialised local features (a query's also mirrored; an indexed image's made finer
        when asked, for a keypoint index), from the image decoded for the network; none if they cannot be
        made: the image still has its vectors and is only not verified."""
        loop = asyncio.get_running_loop()
        mirrored = purpose is not Purpose.INDEX
        config = self.index_features if fine and not mirrored else self.local_features
        try:
            features = await loop.run_in_executor(lane.decode_pool, describe_image, data, self.embedder.preprocess,
                                                  config, mirrored, image)
        except Exception:
            log.exception("local features of an image failed; it goes on without them")
            return []
        return [f.to_bytes() for f in features]

    async def _decode(self, lane: Lane, data: bytes, decode: Callable[[bytes], T]) -> T | InvalidArgument:
        """`decode(data)` in the lane's decode pool, or the caller's error (InvalidImage, ImageTooLarge) for this
        item."""
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(lane.decode_pool, decode, data)
        except InvalidArgument as exc:
            return exc

    async def _embed(self, lane: Lane, item: Scales | InvalidArgument, purpose: Purpose, proposals: int = 0
                     ) -> extractor_pb2.EmbedResult:
        if isinstance(item, InvalidArgument):
            return extractor_pb2.EmbedResult(error=common_pb2.ItemError(reason=item.reason, message=item.message))
        embedded = await lane.batcher.submit(EmbedJob(item, purpose, proposals))
        result = self._result(embedded, purpose)
        result.proposals.extend(_proposal_messages(embedded.proposals))
        return result

    def _result(self, embedded: Embedded, purpose: Purpose) -> extractor_pb2.EmbedResult:
        vectors = [extractor_pb2.Vector(values=row.tolist()) for row in embedded.rows]
        if purpose is Purpose.INDEX:
            labels = [extractor_pb2.Label(name=label.name, score=label.score) for label in embedded.labels]
            return extractor_pb2.EmbedResult(vector=vectors[0], index_vectors=vectors, labels=labels)
        if purpose is Purpose.QUERY_VARIANTS:
            return extractor_pb2.EmbedResult(vector=vectors[0], variant_vectors=vectors[1:])
        return extractor_pb2.EmbedResult(vector=vectors[0])


def _proposal_messages(boxes: list[Proposal]) -> list[extractor_pb2.RegionProposal]:
    return [extractor_pb2.RegionProposal(x=p.x, y=p.y, width=p.width, height=p.height, score=p.score) for p in boxes]


def registrar(servicer: ExtractorServicer) -> Callable[[grpc.aio.Server], None]:
    """What `create_server` calls to add the servicer to the server."""
    return lambda server: extractor_pb2_grpc.add_ExtractorServicer_to_server(servicer, server)
