"""How an album lives in a Milvus collection: its names, its metadata, its schema and index parameters,
and its rows written from and read back as images (`MilvusIndex` does the calls).

Layout of an album's collection (one row per vector of an image):

    pk             VARCHAR   "<image_id>#<k>", k = position of the vector in the item (0 = global)
    image_id       VARCHAR   the image's id; get/delete/exclude work on it, so on all its rows
    ordinal        INT64     k again: `ordinal == 0` selects one row per image (count, list, primary_only)
    name, content_hash VARCHAR; attributes JSON; created_at_ms INT64   copied onto every row
    c_<column>     one scalar field per declared column (services.common.schema), with a scalar index
                   where Milvus 2.3 has one (STL_SORT on numbers and timestamps, Trie on strings)
    nulls          ARRAY of VARCHAR: the declared columns the image has no value for (filters test it)
    null_names     VARCHAR: the same names joined by "," (rows are read back with it: Milvus 2.3 returns
                   an ARRAY field far slower than a VARCHAR, and the array made most of what a filter added
                   to a post-filtered search: bench/README.md, "Scale", layout 3)
    vector         FLOAT_VECTOR(dim), L2-normalised, indexed for inner product

`attributes` holds the undeclared attributes; a null declared value is a placeholder in its field
and its column's name in `nulls` (see `milvus_filter`, which compiles filters for this layout).
Albums made before columns existed (layout 1) have neither `c_` fields nor `nulls`; those made before
`null_names` (layout 2) are read back with `nulls`.

The collection's description holds the album's metadata as JSON (real name, model, dim, metric,
index type, creation time, columns, layout version): it is the only record of which albums exist.

Collection names are `prefix + encoded album name`, where the encoding maps "_" to "__" and "-" to
"_h" (Milvus allows only letters, digits and "_"). No two album names encode alike, since "_" in the
encoding always starts a two-character escape.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from pymilvus import DataType, MilvusClient

from services.common.errors import ImageSearchError
from services.common.filtering import Expr
from services.common.schema import (
    MAX_COLUMNS,
    MAX_LIST_ITEM_BYTES,
    MAX_LIST_ITEMS,
    MAX_STRING_BYTES,
    AlbumSchema,
    Column,
    ColumnType,
    column_type,
    from_timestamp_us,
    timestamp_us,
)
from services.search.filters import Row as FilterRow
from services.search.filters import matches
from services.search.index import (
    MAX_HASH_BYTES,
    MAX_ID_BYTES,
    MAX_NAME_BYTES,
    METRIC,
    Collection,
    Hit,
    IndexType,
    Item,
    check_album_name,
    distance_of,
    row_key,
)
from services.search.milvus_filter import NULLS_FIELD, PLACEHOLDERS, field_of
from services.search.settings import SearchSettings

# Layout 1: no declared columns; layout 2: `c_` fields and `nulls`; layout 3: and `null_names` (see the module
# doc). New albums, and new versions of an album (a re-embed), get the latest.
SCHEMA_VERSION = 3
NULL_NAMES_FIELD = "null_names"
_HIT_FIELDS = ["image_id", "name", "content_hash", "attributes", "created_at_ms"]
_ITEM_FIELDS = [*_HIT_FIELDS, "ordinal"]
# Milvus field types of declared columns, and the scalar index each gets (none where 2.3 has none).
_FIELD_TYPES = {
    ColumnType.STRING: DataType.VARCHAR,
    ColumnType.INT: DataType.INT64,
    ColumnType.FLOAT: DataType.DOUBLE,
    ColumnType.BOOL: DataType.BOOL,
    ColumnType.TIMESTAMP: DataType.INT64,
    ColumnType.STRING_LIST: DataType.ARRAY,
}
SCALAR_INDEXES = {
    ColumnType.STRING: "Trie",
    ColumnType.INT: "STL_SORT",
    ColumnType.FLOAT: "STL_SORT",
    ColumnType.TIMESTAMP: "STL_SORT",
}


@dataclass(frozen=True)
class Stored:
    """An album (one version of it) as this index keeps it: its metadata, its collection's layout, and
    the version's number (0: an album made before versions, whose collection has the album's name)."""

    info: Collection
    layout: int
    version: int = 0

    def fields(self) -> list[str]:
        """The scalar fields an item is read back from."""
        typed = [field_of(c.name) for c in self.info.schema.columns]
        return [*_ITEM_FIELDS, *typed, *self.null_fields] if self.layout >= 2 else _ITEM_FIELDS

    @property
    def null_fields(self) -> list[str]:
        """The field a row's null columns are read from (none before declared columns)."""
        return [NULL_NAMES_FIELD] if self.layout >= 3 else [NULLS_FIELD] if self.layout >= 2 else []

    @staticmethod
    def new(info: Collection, version: int) -> Stored:
        """A version made now: in the latest layout (`SCHEMA_VERSION`, read when called)."""
        return Stored(info, SCHEMA_VERSION, version)


# --- names and metadata ----------------------------------------------------------------------------


def collection_name(prefix: str, album: str) -> str:
    """The Milvus collection of an album: "_" -> "__", "-" -> "_h", "." (a companion) -> "_c" after the prefix."""
    return prefix + check_album_name(album).replace("_", "__").replace("-", "_h").replace(".", "_c")


def version_name(cname: str, version: int) -> str:
    """The collection of one version of an album ("_v" never occurs in an encoded name)."""
    return f"{cname}_v{version}"


def describe_album(info: Collection, version: int = 0, layout: int = 0) -> str:
    """The collection description: the album's metadata as JSON (the latest layout unless told)."""
    return json.dumps(
        {
            "imagesearch_schema": layout or SCHEMA_VERSION,
            "version": version,
            "album": info.name,
            "model": info.model,
            "dim": info.dim,
            "metric": info.metric,
            "index_type": info.index_type.value,
            "created_at_ms": info.created_at_ms,
            "columns": [[c.name, c.type.value] for c in info.schema.columns],
        },
        sort_keys=True,
    )


def parse_album(description: str) -> Stored | None:
    """The album metadata in a collection description; None if the collection is not one of ours."""
    try:
        meta = json.loads(description)
        if not isinstance(meta, dict) or meta.get("imagesearch_schema") not in range(1, SCHEMA_VERSION + 1):
            return None
        columns = [Column(str(name), column_type(kind)) for name, kind in meta.get("columns", [])]
        info = Collection(
            name=str(meta["album"]),
            dim=int(meta["dim"]),
            model=str(meta["model"]),
            index_type=IndexType(meta["index_type"]),
            created_at_ms=int(meta["created_at_ms"]),
            metric=str(meta.get("metric", METRIC)),
            schema=AlbumSchema(tuple(columns)),
        )
        return Stored(info, int(meta["imagesearch_schema"]), int(meta.get("version", 0)))
    except (ValueError, KeyError, TypeError, ImageSearchError):
        return None


def build_schema(info: Collection, version: int = 0, layout: int = 0) -> Any:
    """The collection schema of an album (see the module doc), in the latest layout unless told."""
    layout = layout or SCHEMA_VERSION
    schema = MilvusClient.create_schema(auto_id=False, enable_dynamic_field=False,
                                        description=describe_album(info, version, layout))
    schema.add_field("pk", DataType.VARCHAR, is_primary=True, max_length=MAX_ID_BYTES + 8)
    schema.add_field("image_id", DataType.VARCHAR, max_length=MAX_ID_BYTES)
    schema.add_field("ordinal", DataType.INT64)
    schema.add_field("name", DataType.VARCHAR, max_length=MAX_NAME_BYTES)
    schema.add_field("content_hash", DataType.VARCHAR, max_length=MAX_HASH_BYTES)
    schema.add_field("attributes", DataType.JSON)
    schema.add_field("created_at_ms", DataType.INT64)
    for column in info.schema.columns:
        schema.add_field(field_of(column.name), _FIELD_TYPES[column.type], **_field_options(column.type))
    schema.add_field(NULLS_FIELD, DataType.ARRAY, element_type=DataType.VARCHAR, max_capacity=MAX_COLUMNS,
                     max_length=64)
    if layout >= 3:  # as long as every column's name (Milvus sizes segments by the declared maximum lengths)
        schema.add_field(NULL_NAMES_FIELD, DataType.VARCHAR,
                         max_length=max(1, sum(len(c.name) + 1 for c in info.schema.columns)))
    schema.add_field("vector", DataType.FLOAT_VECTOR, dim=info.dim)
    return schema


def _field_options(kind: ColumnType) -> dict[str, Any]:
    if kind is ColumnType.STRING:
        return {"max_length": MAX_STRING_BYTES}
    if kind is ColumnType.STRING_LIST:
        return {"element_type": DataType.VARCHAR, "max_capacity": MAX_LIST_ITEMS, "max_length": MAX_LIST_ITEM_BYTES}
    return {}


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


# --- rows <-> records ------------------------------------------------------------------------------


def rows_of(item: Item, stored: Stored) -> list[dict[str, Any]]:
    """The item's rows: one per vector, its metadata copied onto each."""
    scalars: dict[str, Any] = {"attributes": item.attributes}
    if stored.layout >= 2:
        typed, extra = stored.info.schema.split(item.attributes)
        nulls = [name for name, value in typed.items() if value is None]
        scalars = {"attributes": extra, NULLS_FIELD: nulls}
        if stored.layout >= 3:
            scalars[NULL_NAMES_FIELD] = ",".join(nulls)
        for column in stored.info.schema.columns:
            scalars[field_of(column.name)] = field_value(column.type, typed[column.name])
    return [
        {
            "pk": row_key(item.id, k),
            "image_id": item.id,
            "ordinal": k,
            "name": item.name,
            "content_hash": item.content_hash,
            "created_at_ms": item.created_at_ms,
            **scalars,
            "vector": vector.tolist(),
        }
        for k, vector in enumerate(item.vectors)
    ]


def field_value(kind: ColumnType, value: Any) -> Any:
    """A declared value as its field stores it (a null as its placeholder, a timestamp in us)."""
    stored: Any = PLACEHOLDERS[kind] if value is None else value
    return timestamp_us(stored) if kind is ColumnType.TIMESTAMP else stored


def attributes_of(entity: Mapping[str, Any], schema: AlbumSchema) -> dict[str, Any]:
    """An image's attributes from its row: the undeclared ones, then every declared column (None if null)."""
    attributes = dict(entity.get("attributes") or {})
    nulls = _nulls_of(entity)
    for column in schema.columns:
        attributes[column.name] = column_of_row(entity, column.name, schema, nulls)
    return attributes


def _nulls_of(entity: Mapping[str, Any]) -> set[str]:
    """The declared columns a row holds no value for: from `null_names` (layout 3), else from `nulls`."""
    names = entity.get(NULL_NAMES_FIELD)
    if names is not None:
        return set(names.split(",")) if names else set()
    return set(entity.get(NULLS_FIELD) or ())


def column_of_row(entity: Mapping[str, Any], column: str, schema: AlbumSchema,
                  nulls: set[str] | None = None) -> Any:
    """A built-in or declared column's value in a row (declared: None when null, timestamps as datetimes)."""
    declared = schema.get(column)
    if declared is None:
        value = entity[field_of(column)]
        return str(value) if isinstance(value, str) else value
    if column in (nulls if nulls is not None else _nulls_of(entity)):
        return None
    value = entity.get(field_of(column))
    if declared.type is ColumnType.TIMESTAMP:
        return from_timestamp_us(int(value or 0))
    if declared.type is ColumnType.STRING_LIST:
        return list(value or [])
    return value


class _RowAttributes(Mapping[str, Any]):
    """An image's attributes as `attributes_of` reads them from its row, each read when asked for: a
    filter tested on many rows reads only the columns it names."""

    def __init__(self, entity: Mapping[str, Any], schema: AlbumSchema) -> None:
        self._entity = entity
        self._schema = schema

    def __getitem__(self, key: str) -> Any:
        if self._schema.get(key) is not None:
            return column_of_row(self._entity, key, self._schema)
        return (self._entity.get("attributes") or {})[key]

    def __iter__(self) -> Iterator[str]:
        return iter(attributes_of(self._entity, self._schema))

    def __len__(self) -> int:
        return len(attributes_of(self._entity, self._schema))


def _matches(filter: Expr | None, image_id: str, entity: Mapping[str, Any], schema: AlbumSchema) -> bool:
    """Whether the row's image matches the bound filter (None: every image)."""
    if filter is None:
        return True
    row = FilterRow(image_id, entity.get("name", ""), entity.get("content_hash", ""),
                    int(entity.get("created_at_ms", 0)), _RowAttributes(entity, schema))
    return matches(filter, row)


def best_per_image(rows: Sequence[dict[str, Any]], schema: AlbumSchema, filter: Expr | None = None,
                   enough: int = 0) -> list[Hit]:
    """One hit per image from rows ordered by similarity: the first (best) row of each image; of the images
    the bound `filter` matches if one is given. With `enough`, the rows after the `enough`-th image found
    are left unread, except those as near as it (ties are ordered by id)."""
    best: dict[str, Hit] = {}
    seen: set[str] = set()
    last = 0.0  # the distance of the last image found: the farthest, rows being ordered by distance
    for row in rows:
        distance = distance_of(row["distance"])
        if enough and len(best) >= enough and distance > last:
            break
        entity = row["entity"]
        image_id = str(entity["image_id"])
        if image_id in seen:
            continue
        seen.add(image_id)
        if _matches(filter, image_id, entity, schema):
            best[image_id] = Hit(
                id=image_id,
                distance=distance,
                name=entity.get("name", ""),
                content_hash=entity.get("content_hash", ""),
                attributes=attributes_of(entity, schema),
                created_at_ms=int(entity.get("created_at_ms", 0)),
                row=int(entity.get("ordinal", 0)),
            )
            last = distance
    return sorted(best.values(), key=lambda hit: (hit.distance, hit.id))


def nearest_images(rows: Sequence[dict[str, Any]], top_k: int) -> list[Hit]:
    """The first `top_k` images of rows ordered by similarity, each at its best row."""
    best: dict[str, Hit] = {}
    for row in rows:
        image_id = str(row["entity"]["image_id"])
        if image_id not in best:
            best[image_id] = Hit(id=image_id, distance=distance_of(row["distance"]),
                                 row=int(row["entity"].get("ordinal", 0)))
            if len(best) == top_k:
                break
    return list(best.values())


def items_from_rows(rows: Sequence[Mapping[str, Any]], schema: AlbumSchema) -> dict[str, Item]:
    grouped: dict[str, list[Mapping[str, Any]]] = defaultdict(list)
    for row in rows:
        grouped[str(row["image_id"])].append(row)
    return {image_id: _item(sorted(parts, key=lambda r: int(r["ordinal"])), schema)
            for image_id, parts in grouped.items()}


def _item(rows: Sequence[Mapping[str, Any]], schema: AlbumSchema) -> Item:
    first = rows[0]
    vectors = tuple(np.asarray(r["vector"], dtype=np.float32) for r in rows if "vector" in r)
    return Item(
        id=str(first["image_id"]),
        vectors=vectors,
        name=first.get("name", ""),
        content_hash=first.get("content_hash", ""),
        attributes=attributes_of(first, schema),
        created_at_ms=int(first.get("created_at_ms", 0)),
    )
