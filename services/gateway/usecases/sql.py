"""SQL statements run as the same use cases the API calls (services.gateway.sql parses them), so a
statement and its API call give the same answer: CREATE TABLE is albums.create, SELECT ... ORDER BY
feature <-> image(...) is search.search, SELECT ... ORDER BY a column is images.list_images, INSERT is
ingest.add_images (all or nothing), UPDATE is images.update_images, DELETE is images.delete_images,
SELECT recognize(image(...), 'attribute') is recognize.recognize."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import replace
from typing import Any

from services.common.errors import AlbumNotFound, InvalidArgument, UrlFetchFailed
from services.common.filtering import TRUE, Expr, resolve_column
from services.common.schema import ATTRIBUTES_PREFIX, BUILTIN_COLUMNS, AlbumSchema, from_timestamp_us
from services.gateway.deps import Deps
from services.gateway.records import (
    AddStatus,
    Collection,
    ImageFilter,
    ImageRecord,
    Listing,
    NewImage,
    Query,
    ScoredImage,
    SqlResult,
    SqlRow,
)
from services.gateway.sql.statements import (
    DEFAULT_LIMIT,
    CreateTable,
    Delete,
    DropTable,
    ImageRef,
    Insert,
    Output,
    Recognize,
    Select,
    Statement,
    Update,
    in_metric,
    parse_statement,
)
from services.gateway.urlfetch import name_from_url
from services.gateway.usecases import albums, faces, images, ingest, recognize, search

Parts = Mapping[str, bytes]


async def execute(deps: Deps, text: str, parts: Parts | None = None, delete_all: bool = False) -> SqlResult:
    """Runs one statement; `parts` are the images uploaded with it, by name (what `image('name')` names).
    `delete_all` says that a DELETE without WHERE means every image."""
    started = time.perf_counter()
    statement = parse_statement(text)
    runner: Callable[..., Awaitable[SqlResult]] = _RUNNERS[type(statement)]
    result = await runner(deps, statement, parts or {}, delete_all)
    return replace(result, took_ms=(time.perf_counter() - started) * 1000)


# --- albums ---------------------------------------------------------------------------------------


async def _create_table(deps: Deps, statement: CreateTable, parts: Parts, delete_all: bool) -> SqlResult:
    if statement.if_not_exists:
        try:
            await albums.get(deps, statement.album)
            return SqlResult("create_table", statement.album, affected=0)
        except AlbumNotFound:
            pass
    await albums.create(deps, statement.album, statement.schema, faces=statement.faces, details=statement.details)
    return SqlResult("create_table", statement.album, affected=1)


async def _drop_table(deps: Deps, statement: DropTable, parts: Parts, delete_all: bool) -> SqlResult:
    try:
        await albums.delete(deps, statement.album)
    except AlbumNotFound:
        if not statement.if_exists:
            raise
        return SqlResult("drop_table", statement.album, affected=0)
    return SqlResult("drop_table", statement.album, affected=1)


# --- writes ---------------------------------------------------------------------------------------


async def _insert(deps: Deps, statement: Insert, parts: Parts, delete_all: bool) -> SqlResult:
    collection = await deps.collection(statement.album)
    new = []
    for number, row in enumerate(statement.rows, 1):
        content = await _image_bytes(deps, row.image, parts, number)
        name = row.name or row.image.part or name_from_url(row.image.url or "")
        attributes = {attribute_key(k, collection.schema): v for k, v in row.attributes.items()}
        new.append(NewImage(content=content, name=name, attributes=attributes))
    results = await ingest.add_images(deps, statement.album, new, atomic=True)
    rows = tuple(SqlRow((r.id, r.name, r.status.value)) for r in results)
    added = sum(1 for r in results if r.status is AddStatus.ADDED)
    return SqlResult("insert", statement.album, ("id", "name", "status"), rows, affected=added)


async def _image_bytes(deps: Deps, ref: ImageRef, parts: Parts, number: int) -> bytes:
    if ref.part is not None:
        if ref.part not in parts:
            raise InvalidArgument(f"row {number}: no uploaded image named {ref.part!r}; send it with the statement "
                                  f"(uploaded: {', '.join(sorted(parts)) or 'none'})")
        return parts[ref.part]
    try:
        return await deps.fetch_url(ref.url or "")
    except UrlFetchFailed as exc:
        raise UrlFetchFailed(f"row {number}: {exc.message}") from exc


async def _update(deps: Deps, statement: Update, parts: Parts, delete_all: bool) -> SqlResult:
    collection = await deps.collection(statement.album)
    changes = {attribute_key(k, collection.schema): v for k, v in statement.changes.items()}
    updated = await images.update_images(deps, statement.album, changes, _filter(statement.filter),
                                         all=statement.filter is None)
    return SqlResult("update", statement.album, affected=updated)


async def _delete(deps: Deps, statement: Delete, parts: Parts, delete_all: bool) -> SqlResult:
    condition = statement.filter
    if condition is None and delete_all:
        condition = TRUE
    deleted = await images.delete_images(deps, statement.album, _filter(condition))
    return SqlResult("delete", statement.album, affected=deleted)


def attribute_key(column: str, schema: AlbumSchema) -> str:
    """The attribute a written column names: `name`, a declared column, or an undeclared attribute
    (`attributes.key`, or a bare name in an album without columns)."""
    if column == "name":
        return column
    if column in BUILTIN_COLUMNS:
        raise InvalidArgument(f"{column} is set by the system and cannot be written")
    resolved, _ = resolve_column(column, schema)
    return resolved.removeprefix(ATTRIBUTES_PREFIX)


def _filter(expr: Expr | None) -> ImageFilter:
    return ImageFilter(tree=expr) if expr is not None else ImageFilter()


# --- SELECT ---------------------------------------------------------------------------------------


async def _select(deps: Deps, statement: Select, parts: Parts, delete_all: bool) -> SqlResult:
    collection = await deps.collection(statement.album)
    outputs = _expanded(statement.outputs, collection.schema)
    labels = tuple(o.label for o in outputs)
    if statement.group_by:
        groups = await images.count_groups(deps, statement.album, statement.group_by, _filter(statement.filter))
        rows = tuple(SqlRow(tuple(_group_value(o, statement.group_by, g.key, g.count) for o in outputs))
                     for g in groups)
        return SqlResult("select", statement.album, labels, _window(rows, statement))
    if statement.counts:
        counted = await images.count(deps, statement.album, _filter(statement.filter))
        return SqlResult("select", statement.album, labels, _window((SqlRow((counted,)),), statement))
    if statement.vector is not None:
        return await _nearest(deps, statement, collection, outputs, parts)
    limit = DEFAULT_LIMIT if statement.limit is None else statement.limit
    listing = Listing(filter=_filter(statement.filter), limit=limit, offset=statement.offset,
                      order_by=statement.order_by, descending=statement.descending,
                      nulls_first=statement.nulls_first if statement.order_by else None)
    listed = await images.list_images(deps, statement.album, listing)
    rows = tuple(SqlRow(tuple(_value(o, record, collection.schema) for o in outputs), record) for record in listed)
    return SqlResult("select", statement.album, labels, rows)


def _window(rows: tuple[SqlRow, ...], statement: Select) -> tuple[SqlRow, ...]:
    """A count's rows (its groups, most first) past OFFSET, LIMIT of them."""
    rows = rows[statement.offset:]
    return rows if statement.limit is None else rows[:statement.limit]


def _query(ref: ImageRef, parts: Parts) -> Query:
    """The image `image(...)` names."""
    if ref.part is not None and ref.part not in parts:
        raise InvalidArgument(f"no uploaded image named {ref.part!r}; send it with the statement "
                              f"(uploaded: {', '.join(sorted(parts)) or 'none'})")
    return Query(image=parts[ref.part] if ref.part is not None else None, url=ref.url, image_id=ref.image_id)


async def _recognize(deps: Deps, statement: Recognize, parts: Parts, delete_all: bool) -> SqlResult:
    """One row: the label (null when unknown), its confidence, unknown, with the nearest labelled image."""
    outcome = await recognize.recognize(deps, statement.album, _query(statement.image, parts), statement.attribute,
                                        evidence=1, threshold=statement.threshold, faces=statement.faces)
    nearest = outcome.evidence[0].image if outcome.evidence else None
    row = SqlRow((outcome.label, round(outcome.confidence, 4), outcome.unknown, round(outcome.known, 4)), nearest)
    label = statement.label
    columns = (label, "confidence", "unknown", "known") if label != "recognize" else \
        ("label", "confidence", "unknown", "known")
    return SqlResult("select", statement.album, columns, (row,))


async def _nearest(deps: Deps, statement: Select, collection: Collection, outputs: tuple[Output, ...],
                   parts: Parts) -> SqlResult:
    vector = statement.vector
    assert vector is not None
    query = _query(vector.image, parts)
    top_k = statement.offset + (deps.settings.default_top_k if statement.limit is None else statement.limit)
    if vector.space == "face":
        hits = (await _nearest_faces(deps, statement, query, top_k))[statement.offset:]
    else:
        outcome = await search.search(deps, statement.album, query, top_k, _filter(statement.filter),
                                      vector.image.mode.value, statement.max_distance, region=vector.image.region)
        hits = outcome.hits[statement.offset:]
    rows = tuple(SqlRow(tuple(_hit_value(o, hit, vector.metric, collection.schema) for o in outputs), hit.image)
                 for hit in hits)
    return SqlResult("select", statement.album, tuple(o.label for o in outputs), rows)


async def _nearest_faces(deps: Deps, statement: Select, query: Query, top_k: int) -> list[ScoredImage]:
    """The images where the person of the query's largest face appears, as faces.search_faces answers."""
    vector = statement.vector
    assert vector is not None
    if statement.filter is not None:
        raise InvalidArgument("ORDER BY face <-> image(...) takes no WHERE on columns (a distance bound only): "
                              "the faces are searched across the whole album")
    outcome = await faces.search_faces(deps, statement.album, query, top_k, statement.max_distance,
                                       region=vector.image.region)
    return [ScoredImage(hit.image, hit.distance) for hit in outcome.hits]


def _expanded(outputs: tuple[Output, ...], schema: AlbumSchema) -> tuple[Output, ...]:
    """The outputs with `*` spelled out (id, name, created_at, the declared columns, the other attributes)
    and every column checked against the album."""
    expanded: list[Output] = []
    for output in outputs:
        if output.kind == "star":
            expanded.extend(Output(c, "column", c) for c in ("id", "name", "created_at", *schema.names))
            expanded.append(Output("attributes", "attributes"))
        elif output.kind == "column":
            resolved, _ = resolve_column(output.name, schema)
            key = resolved.removeprefix(ATTRIBUTES_PREFIX)
            expanded.append(replace(output, kind="attribute", name=key) if resolved != output.name else output)
        else:
            expanded.append(output)
    return tuple(expanded)


def _value(output: Output, record: ImageRecord, schema: AlbumSchema) -> Any:
    if output.kind == "column":
        if output.name == "created_at":
            return from_timestamp_us(record.created_at_ms * 1000)
        if output.name in BUILTIN_COLUMNS:
            return record.id if output.name == "id" else getattr(record, output.name)
        return record.attributes.get(output.name)
    if output.kind == "attribute":
        return record.attributes.get(output.name)
    if output.kind == "attributes":
        return {k: v for k, v in record.attributes.items() if schema.get(k) is None}
    raise InvalidArgument(f"{output.label} is not a column of the album's images")


def _hit_value(output: Output, hit: ScoredImage, metric: str, schema: AlbumSchema) -> Any:
    if output.kind == "distance":
        return in_metric(metric, hit.distance)
    if output.kind == "matches":
        return hit.matches
    return _value(output, hit.image, schema)


def _group_value(output: Output, columns: tuple[str, ...], key: tuple[Any, ...], counted: int) -> Any:
    if output.kind == "count":
        return counted
    value = key[columns.index(output.name)]
    return from_timestamp_us(value * 1000) if output.name == "created_at" else value


_RUNNERS: dict[type[Statement], Callable[..., Awaitable[SqlResult]]] = {
    CreateTable: _create_table,
    DropTable: _drop_table,
    Insert: _insert,
    Select: _select,
    Recognize: _recognize,
    Update: _update,
    Delete: _delete,
}
