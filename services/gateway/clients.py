"""The extractor and search services as the use cases see them: protocols, and their gRPC clients.

The gRPC clients turn wire messages into `records` and statuses into our errors (via
`grpc_client.call`), so nothing above this module sees protobuf or grpc.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, Protocol, TypeVar

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from imagesearch.v1 import common_pb2, extractor_pb2, extractor_pb2_grpc, search_pb2, search_pb2_grpc

from services.common.errors import ExtractorUnavailable, SearchUnavailable, Unavailable
from services.common.filtering import Expr
from services.common.grpc_client import call
from services.common.schema import NO_COLUMNS, AlbumSchema
from services.common.wire import (
    attributes_from_wire,
    attributes_to_wire,
    columns_from_wire,
    columns_to_wire,
    filter_to_wire,
    value_from_wire,
)
from services.gateway.records import (
    Collection,
    EmbedBatch,
    Embedding,
    EmbedPurpose,
    FaceBatch,
    FaceBox,
    FoundFace,
    GroupCount,
    Hit,
    ImageFaces,
    Item,
    ItemFailure,
    LabelInfo,
    LabelSet,
    ModelInfo,
    Proposal,
    Tag,
)

T = TypeVar("T")


class Extractor(Protocol):
    """Turns encoded images into vectors."""

    async def model_info(self) -> ModelInfo: ...

    async def embed(self, images: Sequence[bytes], purpose: EmbedPurpose = EmbedPurpose.QUERY,
                    local_features: bool = False, proposals: int = 0,
                    fine_local_features: bool = False) -> EmbedBatch:
        """Each image's vector (and, for an INDEX purpose, every row to store), with its local features when
        asked (`fine_local_features`: an indexed image's made finer, for a keypoint index) and up to
        `proposals` regions worth searching."""

    async def labels(self) -> LabelSet:
        """Every class the extractor's classifier gives indexed images, with its words."""
        ...

    async def describe_faces(self, images: Sequence[bytes], to_store: bool = False) -> FaceBatch:
        """Each image's faces; `FaceModelUnavailable` when the extractor has no face models. `to_store`: the
        images are to be stored (an add's, an import's, a re-embed's), not a face search's."""
        ...


class VectorSearch(Protocol):
    """Collections (albums) of items with vectors and attributes. Filters are trees of the filter
    language (services.common.filtering), checked by the service against the album's columns."""

    async def create_collection(self, name: str, dim: int, model: str, schema: AlbumSchema = NO_COLUMNS) -> Collection:
        ...

    async def drop_collection(self, name: str) -> bool: ...

    async def list_collections(self) -> list[Collection]: ...

    async def get_collection(self, name: str, with_count: bool = True) -> Collection: ...

    async def insert(self, collection: str, items: Sequence[Item], version: int = 0) -> list[str]: ...

    async def search(
        self,
        collection: str,
        vector: Sequence[float],
        top_k: int,
        filter: Expr | None = None,
        exclude_ids: Sequence[str] = (),
        primary_only: bool = False,
        expand_k: int = 0,
        max_distance: float | None = None,
    ) -> list[Hit]:
        """Nearest images; `primary_only`: by their upright global row only; `expand_k`: query expansion;
        `max_distance`: none farther."""
        ...

    async def search_many(self, collection: str, vectors: Sequence[Sequence[float]], top_k: int,
                          primary_only: bool = False) -> list[list[Hit]]:
        """Each vector's nearest images (id, distance and row only), in one call; `primary_only`: by their upright
        global row only."""
        ...

    async def get(self, collection: str, ids: Sequence[str], with_vectors: bool = False,
                  version: int = 0) -> list[Item]: ...

    async def query(self, collection: str, filter: Expr | None = None, limit: int = 100, offset: int = 0,
                    after_id: str = "", order_by: str = "", descending: bool = False,
                    version: int = 0, nulls_first: bool | None = None) -> list[Item]:
        """A page of the items matching the filter, by id (after `after_id`) or by a column (items without a value
        where `nulls_first` says, else last ascending and first descending)."""
        ...

    async def delete(self, collection: str, ids: Sequence[str]) -> int: ...

    async def count(self, collection: str, filter: Expr | None = None, version: int = 0) -> int: ...

    async def begin_version(self, collection: str, dim: int, model: str) -> int:
        """A new, empty version of the album to fill (insert/get/query/count with `version`) beside it."""
        ...

    async def commit_version(self, collection: str, version: int) -> Collection: ...

    async def abort_version(self, collection: str, version: int) -> bool: ...

    async def update(self, collection: str, changes: Mapping[str, Any], ids: Sequence[str] = (),
                     filter: Expr | None = None, all: bool = False) -> int:
        """Sets attributes of the images of these ids, or matching the filter, or all; returns how many."""
        ...

    async def count_groups(self, collection: str, columns: Sequence[str],
                           filter: Expr | None = None) -> list[GroupCount]: ...


async def check_health(channel: grpc.aio.Channel, unavailable: type[Unavailable], peer: str, timeout: float,
                       service: str = "", why: str = "") -> None:
    """Raises `unavailable` unless the peer's gRPC health service says `service` ("": the server) is
    SERVING; `why` says what NOT_SERVING means for it."""
    stub = health_pb2_grpc.HealthStub(channel)
    reply = await call(stub.Check, health_pb2.HealthCheckRequest(service=service), timeout=timeout,
                       unavailable=unavailable, peer=peer)
    if reply.status != health_pb2.HealthCheckResponse.SERVING:
        raise unavailable(f"{peer} is not serving{f' ({why})' if why else ''}")


class GrpcExtractor:
    """The extractor service over gRPC. `interactive`: someone waits for the answers (the API's requests); the
    import workers' client says not (`background`), so that the extractor serves their images after those of
    searches and adds (services/extractor/lanes.py)."""

    peer = "extractor"

    def __init__(self, channel: grpc.aio.Channel, timeout_s: float, interactive: bool = True) -> None:
        self.channel = channel
        self.stub = extractor_pb2_grpc.ExtractorStub(channel)
        self.timeout_s = timeout_s
        self.interactive = interactive

    def background(self) -> GrpcExtractor:
        """A client over the same channel for work no one waits for: imports and re-embeds."""
        return GrpcExtractor(self.channel, self.timeout_s, interactive=False)

    async def health(self, timeout_s: float = 2.0) -> None:
        await check_health(self.channel, ExtractorUnavailable, self.peer, timeout_s)

    async def model_info(self) -> ModelInfo:
        reply = await call(self.stub.GetModelInfo, extractor_pb2.GetModelInfoRequest(), timeout=self.timeout_s,
                           unavailable=ExtractorUnavailable, peer=self.peer)
        return ModelInfo(model=reply.model, dim=reply.dim, query_variants=tuple(reply.query_variants),
                         face_model=reply.face_model, face_dim=reply.face_dim)

    async def embed(self, images: Sequence[bytes], purpose: EmbedPurpose = EmbedPurpose.QUERY,
                    local_features: bool = False, proposals: int = 0,
                    fine_local_features: bool = False) -> EmbedBatch:
        request = extractor_pb2.EmbedRequest(images=list(images), purpose=purpose.name,
                                             local_features=local_features, proposals=proposals,
                                             fine_local_features=fine_local_features, interactive=self.interactive)
        reply = await call(self.stub.Embed, request, timeout=self.timeout_s, unavailable=ExtractorUnavailable,
                           peer=self.peer)
        results = [_embedding(r) for r in reply.results]
        if len(results) != len(images):
            raise ExtractorUnavailable(f"extractor answered {len(results)} results for {len(images)} images")
        return EmbedBatch(model=reply.model, dim=reply.dim, results=results)

    async def labels(self) -> LabelSet:
        reply = await call(self.stub.ListLabels, extractor_pb2.ListLabelsRequest(), timeout=self.timeout_s,
                           unavailable=ExtractorUnavailable, peer=self.peer)
        return LabelSet(tuple(LabelInfo(label.name, tuple(label.lemmas), label.synset) for label in reply.labels),
                        reply.source)


    async def describe_faces(self, images: Sequence[bytes], to_store: bool = False) -> FaceBatch:
        """Each image's faces; `to_store`: the images are to be stored (an add's: described in turns with face
        searches' images rather than queued with them)."""
        request = extractor_pb2.DescribeFacesRequest(images=list(images), interactive=self.interactive,
                                                     to_store=to_store)
        reply = await call(self.stub.DescribeFaces, request, timeout=self.timeout_s, unavailable=ExtractorUnavailable,
                           peer=self.peer)
        if len(reply.results) != len(images):
            raise ExtractorUnavailable(f"extractor answered {len(reply.results)} results for {len(images)} images")
        return FaceBatch(model=reply.model, dim=reply.dim, results=[_image_faces(r) for r in reply.results])


def _image_faces(r: extractor_pb2.FacesResult) -> ImageFaces:
    if r.WhichOneof("result") != "faces":
        return ImageFaces(error=ItemFailure(r.error.reason or "invalid_image", r.error.message))
    return ImageFaces(width=r.width, height=r.height, faces=[
        FoundFace(FaceBox(f.x, f.y, f.width, f.height, round(f.score, 4), tuple((p.x, p.y) for p in f.landmarks)),
                  list(f.descriptor)) for f in r.faces.faces])


def _embedding(r: extractor_pb2.EmbedResult) -> Embedding:
    if r.WhichOneof("result") != "vector":
        return Embedding(error=ItemFailure(r.error.reason or "invalid_image", r.error.message))
    return Embedding(vector=list(r.vector.values), rows=[list(v.values) for v in r.index_vectors],
                     local_features=list(r.local_features), variants=[list(v.values) for v in r.variant_vectors],
                     tags=[Tag(t.name, round(t.score, 4)) for t in r.labels],
                     proposals=[Proposal(p.x, p.y, p.width, p.height, p.score) for p in r.proposals])


def _collection(c: search_pb2.Collection) -> Collection:
    return Collection(name=c.name, dim=c.dim, metric=c.metric or "cosine", model=c.model,
                      created_at_ms=c.created_at_ms, count=c.count, schema=columns_from_wire(c.columns))


def _item(i: search_pb2.Item) -> Item:
    return Item(id=i.id, name=i.name, content_hash=i.content_hash, attributes=attributes_from_wire(i.attributes),
                created_at_ms=i.created_at_ms, vectors=[list(d.values) for d in i.vectors])


def _wire_item(i: Item) -> search_pb2.Item:
    return search_pb2.Item(id=i.id, name=i.name, content_hash=i.content_hash,
                           attributes=attributes_to_wire(i.attributes), created_at_ms=i.created_at_ms,
                           vectors=[search_pb2.Descriptor(values=v) for v in i.vectors])


def _wire_filter(expr: Expr | None) -> common_pb2.Filter | None:
    return filter_to_wire(expr) if expr is not None else None


# The search service's gRPC service name, whose health follows its vector store.
SEARCH_SERVICE = search_pb2.DESCRIPTOR.services_by_name["Search"].full_name


class GrpcVectorSearch:
    """The search service over gRPC."""

    peer = "search service"

    def __init__(self, channel: grpc.aio.Channel, timeout_s: float) -> None:
        self.channel = channel
        self.stub = search_pb2_grpc.SearchStub(channel)
        self.timeout_s = timeout_s

    async def _call(self, method: Callable[..., Awaitable[T]], request: Any) -> T:
        return await call(method, request, timeout=self.timeout_s, unavailable=SearchUnavailable, peer=self.peer)

    async def health(self, timeout_s: float = 2.0) -> None:
        """The Search service's own health: NOT_SERVING while its vector store does not answer."""
        await check_health(self.channel, SearchUnavailable, self.peer, timeout_s, SEARCH_SERVICE,
                           "its vector store does not answer, or it is shutting down")

    async def create_collection(self, name: str, dim: int, model: str, schema: AlbumSchema = NO_COLUMNS) -> Collection:
        reply = await self._call(self.stub.CreateCollection, search_pb2.CreateCollectionRequest(
            name=name, dim=dim, model=model, columns=columns_to_wire(schema)))
        return _collection(reply)

    async def drop_collection(self, name: str) -> bool:
        reply = await self._call(self.stub.DropCollection, search_pb2.DropCollectionRequest(name=name))
        return bool(reply.dropped)

    async def list_collections(self) -> list[Collection]:
        reply = await self._call(self.stub.ListCollections, search_pb2.ListCollectionsRequest())
        return [_collection(c) for c in reply.collections]

    async def get_collection(self, name: str, with_count: bool = True) -> Collection:
        request = search_pb2.GetCollectionRequest(name=name, without_count=not with_count)
        reply = await self._call(self.stub.GetCollection, request)
        return _collection(reply)

    async def insert(self, collection: str, items: Sequence[Item], version: int = 0) -> list[str]:
        request = search_pb2.InsertRequest(collection=collection, items=[_wire_item(i) for i in items],
                                           version=version)
        reply = await self._call(self.stub.Insert, request)
        return list(reply.ids)

    async def search(
        self,
        collection: str,
        vector: Sequence[float],
        top_k: int,
        filter: Expr | None = None,
        exclude_ids: Sequence[str] = (),
        primary_only: bool = False,
        expand_k: int = 0,
        max_distance: float | None = None,
    ) -> list[Hit]:
        request = search_pb2.SearchRequest(collection=collection, vector=list(vector), top_k=top_k,
                                           filter=_wire_filter(filter), exclude_ids=list(exclude_ids),
                                           primary_only=primary_only, expand_k=expand_k, max_distance=max_distance)
        reply = await self._call(self.stub.Search, request)
        return [Hit(id=h.id, name=h.name, distance=h.distance, attributes=attributes_from_wire(h.attributes),
                    content_hash=h.content_hash, created_at_ms=h.created_at_ms, row=h.row)
                for h in reply.hits]

    async def search_many(self, collection: str, vectors: Sequence[Sequence[float]], top_k: int,
                          primary_only: bool = False) -> list[list[Hit]]:
        request = search_pb2.SearchManyRequest(collection=collection, top_k=top_k, primary_only=primary_only,
                                               vectors=[search_pb2.Descriptor(values=list(v)) for v in vectors])
        reply = await self._call(self.stub.SearchMany, request)
        return [[Hit(id=h.id, name="", distance=h.distance, attributes={}, content_hash="", created_at_ms=0, row=h.row)
                 for h in found.hits] for found in reply.results]

    async def get(self, collection: str, ids: Sequence[str], with_vectors: bool = False,
                  version: int = 0) -> list[Item]:
        request = search_pb2.GetRequest(collection=collection, ids=list(ids), with_vectors=with_vectors,
                                        version=version)
        reply = await self._call(self.stub.Get, request)
        return [_item(i) for i in reply.items]

    async def query(self, collection: str, filter: Expr | None = None, limit: int = 100, offset: int = 0,
                    after_id: str = "", order_by: str = "", descending: bool = False,
                    version: int = 0, nulls_first: bool | None = None) -> list[Item]:
        request = search_pb2.QueryRequest(collection=collection, filter=_wire_filter(filter), limit=limit,
                                          offset=offset, after_id=after_id, order_by=order_by, descending=descending,
                                          version=version, nulls_first=nulls_first)
        reply = await self._call(self.stub.Query, request)
        return [_item(i) for i in reply.items]

    async def delete(self, collection: str, ids: Sequence[str]) -> int:
        reply = await self._call(self.stub.Delete, search_pb2.DeleteRequest(collection=collection, ids=list(ids)))
        return int(reply.deleted)

    async def count(self, collection: str, filter: Expr | None = None, version: int = 0) -> int:
        reply = await self._call(self.stub.Count, search_pb2.CountRequest(collection=collection,
                                                                          filter=_wire_filter(filter), version=version))
        return int(reply.count)

    async def begin_version(self, collection: str, dim: int, model: str) -> int:
        request = search_pb2.BeginVersionRequest(collection=collection, dim=dim, model=model)
        return int((await self._call(self.stub.BeginVersion, request)).version)

    async def commit_version(self, collection: str, version: int) -> Collection:
        request = search_pb2.VersionRequest(collection=collection, version=version)
        return _collection(await self._call(self.stub.CommitVersion, request))

    async def abort_version(self, collection: str, version: int) -> bool:
        request = search_pb2.VersionRequest(collection=collection, version=version)
        return bool((await self._call(self.stub.AbortVersion, request)).aborted)

    async def update(self, collection: str, changes: Mapping[str, Any], ids: Sequence[str] = (),
                     filter: Expr | None = None, all: bool = False) -> int:
        request = search_pb2.UpdateRequest(collection=collection, ids=list(ids), filter=_wire_filter(filter),
                                           all=all, set=attributes_to_wire(changes))
        return int((await self._call(self.stub.Update, request)).updated)

    async def count_groups(self, collection: str, columns: Sequence[str],
                           filter: Expr | None = None) -> list[GroupCount]:
        request = search_pb2.CountGroupsRequest(collection=collection, columns=list(columns),
                                                filter=_wire_filter(filter))
        reply = await self._call(self.stub.CountGroups, request)
        return [GroupCount(tuple(value_from_wire(v) for v in g.key), int(g.count)) for g in reply.groups]
