"""The search domain: albums of images with vectors and attributes, searched by inner product.

`VectorIndex` is the interface; `ExactIndex` (here) is the in-process reference that computes exact
answers with numpy, and `MilvusIndex` (in `milvus_index`) is the one the service runs. Both apply the
same validation and ordering (the helpers below) and the same filter semantics (`filters` evaluates
what `milvus_filter` compiles), so the same test bodies run against both and must agree.

Vectors are L2-normalised on the way in (stored and query vectors alike), so inner product is cosine
similarity; every hit reports `distance = 1 - similarity` under the metric name "cosine" (0 means the
same direction). An item may carry several vectors: the first is the image's global descriptor, the
others (the image rotated, mirrored, its regions) extra rows; a search ranks each image by its
best-matching vector and returns one hit per image.

That suits copy detection (a rotated copy finds its original). For "similar images" a search may be
`primary_only`: it matches each image's first vector only, so the rotated rows of unrelated images
do not compete with upright ones. `search_expanded` adds alpha query expansion over any
`VectorIndex`, written once for both implementations.

An album may declare typed columns (`AlbumSchema`); an item's `attributes` then hold a value (or
None) for each, checked on every write, beside any undeclared attributes.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Any, Protocol

import numpy as np
from numpy.typing import NDArray

from services.common.errors import AlbumNotFound, AlreadyExists, InvalidArgument, InvalidAttributes
from services.common.filtering import Expr, bind
from services.common.schema import (
    BUILTIN_COLUMNS,
    NO_COLUMNS,
    AlbumSchema,
    ColumnType,
    check_attribute_key,
    coerce,
)
from services.search.filters import Row, matches
from services.search.settings import SearchSettings

METRIC = "cosine"
# An album's name; "album.part" names a companion collection of the album: other vectors of the same
# images (e.g. "shoes.faces": one row per face), which the gateway never shows as an album.
ALBUM_NAME_PATTERN = re.compile(r"[a-z0-9][a-z0-9_-]{0,62}(\.[a-z]{1,16})?")
MAX_ID_BYTES = 256
MAX_NAME_BYTES = 1024
MAX_HASH_BYTES = 256
MAX_VECTORS_PER_ITEM = 64
# A companion collection's item may hold many more rows: an image's keypoint descriptors are one row
# each ("<album>.keypoints": up to the extractor's index keypoints, 1,000 by default).
MAX_COMPANION_VECTORS = 2048
MAX_DIM = 32768
MAX_LIST_LIMIT = 1000
DEFAULT_LIST_LIMIT = 100
# Query expansion: at most this many neighbours, each weighted by its similarity to the power
# EXPAND_ALPHA (alpha 3 was the best of bench/research's sweep: near neighbours count, far ones barely).
MAX_EXPAND_K = 50
EXPAND_ALPHA = 3.0
_CONTROL_CHARS = re.compile(r"[\x00-\x1f\x7f]")

Vector = NDArray[np.float32]


class IndexType(StrEnum):
    """How a collection's vectors are indexed."""

    HNSW = "HNSW"
    IVF_FLAT = "IVF_FLAT"
    IVF_PQ = "IVF_PQ"


@dataclass(frozen=True)
class Collection:
    """One album: what its vectors are, its declared columns, and how many images it holds."""

    name: str
    dim: int
    model: str
    index_type: IndexType
    created_at_ms: int
    metric: str = METRIC
    count: int = 0
    schema: AlbumSchema = NO_COLUMNS


@dataclass(frozen=True)
class Item:
    """One stored image. `vectors[0]` is the global descriptor; `vectors` is empty when not asked for."""

    id: str
    vectors: tuple[Vector, ...] = ()
    name: str = ""
    content_hash: str = ""
    attributes: dict[str, Any] = field(default_factory=dict)
    created_at_ms: int = 0

    def row(self) -> Row:
        """What a filter reads of the item."""
        return Row(self.id, self.name, self.content_hash, self.created_at_ms, self.attributes)


@dataclass(frozen=True)
class Hit:
    """One image found by a search, with its best vector's distance (1 - cosine similarity)."""

    id: str
    distance: float
    name: str = ""
    content_hash: str = ""
    attributes: dict[str, Any] = field(default_factory=dict)
    created_at_ms: int = 0
    # The position of that vector in the item (0: its first).
    row: int = 0


@dataclass(frozen=True)
class Selection:
    """Which items an update applies to: exactly one of some ids, a filter, or all of them."""

    ids: tuple[str, ...] = ()
    filter: Expr | None = None
    all: bool = False

    def check(self) -> Selection:
        given = sum((bool(self.ids), self.filter is not None, self.all))
        if given != 1:
            raise InvalidArgument("say which images: ids, a filter, or all (exactly one)")
        return replace(self, ids=tuple(check_ids(self.ids)))


class VectorIndex(Protocol):
    """Albums of images searched by vector. Every method blocks; call it from a thread in async code.

    Filters are trees of the filter language, checked here against the album's columns."""

    def create_collection(self, name: str, dim: int, model: str, index_type: str = "",
                          schema: AlbumSchema = NO_COLUMNS) -> Collection:
        """Creates an empty album; `AlreadyExists` if it exists. "" index type means the default."""
        ...

    def drop_collection(self, name: str) -> bool:
        """Drops an album and all its items; False if there was none."""
        ...

    def list_collections(self) -> list[Collection]:
        """Every album, by name."""
        ...

    def ping(self) -> None:
        """Returns when the store answers; raises `StoreUnavailable` when it does not."""
        ...

    def get_collection(self, name: str, with_count: bool = True) -> Collection:
        """One album with its image count (0 unless `with_count`: counting costs a query); `AlbumNotFound`
        if missing."""
        ...

    def insert(self, name: str, items: Sequence[Item], version: int = 0) -> list[str]:
        """Inserts items, replacing any stored under the same id; returns their ids. A declared attribute
        of the wrong type fails the call (`InvalidAttributes`) before anything is written. `version`: into
        a version in the making (see `begin_version`) rather than the album as it is."""
        ...

    def search(
        self,
        name: str,
        vector: Sequence[float] | Vector,
        top_k: int,
        filter: Expr | None = None,
        exclude_ids: Sequence[str] = (),
        primary_only: bool = False,
    ) -> list[Hit]:
        """The `top_k` images nearest to `vector` (one hit each), nearest first; by their first vector
        only when `primary_only`, else by their best one."""
        ...

    def search_many(self, name: str, vectors: Sequence[Sequence[float] | Vector], top_k: int,
                    primary_only: bool = False) -> list[list[Hit]]:
        """For each vector, the `top_k` images nearest to it (one hit each, id, distance and row only), nearest
        first: one call for the many descriptors of one query (its keypoints against a keypoint companion), or
        for the many images of one add (`primary_only`: by their first rows alone, as `search`'s)."""
        ...

    def get(self, name: str, ids: Sequence[str], with_vectors: bool = False, version: int = 0) -> list[Item]:
        """The stored items among `ids`, in the order asked; missing ids are left out."""
        ...

    def query(self, name: str, filter: Expr | None = None, limit: int = DEFAULT_LIST_LIMIT, offset: int = 0,
              after_id: str = "", order_by: str = "", descending: bool = False, version: int = 0,
              nulls_first: bool | None = None) -> list[Item]:
        """A page of the items matching the filter (without vectors): ordered by id, from after
        `after_id`, or by a column (`order_by`; items without a value where `nulls_first` says, else last
        ascending and first descending; ties by id)."""
        ...

    def count(self, name: str, filter: Expr | None = None, version: int = 0) -> int:
        """Number of images (not vectors) in the album, or of those matching the filter."""
        ...

    def begin_version(self, name: str, dim: int, model: str) -> int:
        """A new, empty version of the album (same columns; this model and dimension) to fill beside it
        while the album answers as it is; any other version in the making is abandoned. Its number."""
        ...

    def commit_version(self, name: str, version: int) -> Collection:
        """Makes the version the album's at once (the old one is dropped); returns the album."""
        ...

    def abort_version(self, name: str, version: int) -> bool:
        """Drops a version in the making; False if there was none."""
        ...

    def count_groups(self, name: str, columns: Sequence[str], filter: Expr | None = None) -> list[Group]:
        """How many matching images have each combination of the columns' values (most first)."""
        ...

    def update(self, name: str, selection: Selection, changes: Mapping[str, Any]) -> int:
        """Sets attributes (and names) of the selected images, vectors untouched; returns how many.
        Checked in full before anything is written; a store failure midway puts the written back."""
        ...

    def delete(self, name: str, ids: Sequence[str]) -> int:
        """Deletes images and all their vectors; returns how many of them existed."""
        ...


# --- validation shared by every implementation ----------------------------------------------------


def check_album_name(name: str) -> str:
    """An album name as the gateway allows it, or `InvalidArgument`."""
    if not isinstance(name, str) or not ALBUM_NAME_PATTERN.fullmatch(name):
        raise InvalidArgument(f"album name {str(name)[:80]!r} must match {ALBUM_NAME_PATTERN.pattern}")
    return name


def check_index_type(index_type: str, default: str, dim: int, pq_m: int) -> IndexType:
    """The index type asked for ("" for the default), valid for `dim`."""
    try:
        chosen = IndexType((index_type or default).upper())
    except ValueError:
        allowed = ", ".join(t.value for t in IndexType)
        raise InvalidArgument(f"index type {index_type!r} is not one of {allowed}") from None
    if chosen is IndexType.IVF_PQ and dim % pq_m:
        raise InvalidArgument(f"IVF_PQ needs a dimension divisible by {pq_m}; got {dim}")
    return chosen


def check_dim(dim: int) -> int:
    if not 2 <= dim <= MAX_DIM:
        raise InvalidArgument(f"dimension must be between 2 and {MAX_DIM}; got {dim}")
    return dim


def check_top_k(top_k: int, max_top_k: int) -> int:
    if not 1 <= top_k <= max_top_k:
        raise InvalidArgument(f"top_k must be between 1 and {max_top_k}; got {top_k}")
    return top_k


def check_expand_k(expand_k: int) -> int:
    if not 0 <= expand_k <= MAX_EXPAND_K:
        raise InvalidArgument(f"expand_k must be between 0 and {MAX_EXPAND_K}; got {expand_k}")
    return expand_k


def check_page(limit: int, offset: int) -> tuple[int, int]:
    """A list page; limit 0 means the default."""
    limit = limit or DEFAULT_LIST_LIMIT
    if not 1 <= limit <= MAX_LIST_LIMIT:
        raise InvalidArgument(f"limit must be between 1 and {MAX_LIST_LIMIT}; got {limit}")
    if offset < 0:
        raise InvalidArgument(f"offset must not be negative; got {offset}")
    return limit, offset


def check_id(image_id: str) -> str:
    """An image id: non-empty, at most 256 UTF-8 bytes, no control characters."""
    if not image_id or len(image_id.encode()) > MAX_ID_BYTES or _CONTROL_CHARS.search(image_id):
        raise InvalidArgument(f"image id {image_id!r} must be 1-{MAX_ID_BYTES} bytes without control characters")
    return image_id


def check_ids(ids: Iterable[str]) -> list[str]:
    """Valid ids, duplicates removed, first occurrence kept."""
    return list(dict.fromkeys(check_id(i) for i in ids))


def normalise(vector: Sequence[float] | Vector, dim: int) -> Vector:
    """The vector scaled to unit length, or `InvalidArgument` if it has the wrong size or no direction."""
    array = np.asarray(vector, dtype=np.float32).reshape(-1)
    if array.shape[0] != dim:
        raise InvalidArgument(f"vector has {array.shape[0]} values; the album's dimension is {dim}")
    if not np.all(np.isfinite(array)):
        raise InvalidArgument("vector has a NaN or infinite value")
    norm = float(np.linalg.norm(array))
    if norm == 0.0 or not np.isfinite(norm):
        raise InvalidArgument("vector has zero length")
    return (array / norm).astype(np.float32)


def normalise_all(vectors: Sequence[Sequence[float] | Vector], dim: int) -> tuple[Vector, ...]:
    """Each vector scaled to unit length (as `normalise`), in one pass over all of them: an item of a
    companion collection holds hundreds (a keypoint index's image: ~400), where one numpy pass per vector
    cost ~30 us each. A wrong one raises `normalise`'s error."""
    try:
        matrix = np.asarray(vectors, dtype=np.float32)
    except ValueError:  # vectors of different lengths: say which
        return tuple(normalise(v, dim) for v in vectors)
    if matrix.ndim != 2 or matrix.shape[1] != dim:
        return tuple(normalise(v, dim) for v in vectors)
    norms = np.linalg.norm(matrix, axis=1)
    if not (np.all(np.isfinite(matrix)) and np.all(norms > 0) and np.all(np.isfinite(norms))):
        return tuple(normalise(v, dim) for v in vectors)
    return tuple((matrix / norms[:, None]).astype(np.float32))


def prepare_items(items: Sequence[Item], dim: int, now_ms: int, schema: AlbumSchema = NO_COLUMNS,
                  max_vectors: int = MAX_VECTORS_PER_ITEM) -> list[Item]:
    """Validated items with unit vectors, checked attributes and a creation time; a repeated id keeps its
    last item."""
    prepared = {item.id: _prepare_item(item, dim, now_ms, schema, max_vectors) for item in items}
    return list(prepared.values())


def vector_limit(name: str) -> int:
    """The most vectors an item of the collection may hold (a companion's: many more)."""
    return MAX_COMPANION_VECTORS if "." in name else MAX_VECTORS_PER_ITEM


def _prepare_item(item: Item, dim: int, now_ms: int, schema: AlbumSchema, max_vectors: int) -> Item:
    check_id(item.id)
    if not 1 <= len(item.vectors) <= max_vectors:
        raise InvalidArgument(f"item {item.id!r} must have 1-{max_vectors} vectors; got {len(item.vectors)}")
    _check_text(item.id, "name", item.name, MAX_NAME_BYTES)
    _check_text(item.id, "content_hash", item.content_hash, MAX_HASH_BYTES)
    if not isinstance(item.attributes, Mapping):
        raise InvalidAttributes(f"item {item.id!r}: attributes must be an object")
    attributes = schema.check(item.attributes, what=f"image {item.name or item.id!r}")
    vectors = normalise_all(item.vectors, dim)
    return replace(item, vectors=vectors, attributes=attributes, created_at_ms=item.created_at_ms or now_ms)


def _check_text(item_id: str, what: str, value: str, max_bytes: int) -> None:
    if len(value.encode()) > max_bytes:
        raise InvalidArgument(f"item {item_id!r}: {what} is longer than {max_bytes} bytes")
    if _CONTROL_CHARS.search(value):
        raise InvalidArgument(f"item {item_id!r}: {what} contains a control character")


# --- updates, ordering and grouping, the same for every implementation ---------------------------------

# Built-in columns an update may set (the others are the image's identity).
UPDATABLE_BUILTINS = frozenset({"name"})


def check_changes(changes: Mapping[str, Any], schema: AlbumSchema) -> dict[str, Any]:
    """An update's changes, checked: declared columns typed, `name` a string, undeclared attributes any
    JSON (None removes one); the image's id, hash and creation time cannot change."""
    if not changes:
        raise InvalidArgument("an update needs at least one attribute to set")
    checked: dict[str, Any] = {}
    for key, value in changes.items():
        column = schema.get(key)
        if key in UPDATABLE_BUILTINS:
            if not isinstance(value, str) or not value:
                raise InvalidAttributes(f"{key} must be a non-empty string, not {value!r}")
            _check_text("", key, value, MAX_NAME_BYTES)
            checked[key] = value
        elif key in BUILTIN_COLUMNS:
            raise InvalidAttributes(f"{key} is the image's own and cannot be changed")
        elif column is not None:
            checked[key] = coerce(column.type, value, key)
        else:
            checked[check_attribute_key(key)] = value
    return checked


def apply_changes(item: Item, changes: Mapping[str, Any], schema: AlbumSchema) -> Item:
    """The item with checked changes made (an undeclared attribute set to None is removed)."""
    attributes = dict(item.attributes)
    name = item.name
    for key, value in changes.items():
        if key in UPDATABLE_BUILTINS:
            name = value
        elif value is None and schema.get(key) is None:
            attributes.pop(key, None)
        else:
            attributes[key] = value
    return replace(item, name=name, attributes=attributes)


def order_column(order_by: str, schema: AlbumSchema) -> ColumnType:
    """The type of a column results can be ordered or grouped by (built-in or declared, not a list)."""
    kind = BUILTIN_COLUMNS.get(order_by) or (column.type if (column := schema.get(order_by)) else None)
    if kind is None:
        names = ", ".join([*BUILTIN_COLUMNS, *schema.names])
        raise InvalidArgument(f"cannot order or group by {order_by[:80]!r}: not a column of the album ({names})")
    if kind is ColumnType.STRING_LIST:
        raise InvalidArgument(f"cannot order or group by {order_by!r}: it is a list")
    return kind


def column_value(item: Item, column: str) -> Any:
    """A built-in or declared column's value of an item (None when null)."""
    if column == "created_at":
        return item.created_at_ms
    if column in BUILTIN_COLUMNS:
        return item.id if column == "id" else getattr(item, column)
    return item.attributes.get(column)


def ordered_ids(pairs: Iterable[tuple[Any, str]], descending: bool, nulls_first: bool | None = None) -> list[str]:
    """Ids of (value, id) pairs in SQL order: nulls where `nulls_first` says, else last ascending and first
    descending; ties by id."""
    by_id = sorted(pairs, key=lambda pair: pair[1])
    nulls = [i for v, i in by_id if v is None]
    values = sorted(((v, i) for v, i in by_id if v is not None), key=lambda pair: pair[0], reverse=descending)
    ordered = [i for _, i in values]
    return nulls + ordered if (descending if nulls_first is None else nulls_first) else ordered + nulls


@dataclass(frozen=True)
class Group:
    """One combination of column values and how many images have it."""

    key: tuple[Any, ...]
    count: int


def group_counts(keys: Iterable[tuple[Any, ...]]) -> list[Group]:
    """Counts of each key, most first, then by key (nulls last)."""
    counts: dict[tuple[Any, ...], int] = {}
    for key in keys:
        counts[key] = counts.get(key, 0) + 1
    return sorted((Group(k, n) for k, n in counts.items()),
                  key=lambda g: (-g.count, [(v is None, v if v is not None else 0) for v in g.key]))


def distance_of(similarity: float) -> float:
    """Cosine distance from an inner product of unit vectors; never below 0 (rounding)."""
    return max(0.0, 1.0 - float(similarity))


def now_ms() -> int:
    return int(time.time() * 1000)


# --- query expansion and distance limit, over any index ------------------------------------------------


def expanded_query(
    index: VectorIndex,
    name: str,
    vector: Sequence[float] | Vector,
    k: int,
    filter: Expr | None = None,
    exclude_ids: Sequence[str] = (),
    alpha: float = EXPAND_ALPHA,
) -> Vector:
    """Alpha query expansion: q' = L2(q + sum_i sim_i**alpha * v_i) over the query's `k` nearest images.

    Neighbours are found and weighted by their first (upright, global) vector only, as the feature
    study did (bench/research: `alpha_qe`); `sim_i` is clipped at 0, so an opposed image adds nothing.
    The filter and excluded ids apply, so the query image searched by its id does not expand itself.
    """
    neighbours = index.search(name, vector, k, filter, exclude_ids, primary_only=True)
    query = np.asarray(vector, dtype=np.float32).reshape(-1)
    query = normalise(query, query.shape[0])  # the search above checked its size against the album
    stored = {item.id: item for item in index.get(name, [hit.id for hit in neighbours], with_vectors=True)}
    for hit in neighbours:
        item = stored.get(hit.id)  # None if deleted since the search
        if item is not None and item.vectors:
            query = query + max(0.0, 1.0 - hit.distance) ** alpha * item.vectors[0]
    return normalise(query, query.shape[0])


def search_expanded(
    index: VectorIndex,
    name: str,
    vector: Sequence[float] | Vector,
    top_k: int,
    filter: Expr | None = None,
    exclude_ids: Sequence[str] = (),
    primary_only: bool = False,
    expand_k: int = 0,
    max_distance: float | None = None,
) -> list[Hit]:
    """`index.search`, with the query first expanded by its `expand_k` nearest images (0: as given), and
    only hits at most `max_distance` away (None: any)."""
    if max_distance is not None and not (np.isfinite(max_distance) and max_distance >= 0):
        raise InvalidArgument(f"max_distance must be a number at least 0, not {max_distance}")
    if check_expand_k(expand_k):
        vector = expanded_query(index, name, vector, expand_k, filter, exclude_ids)
    hits = index.search(name, vector, top_k, filter, exclude_ids, primary_only=primary_only)
    return hits if max_distance is None else [h for h in hits if h.distance <= max_distance]


# --- the exact reference --------------------------------------------------------------------------


@dataclass
class _Album:
    info: Collection
    items: dict[str, Item] = field(default_factory=dict)
    version: int = 1
    # Versions in the making, by number.
    building: dict[int, _Album] = field(default_factory=dict)


class ExactIndex:
    """An in-process index answering exactly with numpy: the reference `MilvusIndex` is tested against."""

    def __init__(self, settings: SearchSettings | None = None) -> None:
        self.settings = settings or SearchSettings()
        self._albums: dict[str, _Album] = {}
        self._lock = threading.Lock()

    def create_collection(self, name: str, dim: int, model: str, index_type: str = "",
                          schema: AlbumSchema = NO_COLUMNS) -> Collection:
        """Creates an empty album; `AlreadyExists` if it exists."""
        check_album_name(name)
        kind = check_index_type(index_type, self.settings.index_type, check_dim(dim), self.settings.ivf_pq_m)
        info = Collection(name=name, dim=dim, model=model, index_type=kind, created_at_ms=now_ms(),
                          schema=AlbumSchema.of(schema.columns))
        with self._lock:
            if name in self._albums:
                raise AlreadyExists(f"album {name!r} already exists")
            self._albums[name] = _Album(info)
        return info

    def drop_collection(self, name: str) -> bool:
        """Drops an album; False if there was none."""
        check_album_name(name)
        with self._lock:
            return self._albums.pop(name, None) is not None

    def ping(self) -> None:
        """In process: always there."""

    def list_collections(self) -> list[Collection]:
        """Every album with its count, by name."""
        with self._lock:
            return [replace(a.info, count=len(a.items)) for _, a in sorted(self._albums.items())]

    def get_collection(self, name: str, with_count: bool = True) -> Collection:
        """One album with its image count (0 unless `with_count`)."""
        album = self._album(name)
        return replace(album.info, count=len(album.items) if with_count else 0)

    def insert(self, name: str, items: Sequence[Item], version: int = 0) -> list[str]:
        """Inserts or replaces items by id."""
        album = self._album(name, version)
        prepared = prepare_items(items, album.info.dim, now_ms(), album.info.schema, vector_limit(name))
        with self._lock:
            album.items.update((item.id, item) for item in prepared)
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
        """The `top_k` nearest images by their best vector (or first, `primary_only`), computed exactly."""
        check_top_k(top_k, self.settings.max_top_k)
        album = self._album(name)
        query = normalise(vector, album.info.dim)
        excluded = set(check_ids(exclude_ids))
        scored = [(*_best_row(item, query, primary_only), item)
                  for item in self._matching(album, filter) if item.id not in excluded]
        scored.sort(key=lambda entry: (-entry[0], entry[2].id))
        return [_hit(item, similarity, row) for similarity, row, item in scored[:top_k]]

    def search_many(self, name: str, vectors: Sequence[Sequence[float] | Vector], top_k: int,
                    primary_only: bool = False) -> list[list[Hit]]:
        """Each vector's `top_k` nearest images, computed exactly (ids, distances and rows only)."""
        return [[Hit(id=h.id, distance=h.distance, row=h.row)
                 for h in self.search(name, v, top_k, primary_only=primary_only)] for v in vectors]

    def get(self, name: str, ids: Sequence[str], with_vectors: bool = False, version: int = 0) -> list[Item]:
        """Stored items among `ids`, in the order asked."""
        album = self._album(name, version)
        found = [album.items[i] for i in check_ids(ids) if i in album.items]
        return found if with_vectors else [replace(item, vectors=()) for item in found]

    def query(self, name: str, filter: Expr | None = None, limit: int = DEFAULT_LIST_LIMIT, offset: int = 0,
              after_id: str = "", order_by: str = "", descending: bool = False, version: int = 0,
              nulls_first: bool | None = None) -> list[Item]:
        """A page of matching items, ordered like Milvus orders them (by id) or by a column."""
        limit, offset = check_page(limit, offset)
        album = self._album(name, version)
        found = {item.id: item for item in self._matching(album, filter) if item.id > after_id}
        if order_by:
            order_column(order_by, album.info.schema)
            ids = ordered_ids(((column_value(i, order_by), i.id) for i in found.values()), descending, nulls_first)
        else:
            ids = sorted(found)
        return [replace(found[i], vectors=()) for i in ids[offset:offset + limit]]

    def count(self, name: str, filter: Expr | None = None, version: int = 0) -> int:
        """Number of images in the album (matching the filter)."""
        album = self._album(name, version)
        return len(album.items) if filter is None else len(self._matching(album, filter))

    def begin_version(self, name: str, dim: int, model: str) -> int:
        album = self._album(name)
        number = 1 + max([album.version, *album.building])
        with self._lock:
            album.building = {number: _Album(replace(album.info, dim=check_dim(dim), model=model), version=number)}
        return number

    def commit_version(self, name: str, version: int) -> Collection:
        album = self._album(name)
        if version != album.version:
            built = self._album(name, version)
            with self._lock:
                built.building = {}
                self._albums[name] = built
        return self.get_collection(name)

    def abort_version(self, name: str, version: int) -> bool:
        album = self._album(name)
        with self._lock:
            return album.building.pop(version, None) is not None

    def count_groups(self, name: str, columns: Sequence[str], filter: Expr | None = None) -> list[Group]:
        album = self._album(name)
        for column in columns:
            order_column(column, album.info.schema)
        return group_counts(tuple(column_value(i, c) for c in columns) for i in self._matching(album, filter))

    def update(self, name: str, selection: Selection, changes: Mapping[str, Any]) -> int:
        album = self._album(name)
        selection = selection.check()
        checked = check_changes(changes, album.info.schema)
        if selection.ids:
            chosen = [album.items[i] for i in selection.ids if i in album.items]
        else:
            chosen = self._matching(album, selection.filter)
        with self._lock:
            for item in chosen:
                album.items[item.id] = apply_changes(item, checked, album.info.schema)
        return len(chosen)

    def delete(self, name: str, ids: Sequence[str]) -> int:
        """Deletes images; returns how many existed."""
        album = self._album(name)
        with self._lock:
            return sum(album.items.pop(i, None) is not None for i in check_ids(ids))

    def _album(self, name: str, version: int = 0) -> _Album:
        check_album_name(name)
        album = self._albums.get(name)
        if album is None:
            raise AlbumNotFound(f"album {name!r} not found")
        if version and version != album.version:
            if version not in album.building:
                raise AlbumNotFound(f"album {name!r} has no version {version}")
            return album.building[version]
        return album

    @staticmethod
    def _matching(album: _Album, filter: Expr | None) -> list[Item]:
        bound = bind(filter, album.info.schema) if filter is not None else None
        return [item for item in list(album.items.values()) if matches(bound, item.row())]


def _best_row(item: Item, query: Vector, primary_only: bool) -> tuple[float, int]:
    """The item's similarity to the query by its nearest vector, and that vector's position."""
    vectors = item.vectors[:1] if primary_only else item.vectors
    similarities = np.stack(vectors) @ query
    row = int(np.argmax(similarities))
    return float(similarities[row]), row


def row_key(image_id: str, ordinal: int) -> str:
    """The primary key of one vector row: the image id and the vector's position in the item."""
    return f"{image_id}#{ordinal}"


# Characters that sort at or below the "#" of a row's key (a space, "!", '"', "#"; control characters are not ids).
_KEY_ORDER_BREAKERS = re.compile(r'[ !"#]')


def key_order_is_id_order(ids: Iterable[str]) -> bool:
    """Whether the first images of an album by row key (`row_key`, one row each) are its first images by id.

    The two orders differ only where one id extends another with a character at or below "#" ("a!" comes before
    "a" by key, after it by id). An image read after these by key that comes before one of them by id is then a
    prefix of that one followed by such a character: where none of these ids holds one, none comes before them."""
    return not any(_KEY_ORDER_BREAKERS.search(i) for i in ids)


def _hit(item: Item, similarity: float, row: int = 0) -> Hit:
    return Hit(
        id=item.id,
        distance=distance_of(similarity),
        name=item.name,
        content_hash=item.content_hash,
        attributes=item.attributes,
        created_at_ms=item.created_at_ms,
        row=row,
    )
