"""The search domain: albums of images with vectors and attributes, searched by inner product.

`VectorIndex` is the interface; `ExactIndex` (here) is the in-process reference that computes exact
answers with numpy, and `MilvusIndex` (in `milvus_index`) is the one the service runs. Both apply the
same validation (the helpers below), so the same test bodies can run against both and must agree.

Vectors are L2-normalised on the way in (stored and query vectors alike), so inner product is cosine
similarity; every hit reports `distance = 1 - similarity` under the metric name "cosine" (0 means the
same direction). An item may carry several vectors: the first is the image's global descriptor, the
others (the image rotated, mirrored, its regions) extra rows; a search ranks each image by its
best-matching vector and returns one hit per image.

That suits copy detection (a rotated copy finds its original). For "similar images" a search may be
`primary_only`: it matches each image's first vector only, so the rotated rows of unrelated images
do not compete with upright ones. `search_expanded` adds alpha query expansion over any
`VectorIndex`, written once for both implementations.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Any, Protocol

import numpy as np
from numpy.typing import NDArray

from services.common.errors import AlbumNotFound, AlreadyExists, InvalidArgument
from services.search.filters import AttributeFilter
from services.search.settings import SearchSettings

METRIC = "cosine"
ALBUM_NAME_PATTERN = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")
MAX_ID_BYTES = 256
MAX_NAME_BYTES = 1024
MAX_HASH_BYTES = 256
MAX_VECTORS_PER_ITEM = 64
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
    """One album: what its vectors are and how many images it holds."""

    name: str
    dim: int
    model: str
    index_type: IndexType
    created_at_ms: int
    metric: str = METRIC
    count: int = 0


@dataclass(frozen=True)
class Item:
    """One stored image. `vectors[0]` is the global descriptor; `vectors` is empty when not asked for."""

    id: str
    vectors: tuple[Vector, ...] = ()
    name: str = ""
    content_hash: str = ""
    attributes: dict[str, Any] = field(default_factory=dict)
    created_at_ms: int = 0


@dataclass(frozen=True)
class Hit:
    """One image found by a search, with its best vector's distance (1 - cosine similarity)."""

    id: str
    distance: float
    name: str = ""
    content_hash: str = ""
    attributes: dict[str, Any] = field(default_factory=dict)
    created_at_ms: int = 0


class VectorIndex(Protocol):
    """Albums of images searched by vector. Every method blocks; call it from a thread in async code."""

    def create_collection(self, name: str, dim: int, model: str, index_type: str = "") -> Collection:
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

    def get_collection(self, name: str) -> Collection:
        """One album with its image count; `AlbumNotFound` if missing."""
        ...

    def insert(self, name: str, items: Sequence[Item]) -> list[str]:
        """Inserts items, replacing any stored under the same id; returns their ids."""
        ...

    def search(
        self,
        name: str,
        vector: Sequence[float] | Vector,
        top_k: int,
        filter: AttributeFilter | None = None,
        exclude_ids: Sequence[str] = (),
        primary_only: bool = False,
    ) -> list[Hit]:
        """The `top_k` images nearest to `vector` (one hit each), nearest first; by their first vector
        only when `primary_only`, else by their best one."""
        ...

    def get(self, name: str, ids: Sequence[str], with_vectors: bool = False) -> list[Item]:
        """The stored items among `ids`, in the order asked; missing ids are left out."""
        ...

    def list(self, name: str, limit: int = DEFAULT_LIST_LIMIT, offset: int = 0) -> list[Item]:
        """A page of items (without vectors), ordered by id."""
        ...

    def delete(self, name: str, ids: Sequence[str]) -> int:
        """Deletes images and all their vectors; returns how many of them existed."""
        ...

    def count(self, name: str) -> int:
        """Number of images (not vectors) in the album."""
        ...


# --- validation shared by every implementation ----------------------------------------------------


def check_album_name(name: str) -> str:
    """An album name as the gateway allows it, or `InvalidArgument`."""
    if not ALBUM_NAME_PATTERN.match(name):
        raise InvalidArgument(f"album name {name!r} must match {ALBUM_NAME_PATTERN.pattern}")
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


def prepare_items(items: Sequence[Item], dim: int, now_ms: int) -> list[Item]:
    """Validated items with unit vectors and a creation time; a repeated id keeps its last item."""
    prepared = {item.id: _prepare_item(item, dim, now_ms) for item in items}
    return list(prepared.values())


def _prepare_item(item: Item, dim: int, now_ms: int) -> Item:
    check_id(item.id)
    if not 1 <= len(item.vectors) <= MAX_VECTORS_PER_ITEM:
        raise InvalidArgument(f"item {item.id!r} must have 1-{MAX_VECTORS_PER_ITEM} vectors; got {len(item.vectors)}")
    _check_text(item.id, "name", item.name, MAX_NAME_BYTES)
    _check_text(item.id, "content_hash", item.content_hash, MAX_HASH_BYTES)
    if not isinstance(item.attributes, dict):
        raise InvalidArgument(f"item {item.id!r}: attributes must be an object")
    vectors = tuple(normalise(v, dim) for v in item.vectors)
    return replace(item, vectors=vectors, created_at_ms=item.created_at_ms or now_ms)


def _check_text(item_id: str, what: str, value: str, max_bytes: int) -> None:
    if len(value.encode()) > max_bytes:
        raise InvalidArgument(f"item {item_id!r}: {what} is longer than {max_bytes} bytes")


def distance_of(similarity: float) -> float:
    """Cosine distance from an inner product of unit vectors; never below 0 (rounding)."""
    return max(0.0, 1.0 - float(similarity))


def now_ms() -> int:
    return int(time.time() * 1000)


# --- query expansion, over any index ---------------------------------------------------------------


def expanded_query(
    index: VectorIndex,
    name: str,
    vector: Sequence[float] | Vector,
    k: int,
    filter: AttributeFilter | None = None,
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
    filter: AttributeFilter | None = None,
    exclude_ids: Sequence[str] = (),
    primary_only: bool = False,
    expand_k: int = 0,
) -> list[Hit]:
    """`index.search`, with the query first expanded by its `expand_k` nearest images (0: as given)."""
    if check_expand_k(expand_k):
        vector = expanded_query(index, name, vector, expand_k, filter, exclude_ids)
    return index.search(name, vector, top_k, filter, exclude_ids, primary_only=primary_only)


# --- the exact reference --------------------------------------------------------------------------


@dataclass
class _Album:
    info: Collection
    items: dict[str, Item] = field(default_factory=dict)


class ExactIndex:
    """An in-process index answering exactly with numpy: the reference `MilvusIndex` is tested against."""

    def __init__(self, settings: SearchSettings | None = None) -> None:
        self.settings = settings or SearchSettings()
        self._albums: dict[str, _Album] = {}
        self._lock = threading.Lock()

    def create_collection(self, name: str, dim: int, model: str, index_type: str = "") -> Collection:
        """Creates an empty album; `AlreadyExists` if it exists."""
        check_album_name(name)
        kind = check_index_type(index_type, self.settings.index_type, check_dim(dim), self.settings.ivf_pq_m)
        info = Collection(name=name, dim=dim, model=model, index_type=kind, created_at_ms=now_ms())
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

    def get_collection(self, name: str) -> Collection:
        """One album with its image count."""
        album = self._album(name)
        return replace(album.info, count=len(album.items))

    def insert(self, name: str, items: Sequence[Item]) -> list[str]:
        """Inserts or replaces items by id."""
        album = self._album(name)
        prepared = prepare_items(items, album.info.dim, now_ms())
        with self._lock:
            album.items.update((item.id, item) for item in prepared)
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
        """The `top_k` nearest images by their best vector (or first, `primary_only`), computed exactly."""
        check_top_k(top_k, self.settings.max_top_k)
        album = self._album(name)
        query = normalise(vector, album.info.dim)
        excluded = set(check_ids(exclude_ids))
        scored = [
            (_best_similarity(item, query, primary_only), item)
            for item in list(album.items.values())
            if item.id not in excluded and (filter is None or filter.matches(item.attributes))
        ]
        scored.sort(key=lambda pair: (-pair[0], pair[1].id))
        return [_hit(item, similarity) for similarity, item in scored[:top_k]]

    def get(self, name: str, ids: Sequence[str], with_vectors: bool = False) -> list[Item]:
        """Stored items among `ids`, in the order asked."""
        album = self._album(name)
        found = [album.items[i] for i in check_ids(ids) if i in album.items]
        return found if with_vectors else [replace(item, vectors=()) for item in found]

    def list(self, name: str, limit: int = DEFAULT_LIST_LIMIT, offset: int = 0) -> list[Item]:
        """A page of items ordered like Milvus orders them (by the global row's key)."""
        limit, offset = check_page(limit, offset)
        album = self._album(name)
        ordered = sorted(album.items.values(), key=lambda item: row_key(item.id, 0))
        return [replace(item, vectors=()) for item in ordered[offset : offset + limit]]

    def delete(self, name: str, ids: Sequence[str]) -> int:
        """Deletes images; returns how many existed."""
        album = self._album(name)
        with self._lock:
            return sum(album.items.pop(i, None) is not None for i in check_ids(ids))

    def count(self, name: str) -> int:
        """Number of images in the album."""
        return len(self._album(name).items)

    def _album(self, name: str) -> _Album:
        check_album_name(name)
        album = self._albums.get(name)
        if album is None:
            raise AlbumNotFound(f"album {name!r} not found")
        return album


def _best_similarity(item: Item, query: Vector, primary_only: bool) -> float:
    vectors = item.vectors[:1] if primary_only else item.vectors
    return float(np.max(np.stack(vectors) @ query))


def row_key(image_id: str, ordinal: int) -> str:
    """The primary key of one vector row: the image id and the vector's position in the item."""
    return f"{image_id}#{ordinal}"


def _hit(item: Item, similarity: float) -> Hit:
    return Hit(
        id=item.id,
        distance=distance_of(similarity),
        name=item.name,
        content_hash=item.content_hash,
        attributes=item.attributes,
        created_at_ms=item.created_at_ms,
    )
