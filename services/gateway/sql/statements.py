"""One SQL statement as a typed record of what to do (running it is services.gateway.usecases.sql).

    CREATE TABLE shoes (price DOUBLE, colour VARCHAR, sizes VARCHAR[], in_stock BOOLEAN, listed_at TIMESTAMP)
        [WITH (faces = true, details = true)]
    DROP TABLE [IF EXISTS] shoes
    INSERT INTO shoes (name, image, price) VALUES ('a.jpg', image('https://...'), 39.5), ...
    SELECT name, price, distance FROM shoes WHERE price < 50 AND distance < 0.3
        ORDER BY feature <-> image('query.jpg') LIMIT 10 OFFSET 0
    SELECT * FROM shoes WHERE in_stock ORDER BY price DESC LIMIT 20
    SELECT count(*) FROM shoes WHERE colour = 'red'
    SELECT colour, count(*) FROM shoes GROUP BY colour
    SELECT recognize(image('query.jpg'), 'category') FROM shoes
    UPDATE shoes SET price = 39.5 WHERE name = 'a.jpg'
    DELETE FROM shoes WHERE listed_at < TIMESTAMP '2024-01-01'

`image(...)` names the query or new image: a URL (`image('https://...')`), the name of a part uploaded
with the statement (`image('query.jpg')`), or an image of the album (`image(image_id => '...')`);
`mode => 'similar'` asks for similar images rather than copies, and in a search `region => '10,20,200,150'`
searches only that box (x,y,w,h in the image's pixels). `feature` is the images' vector, `face` their
faces' (an album that indexes faces: `ORDER BY face <-> image('portrait.jpg')` finds the images where the
person of the query's largest face appears, each by its nearest face, within the face match distance); the
distance operators are the dialect's (`<->` L2, `<=>` cosine, `<#>` negative inner product), or the
functions l2_distance, cosine_distance and inner_product (DESC). `distance` is the ORDER BY's distance,
`matches` the verified keypoints of a copy search. `recognize(image(...), 'attribute')` (with an optional
`threshold => 0.3`, and `faces => true` to go by the photo's face) answers one row: the label the image
most likely has among the album's values of the attribute (null when unknown), its confidence, whether
it is unknown, with the nearest labelled image.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlglot import exp

from services.common.errors import InvalidArgument
from services.common.filtering import Expr
from services.common.schema import ATTRIBUTES_PREFIX, SQL_TYPES, AlbumSchema, Column, ColumnType
from services.gateway.records import SearchMode
from services.gateway.regions import Region
from services.gateway.sql.dialect import (
    DISTANCE_OPERATORS,
    OPERATOR_OF_METRIC,
    SqlError,
    at,
    check_statement_start,
    parse_statements,
)
from services.gateway.sql.where import column_name, literal, to_filter

MAX_STATEMENT_CHARS = 100_000
MAX_LIMIT = 1000
# Rows a SELECT without LIMIT returns (vector searches: the API's default top_k applies).
DEFAULT_LIMIT = 100
MAX_INSERT_ROWS = 256
SUPPORTED = ("CREATE TABLE, DROP TABLE, INSERT INTO ... VALUES, SELECT (columns, count(*), GROUP BY columns with "
             "count(*), WHERE, ORDER BY feature <-> image(...) or a column, LIMIT, OFFSET; or "
             "recognize(image(...), 'attribute') alone), UPDATE ... SET ... WHERE, DELETE FROM ... WHERE; "
             "one statement per request")
DISTANCE_FUNCTIONS = {"l2_distance": "l2", "cosine_distance": "cosine", "inner_product": "inner_product",
                      "negative_inner_product": "negative_inner_product"}


@dataclass(frozen=True)
class ImageRef:
    """An image named in a statement: a URL, an uploaded part, or an image of the album."""

    url: str | None = None
    part: str | None = None
    image_id: str | None = None
    mode: SearchMode = SearchMode.COPY
    region: Region | None = None


@dataclass(frozen=True)
class CreateTable:
    album: str
    schema: AlbumSchema
    if_not_exists: bool = False
    # WITH (faces = true): the album indexes faces; WITH (details = true): it keeps a keypoint index.
    faces: bool = False
    details: bool = False


@dataclass(frozen=True)
class DropTable:
    album: str
    if_exists: bool = False


@dataclass(frozen=True)
class InsertRow:
    image: ImageRef
    name: str | None
    # Column (declared, or an undeclared attribute as `attributes.key`, or bare in an album without
    # columns) -> value.
    attributes: dict[str, Any]


@dataclass(frozen=True)
class Insert:
    album: str
    rows: tuple[InsertRow, ...]


@dataclass(frozen=True)
class Output:
    """A column of a SELECT's result: its label and what it shows (`column`, `attributes`, `attribute`,
    `distance`, `matches` or `count`)."""

    label: str
    kind: str
    name: str = ""


@dataclass(frozen=True)
class VectorOrder:
    """ORDER BY the distance to an image, in the metric of the operator (see dialect)."""

    image: ImageRef
    metric: str
    # The expression as sqlglot writes it, to tell the same distance elsewhere in the statement.
    sql: str
    # Whose vectors: the images' ("feature") or their faces' ("face").
    space: str = "feature"

    @property
    def shown(self) -> str:
        if self.metric == "inner_product":
            return f"inner_product({self.space}, image(...))"
        return f"{self.space} {OPERATOR_OF_METRIC[self.metric]} image(...)"


@dataclass(frozen=True)
class Select:
    album: str
    outputs: tuple[Output, ...]
    filter: Expr | None = None
    vector: VectorOrder | None = None
    # The largest distance allowed, as cosine distance (WHERE distance < x, in the operator's metric).
    max_distance: float | None = None
    order_by: str = ""
    descending: bool = False
    # NULLS FIRST or LAST, as said or as SQL's default (first descending).
    nulls_first: bool = False
    limit: int | None = None
    offset: int = 0
    group_by: tuple[str, ...] = ()

    @property
    def counts(self) -> bool:
        return any(o.kind == "count" for o in self.outputs)


@dataclass(frozen=True)
class Recognize:
    """SELECT recognize(image(...), 'attribute'[, threshold => x]) [AS label] FROM album."""

    album: str
    image: ImageRef
    attribute: str
    threshold: float | None = None
    label: str = "recognize"
    faces: bool = False


@dataclass(frozen=True)
class Update:
    album: str
    changes: dict[str, Any]
    filter: Expr | None = None


@dataclass(frozen=True)
class Delete:
    album: str
    filter: Expr | None = None


Statement = CreateTable | DropTable | Insert | Select | Recognize | Update | Delete


def parse_statement(text: str) -> Statement:
    """The one statement in `text`; `SqlError` (400) naming the position of what is wrong or unsupported."""
    if len(text) > MAX_STATEMENT_CHARS:
        raise SqlError(f"the statement is {len(text)} characters; the limit is {MAX_STATEMENT_CHARS}")
    check_statement_start(text)
    statements = parse_statements(text)
    if len(statements) != 1:
        raise SqlError(f"{len(statements) or 'no'} statements given; send one statement per request")
    node = statements[0]
    parser = _PARSERS.get(type(node))
    if parser is None:
        raise SqlError(f"{type(node).__name__.upper()} statements are not supported; supported: {SUPPORTED}")
    return parser(node)


# --- names ------------------------------------------------------------------------------------------


def _table(node: exp.Expr | None) -> str:
    """The album a statement is about (a plain table name; unquoted names in lower case)."""
    if isinstance(node, exp.Schema):
        node = node.this
    if not isinstance(node, exp.Table) or node.args.get("db") or node.args.get("catalog"):
        raise SqlError(f"{at(node)}name one album, as in FROM shoes")
    identifier = node.this
    name = str(identifier.this) if isinstance(identifier, exp.Identifier) and identifier.quoted else node.name.lower()
    if node.alias:
        raise SqlError(f"{at(node)}table aliases are not supported")
    return name


def _name(node: exp.Expr) -> str:
    identifier = node.this if isinstance(node, exp.Column | exp.ColumnDef) else node
    if isinstance(identifier, exp.Identifier):
        return str(identifier.this) if identifier.quoted else str(identifier.this).lower()
    return str(node.name).lower()


# sqlglot's names of clauses that are not the SQL words for them.
_CLAUSES = {"joins": "JOIN", "windows": "WINDOW", "laterals": "LATERAL", "pivots": "PIVOT", "with_": "WITH",
            "with": "WITH", "prewhere": "PREWHERE", "qualify": "QUALIFY", "locks": "FOR UPDATE"}


def _no_extras(node: exp.Expr, allowed: set[str]) -> None:
    """Refuses clauses the statement has but the system does not support."""
    for key, value in node.args.items():
        if value in (None, False, [], "") or key in allowed:
            continue
        clause = _CLAUSES.get(key, key.upper().replace("_", " ").strip())
        raise SqlError(f"{at(value if isinstance(value, exp.Expr) else node)}{clause} is not supported here; "
                       f"supported: {SUPPORTED}")


# --- CREATE / DROP ----------------------------------------------------------------------------------


def _create(node: exp.Create) -> Statement:
    if str(node.args.get("kind", "")).upper() != "TABLE":
        raise SqlError(f"CREATE {node.args.get('kind')} is not supported; CREATE TABLE makes an album")
    _no_extras(node, {"this", "kind", "exists", "properties"})
    target = node.this
    columns = [_column_def(c) for c in target.expressions] if isinstance(target, exp.Schema) else []
    options = _album_options(node.args.get("properties"))
    return CreateTable(_table(target), AlbumSchema.of(columns), bool(node.args.get("exists")), **options)


# What CREATE TABLE ... WITH (...) may set: what the album keeps beside its vectors.
ALBUM_OPTIONS = ("faces", "details")


def _album_options(properties: exp.Expr | None) -> dict[str, bool]:
    """WITH (faces = true, details = false): each a boolean, each once."""
    options: dict[str, bool] = {}
    for prop in properties.expressions if properties is not None else []:
        name = prop.name.lower() if isinstance(prop, exp.Property) else ""
        if name not in ALBUM_OPTIONS:
            raise SqlError(f"{at(prop)}CREATE TABLE takes WITH ({' = true, '.join(ALBUM_OPTIONS)} = true), "
                           f"not {prop.sql(dialect='postgres')}")
        value = literal(prop.args["value"])
        if not isinstance(value, bool) or name in options:
            raise SqlError(f"{at(prop)}CREATE TABLE WITH: {name} is given once, as true or false")
        options[name] = value
    return options


def _column_def(node: exp.Expr) -> Column:
    if not isinstance(node, exp.ColumnDef):
        raise SqlError(f"{at(node)}CREATE TABLE takes column definitions such as price DOUBLE")
    if node.args.get("constraints"):
        raise SqlError(f"{at(node)}column constraints (NOT NULL, DEFAULT, PRIMARY KEY, ...) are not supported; "
                       "every column may be null")
    return Column(_name(node), _column_type(node))


def _column_type(node: exp.ColumnDef) -> ColumnType:
    kind = node.args.get("kind")
    if not isinstance(kind, exp.DataType):
        raise SqlError(f"{at(node)}column {_name(node)!r} needs a type ({_TYPE_NAMES})")
    if kind.this == exp.DataType.Type.ARRAY:
        inner = kind.expressions[0] if kind.expressions else None
        if isinstance(inner, exp.DataType) and SQL_TYPES.get(inner.this.name) is ColumnType.STRING:
            return ColumnType.STRING_LIST
        raise SqlError(f"{at(node)}column {_name(node)!r}: lists are lists of strings (VARCHAR[])")
    found = SQL_TYPES.get(kind.this.name)
    if found is None:
        raise SqlError(f"{at(node)}column {_name(node)!r}: type {kind.sql(dialect='postgres')} is not one of "
                       f"{_TYPE_NAMES}")
    return found


_TYPE_NAMES = "VARCHAR, BIGINT, DOUBLE, BOOLEAN, TIMESTAMP, VARCHAR[] (and their synonyms)"


def _drop(node: exp.Drop) -> Statement:
    if str(node.args.get("kind", "")).upper() != "TABLE":
        raise SqlError(f"DROP {node.args.get('kind')} is not supported; DROP TABLE deletes an album")
    _no_extras(node, {"this", "tables", "kind", "exists", "cascade", "purge"})
    tables = node.args.get("tables") or [node.this]
    if len(tables) != 1:
        raise SqlError(f"{at(tables[1])}DROP TABLE takes one album")
    return DropTable(_table(tables[0]), bool(node.args.get("exists")))


# --- INSERT -----------------------------------------------------------------------------------------


def _insert(node: exp.Insert) -> Statement:
    _no_extras(node, {"this", "expression", "is_function", "stored", "by_name", "exists", "partition", "settings",
                      "default", "overwrite"})
    target = node.this
    if not isinstance(target, exp.Schema) or not target.expressions:
        raise SqlError(f"{at(target)}name the columns: INSERT INTO album (name, image, price, ...) VALUES (...)")
    names = [_name(c) for c in target.expressions]
    if "image" not in names:
        raise SqlError(f"{at(target)}INSERT needs an image column, e.g. (name, image) VALUES ('a.jpg', image('...'))")
    values = node.expression
    if not isinstance(values, exp.Values):
        raise SqlError(f"{at(values)}INSERT takes VALUES (...); INSERT ... SELECT is not supported")
    rows = [_insert_row(names, row, number) for number, row in enumerate(values.expressions, 1)]
    if len(rows) > MAX_INSERT_ROWS:
        raise SqlError(f"{len(rows)} rows in one INSERT; the limit is {MAX_INSERT_ROWS}")
    return Insert(_table(target), tuple(rows))


def _insert_row(names: list[str], row: exp.Expr, number: int) -> InsertRow:
    cells = list(row.expressions) if isinstance(row, exp.Tuple) else [row]
    if len(cells) != len(names):
        raise SqlError(f"{at(row)}row {number} has {len(cells)} values for {len(names)} columns")
    image: ImageRef | None = None
    name: str | None = None
    attributes: dict[str, Any] = {}
    for column, cell in zip(names, cells, strict=True):
        if column == "image":
            image = image_ref(cell, allow_id=False)
        elif column == "name":
            value = literal(cell)
            if value is not None and not isinstance(value, str):
                raise SqlError(f"{at(cell)}row {number}: name is a string")
            name = value
        elif column == "attributes":
            attributes.update(_json_object(cell, number))
        elif column in ("id", "content_hash", "created_at"):
            raise SqlError(f"{at(cell)}{column} is set by the system, not by INSERT")
        else:
            attributes[column] = literal(cell)
    assert image is not None
    return InsertRow(image, name, attributes)


def _json_object(cell: exp.Expr, number: int) -> dict[str, Any]:
    import json

    text = literal(cell)
    try:
        value = json.loads(text) if isinstance(text, str) else None
    except json.JSONDecodeError:
        value = None
    if not isinstance(value, dict):
        raise SqlError(f"{at(cell)}row {number}: attributes takes a JSON object as a string, e.g. "
                       "'{\"kind\": \"photo\"}'")
    return value


def image_ref(node: exp.Expr, allow_id: bool = True, allow_region: bool = False) -> ImageRef:
    """`image('url or part name')`, `image(image_id => '...')`, with `mode => 'similar'` or `'copy'`, and
    (where `allow_region`: a search) `region => 'x,y,w,h'`."""
    if not isinstance(node, exp.Anonymous) or str(node.this).lower() != "image":
        raise SqlError(f"{at(node)}expected image('https://...'), image('uploaded part name') or "
                       "image(image_id => '...')")
    given: dict[str, Any] = {}
    for arg in node.expressions:
        key, value = (str(arg.this.name).lower(), arg.expression) if isinstance(arg, exp.Kwarg) else ("source", arg)
        if key not in ("source", "url", "image_id", "mode", "region") or key in given:
            raise SqlError(f"{at(arg)}image() takes a URL or part name, or url =>, image_id =>, mode =>, region =>")
        given[key] = literal(value)
        if not isinstance(given[key], str):
            raise SqlError(f"{at(arg)}image(): {key} is a string")
    mode = _mode(given.pop("mode", "copy"), node)
    region = _region(given.pop("region", None), node, allow_region)
    source = given.pop("source", None)
    url = given.pop("url", None) or (source if source and source.startswith(("http://", "https://")) else None)
    part = source if source is not None and url is None else None
    image_id = given.pop("image_id", None)
    if sum(v is not None for v in (url, part, image_id)) != 1:
        raise SqlError(f"{at(node)}image() takes exactly one of: a URL, a part name, image_id => '...'")
    if image_id is not None and not allow_id:
        raise SqlError(f"{at(node)}INSERT takes an image by URL or uploaded part, not by image_id")
    return ImageRef(url=url, part=part, image_id=image_id, mode=mode, region=region)


def _region(value: str | None, node: exp.Expr, allowed: bool) -> Region | None:
    if value is None:
        return None
    if not allowed:
        raise SqlError(f"{at(node)}region => goes with a search's image(...) (ORDER BY feature <-> image(...))")
    try:
        return Region.parse(value)
    except InvalidArgument as exc:
        raise SqlError(f"{at(node)}image(): {exc.message}") from None


def _mode(value: Any, node: exp.Expr) -> SearchMode:
    try:
        return SearchMode(value)
    except ValueError:
        raise SqlError(f"{at(node)}mode is 'copy' or 'similar', not {str(value)[:40]!r}") from None


# --- SELECT -----------------------------------------------------------------------------------------


def _select(node: exp.Select) -> Statement:
    if node.args.get("joins"):
        raise SqlError(f"{at(node.args['joins'][0])}JOIN is not supported: a statement reads one album")
    _no_extras(node, {"expressions", "from_", "from", "where", "order", "limit", "offset", "group", "kind"})
    source = node.args.get("from_") or node.args.get("from")
    if source is None:
        raise SqlError("SELECT needs FROM an album")
    album = _table(source.this)
    if any(_is_recognize(item) for item in node.expressions):
        return _recognize(node, album)
    vector = _vector_order(node)
    order_by, descending, nulls_first = _column_order(node, vector)
    condition, max_distance = _where(node.args.get("where"), album, vector)
    outputs = tuple(_output(item, album, vector) for item in node.expressions)
    group_by = tuple(column_name(g, album) for g in node.args["group"].expressions) if node.args.get("group") else ()
    select = Select(album=album, outputs=outputs, filter=condition, vector=vector, max_distance=max_distance,
                    order_by=order_by, descending=descending, nulls_first=nulls_first,
                    limit=_count_clause(node, "limit"),
                    offset=_count_clause(node, "offset") or 0, group_by=group_by)
    _check_shape(select, node)
    return select


def _is_recognize(item: exp.Expr) -> bool:
    node = item.this if isinstance(item, exp.Alias) else item
    return isinstance(node, exp.Anonymous) and str(node.this).lower() == "recognize"


def _recognize(node: exp.Select, album: str) -> Recognize:
    """`recognize(image(...), 'attribute'[, threshold => x])`, alone in its SELECT."""
    extra = [k for k in ("where", "order", "limit", "offset", "group") if node.args.get(k)]
    if len(node.expressions) != 1 or extra:
        raise SqlError(f"{at(node)}recognize(image(...), 'attribute') goes alone: one output, no WHERE, ORDER BY, "
                       "GROUP BY or LIMIT")
    item = node.expressions[0]
    call = item.this if isinstance(item, exp.Alias) else item
    args = list(call.expressions)
    keywords = {str(a.this.name).lower(): a.expression for a in args if isinstance(a, exp.Kwarg)}
    positional = [a for a in args if not isinstance(a, exp.Kwarg)]
    if len(positional) != 2 or set(keywords) - {"threshold", "faces"}:
        raise SqlError(f"{at(call)}recognize takes an image and the label attribute's name, and optionally "
                       "threshold => x and faces => true: recognize(image('q.jpg'), 'category')")
    faces = literal(keywords["faces"]) if "faces" in keywords else False
    if not isinstance(faces, bool):
        raise SqlError(f"{at(call)}recognize: faces is true or false")
    attribute = literal(positional[1])
    if not isinstance(attribute, str):
        raise SqlError(f"{at(positional[1])}recognize: the label attribute's name is a string, as in 'category'")
    threshold = literal(keywords["threshold"]) if "threshold" in keywords else None
    if threshold is not None and (isinstance(threshold, bool) or not isinstance(threshold, int | float)):
        raise SqlError(f"{at(call)}recognize: threshold is a number between 0 and 1")
    label = str(item.alias) if isinstance(item, exp.Alias) else "recognize"
    return Recognize(album, image_ref(positional[0]), attribute,
                     float(threshold) if threshold is not None else None, label, faces)


def _check_shape(select: Select, node: exp.Select) -> None:
    kinds = {o.kind for o in select.outputs}
    if select.group_by:
        plain = [o for o in select.outputs if o.kind != "count"]
        if not select.counts or any(o.kind != "column" or o.name not in select.group_by for o in plain):
            raise SqlError(f"{at(node)}GROUP BY is supported with its columns and count(*) only, as in "
                           "SELECT colour, count(*) FROM shoes GROUP BY colour")
    elif select.counts and kinds != {"count"}:
        raise SqlError(f"{at(node)}count(*) goes alone, or with GROUP BY columns")
    if select.counts and (select.vector or select.order_by):
        raise SqlError(f"{at(node)}a count has no ORDER BY")
    if ("distance" in kinds or "matches" in kinds) and select.vector is None:
        raise SqlError(f"{at(node)}distance and matches come with ORDER BY feature <-> image(...)")
    if select.limit is not None and not 1 <= select.limit <= MAX_LIMIT:
        raise SqlError(f"LIMIT must be between 1 and {MAX_LIMIT}")


def _count_clause(node: exp.Select, key: str) -> int | None:
    clause = node.args.get(key)
    if clause is None:
        return None
    value = literal(clause.expression)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise SqlError(f"{at(clause)}{key.upper()} takes a whole number at least 0")
    return value


VECTOR_COLUMNS = ("feature", "face")


def _distance_node(node: exp.Expr) -> tuple[str, exp.Expr, str] | None:
    """(metric, image node, vector column) of `feature <op> image(...)` or `l2_distance(feature, image(...))`
    (`face` in place of `feature`: the faces' vectors)."""
    node = node.this if isinstance(node, exp.Paren) else node
    if type(node) in DISTANCE_OPERATORS:
        left, right = node.this, node.expression
        metric = DISTANCE_OPERATORS[type(node)]
    elif isinstance(node, exp.Anonymous) and str(node.this).lower() in DISTANCE_FUNCTIONS:
        if len(node.expressions) != 2:
            raise SqlError(f"{at(node)}{node.this}() takes feature and image(...)")
        left, right = node.expressions
        metric = DISTANCE_FUNCTIONS[str(node.this).lower()]
    else:
        return None
    if isinstance(left, exp.Anonymous) and not isinstance(right, exp.Anonymous):
        left, right = right, left
    if not isinstance(left, exp.Column) or _name(left) not in VECTOR_COLUMNS:
        raise SqlError(f"{at(left)}a distance is between feature (the images' vector) or face (their faces') "
                       "and image(...)")
    return metric, right, _name(left)


def _vector_order(node: exp.Select) -> VectorOrder | None:
    order = node.args.get("order")
    if order is None:
        return None
    terms = order.expressions
    found = [(t, _distance_node(t.this)) for t in terms]
    vectors = [(t, d) for t, d in found if d is not None]
    if not vectors:
        return None
    if len(terms) != 1:
        raise SqlError(f"{at(order)}ORDER BY a distance takes nothing else")
    term, (metric, image, space) = vectors[0]
    descending = bool(term.args.get("desc"))
    if (metric == "inner_product") != descending:
        direction = "DESC" if metric == "inner_product" else "ASC"
        raise SqlError(f"{at(term)}nearest first: order by this distance {direction}")
    return VectorOrder(image_ref(image, allow_region=True), metric, term.this.sql(dialect="postgres"), space)


def _column_order(node: exp.Select, vector: VectorOrder | None) -> tuple[str, bool, bool]:
    """ORDER BY a column: its name, whether descending, whether nulls come first (said, or SQL's default)."""
    order = node.args.get("order")
    if order is None or vector is not None:
        return "", False, False
    if len(order.expressions) != 1:
        raise SqlError(f"{at(order)}ORDER BY takes one column (ties are broken by id)")
    term = order.expressions[0]
    if not isinstance(term.this, exp.Column):
        raise SqlError(f"{at(term)}ORDER BY takes a column or a distance, as in ORDER BY feature <-> image(...)")
    name = column_name(term.this)
    if name in ("distance", "matches"):
        raise SqlError(f"{at(term)}ORDER BY {name} needs the distance itself: ORDER BY feature <-> image(...)")
    descending = bool(term.args.get("desc"))
    nulls_first = term.args.get("nulls_first")  # sqlglot gives the default where none is said
    return name, descending, descending if nulls_first is None else bool(nulls_first)


def _where(clause: exp.Where | None, album: str, vector: VectorOrder | None) -> tuple[Expr | None, float | None]:
    """The filter, and the distance bound taken out of the top-level AND."""
    if clause is None:
        return None, None
    rest: list[exp.Expr] = []
    bound: float | None = None
    for part in _conjuncts(clause.this):
        limit = _distance_bound(part, vector)
        if limit is None:
            rest.append(part)
        else:
            bound = limit if bound is None else min(bound, limit)
    for part in rest:
        _refuse_distance_inside(part)
    if not rest:
        return None, bound
    combined = rest[0]
    for part in rest[1:]:
        combined = exp.And(this=combined, expression=part)
    return to_filter(combined, album), bound


def _conjuncts(node: exp.Expr) -> list[exp.Expr]:
    if isinstance(node, exp.And):
        return [*_conjuncts(node.this), *_conjuncts(node.expression)]
    if isinstance(node, exp.Paren) and isinstance(node.this, exp.And):
        return _conjuncts(node.this)
    return [node]


def _is_distance(node: exp.Expr) -> bool:
    inner = node.this if isinstance(node, exp.Paren) else node
    return (isinstance(inner, exp.Column) and _name(inner) == "distance" and not inner.table) or \
        type(inner) in DISTANCE_OPERATORS or \
        (isinstance(inner, exp.Anonymous) and str(inner.this).lower() in DISTANCE_FUNCTIONS)


def _distance_bound(node: exp.Expr, vector: VectorOrder | None) -> float | None:
    """`distance < x` (or the ORDER BY's distance expression < x) as the largest cosine distance."""
    if not isinstance(node, exp.LT | exp.LTE | exp.GT | exp.GTE):
        return None
    left, right = node.this, node.expression
    upper = isinstance(node, exp.LT | exp.LTE)
    if _is_distance(right) and not _is_distance(left):
        left, right, upper = right, left, not upper
    if not _is_distance(left):
        return None
    if vector is None:
        raise SqlError(f"{at(node)}a distance bound needs ORDER BY feature <-> image(...)")
    if not isinstance(left, exp.Column) and left.sql(dialect="postgres") != vector.sql:
        raise SqlError(f"{at(node)}bound the distance the statement orders by ({vector.shown}), or write distance")
    value = literal(right)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise SqlError(f"{at(right)}a distance is bounded by a number")
    if upper == (vector.metric == "inner_product"):
        bound = "inner_product(...) > x" if vector.metric == "inner_product" else "distance < x"
        raise SqlError(f"{at(node)}a distance takes a bound on the far side only: {bound}")
    return cosine_distance(vector.metric, float(value))


def _refuse_distance_inside(node: exp.Expr) -> None:
    for child in node.walk():
        if isinstance(child, exp.Expr) and _is_distance(child):
            raise SqlError(f"{at(child)}a distance bound must be ANDed with the rest of WHERE, as in "
                           "WHERE price < 50 AND distance < 0.3")


def cosine_distance(metric: str, value: float) -> float:
    """A distance in a metric as cosine distance (vectors are unit length)."""
    if metric == "l2":
        return value * value / 2
    if metric == "negative_inner_product":
        return value + 1
    if metric == "inner_product":
        return 1 - value
    return value


def in_metric(metric: str, cosine: float) -> float:
    """A cosine distance in another metric (the inverse of `cosine_distance`)."""
    if metric == "l2":
        return float(max(2 * cosine, 0.0) ** 0.5)
    if metric == "negative_inner_product":
        return cosine - 1
    if metric == "inner_product":
        return 1 - cosine
    return cosine


def _output(item: exp.Expr, album: str, vector: VectorOrder | None) -> Output:
    label = str(item.alias) if isinstance(item, exp.Alias) else ""
    node = item.this if isinstance(item, exp.Alias) else item
    if isinstance(node, exp.Star):
        return Output(label or "*", "star")
    if isinstance(node, exp.Count):
        if not isinstance(node.this, exp.Star):
            raise SqlError(f"{at(node)}count(*) is the count supported")
        return Output(label or "count", "count")
    distance = _distance_node(node) if not isinstance(node, exp.Column) else None
    if distance is not None:
        if vector is None or node.sql(dialect="postgres") != vector.sql:
            ordered = vector.shown if vector else "ORDER BY feature <-> image(...)"
            raise SqlError(f"{at(node)}select the distance the statement orders by ({ordered})")
        return Output(label or "distance", "distance")
    name = column_name(node, album)
    if name in ("distance", "matches"):
        return Output(label or name, name)
    if name == "attributes":
        return Output(label or name, "attributes")
    if name.startswith(ATTRIBUTES_PREFIX):
        return Output(label or name.removeprefix(ATTRIBUTES_PREFIX), "attribute", name.removeprefix(ATTRIBUTES_PREFIX))
    return Output(label or name, "column", name)


# --- UPDATE / DELETE --------------------------------------------------------------------------------


def _update(node: exp.Update) -> Statement:
    _no_extras(node, {"this", "expressions", "where"})
    album = _table(node.this)
    changes: dict[str, Any] = {}
    for assignment in node.expressions:
        if not isinstance(assignment, exp.EQ) or not isinstance(assignment.this, exp.Column):
            raise SqlError(f"{at(assignment)}SET takes column = value")
        key = column_name(assignment.this, album)
        if key in changes:
            raise SqlError(f"{at(assignment)}{key} is set twice")
        changes[key] = literal(assignment.expression)
    where = node.args.get("where")
    return Update(album, changes, to_filter(where.this, album) if where is not None else None)


def _delete(node: exp.Delete) -> Statement:
    _no_extras(node, {"this", "where", "using", "cluster"})
    if node.args.get("using"):
        raise SqlError("DELETE ... USING is not supported")
    album = _table(node.this)
    where = node.args.get("where")
    return Delete(album, to_filter(where.this, album) if where is not None else None)


_PARSERS: dict[type[exp.Expr], Any] = {
    exp.Create: _create,
    exp.Drop: _drop,
    exp.Insert: _insert,
    exp.Select: _select,
    exp.Update: _update,
    exp.Delete: _delete,
}
