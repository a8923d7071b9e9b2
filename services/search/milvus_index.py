"""`MilvusIndex`: the `VectorIndex` the service runs, one Milvus collection per album.

Layout of an album's collection (one row per vector of an image):

    pk             VARCHAR   "<image_id>#<k>", k = position of the vector in the item (0 = global)
    image_id       VARCHAR   the image's id; get/delete/exclude work on it, so on all its rows
    ordinal        INT64     k again: `ordinal == 0` selects one row per image (count, list, primary_only)
    name, content_hash VARCHAR; attributes JSON; created_at_ms INT64   copied onto every row
    vector         FLOAT_VECTOR(dim), L2-normalised, indexed for inner product

The collection's description holds the album's metadata as JSON (real name, model, dim, metric,
index type, creation time, schema version): it is the only record of which albums exist.

Collection names are `prefix + encoded album name`, where the encoding maps "_" to "__" and "-" to
"_h" (Milvus allows only letters, digits and "_"). No two album names encode alike, since "_" in the
encoding always starts a two-character escape.

Every pymilvus error is mapped here (`map_error`): nothing from pymilvus or grpc leaves this module.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import uuid
from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import replace
from typing import Any, TypeVar

import grpc
import numpy as np
from pymilvus import DataType, MilvusClient
from pymilvus.client.types import LoadState, Status
from pymilvus.exceptions import (
    DataNotMatchException,
    DataTypeNotMatchException,
    MilvusException,
    MilvusUnavailableException,
    ParamError,
)

from services.common.errors import (
    AlbumNotFound,
    AlreadyExists,
    ImageSearchError,
    InvalidArgument,
    StoreUnavailable,
)
from services.search.filters import AttributeFilter, quote_string
from services.search.index import (
    DEFAULT_LIST_LIMIT,
    MAX_HASH_BYTES,
    MAX_ID_BYTES,
    MAX_NAME_BYTES,
    METRIC,
    Collection,
    Hit,
    IndexType,
    Item,
    Vector,
    check_album_name,
    check_dim,
    check_ids,
    check_index_type,
    check_page,
    check_top_k,
    distance_of,
    normalise,
    now_ms,
    prepare_items,
    row_key,
)
from services.search.settings import SearchSettings

log = logging.getLogger(__name__)
T = TypeVar("T")
Row = dict[str, Any]
Rows = list[Row]

SCHEMA_VERSION = 1
# Milvus 2.3 caps a search's limit, and a query's offset + limit, at 16384.
MILVUS_MAX_WINDOW = 16384
# Ids per `in [...]` expression, to keep expressions small.
IDS_PER_EXPR = 1000
# Bytes of vectors per insert call (Milvus' default gRPC limit is 64 MiB).
INSERT_BATCH_BYTES = 16 * 1024 * 1024
# pymilvus retries UNAVAILABLE up to 75 times unless told otherwise; fail fast and let callers retry.
RETRY_TIMES = 2
_HIT_FIELDS = ["image_id", "name", "content_hash", "attributes", "created_at_ms"]
_ITEM_FIELDS = [*_HIT_FIELDS, "ordinal"]
_COLLECTION_NOT_FOUND, _COLLECTION_NOT_LOADED = 100, 101


class CollectionNotLoaded(StoreUnavailable):
    """Milvus holds the collection but has not loaded it into memory (e.g. just restarted)."""


# --- names and metadata ----------------------------------------------------------------------------


def collection_name(prefix: str, album: str) -> str:
    """The Milvus collection of an album: "_" -> "__", "-" -> "_h" after the prefix."""
    return prefix + check_album_name(album).replace("_", "__").replace("-", "_h")


def describe_album(info: Collection) -> str:
    """The collection description: the album's metadata as JSON."""
    return json.dumps(
        {
            "imagesearch_schema": SCHEMA_VERSION,
            "album": info.name,
            "model": info.model,
            "dim": info.dim,
            "metric": info.metric,
            "index_type": info.index_type.value,
            "created_at_ms": info.created_at_ms,
        },
        sort_keys=True,
    )


def parse_album(description: str) -> Collection | None:
    """The album metadata in a collection description; None if the collection is not one of ours."""
    try:
        meta = json.loads(description)
        if not isinstance(meta, dict) or meta.get("imagesearch_schema") != SCHEMA_VERSION:
            return None
        return Collection(
            name=str(meta["album"]),
            dim=int(meta["dim"]),
            model=str(meta["model"]),
            index_type=IndexType(meta["index_type"]),
            created_at_ms=int(meta["created_at_ms"]),
            metric=str(meta.get("metric", METRIC)),
        )
    except (ValueError, KeyError, TypeError):
        return None


def build_schema(info: Collection) -> Any:
    """The collection schema of an album (see the module docstring)."""
    schema = MilvusClient.create_schema(auto_id=False, enable_dynamic_field=False, description=describe_album(info))
    schema.add_field("pk", DataType.VARCHAR, is_primary=True, max_length=MAX_ID_BYTES + 8)
    schema.add_field("image_id", DataType.VARCHAR, max_length=MAX_ID_BYTES)
    schema.add_field("ordinal", DataType.INT64)
    schema.add_field("name", DataType.VARCHAR, max_length=MAX_NAME_BYTES)
    schema.add_field("content_hash", DataType.VARCHAR, max_length=MAX_HASH_BYTES)
    schema.add_field("attributes", DataType.JSON)
    schema.add_field("created_at_ms", DataType.INT64)
    schema.add_field("vector", DataType.FLOAT_VECTOR, dim=info.dim)
    return schema


def index_params(index_type: IndexType, settings: SearchSettings) -> dict[str, Any]:
    """Build parameters of the vector index."""
    if index_type is IndexType.HNSW:
        return {"M": settings.hnsw_m, "efConstruction": settings.hnsw_ef_construction}
    if index_type is IndexType.IVF_FLAT:
        return {"nlist": settings.ivf_nlist}
    return {"nlist": settings.ivf_nlist, "m": settings.ivf_pq_m, "nbits": 8}


def search_params(index_type: IndexType, limit: int, settings: SearchSettings) -> dict[str, Any]:
    """Search breadth: HNSW's ef is at least the number of rows asked for."""
    if index_type is IndexType.HNSW:
        return {"metric_type": "IP", "params": {"ef": max(settings.hnsw_ef, limit)}}
    return {"metric_type": "IP", "params": {"nprobe": min(settings.ivf_nprobe, settings.ivf_nlist)}}


# --- expressions ---------------------------------------------------------------------------------


def ids_expr(ids: Sequence[str], field: str = "image_id", negate: bool = False) -> str:
    keyword = "not in" if negate else "in"
    return f"{field} {keyword} [{', '.join(quote_string(i) for i in ids)}]"


def all_of(*parts: str) -> str:
    return " and ".join(f"({p})" for p in parts if p)


def chunks(values: Sequence[T], size: int) -> Iterator[Sequence[T]]:
    for start in range(0, len(values), size):
        yield values[start : start + size]


# --- errors ------------------------------------------------------------------------------------


def map_error(exc: BaseException, album: str) -> ImageSearchError | None:
    """Our error for a pymilvus/grpc one; None for anything else (a bug: let it surface)."""
    if isinstance(exc, ImageSearchError):
        return exc
    if isinstance(exc, MilvusException):
        return _map_milvus(exc, album)
    if isinstance(exc, grpc.RpcError):
        code = exc.code() if callable(getattr(exc, "code", None)) else None
        if code in (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.RESOURCE_EXHAUSTED):
            return InvalidArgument(f"vector store rejected the request: {code.name}")
        return StoreUnavailable(f"vector store is unavailable: {getattr(code, 'name', exc)}")
    if isinstance(exc, grpc.FutureTimeoutError | TimeoutError | ConnectionError):
        return StoreUnavailable(f"vector store is unavailable: {type(exc).__name__}")
    return None


class StorePartDown(StoreUnavailable):
    """Milvus answers, saying one of its own parts is down, starting or stopping (seen through a
    restart: "empty grpc client: failed to connect 192.0.2.2:57607, reason: connection error"):
    unavailable for the caller, but our connection is fine, so it is not remade (which, with Milvus
    half stopped, can take the whole timeout while every other call waits for it)."""


_UNAVAILABLE_MARKERS = ("failed to connect", "empty grpc client", "service unavailable", "not healthy",
                        "is not ready", "stopping",
                        # the call's time ran out inside Milvus ("proxy TaskCondition context Done")
                        "context done", "context deadline exceeded")


def _map_milvus(exc: MilvusException, album: str) -> ImageSearchError:
    message = str(exc.message)
    if exc.code == _COLLECTION_NOT_FOUND or "collection not found" in message:
        return AlbumNotFound(f"album {album!r} not found")
    if exc.code == _COLLECTION_NOT_LOADED or "not loaded" in message:
        return CollectionNotLoaded(f"album {album!r} is loading")
    code = exc.code() if callable(exc.code) else exc.code  # pymilvus' retry wrapper passes grpc's method
    if isinstance(code, grpc.StatusCode) or code == Status.CONNECT_FAILED:
        return StoreUnavailable(f"vector store is unavailable: {message}")
    if isinstance(exc, MilvusUnavailableException) or isinstance(exc.__cause__, grpc.RpcError):
        return StoreUnavailable(f"vector store is unavailable: {message}")
    if any(marker in message.lower() for marker in _UNAVAILABLE_MARKERS):
        return StorePartDown(f"vector store is unavailable: {message}")
    if isinstance(exc, ParamError | DataNotMatchException | DataTypeNotMatchException):
        return InvalidArgument(f"vector store rejected the request: {message}")
    return ImageSearchError(f"vector store error: {message}")


# --- the index -----------------------------------------------------------------------------------


class MilvusIndex:
    """Albums as Milvus collections, reached lazily: the service starts and answers without Milvus.

    Connection: made on first use; if it fails, calls raise `StoreUnavailable` at once for
    `milvus_reconnect_backoff_s`, then try again. A call that fails for want of a connection drops the
    client and is retried once on a new one (every call here is idempotent: writes are upserts or
    deletes by key).

    Consistency: reads (search, get, list, count) run at `settings.read_consistency`, "Session" by
    default: a search right after an insert or delete made through this process sees it (a delete
    ends with one Strong read, see `_delete_where`). "Strong" sees writes made through any replica;
    its cost: Milvus makes a Strong read wait until every node has consumed the message stream up to
    the read's start, which happens on the next time tick, so a Strong read takes ~200-400 ms more on
    a 2.3 standalone (measured here: top-10 of 10k x 1280 ~400 ms Strong vs ~4 ms Session/Bounded).
    "Session" gives read-your-writes only for writes made through this process (pymilvus tracks their
    timestamps), which suffices when one replica serves all writes. `list_collections` counts at
    Bounded: an overview that may lag the newest writes by a moment.

    Loading: collections are loaded on create and, on first use (or when Milvus says a collection is
    not loaded, as after a restart), before being read; a collection counts as loaded once a Strong
    read of it answers (`_check_caught_up`): after a Milvus restart that takes until Milvus has
    replayed its log, up to ~30 s. `ping` does this for every album, so the service's health (and the
    gateway's /readyz) says ready only when every album can be read in full.
    """

    def __init__(self, settings: SearchSettings) -> None:
        self.settings = settings
        self._alias = f"imagesearch-{uuid.uuid4().hex[:12]}"
        self._client: MilvusClient | None = None
        self._lock = threading.Lock()
        self._retry_at = 0.0
        self._albums: dict[str, Collection] = {}
        self._loaded: set[str] = set()

    # --- albums ------------------------------------------------------------------------------
    def create_collection(self, name: str, dim: int, model: str, index_type: str = "") -> Collection:
        """Creates, indexes and loads an album's collection; `AlreadyExists` if it exists."""
        cname = collection_name(self.settings.collection_prefix, name)
        kind = check_index_type(index_type, self.settings.index_type, check_dim(dim), self.settings.ivf_pq_m)
        info = Collection(name=name, dim=dim, model=model, index_type=kind, created_at_ms=now_ms())
        if self._call(name, lambda c: c.has_collection(cname, **self._kw())):
            raise AlreadyExists(f"album {name!r} already exists")
        self._call(name, lambda c: c.create_collection(cname, schema=build_schema(info), **self._kw()))
        try:
            self._call(name, lambda c: self._index_and_load(c, cname, kind))
        except ImageSearchError:
            self._call(name, lambda c: c.drop_collection(cname, **self._kw()))
            raise
        self._albums[cname] = info
        log.info("created album %s (%s, dim %d, %s)", name, cname, dim, kind.value)
        return info

    def drop_collection(self, name: str) -> bool:
        """Drops an album; False if there was none."""
        cname = collection_name(self.settings.collection_prefix, name)
        self._forget(cname)
        if not self._call(name, lambda c: c.has_collection(cname, **self._kw())):
            return False
        self._call(name, lambda c: c.drop_collection(cname, **self._kw()))
        log.info("dropped album %s", name)
        return True

    def ping(self) -> None:
        """Returns when Milvus serves every album: answers, has each collection loaded and has caught up
        with its log (see `_ensure_loaded`). `StoreUnavailable` otherwise (`CollectionNotLoaded` while an
        album is loading or its log is being replayed, as for up to ~30 s after a Milvus restart).

        Each album is checked once per connection, so once all are, a ping only lists the names."""
        names = self._call("", lambda c: c.list_collections(**self._kw()))
        for cname in sorted(n for n in names if n.startswith(self.settings.collection_prefix)):
            if cname not in self._loaded:
                try:
                    self._call("", self._loader(cname))
                except AlbumNotFound:
                    continue  # dropped meanwhile

    def list_collections(self) -> list[Collection]:
        """Every album of this service, by name, with counts read at Bounded consistency."""
        names = self._call("", lambda c: c.list_collections(**self._kw()))
        albums = []
        for cname in sorted(n for n in names if n.startswith(self.settings.collection_prefix)):
            try:
                info = self._describe(cname, "")
                albums.append(_with_count(info, self._count(cname, info.name, "Bounded")))
            except AlbumNotFound:
                continue  # dropped meanwhile, or not one of ours
        return sorted(albums, key=lambda a: a.name)

    def get_collection(self, name: str) -> Collection:
        """One album with its image count."""
        cname, info = self._album(name)
        return _with_count(info, self._count(cname, name, self.settings.read_consistency))

    def count(self, name: str) -> int:
        """Number of images (rows with ordinal 0)."""
        cname, _ = self._album(name)
        return self._count(cname, name, "Strong")

    # --- items -------------------------------------------------------------------------------
    def insert(self, name: str, items: Sequence[Item]) -> list[str]:
        """Upserts one row per vector, then deletes rows left over from a replaced item's extra vectors."""
        cname, info = self._album(name)
        prepared = prepare_items(items, info.dim, now_ms())
        rows = [row for item in prepared for row in _rows(item)]
        per_batch = max(1, INSERT_BATCH_BYTES // (info.dim * 4 + 4096))
        for batch in chunks(rows, per_batch):
            self._upsert(cname, name, batch)
        self._delete_stale_rows(cname, name, prepared)
        return [item.id for item in items]

    def search(
        self,
        name: str,
        vector: Sequence[float] | Vector,
        top_k: int,
        filter: AttributeFilter | None = None,
        exclude_ids: Sequence[str] = (),
        primary_only: bool = False,
    ) -> list[Hit]:
        """Nearest images, one hit per image: over-fetches rows until `top_k` distinct images are found.

        `primary_only` searches the rows with ordinal 0 alone (one per image), so no over-fetch is needed.
        """
        check_top_k(top_k, self.settings.max_top_k)
        cname, info = self._album(name)
        query = normalise(vector, info.dim).tolist()
        excluded = check_ids(exclude_ids)
        expr = all_of(
            filter.to_expr() if filter else "",
            ids_expr(excluded, negate=True) if excluded else "",
            "ordinal == 0" if primary_only else "",
        )
        overfetch = 1 if primary_only else max(1, self.settings.search_overfetch)
        limit = min(top_k * overfetch, MILVUS_MAX_WINDOW)
        while True:
            rows = self._search_rows(cname, name, info, query, expr, limit)
            hits = _best_per_image(rows)
            if len(hits) >= top_k or len(rows) < limit or limit >= MILVUS_MAX_WINDOW:
                return hits[:top_k]
            limit = min(limit * 4, MILVUS_MAX_WINDOW)

    def get(self, name: str, ids: Sequence[str], with_vectors: bool = False) -> list[Item]:
        """Stored items among `ids` in the order asked, vectors in their original order if asked for."""
        cname, _ = self._album(name)
        wanted = check_ids(ids)
        fields = [*_ITEM_FIELDS, "vector"] if with_vectors else _ITEM_FIELDS
        rows: Rows = []
        for part in chunks(wanted, IDS_PER_EXPR):
            rows.extend(self._query(cname, name, ids_expr(part), fields))
        items = _items_from_rows(rows)
        return [items[i] for i in wanted if i in items]

    def list(self, name: str, limit: int = DEFAULT_LIST_LIMIT, offset: int = 0) -> list[Item]:
        """A page of items without vectors, ordered by key (Milvus orders query pages by primary key)."""
        limit, offset = check_page(limit, offset)
        if offset + limit > MILVUS_MAX_WINDOW:
            raise InvalidArgument(f"offset + limit must be at most {MILVUS_MAX_WINDOW}")
        cname, _ = self._album(name)
        rows = self._query(cname, name, "ordinal == 0", _ITEM_FIELDS, limit=limit, offset=offset)
        return sorted(_items_from_rows(rows).values(), key=lambda item: row_key(item.id, 0))

    def delete(self, name: str, ids: Sequence[str]) -> int:
        """Deletes every row of the images; returns how many of the images existed."""
        cname, _ = self._album(name)
        deleted = 0
        for part in chunks(check_ids(ids), IDS_PER_EXPR):
            existing = self._query(cname, name, all_of("ordinal == 0", ids_expr(part)), ["image_id"])
            if existing:
                self._delete_where(cname, name, ids_expr([row["image_id"] for row in existing]))
            deleted += len(existing)
        return deleted

    def close(self) -> None:
        """Closes the connection (a later call opens a new one)."""
        self._reset()

    # --- Milvus calls ------------------------------------------------------------------------
    def _kw(self) -> dict[str, Any]:
        return {"timeout": self.settings.milvus_timeout_s, "retry_times": RETRY_TIMES}

    def _call(self, album: str, operation: Callable[[MilvusClient], T]) -> T:
        """Runs one Milvus operation with errors mapped; on a lost connection, once more on a new one."""
        for attempt in range(2):
            client = self._connect()
            try:
                return operation(client)
            except Exception as exc:
                error = map_error(exc, album)
                if error is None:
                    raise
                if isinstance(error, AlbumNotFound) and album:
                    self._forget(collection_name(self.settings.collection_prefix, album))
                if type(error) is StoreUnavailable and attempt == 0:
                    log.warning("Milvus call failed (%s); reconnecting", error.message)
                    self._reset()
                    continue
                raise error from exc
        raise AssertionError("unreachable")

    def _connect(self) -> MilvusClient:
        with self._lock:
            if self._client is not None:
                return self._client
            if time.monotonic() < self._retry_at:
                raise StoreUnavailable(f"vector store at {self.settings.milvus_uri} is unavailable")
            try:
                # Probe first on a channel closed right after: a failed MilvusClient() leaves its
                # channel open and reconnecting, and a channel held open across a Milvus restart
                # keeps the restarted standalone server from serving.
                if not milvus_answers(self.settings.milvus_uri, timeout_s=min(self.settings.milvus_timeout_s, 3)):
                    raise ConnectionError("Milvus does not answer")
                self._client = MilvusClient(
                    uri=self.settings.milvus_uri,
                    token=self.settings.milvus_token,
                    timeout=self.settings.milvus_timeout_s,
                    alias=self._alias,
                )
            except Exception as exc:
                _drop_connection(self._alias)
                self._retry_at = time.monotonic() + self.settings.milvus_reconnect_backoff_s
                log.warning("cannot connect to Milvus at %s: %s", self.settings.milvus_uri, exc)
                raise StoreUnavailable(f"vector store at {self.settings.milvus_uri} is unavailable") from exc
            log.info("connected to Milvus at %s", self.settings.milvus_uri)
            return self._client

    def _reset(self) -> None:
        with self._lock:
            client, self._client = self._client, None
            self._loaded.clear()
        if client is not None:
            try:
                client.close()
            except Exception:  # closing a broken channel may fail; it is gone either way
                log.debug("closing the Milvus client failed", exc_info=True)

    def _index_and_load(self, client: MilvusClient, cname: str, kind: IndexType) -> None:
        params = client.prepare_index_params()
        params.add_index("vector", index_type=kind.value, metric_type="IP", params=index_params(kind, self.settings))
        client.create_index(cname, params, **self._kw())
        client.load_collection(cname, timeout=self.settings.milvus_load_timeout_s, retry_times=RETRY_TIMES)
        self._loaded.add(cname)

    def _loader(self, cname: str) -> Callable[[MilvusClient], None]:
        return lambda c: self._ensure_loaded(c, cname)

    def _ensure_loaded(self, client: MilvusClient, cname: str) -> None:
        if cname in self._loaded:
            return
        state = client.get_load_state(cname, **self._kw())["state"]
        if state == LoadState.NotExist:
            raise MilvusException(_COLLECTION_NOT_FOUND, f"collection not found: {cname}")
        if state != LoadState.Loaded:
            log.info("loading collection %s (state %s)", cname, state.name)
            client.load_collection(cname, timeout=self.settings.milvus_load_timeout_s, retry_times=RETRY_TIMES)
        self._check_caught_up(client, cname)
        self._loaded.add(cname)

    def _check_caught_up(self, client: MilvusClient, cname: str) -> None:
        """One Strong read, answered once Milvus has consumed the collection's log up to now.

        "Loaded" is not enough after a Milvus restart: the query node replays the log from the last
        checkpoint, and its serviceable time only advances when Milvus' time ticks flow again, which
        waits for the previous process's proxy session to expire (its etcd lease, common.session.ttl
        = 30 s, is not revoked on stop). Until then a Bounded or Strong read waits (the 20 s
        DEADLINE_EXCEEDED of the first album listing) and a Session read from a client with no write
        of its own to wait for answers at once, without the rows not yet replayed (count 0, no hits).
        So a collection counts as loaded only once this read answers; until then: `CollectionNotLoaded`.
        """
        try:
            client.query(cname, filter="ordinal == 0", output_fields=["count(*)"], consistency_level="Strong",
                         timeout=self.settings.milvus_catch_up_timeout_s, retry_times=RETRY_TIMES)
        except Exception as exc:
            if not _deadline_exceeded(exc):
                raise
            log.info("collection %s is loaded but Milvus has not caught up with its log yet", cname)
            raise CollectionNotLoaded(f"collection {cname} is loading (Milvus is replaying its log)") from exc

    def _read(self, cname: str, album: str, operation: Callable[[MilvusClient], T]) -> T:
        """A read on a loaded collection; loads it again if Milvus has unloaded it (a restart)."""
        for attempt in range(2):
            self._call(album, lambda c: self._ensure_loaded(c, cname))
            try:
                return self._call(album, operation)
            except CollectionNotLoaded:
                self._loaded.discard(cname)
                if attempt:
                    raise
        raise AssertionError("unreachable")

    def _album(self, name: str) -> tuple[str, Collection]:
        cname = collection_name(self.settings.collection_prefix, name)
        info = self._albums.get(cname) or self._describe(cname, name)
        self._albums[cname] = info
        return cname, info

    def _describe(self, cname: str, album: str) -> Collection:
        described = self._call(album, lambda c: c.describe_collection(cname, **self._kw()))
        info = parse_album(str(described.get("description", "")))
        if info is None:
            raise AlbumNotFound(f"album {album!r} not found")
        return info

    def _forget(self, cname: str) -> None:
        self._albums.pop(cname, None)
        self._loaded.discard(cname)

    def _count(self, cname: str, album: str, consistency: str) -> int:
        # The Count RPC reads at Strong (~200 ms): at Session a count right after a restart reloaded
        # the collection was seen to miss rows still being replayed. get_collection, which the
        # gateway calls on every search, counts at the read consistency.
        rows = self._read(
            cname,
            album,
            lambda c: c.query(
                cname, filter="ordinal == 0", output_fields=["count(*)"], consistency_level=consistency, **self._kw()
            ),
        )
        return int(rows[0]["count(*)"]) if rows else 0

    def _query(self, cname: str, album: str, expr: str, fields: Sequence[str], **page: int) -> Rows:
        level = self.settings.read_consistency
        found = self._read(
            cname,
            album,
            lambda c: c.query(
                cname, filter=expr, output_fields=[*fields], consistency_level=level, **page, **self._kw()
            ),
        )
        return [*found]

    def _search_rows(
        self, cname: str, album: str, info: Collection, query: Sequence[float], expr: str, limit: int
    ) -> Rows:
        params = search_params(info.index_type, limit, self.settings)
        level = self.settings.read_consistency
        found = self._read(
            cname,
            album,
            lambda c: c.search(
                cname,
                [[*query]],
                filter=expr,
                limit=limit,
                output_fields=_HIT_FIELDS,
                search_params=params,
                anns_field="vector",
                consistency_level=level,
                **self._kw(),
            ),
        )
        return [*found[0]] if found else []

    def _delete_stale_rows(self, cname: str, album: str, items: Sequence[Item]) -> None:
        by_count: dict[int, list[str]] = defaultdict(list)
        for item in items:
            by_count[len(item.vectors)].append(item.id)
        for n, ids in by_count.items():
            for part in chunks(ids, IDS_PER_EXPR):
                self._delete_where(cname, album, all_of(ids_expr(part), f"ordinal >= {n}"))

    def _upsert(self, cname: str, album: str, rows: Sequence[Row]) -> None:
        self._call(album, lambda c: c.upsert(cname, [*rows], **self._kw()))

    def _delete_where(self, cname: str, album: str, expr: str) -> None:
        """Deletes matching rows; returns once reads at Session consistency no longer see them.

        pymilvus records no timestamp for a delete by filter, so a Session read right after it may
        still see the rows; one Strong read (it waits for Milvus's next time tick, ~200 ms) closes
        that window. Deletes are rare, so searches keep Session's speed.
        """
        self._call(album, lambda c: c.delete(cname, filter=expr, **self._kw()))
        self._count(cname, album, "Strong")


# --- rows <-> records ------------------------------------------------------------------------------


def _rows(item: Item) -> list[dict[str, Any]]:
    return [
        {
            "pk": row_key(item.id, k),
            "image_id": item.id,
            "ordinal": k,
            "name": item.name,
            "content_hash": item.content_hash,
            "attributes": item.attributes,
            "created_at_ms": item.created_at_ms,
            "vector": vector.tolist(),
        }
        for k, vector in enumerate(item.vectors)
    ]


def _best_per_image(rows: Sequence[dict[str, Any]]) -> list[Hit]:
    """One hit per image from rows ordered by similarity: the first (best) row of each image."""
    best: dict[str, Hit] = {}
    for row in rows:
        entity = row["entity"]
        image_id = str(entity["image_id"])
        if image_id not in best:
            best[image_id] = Hit(
                id=image_id,
                distance=distance_of(row["distance"]),
                name=entity.get("name", ""),
                content_hash=entity.get("content_hash", ""),
                attributes=entity.get("attributes") or {},
                created_at_ms=int(entity.get("created_at_ms", 0)),
            )
    return sorted(best.values(), key=lambda hit: (hit.distance, hit.id))


def _items_from_rows(rows: Sequence[dict[str, Any]]) -> dict[str, Item]:
    grouped: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for row in rows:
        grouped[str(row["image_id"])].append(row)
    return {image_id: _item(sorted(parts, key=lambda r: int(r["ordinal"]))) for image_id, parts in grouped.items()}


def _item(rows: Sequence[dict[str, Any]]) -> Item:
    first = rows[0]
    vectors = tuple(np.asarray(r["vector"], dtype=np.float32) for r in rows if "vector" in r)
    return Item(
        id=str(first["image_id"]),
        vectors=vectors,
        name=first.get("name", ""),
        content_hash=first.get("content_hash", ""),
        attributes=first.get("attributes") or {},
        created_at_ms=int(first.get("created_at_ms", 0)),
    )


def _with_count(info: Collection, count: int) -> Collection:
    return replace(info, count=count)


def _deadline_exceeded(exc: BaseException) -> bool:
    """Whether a pymilvus call ran out of time: grpc's DEADLINE_EXCEEDED (raised as is, or its code
    wrapped), or Milvus answering first that the call's context ended ("proxy TaskCondition context
    Done", code 65535)."""
    if isinstance(exc, grpc.RpcError) and callable(getattr(exc, "code", None)):
        return bool(exc.code() == grpc.StatusCode.DEADLINE_EXCEEDED)
    if isinstance(exc, MilvusException):
        code = exc.code() if callable(exc.code) else exc.code
        message = str(exc.message).lower()
        return code == grpc.StatusCode.DEADLINE_EXCEEDED or "context done" in message or "deadline exceeded" in message
    return False


def _drop_connection(alias: str) -> None:
    """Closes and forgets pymilvus's connection of that alias, if it holds one."""
    from pymilvus import connections

    try:
        connections.remove_connection(alias)
    except Exception:  # nothing registered under it, or its channel is already broken
        log.debug("dropping Milvus connection %s failed", alias, exc_info=True)


def milvus_answers(uri: str, timeout_s: float) -> bool:
    """Whether Milvus's proxy at `uri` answers an RPC (GetVersion), on a channel closed afterwards."""
    import grpc

    target = uri.split("://", 1)[-1].rstrip("/")
    with grpc.insecure_channel(target) as channel:
        get_version = channel.unary_unary("/milvus.proto.milvus.MilvusService/GetVersion")
        try:
            get_version(b"", timeout=timeout_s)
        except grpc.RpcError:
            return False
    return True
