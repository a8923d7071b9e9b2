"""The Search gRPC servicer: wire types <-> the `VectorIndex`, nothing else.

The index blocks (pymilvus is synchronous), so every call runs in a worker thread.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, TypeAlias

import grpc
import numpy as np
from imagesearch.v1 import search_pb2, search_pb2_grpc

from services.common.errors import InvalidAttributes
from services.common.wire import (
    attributes_from_wire,
    attributes_to_wire,
    columns_from_wire,
    columns_to_wire,
    filter_from_wire,
    value_to_wire,
)
from services.search.index import Collection, Hit, Item, Selection, VectorIndex, search_expanded

SERVICE_NAMES = (search_pb2.DESCRIPTOR.services_by_name["Search"].full_name,)
Context: TypeAlias = grpc.aio.ServicerContext


class SearchServicer(search_pb2_grpc.SearchServicer):
    """Serves the Search service over one `VectorIndex`."""

    def __init__(self, index: VectorIndex) -> None:
        self.index = index

    async def CreateCollection(self, request: search_pb2.CreateCollectionRequest, context: Context) -> Any:
        info = await asyncio.to_thread(self.index.create_collection, request.name, request.dim, request.model,
                                       request.index_type, columns_from_wire(request.columns))
        return collection_to_wire(info)

    async def DropCollection(self, request: search_pb2.DropCollectionRequest, context: Context) -> Any:
        dropped = await asyncio.to_thread(self.index.drop_collection, request.name)
        return search_pb2.DropCollectionResponse(dropped=dropped)

    async def ListCollections(self, request: search_pb2.ListCollectionsRequest, context: Context) -> Any:
        albums = await asyncio.to_thread(self.index.list_collections)
        return search_pb2.ListCollectionsResponse(collections=[collection_to_wire(a) for a in albums])

    async def GetCollection(self, request: search_pb2.GetCollectionRequest, context: Context) -> Any:
        return collection_to_wire(await asyncio.to_thread(self.index.get_collection, request.name,
                                                          not request.without_count))

    async def Insert(self, request: search_pb2.InsertRequest, context: Context) -> Any:
        items = [item_from_wire(item) for item in request.items]
        ids = await asyncio.to_thread(self.index.insert, request.collection, items, request.version)
        return search_pb2.InsertResponse(ids=ids)

    async def Search(self, request: search_pb2.SearchRequest, context: Context) -> Any:
        vector = np.asarray(request.vector, dtype=np.float32)
        hits = await asyncio.to_thread(
            search_expanded,
            self.index,
            request.collection,
            vector,
            request.top_k,
            filter_from_wire(request.filter),
            list(request.exclude_ids),
            primary_only=request.primary_only,
            expand_k=request.expand_k,
            max_distance=request.max_distance if request.HasField("max_distance") else None,
        )
        return search_pb2.SearchResponse(hits=[hit_to_wire(h) for h in hits], metric="cosine")

    async def SearchMany(self, request: search_pb2.SearchManyRequest, context: Context) -> Any:
        vectors = [np.asarray(v.values, dtype=np.float32) for v in request.vectors]
        found = await asyncio.to_thread(self.index.search_many, request.collection, vectors, request.top_k,
                                        request.primary_only)
        return search_pb2.SearchManyResponse(results=[
            search_pb2.HitList(hits=[search_pb2.Hit(id=h.id, distance=h.distance, row=h.row) for h in hits])
            for hits in found])

    async def Get(self, request: search_pb2.GetRequest, context: Context) -> Any:
        items = await asyncio.to_thread(self.index.get, request.collection, list(request.ids), request.with_vectors,
                                        request.version)
        return search_pb2.GetResponse(items=[item_to_wire(i) for i in items])

    async def Query(self, request: search_pb2.QueryRequest, context: Context) -> Any:
        items = await asyncio.to_thread(self.index.query, request.collection, filter_from_wire(request.filter),
                                        request.limit, request.offset, request.after_id, request.order_by,
                                        request.descending, request.version,
                                        request.nulls_first if request.HasField("nulls_first") else None)
        return search_pb2.QueryResponse(items=[item_to_wire(i) for i in items])

    async def Delete(self, request: search_pb2.DeleteRequest, context: Context) -> Any:
        deleted = await asyncio.to_thread(self.index.delete, request.collection, list(request.ids))
        return search_pb2.DeleteResponse(deleted=deleted)

    async def Count(self, request: search_pb2.CountRequest, context: Context) -> Any:
        count = await asyncio.to_thread(self.index.count, request.collection, filter_from_wire(request.filter),
                                        request.version)
        return search_pb2.CountResponse(count=count)

    async def Update(self, request: search_pb2.UpdateRequest, context: Context) -> Any:
        selection = Selection(tuple(request.ids), filter_from_wire(request.filter), request.all)
        changes = attributes_from_wire(request.set)
        updated = await asyncio.to_thread(self.index.update, request.collection, selection, changes)
        return search_pb2.UpdateResponse(updated=updated)

    async def CountGroups(self, request: search_pb2.CountGroupsRequest, context: Context) -> Any:
        groups = await asyncio.to_thread(self.index.count_groups, request.collection, list(request.columns),
                                         filter_from_wire(request.filter))
        return search_pb2.CountGroupsResponse(groups=[
            search_pb2.Group(key=[value_to_wire(v) for v in g.key], count=g.count) for g in groups])


    async def BeginVersion(self, request: search_pb2.BeginVersionRequest, context: Context) -> Any:
        number = await asyncio.to_thread(self.index.begin_version, request.collection, request.dim, request.model)
        return search_pb2.BeginVersionResponse(version=number)

    async def CommitVersion(self, request: search_pb2.VersionRequest, context: Context) -> Any:
        info = await asyncio.to_thread(self.index.commit_version, request.collection, request.version)
        return collection_to_wire(info)

    async def AbortVersion(self, request: search_pb2.VersionRequest, context: Context) -> Any:
        aborted = await asyncio.to_thread(self.index.abort_version, request.collection, request.version)
        return search_pb2.AbortVersionResponse(aborted=aborted)


def registrar(servicer: SearchServicer) -> Callable[[grpc.aio.Server], None]:
    """What `create_server` calls to add the servicer to the server."""
    return lambda server: search_pb2_grpc.add_SearchServicer_to_server(servicer, server)


# --- wire <-> domain -------------------------------------------------------------------------------


def collection_to_wire(info: Collection) -> Any:
    return search_pb2.Collection(
        name=info.name,
        dim=info.dim,
        metric=info.metric,
        model=info.model,
        created_at_ms=info.created_at_ms,
        count=info.count,
        index_type=info.index_type.value,
        columns=columns_to_wire(info.schema),
    )


def item_from_wire(item: Any) -> Item:
    attributes = attributes_from_wire(item.attributes)
    if not isinstance(attributes, dict):
        raise InvalidAttributes(f"item {item.id!r}: attributes must be an object")
    return Item(
        id=item.id,
        vectors=tuple(np.asarray(d.values, dtype=np.float32) for d in item.vectors),
        name=item.name,
        content_hash=item.content_hash,
        attributes=attributes,
        created_at_ms=item.created_at_ms,
    )


def item_to_wire(item: Item) -> Any:
    return search_pb2.Item(
        id=item.id,
        name=item.name,
        content_hash=item.content_hash,
        attributes=attributes_to_wire(item.attributes),
        created_at_ms=item.created_at_ms,
        vectors=[search_pb2.Descriptor(values=v.tolist()) for v in item.vectors],
    )


def hit_to_wire(hit: Hit) -> Any:
    return search_pb2.Hit(
        id=hit.id,
        name=hit.name,
        distance=hit.distance,
        attributes=attributes_to_wire(hit.attributes),
        content_hash=hit.content_hash,
        created_at_ms=hit.created_at_ms,
        row=hit.row,
    )
