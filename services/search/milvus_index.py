"""`MilvusIndex`: the `VectorIndex` the service runs, one Milvus collection per album (its layout, and how
rows are read back as images: `milvus_layout`; how pymilvus errors become ours: `milvus_errors`).

Every pymilvus error is mapped (`milvus_errors.map_error`): nothing from pymilvus or grpc leaves these modules.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import re
import threading
import time
import uuid
from collections import defaultdict
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from typing import Any, TypeVar, cast

import grpc
from pymilvus import MilvusClient
from pymilvus.client.types import LoadState
from pymilvus.client.utils import SciPyHelper
from pymilvus.exceptions import (
    MilvusException,
)

from services.common.errors import (
    AlbumNotFound,
    AlreadyExists,
    ImageSearchError,
    InvalidArgument,
    StoreUnavailable,
)
from services.common.filtering import Expr, bind
from services.common.schema import (
    NO_COLUMNS,
    AlbumSchema,
)
from services.search.index import (
    DEFAULT_LIST_LIMIT,
    Collection,
    Group,
    Hit,
    IndexType,
    Item,
    Selection,
    Vector,
    apply_changes,
    check_changes,
    check_dim,
    check_ids,
    check_index_type,
    check_page,
    check_top_k,
    group_counts,
    normalise,
    now_ms,
    order_column,
    prepare_items,
    vector_limit,
)
from services.search.milvus_errors import (
    COLLECTION_NOT_FOUND,
    CollectionNotLoaded,
    StorePartDown,
    deadline_exceeded,
    map_error,
    released_under_it,
)
from services.search.milvus_filter import (
    all_of,
    compile_filter,
    field_of,
    quote_string,
)
from services.search.milvus_layout import (
    SCALAR_INDEXES,
    Stored,
    best_per_image,
    build_schema,
    collection_name,
    column_of_row,
    index_params,
    items_from_rows,
    nearest_images,
    parse_album,
    rows_of,
    search_params,
    version_name,
)
from services.search.milvus_order import Sampling, first_by_id, first_ids
from services.search.recent_writes import RecentWrites
from services.search.search_plan import FILTERED_SEARCHES, ExpiringCache, post_filter_depth
from services.search.settings import SearchSettings

log = logging.getLogger(__name__)
T = TypeVar("T")
Row = dict[str, Any]
Rows = list[Row]

# Milvus 2.3 caps a search's limit, and a query's offset + limit, at 16384.
MILVUS_MAX_WINDOW = 16384
# Ids per `in [...]` expression, to keep expressions small.
IDS_PER_EXPR = 1000
# Images read back (with all their rows and vectors) per step of an update.
UPDATE_BATCH = 200
# Bytes of vectors per insert call (Milvus' default gRPC limit is 64 MiB).
INSERT_BATCH_BYTES = 16 * 1024 * 1024
# pymilvus retries UNAVAILABLE up to 75 times unless told otherwise; fail fast and let callers retry.
RETRY_TIMES = 2
# Seconds between looks at a loading collection (pymilvus's own wait looks every 0.2 s; Milvus 2.3 marks
# a collection loaded on its query coordinator's next 1 s tick, so a finer look returns sooner after it).
LOAD_POLL_S = 0.05
# Collections `ping` checks, and `list_collections` describes and counts, at once (each mostly waits for Milvus:
# a check for its time tick).
AT_ONCE = 8
# How long a read that reached a collection being let go (`released_under_it`) waits before it is made again (the
# album's alias has moved on by then).
RELEASED_RETRY_S = 0.2


# --- expressions ---------------------------------------------------------------------------------


def ids_expr(ids: Sequence[str], field: str = "image_id", negate: bool = False) -> str:
    keyword = "not in" if negate else "in"
    return f"{field} {keyword} [{', '.join(quote_string(i) for i in ids)}]"


def chunks(values: Sequence[T], size: int) -> Iterator[Sequence[T]]:
    for start in range(0, len(values), size):
        yield values[start : start + size]


@dataclass(frozen=True)
class _AlbumRows:
    """An album's images (one row each: the expressions keep ordinal 0) read with `fields`, for
    `milvus_order.first_ids`."""

    index: MilvusIndex
    cname: str
    album: str
    fields: list[str]

    def first(self, expr: str, limit: int) -> list[Row]:
        return self.index._query(self.cname, self.album, expr, self.fields, limit=limit)

    def every(self, expr: str) -> Iterator[Row]:
        return self.index._scan(self.cname, self.album, expr, self.fields)

    def count(self, expr: str) -> int:
        return self.index._count(self.cname, self.album, self.index.settings.read_consistency, expr)


# --- the index -----------------------------------------------------------------------------------


F = TypeVar("F", bound=Callable[..., Any])


def _changes_album(method: F) -> F:
    """Marks a MilvusIndex method that changes an album as a whole (its first argument the album's name): reads
    of it by id run at the read consistency while it runs and for the window after (`RecentWrites.changed`).
    Not a new album's creation: its collection is new, and every row written to it since is an image written."""

    @functools.wraps(method)
    def changing(self: MilvusIndex, name: str, *args: Any, **kwargs: Any) -> Any:
        self._recent.changed(name)
        try:
            return method(self, name, *args, **kwargs)
        finally:
            self._recent.changed(name)

    return cast(F, changing)


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
    timestamps), which suffices when one replica serves all writes; `list_collections` counts at it too, so
    an album listed right after an add counts the add. A Session read right after a write waits for it to
    become visible (0.2-0.6 s here, a few time ticks), so a write path reads before it writes, never after
    (`_write_items`). A read by image id (`get`, an insert's and a delete's look at the rows) of images that this
    process has not written within `settings.recent_writes_s` runs at Bounded instead, which waits for nothing
    (services/search/recent_writes.py): back-to-back adds no longer wait for each other's tick.

    Loading: collections are loaded on create and, on first use (or when Milvus says a collection is
    not loaded, as after a restart), before being read; a collection counts as loaded once a Strong
    read of it answers (`_check_caught_up`): after a Milvus restart that takes until Milvus has
    replayed its log, up to ~30 s. `ping` does this for every album, so the service's health (and the
    gateway's /readyz) says ready only when every album can be read in full.
    """

    def __init__(self, settings: SearchSettings) -> None:
        # pymilvus looks for scipy.sparse the first time it reads or writes rows, without a lock: two
        # threads doing it at once (concurrent first searches) failed with KeyError 'scipy.sparse', a 500
        # (scipy is here through scikit-image). Once, now, before any thread.
        SciPyHelper.is_scipy_sparse(None)
        self.settings = settings
        self._alias = f"imagesearch-{uuid.uuid4().hex[:12]}"
        self._client: MilvusClient | None = None
        self._lock = threading.Lock()
        self._retry_at = 0.0
        self._albums: dict[str, Stored] = {}
        self._loaded: set[str] = set()
        # Collections whose log a Strong read found replayed (`_check_caught_up`), not addressed by their own name
        # since: an alias of one needs no check of its own (`_alias_checked`).
        self._caught_up: set[str] = set()
        self._creating: set[str] = set()
        # Collections made through this connection (loaded once asked for, with no log to catch up on).
        self._fresh: set[str] = set()
        # Images matching each filter (and "": all of them) per collection, to plan filtered searches.
        self._counts: ExpiringCache[tuple[str, str], int] = ExpiringCache(settings.filter_share_ttl_s)
        # Images (and albums as a whole) written through this process lately, by album name: read by id at the
        # read consistency; others at Bounded (`_by_id_level`).
        self._recent = RecentWrites(settings.recent_writes_s)
        # How an order by a column samples the album (services.search.milvus_order).
        self.order_sampling = Sampling(most=MILVUS_MAX_WINDOW)

    # --- albums ------------------------------------------------------------------------------
    def create_collection(self, name: str, dim: int, model: str, index_type: str = "",
                          schema: AlbumSchema = NO_COLUMNS) -> Collection:
        """Creates, indexes and loads an album's first version, named by an alias of the album's name;
        `AlreadyExists` if the album exists."""
        cname = collection_name(self.settings.collection_prefix, name)
        kind = check_index_type(index_type, self.settings.index_type, check_dim(dim), self.settings.ivf_pq_m)
        info = Collection(name=name, dim=dim, model=model, index_type=kind, created_at_ms=now_ms(),
                          schema=AlbumSchema.of(schema.columns))
        if self._call(name, lambda c: c.has_collection(cname, **self._kw())):
            raise AlreadyExists(f"album {name!r} already exists")
        physical = version_name(cname, 1)
        self._drop_alias(name, cname)  # one left pointing nowhere (Milvus 2.3 keeps it when its collection goes)
        self._build(name, physical, info, 1)
        try:
            self._call(name, lambda c: c.create_alias(physical, cname, **self._kw()))
        except ImageSearchError:
            self._call(name, lambda c: c.drop_collection(physical, **self._kw()))
            raise
        self._albums[cname] = Stored.new(info, 1)
        self._fresh.add(cname)
        log.info("created album %s (%s, dim %d, %s, %d column(s))", name, physical, dim, kind.value,
                 len(info.schema.columns))
        return info

    def _build(self, album: str, physical: str, info: Collection, version: int) -> None:
        """Creates, indexes and loads one version's collection (dropped again if that fails)."""
        self._creating.add(physical)
        try:
            self._call(album, lambda c: c.create_collection(physical, schema=build_schema(info, version),
                                                            **self._kw()))
            try:
                self._call(album, lambda c: self._index_and_load(c, physical, info))
            except ImageSearchError:
                self._call(album, lambda c: c.drop_collection(physical, **self._kw()))
                raise
        finally:
            self._creating.discard(physical)

    @_changes_album
    def drop_collection(self, name: str) -> bool:
        """Drops an album, every version of it; False if there was none."""
        cname = collection_name(self.settings.collection_prefix, name)
        self._forget(cname)
        existed = bool(self._call(name, lambda c: c.has_collection(cname, **self._kw())))
        self._drop_alias(name, cname)
        for physical in self._versions(name):
            self._forget(physical)
            self._call(name, lambda c, physical=physical: c.drop_collection(physical, **self._kw()))  # type: ignore[misc]
        if self._call(name, lambda c: c.has_collection(cname, **self._kw())):
            self._call(name, lambda c: c.drop_collection(cname, **self._kw()))  # a legacy album's own collection
        if existed:
            log.info("dropped album %s", name)
        return existed

    def _versions(self, name: str) -> list[str]:
        """The collections of the album's versions (not a legacy album's own collection)."""
        cname = collection_name(self.settings.collection_prefix, name)
        pattern = re.compile(re.escape(cname) + r"_v[0-9]+")
        names = self._call(name, lambda c: c.list_collections(**self._kw()))
        return sorted(n for n in names if pattern.fullmatch(n))

    # --- versions: re-embedding beside the album ---------------------------------------------------
    @_changes_album
    def begin_version(self, name: str, dim: int, model: str) -> int:
        """A new, empty version of the album (its columns and index type, this model and dim), filled
        beside the album while the album answers from its current version; any other version in the
        making is abandoned. Returns its number."""
        cname, active = self._album(name)
        number = 1 + max([active.version, *(int(p.rsplit("_v", 1)[1]) for p in self._versions(name))])
        for physical in self._versions(name):
            if physical != self._physical(cname, active):
                self._forget(physical)
                self._call(name, lambda c, physical=physical: c.drop_collection(physical, **self._kw()))  # type: ignore[misc]
        info = replace(active.info, dim=check_dim(dim), model=model, count=0)
        self._build(name, version_name(cname, number), info, number)
        log.info("album %s: version %d begun (model %s)", name, number, model)
        return number

    @_changes_album
    def commit_version(self, name: str, version: int) -> Collection:
        """Makes the version the album's: its alias moves there at once, the old version is dropped."""
        cname, active = self._album(name)
        target, _ = self._album(name, version)
        if version == active.version:
            return self.get_collection(name)
        if active.version == 0:
            # A legacy album's collection bears the album's name; an alias cannot, so it goes first.
            self._call(name, lambda c: c.drop_collection(cname, **self._kw()))
            self._call(name, lambda c: c.create_alias(target, cname, **self._kw()))
        else:
            old = self._physical(cname, active)
            self._call(name, lambda c: c.alter_alias(target, cname, **self._kw()))
            self._call(name, lambda c: c.drop_collection(old, **self._kw()))
            self._forget(old)
        self._forget(cname)
        log.info("album %s: version %d is the album now", name, version)
        return self.get_collection(name)

    @_changes_album
    def abort_version(self, name: str, version: int) -> bool:
        """Drops a version in the making; False if there was none (the album's own version stays)."""
        cname, active = self._album(name)
        physical = version_name(cname, version)
        if version == active.version or physical not in self._versions(name):
            return False
        self._forget(physical)
        self._call(name, lambda c: c.drop_collection(physical, **self._kw()))
        return True

    @staticmethod
    def _physical(cname: str, stored: Stored) -> str:
        return version_name(cname, stored.version) if stored.version else cname

    def ping(self) -> None:
        """Returns when Milvus serves every album: answers, has each collection loaded and has caught up
        with its log (see `_ensure_loaded`). `StoreUnavailable` otherwise (`CollectionNotLoaded` while an
        album is loading or its log is being replayed, as for up to ~30 s after a Milvus restart).

        Each album is checked once per connection, so once all are, a ping only lists the names. The checks
        run `AT_ONCE` at a time: each one's Strong read waits for Milvus' next time tick (~200 ms) rather
        than working, and one after the other a search service over 30 albums took 7.6 s to be ready after a
        restart (2.2 s now: bench/album_ready.py)."""
        names = self._call("", lambda c: c.list_collections(**self._kw()))
        # One being created here is loaded by its creation, once its indexes are asked for.
        unchecked = [cname for cname in sorted(n for n in names if n.startswith(self.settings.collection_prefix))
                     if cname not in self._loaded and cname not in self._creating]
        _each_at_once(self._check_loaded, unchecked)

    def _check_loaded(self, cname: str) -> None:
        """`_ensure_loaded` of one collection, which may have been dropped meanwhile."""
        with contextlib.suppress(AlbumNotFound):
            self._call("", self._loader(cname))

    def list_collections(self) -> list[Collection]:
        """Every album of this service (its current version), by name, with counts read at the read
        consistency (at Bounded, a listing right after an add may not count it yet). The albums are described
        and counted `AT_ONCE` at a time (bench/album_ready.py: one after the other, 30 albums took 200-300 ms)."""
        names = self._call("", lambda c: c.list_collections(**self._kw()))
        physical = sorted(n for n in names if n.startswith(self.settings.collection_prefix))
        albums = {album.name: album for album in _each_at_once(self._listed, physical) if album is not None}
        return sorted(albums.values(), key=lambda a: a.name)

    def _listed(self, physical: str) -> Collection | None:
        """The album a collection holds, counted; None for a version in the making or being replaced, one
        dropped meanwhile, or one not of ours."""
        try:
            stored = self._describe(physical, "")
            cname = collection_name(self.settings.collection_prefix, stored.info.name)
            if stored.version and self._alias_target(cname) != physical:
                return None
            self._albums[cname] = stored
            # Counted by the name writes address (pymilvus keeps a Session's write times by name).
            return _with_count(stored.info, self._count(cname, stored.info.name, self.settings.read_consistency))
        except (AlbumNotFound, InvalidArgument):
            return None

    def _drop_alias(self, album: str, cname: str) -> None:
        if self._alias_target(cname):
            self._call(album, lambda c: c.drop_alias(cname, **self._kw()))

    def _alias_target(self, cname: str) -> str:
        try:
            return str(self._call("", lambda c: c.describe_alias(cname, **self._kw()))["collection_name"])
        except ImageSearchError:
            return ""

    def get_collection(self, name: str, with_count: bool = True) -> Collection:
        """One album with its image count (0 unless `with_count`: the count is a query to Milvus)."""
        cname, stored = self._album(name)
        return _with_count(stored.info, self._count(cname, name, self.settings.read_consistency) if with_count else 0)

    def count(self, name: str, filter: Expr | None = None, version: int = 0) -> int:
        """Number of images (rows with ordinal 0), of those matching the filter if one is given."""
        cname, stored = self._album(name, version)
        return self._count(cname, name, "Strong", self._filter_expr(stored, filter))

    # --- items -------------------------------------------------------------------------------
    def insert(self, name: str, items: Sequence[Item], version: int = 0) -> list[str]:
        """Upserts one row per vector, then deletes rows left over from a replaced item's extra vectors."""
        cname, stored = self._album(name, version)
        prepared = prepare_items(items, stored.info.dim, now_ms(), stored.info.schema, vector_limit(name))
        self._write_items(cname, name, stored, prepared)
        return [item.id for item in items]

    def search(
        self,
        name: str,
        vector: Sequence[float] | Vector,
        top_k: int,
        filter: Expr | None = None,
        exclude_ids: Sequence[str] = (),
        primary_only: bool = False,
    ) -> list[Hit]:
        """Nearest images, one hit per image: over-fetches rows until `top_k` distinct images are found.

        `primary_only` searches the rows with ordinal 0 alone (one per image), so no over-fetch is needed.
        A filter goes into the search, or is tested on the rows of a deeper unfiltered one, whichever
        its share of the album says answers better (`search_plan`); the hits match it either way.
        """
        check_top_k(top_k, self.settings.max_top_k)
        cname, stored = self._album(name)
        query = normalise(vector, stored.info.dim).tolist()
        excluded = check_ids(exclude_ids)
        bound = bind(filter, stored.info.schema) if filter is not None else None
        filter_expr = compile_filter(bound, stored.info.schema)
        scope = all_of(ids_expr(excluded, negate=True) if excluded else "", "ordinal == 0" if primary_only else "")
        overfetch = self._overfetch(primary_only)
        depth = self._post_filter_depth(cname, name, stored, filter_expr, top_k * overfetch)
        if depth:
            hits = self._post_filtered(cname, name, stored, query, scope, bound, top_k, depth)
            FILTERED_SEARCHES.labels("post" if hits is not None else "post_then_pre").inc()
            if hits is not None:
                return hits
        elif filter_expr:
            FILTERED_SEARCHES.labels("pre").inc()
        limit = min(top_k * overfetch, MILVUS_MAX_WINDOW)
        expr = all_of(filter_expr, scope)
        while True:
            rows = self._search_rows(cname, name, stored, query, expr, limit)
            hits = best_per_image(rows, stored.info.schema)
            if len(hits) >= top_k or len(rows) < limit or limit >= MILVUS_MAX_WINDOW:
                return hits[:top_k]
            limit = min(limit * 4, MILVUS_MAX_WINDOW)

    def search_many(self, name: str, vectors: Sequence[Sequence[float] | Vector], top_k: int,
                    primary_only: bool = False) -> list[list[Hit]]:
        """Each vector's nearest images in one Milvus search of many queries: `top_k * search_overfetch` rows
        each (`top_k` of the first rows alone, `primary_only`), their first row per image kept (ids, distances and
        rows only: nothing else is read)."""
        check_top_k(top_k, self.settings.max_top_k)
        if not vectors:
            return []
        cname, stored = self._album(name)
        queries = [normalise(v, stored.info.dim).tolist() for v in vectors]
        limit = min(top_k * self._overfetch(primary_only), MILVUS_MAX_WINDOW)
        params = search_params(stored.info.index_type, limit, self.settings)
        level = self.settings.read_consistency
        found = self._read(cname, name, lambda c: c.search(
            cname, queries, filter="ordinal == 0" if primary_only else "", limit=limit,
            output_fields=["image_id", "ordinal"], search_params=params, anns_field="vector", consistency_level=level,
            **self._kw()))
        return [nearest_images(rows, top_k) for rows in found]

    def _overfetch(self, primary_only: bool) -> int:
        """Rows to read per image wanted: one where only the images' first rows are searched (one each), else
        `search_overfetch` (an image's other rows may come first)."""
        return 1 if primary_only else max(1, self.settings.search_overfetch)

    def _post_filter_depth(self, cname: str, album: str, stored: Stored, expr: str, rows_wanted: int) -> int:
        """How many rows of an unfiltered search to test the filter on; 0: the filter goes into the search
        (see `search_plan`: no filter, an index other than HNSW, or a share of the album too small)."""
        if not expr or stored.info.index_type is not IndexType.HNSW:
            return 0
        return post_filter_depth(self._filter_share(cname, album, expr), rows_wanted,
                                 self.settings.post_filter_min_share, self.settings.post_filter_max_rows)

    def _post_filtered(self, cname: str, album: str, stored: Stored, query: Sequence[float], scope: str,
                       filter: Expr | None, top_k: int, depth: int) -> list[Hit] | None:
        """The `top_k` images the bound filter matches among the nearest `depth` rows of a search without it;
        None when fewer match there and the album has more rows."""
        rows = self._search_rows(cname, album, stored, query, scope, depth)
        hits = best_per_image(rows, stored.info.schema, filter, top_k)
        return hits[:top_k] if len(hits) >= top_k or len(rows) < depth else None

    def _filter_share(self, cname: str, album: str, expr: str) -> float:
        """The share of the album's images the filter keeps, from counts at most `filter_share_ttl_s` old
        and read at Bounded consistency: a hint for choosing how to search, so it may lag the newest writes."""
        total = self._bounded_count(cname, album, "")
        return self._bounded_count(cname, album, expr) / total if total else 1.0

    def _bounded_count(self, cname: str, album: str, expr: str) -> int:
        count = self._counts.get((cname, expr))
        if count is None:
            count = self._count(cname, album, "Bounded", expr)
            self._counts.put((cname, expr), count)
        return count

    def get(self, name: str, ids: Sequence[str], with_vectors: bool = False, version: int = 0) -> list[Item]:
        """Stored items among `ids` in the order asked, vectors in their original order if asked for."""
        cname, stored = self._album(name, version)
        wanted = check_ids(ids)
        fields = [*stored.fields(), "vector"] if with_vectors else stored.fields()
        level = self._by_id_level(name, wanted)
        rows: Rows = []
        for part in chunks(wanted, IDS_PER_EXPR):
            rows.extend(self._query(cname, name, ids_expr(part), fields, level=level))
        items = items_from_rows(rows, stored.info.schema)
        return [items[i] for i in wanted if i in items]

    def query(self, name: str, filter: Expr | None = None, limit: int = DEFAULT_LIST_LIMIT, offset: int = 0,
              after_id: str = "", order_by: str = "", descending: bool = False, version: int = 0,
              nulls_first: bool | None = None) -> list[Item]:
        """A page of matching items without vectors. By id: Milvus returns a query's first rows by primary key,
        which are the first by id unless an id holds a character at or below the key's "#" (then every match is
        read and sorted: `first_by_id`); `image_id > after_id` walks albums of any size. By a column: the ids from
        `milvus_order.first_ids`, then the page's items."""
        limit, offset = check_page(limit, offset)
        cname, stored = self._album(name, version)
        expr = all_of("ordinal == 0", self._filter_expr(stored, filter),
                      f"image_id > {quote_string(after_id)}" if after_id else "")
        if order_by:
            kind = order_column(order_by, stored.info.schema)
            album_rows = _AlbumRows(self, cname, name, ["image_id", field_of(order_by), *stored.null_fields])
            ids = first_ids(album_rows, stored.info.schema, kind, expr, order_by, descending, offset + limit,
                            lambda row: column_of_row(row, order_by, stored.info.schema), self.order_sampling,
                            nulls_first)
            return self.get(name, ids[offset:], version=version)
        if offset + limit > MILVUS_MAX_WINDOW:
            raise InvalidArgument(f"offset + limit must be at most {MILVUS_MAX_WINDOW}; page on with after_id "
                                  "(the last id of the page before) instead")
        rows = first_by_id(_AlbumRows(self, cname, name, stored.fields()), expr, offset + limit, MILVUS_MAX_WINDOW)
        return list(items_from_rows(rows[offset:], stored.info.schema).values())

    def count_groups(self, name: str, columns: Sequence[str], filter: Expr | None = None) -> list[Group]:
        """How many matching images have each combination of the columns' values (read field by field)."""
        cname, stored = self._album(name)
        for column in columns:
            order_column(column, stored.info.schema)
        expr = all_of("ordinal == 0", self._filter_expr(stored, filter))
        fields = ["image_id", *{field_of(c) for c in columns}, *stored.null_fields]
        return group_counts(tuple(column_of_row(row, c, stored.info.schema) for c in columns)
                            for row in self._scan(cname, name, expr, fields))

    def update(self, name: str, selection: Selection, changes: Mapping[str, Any]) -> int:
        """Reads the selected images back (every row, vectors included), changes their attributes and
        writes them again, a batch at a time; if a write fails, the batches written are put back."""
        cname, stored = self._album(name)
        selection = selection.check()
        checked = check_changes(changes, stored.info.schema)
        ids = list(selection.ids) if selection.ids else self._matching_ids(cname, name, stored, selection.filter)
        written: list[Item] = []
        try:
            for part in chunks(ids, UPDATE_BATCH):
                originals = self.get(name, part, with_vectors=True)
                changed = [apply_changes(item, checked, stored.info.schema) for item in originals]
                self._write_items(cname, name, stored, changed, replacing=False)
                written.extend(originals)
        except ImageSearchError:
            if written:
                log.warning("update of album %s failed after %d image(s); putting them back", name, len(written))
                self._write_items(cname, name, stored, written, replacing=False)
            raise
        return len(written)

    def delete(self, name: str, ids: Sequence[str]) -> int:
        """Deletes every row of the images; returns how many of the images existed.

        The rows are read first and deleted by primary key: Milvus 2.3 answers a delete by keys at once, while
        a delete by any other expression first looks the keys up itself, waiting for its next time tick
        (200-400 ms a delete). Images with more rows than one read returns are deleted by expression."""
        cname, _ = self._album(name)
        deleted = 0
        for part in chunks(check_ids(ids), IDS_PER_EXPR):
            level = self._by_id_level(name, part)
            self._recent.wrote(name, part)
            rows = self._query(cname, name, ids_expr(part), ["pk", "image_id", "ordinal"], limit=MILVUS_MAX_WINDOW,
                               level=level)
            if len(rows) < MILVUS_MAX_WINDOW:  # every row of these images
                existing = {str(row["image_id"]) for row in rows if row["ordinal"] == 0}
                if existing:
                    keys = [str(row["pk"]) for row in rows if row["image_id"] in existing]
                    # Milvus answers an expression that only lists primary keys at once (pymilvus's own `ids=`
                    # writes them in unescaped: a quote in an image id broke it).
                    self._delete_where(cname, name, *(ids_expr(few, "pk") for few in chunks(keys, IDS_PER_EXPR)))
            else:
                existing = {str(row["image_id"]) for row in
                            self._query(cname, name, all_of("ordinal == 0", ids_expr(part)), ["image_id"])}
                if existing:
                    self._delete_where(cname, name, ids_expr(sorted(existing)))
            self._recent.wrote(name, part)
            deleted += len(existing)
        return deleted

    def close(self) -> None:
        """Closes the connection (a later call opens a new one)."""
        self._reset()

    def _filter_expr(self, stored: Stored, filter: Expr | None) -> str:
        return compile_filter(bind(filter, stored.info.schema), stored.info.schema) if filter is not None else ""

    def _matching_ids(self, cname: str, album: str, stored: Stored, filter: Expr | None) -> list[str]:
        expr = all_of("ordinal == 0", self._filter_expr(stored, filter))
        return [str(row["image_id"]) for row in self._scan(cname, album, expr, ["image_id"])]

    def _scan(self, cname: str, album: str, expr: str, fields: Sequence[str]) -> Iterator[Row]:
        """Every row matching `expr`, a window at a time by primary key (the order Milvus reads them in; by image
        id, an id holding a character at or below the key's "#" could fall between two windows)."""
        after = ""
        fields = list(fields) if "pk" in fields else [*fields, "pk"]
        while True:
            window = all_of(expr, f"pk > {quote_string(after)}" if after else "")
            rows = self._query(cname, album, window, fields, limit=MILVUS_MAX_WINDOW)
            yield from rows
            if len(rows) < MILVUS_MAX_WINDOW:
                return
            after = max(str(row["pk"]) for row in rows)

    def _write_items(self, cname: str, album: str, stored: Stored, items: Sequence[Item],
                     replacing: bool = True) -> None:
        """Upserts the items' rows; `replacing` items that may have had more vectors before, deletes the rows
        left over (not so for items read back with all their vectors, as an update writes them)."""
        stale = self._stale_rows(cname, album, items) if replacing else []
        rows = [row for item in items for row in rows_of(item, stored)]
        per_batch = max(1, INSERT_BATCH_BYTES // (stored.info.dim * 4 + 4096))
        for batch in chunks(rows, per_batch):
            self._upsert(cname, album, batch)
        self._delete_where(cname, album, *stale)

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
                    self._reset(client)
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

    def _reset(self, failed: MilvusClient | None = None) -> None:
        """Drops the client (and what was known through it), so that the next call connects again; with
        `failed`, only if it is still that one: calls running at once (`AT_ONCE`) that lost the same connection
        reset it once, and none closes a client another has just connected."""
        with self._lock:
            if failed is not None and self._client is not failed:
                return
            client, self._client = self._client, None
            self._loaded.clear()
            self._caught_up.clear()
            self._fresh.clear()
        if client is not None:
            try:
                client.close()
            except Exception:  # closing a broken channel may fail; it is gone either way
                log.debug("closing the Milvus client failed", exc_info=True)

    def _index_and_load(self, client: MilvusClient, cname: str, info: Collection) -> None:
        """Scalar indexes, then the vector index, then load: Milvus refuses an index on a loaded collection,
        so nothing may load it before the last index is asked for (see `ping`).

        The collection is new and empty, so nothing waits: its indexes are built as soon as asked for and
        loading finds them (pymilvus's wait would sleep 0.5 s before its first look), and the load, ~2 s of
        Milvus 2.3's query coordinator ticks even for an empty collection (~3 s at its default
        checkChannelInterval; the stack's is shorter: services.devstack), goes on while the caller does
        (an album's companion collection loads alongside); the first read of it waits (`_ensure_loaded`)."""
        params = client.prepare_index_params()
        for column in info.schema.columns:
            if column.type in SCALAR_INDEXES:
                params.add_index(field_of(column.name), index_type=SCALAR_INDEXES[column.type])
        kind = info.index_type
        params.add_index("vector", index_type=kind.value, metric_type="IP", params=index_params(kind, self.settings))
        client.create_index(cname, params, sync=False, **self._kw())
        client.load_collection(cname, timeout=self.settings.milvus_load_timeout_s, retry_times=RETRY_TIMES,
                               _async=True)
        self._fresh.add(cname)

    def _loader(self, cname: str) -> Callable[[MilvusClient], None]:
        return lambda c: self._ensure_loaded(c, cname)

    def _ensure_loaded(self, client: MilvusClient, cname: str) -> None:
        if cname in self._loaded:
            return
        if self._alias_checked(cname):
            self._loaded.add(cname)
            return
        self._load(client, cname)
        if cname not in self._fresh:  # one made through this connection has no log to replay
            self._check_caught_up(client, cname)
            self._caught_up.add(cname)
        self._loaded.add(cname)

    def _alias_checked(self, cname: str) -> bool:
        """Whether `cname` is an album's alias whose version's collection a Strong read found caught up, and
        which nothing wrote to by its own name since: `ping` checks each version's collection by its own name,
        reads address the album by its alias, the same collection (by the album as last described: `_album`,
        `list_collections`). Without this the first album listing after a restart made one more Strong read
        (~200 ms) per album (5.8 s in CI), and the first search of each album one more. A version written by
        its own name (a re-embed's) is checked again through the alias once it is the album's: a Session read
        by the alias would not wait for those writes (pymilvus keeps their times under the version's name)."""
        stored = self._albums.get(cname)
        return stored is not None and stored.version > 0 and version_name(cname, stored.version) in self._caught_up

    def _load(self, client: MilvusClient, cname: str) -> None:
        """Returns once Milvus has the collection loaded, asking it to load it where it is not loading."""
        deadline = time.monotonic() + self.settings.milvus_load_timeout_s
        while (state := client.get_load_state(cname, **self._kw())["state"]) != LoadState.Loaded:
            if state == LoadState.NotExist:
                raise MilvusException(COLLECTION_NOT_FOUND, f"collection not found: {cname}")
            if time.monotonic() > deadline:
                raise CollectionNotLoaded(f"collection {cname} is still loading after "
                                          f"{self.settings.milvus_load_timeout_s:.0f} s")
            if state == LoadState.NotLoad:
                log.info("loading collection %s", cname)
                client.load_collection(cname, timeout=self.settings.milvus_load_timeout_s, retry_times=RETRY_TIMES,
                                       _async=True)
            time.sleep(LOAD_POLL_S)

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
            if not deadline_exceeded(exc):
                raise
            log.info("collection %s is loaded but Milvus has not caught up with its log yet", cname)
            raise CollectionNotLoaded(f"collection {cname} is loading (Milvus is replaying its log)") from exc

    def _read(self, cname: str, album: str, operation: Callable[[MilvusClient], T]) -> T:
        """A read on a loaded collection; loads it again if Milvus has unloaded it (a restart). A read that
        reached a collection Milvus was letting go (the album's alias had just moved to a re-embed's new
        version, whose old collection is released) is made once more, after a moment, through the alias."""
        for attempt in range(2):
            self._call(album, lambda c: self._ensure_loaded(c, cname))
            try:
                return self._call(album, operation)
            except CollectionNotLoaded:
                self._loaded.discard(cname)
                if attempt:
                    raise
            except StorePartDown as exc:
                if attempt or not released_under_it(exc):
                    raise
                log.info("a read of %s reached a collection being released; reading again", album)
                time.sleep(RELEASED_RETRY_S)
        raise AssertionError("unreachable")

    def _album(self, name: str, version: int = 0) -> tuple[str, Stored]:
        """(the collection to address, the album or version): the album's name (an alias, or a legacy
        album's own collection) for its current version, the version's collection for another."""
        cname = collection_name(self.settings.collection_prefix, name)
        if version:
            cname = version_name(cname, version)
            self._caught_up.discard(cname)  # addressed by its own name: maybe written so (`_alias_checked`)
        stored = self._albums.get(cname) or self._describe(cname, name)
        if version and (stored.version != version or stored.info.name != name):
            raise AlbumNotFound(f"album {name!r} has no version {version}")
        self._albums[cname] = stored
        return cname, stored

    def _describe(self, cname: str, album: str) -> Stored:
        described = self._call(album, lambda c: c.describe_collection(cname, **self._kw()))
        stored = parse_album(str(described.get("description", "")))
        if stored is None:
            raise AlbumNotFound(f"album {album!r} not found")
        return stored

    def _forget(self, cname: str) -> None:
        self._albums.pop(cname, None)
        self._loaded.discard(cname)
        self._caught_up.discard(cname)
        self._fresh.discard(cname)

    def _count(self, cname: str, album: str, consistency: str, expr: str = "") -> int:
        # The Count RPC reads at Strong (~200 ms): at Session a count right after a restart reloaded
        # the collection was seen to miss rows still being replayed. get_collection, which the
        # gateway calls on every search, counts at the read consistency.
        rows = self._read(
            cname,
            album,
            lambda c: c.query(
                cname, filter=all_of("ordinal == 0", expr), output_fields=["count(*)"], consistency_level=consistency,
                **self._kw()
            ),
        )
        return int(rows[0]["count(*)"]) if rows else 0

    def _query(self, cname: str, album: str, expr: str, fields: Sequence[str], level: str = "", **page: int) -> Rows:
        """Rows matching `expr`, read at `level` (by default the read consistency)."""
        level = level or self.settings.read_consistency
        found = self._read(
            cname,
            album,
            lambda c: c.query(
                cname, filter=expr, output_fields=[*fields], consistency_level=level, **page, **self._kw()
            ),
        )
        return [*found]

    def _search_rows(
        self, cname: str, album: str, stored: Stored, query: Sequence[float], expr: str, limit: int
    ) -> Rows:
        params = search_params(stored.info.index_type, limit, self.settings)
        level = self.settings.read_consistency
        found = self._read(
            cname,
            album,
            lambda c: c.search(
                cname,
                [[*query]],
                filter=expr,
                limit=limit,
                output_fields=stored.fields(),  # with the ordinal: which row of the image matched (Hit.row)
                search_params=params,
                anns_field="vector",
                consistency_level=level,
                **self._kw(),
            ),
        )
        return [*found[0]] if found else []

    def _stale_rows(self, cname: str, album: str, items: Sequence[Item]) -> list[str]:
        """Filters for the rows an item stored before has beyond its vectors now, to delete once the item is
        written. Within one album version every image has the same rows (the model id names them), so there are
        almost never any: a look at the read consistency (one row at most) comes first, and only rows it sees
        are deleted (a delete costs a Strong read, ~200 ms, which an import would otherwise pay per batch:
        bench/e2e.py). The look comes before the upsert, which does not touch these rows: after it, a Session
        read waits for the upsert to be visible, Milvus's next time tick (every 200 ms), which an add of one
        photo paid (bench/search_during_import.py --timed add)."""
        by_count: dict[int, list[str]] = defaultdict(list)
        for item in items:
            by_count[len(item.vectors)].append(item.id)
        exprs = [all_of(ids_expr(part), f"ordinal >= {n}") for n, ids in by_count.items()
                 for part in chunks(ids, IDS_PER_EXPR)]
        level = self._by_id_level(album, [item.id for item in items])
        return [expr for expr in exprs if self._query(cname, album, expr, ["pk"], limit=1, level=level)]

    def _by_id_level(self, album: str, ids: Sequence[str]) -> str:
        """The consistency to read these images of the album by id at: Bounded where the read consistency is
        Session and this process has written none of them (nor the album as a whole) lately, for a Session read
        waits for this process's last write to the album to become visible (Milvus' next time tick), and a
        Bounded one for nothing, seeing every write older than the window."""
        session = self.settings.read_consistency == "Session"
        return "Bounded" if session and self._recent.settled(album, ids) else self.settings.read_consistency

    def _upsert(self, cname: str, album: str, rows: Sequence[Row]) -> None:
        ids = {str(row["image_id"]) for row in rows}
        self._recent.wrote(album, ids)
        try:
            self._call(album, lambda c: c.upsert(cname, [*rows], **self._kw()))
        finally:
            self._recent.wrote(album, ids)

    def _delete_where(self, cname: str, album: str, *exprs: str) -> None:
        """Deletes the rows matching each expression; returns once reads at Session consistency no longer see
        them.

        pymilvus records no timestamp for a delete by filter, so a Session read right after it may
        still see the rows; one Strong read after them all (it waits for Milvus's next time tick, ~200 ms)
        closes that window. Deletes are rare, so searches keep Session's speed.
        """
        if not exprs:
            return
        for expr in exprs:
            self._call(album, functools.partial(self._delete, cname, expr))
        self._count(cname, album, "Strong")

    def _delete(self, cname: str, expr: str, client: MilvusClient) -> Any:
        return client.delete(cname, filter=expr, **self._kw())


def _each_at_once(fn: Callable[[str], T], names: Sequence[str]) -> list[T]:
    """`fn` of each collection name, in their order, `AT_ONCE` of them at a time. The first error is raised
    without waiting for the names not started yet (they are not: one album not loaded after a restart would
    otherwise have the caller wait for every other album's check too)."""
    if len(names) < 2:
        return [fn(name) for name in names]
    pool = ThreadPoolExecutor(min(AT_ONCE, len(names)), thread_name_prefix="milvus-each")
    try:
        futures = [pool.submit(fn, name) for name in names]
        return [future.result() for future in futures]
    finally:
        pool.shutdown(wait=False, cancel_futures=True)


def _with_count(info: Collection, count: int) -> Collection:
    return replace(info, count=count)


def _drop_connection(alias: str) -> None:
    """Closes and forgets pymilvus's connection of that alias, if it holds one."""
    from pymilvus import connections

    try:
        connections.remove_connection(alias)
    except Exception:  # nothing registered under it, or its channel is already broken
        log.debug("dropping Milvus connection %s failed", alias, exc_info=True)


def milvus_answers(uri: str, timeout_s: float) -> bool:
    """Whether Milvus's proxy at `uri` answers an RPC (GetVersion), on a channel closed afterwards."""

    target = uri.split("://", 1)[-1].rstrip("/")
    with grpc.insecure_channel(target) as channel:
        get_version = channel.unary_unary("/milvus.proto.milvus.MilvusService/GetVersion")
        try:
            get_version(b"", timeout=timeout_s)
        except grpc.RpcError:
            return False
    return True
