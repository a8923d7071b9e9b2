"""SQL statements run as the use cases the API calls: for each kind of statement, the statement and its API
call give the same answer (over the real search service in process), and bad statements change nothing."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from services.common.errors import (
    AlbumNotFound,
    ImageSearchError,
    InvalidArgument,
    InvalidAttributes,
    InvalidFilter,
    UrlFetchFailed,
)
from services.common.schema import AlbumSchema, ColumnType
from services.gateway.records import ImageFilter, Listing, NewImage, Query, SearchMode
from services.gateway.sql.dialect import SqlError
from services.gateway.usecases import albums, images, ingest, search, sql
from tests.gateway.conftest import MakeFakes
from tests.gateway.fakes import Fakes, png

pytestmark = pytest.mark.anyio

SHOES = "CREATE TABLE shoes (price DOUBLE, colour VARCHAR, sizes VARCHAR[], in_stock BOOLEAN, listed_at TIMESTAMP)"
ROWS: list[dict[str, Any]] = [
    {"price": 30.0, "colour": "red", "sizes": ["41", "42"], "in_stock": True, "listed_at": "2023-06-01"},
    {"price": 45.5, "colour": "blue", "sizes": ["42"], "in_stock": True, "listed_at": "2024-03-01"},
    {"price": 60.0, "colour": "red", "sizes": ["43"], "in_stock": True, "listed_at": "2024-05-01"},
    {"price": 20.0, "colour": "green", "sizes": [], "in_stock": False, "listed_at": "2023-01-01"},
    {"price": None, "colour": "blue", "sizes": ["42"], "in_stock": True, "listed_at": None, "note": "x"},
    {"price": 49.0, "colour": None, "sizes": ["40"], "in_stock": None, "listed_at": "2024-07-01"},
]


@pytest.fixture()
async def shop(make_fakes: MakeFakes) -> Fakes:
    fakes = make_fakes(max_top_k=50)
    await sql.execute(fakes.deps, SHOES)
    new = [NewImage(png(i), name=f"s{i}.png", attributes=row) for i, row in enumerate(ROWS)]
    results = await ingest.add_images(fakes.deps, "shoes", new)
    assert all(r.status.value == "added" for r in results)
    return fakes


def ids(rows: Any) -> list[str]:
    return [r.image.id for r in rows]


# --- each kind of statement equals its API call --------------------------------------------------------


async def test_create_table_is_create_album_with_typed_columns(shop: Fakes) -> None:
    album = await albums.get(shop.deps, "shoes")
    assert [(c.name, c.type) for c in album.schema.columns] == [
        ("price", ColumnType.FLOAT), ("colour", ColumnType.STRING), ("sizes", ColumnType.STRING_LIST),
        ("in_stock", ColumnType.BOOL), ("listed_at", ColumnType.TIMESTAMP)]
    via_api = await albums.create(shop.deps, "shoes2", AlbumSchema.of(album.schema.columns))
    assert via_api.schema == album.schema
    again = await sql.execute(shop.deps, SHOES.replace("CREATE TABLE", "CREATE TABLE IF NOT EXISTS"))
    assert again.affected == 0


async def test_create_table_with_details_makes_an_album_that_keeps_a_keypoint_index(shop: Fakes) -> None:
    await sql.execute(shop.deps, "CREATE TABLE parts (price DOUBLE) WITH (details = true, faces = false)")
    made = await albums.get(shop.deps, "parts")
    assert (made.details, made.face_model, made.schema.names) == (True, "", ["price"])
    assert not (await albums.get(shop.deps, "shoes")).details


async def test_a_vector_select_is_the_search_call(shop: Fakes) -> None:
    statement = ("SELECT name, price, distance FROM shoes WHERE price < 50 AND colour IN ('red', 'blue') AND in_stock "
                 "ORDER BY feature <=> image('query.jpg') LIMIT 10")
    result = await sql.execute(shop.deps, statement, {"query.jpg": png(1)})
    outcome = await search.search(shop.deps, "shoes", Query(image=png(1)), 10,
                                  ImageFilter(where="price < 50 and colour in ('red', 'blue') and in_stock"))
    assert ids(result.rows) == [h.image.id for h in outcome.hits] and len(result.rows) == 2
    assert [r.values for r in result.rows] == [(h.image.name, h.image.attributes["price"], h.distance)
                                               for h in outcome.hits]
    assert result.columns == ("name", "price", "distance")


async def test_the_distance_operators_give_l2_cosine_and_negative_inner_product(shop: Fakes) -> None:
    def query(op: str) -> str:
        return f"SELECT distance FROM shoes ORDER BY feature {op} image(image_id => '{first}') LIMIT 3"

    first = (await images.list_images(shop.deps, "shoes"))[0].id
    cosine = [r.values[0] for r in (await sql.execute(shop.deps, query("<=>"))).rows]
    l2 = [r.values[0] for r in (await sql.execute(shop.deps, query("<->"))).rows]
    negative = [r.values[0] for r in (await sql.execute(shop.deps, query("<#>"))).rows]
    assert l2 == pytest.approx([(2 * d) ** 0.5 for d in cosine])
    assert negative == pytest.approx([d - 1 for d in cosine])
    function = await sql.execute(shop.deps, f"SELECT distance FROM shoes ORDER BY l2_distance(feature, "
                                            f"image(image_id => '{first}')) LIMIT 3")
    assert [r.values[0] for r in function.rows] == pytest.approx(l2)


async def test_a_distance_bound_is_max_distance_in_the_operators_metric(shop: Fakes) -> None:
    base = "SELECT id, distance FROM shoes {} ORDER BY feature {} image('q.png') LIMIT 10"
    everything = await sql.execute(shop.deps, base.format("", "<=>"), {"q.png": png(2)})
    cut = sorted(r.values[1] for r in everything.rows)[2]
    bounded = await sql.execute(shop.deps, base.format(f"WHERE distance <= {cut}", "<=>"), {"q.png": png(2)})
    via_api = await search.search(shop.deps, "shoes", Query(image=png(2)), 10, max_distance=cut)
    assert ids(bounded.rows) == [h.image.id for h in via_api.hits] and len(bounded.rows) == 3
    as_l2 = await sql.execute(shop.deps, base.format(f"WHERE distance <= {(2 * cut) ** 0.5 + 1e-9}", "<->"),
                              {"q.png": png(2)})
    assert ids(as_l2.rows) == ids(bounded.rows)


async def test_similar_mode_and_offset_pass_through(shop: Fakes) -> None:
    first = (await images.list_images(shop.deps, "shoes"))[0].id
    result = await sql.execute(shop.deps, f"SELECT id FROM shoes ORDER BY feature <-> image(image_id => '{first}', "
                                          "mode => 'similar') LIMIT 2 OFFSET 1")
    assert shop.search.last_search["primary_only"] is True
    outcome = await search.search(shop.deps, "shoes", Query(image_id=first), 3, mode=SearchMode.SIMILAR.value)
    assert ids(result.rows) == [h.image.id for h in outcome.hits][1:3]


async def test_a_column_select_is_the_list_call(shop: Fakes) -> None:
    result = await sql.execute(shop.deps, "SELECT * FROM shoes WHERE colour = 'red' OR price IS NULL "
                                          "ORDER BY price DESC LIMIT 5")
    listed = await images.list_images(shop.deps, "shoes", Listing(
        filter=ImageFilter(json='{"colour": "red"}'), limit=5, order_by="price", descending=True))
    null_price = await images.list_images(shop.deps, "shoes", Listing(filter=ImageFilter(where="price is null")))
    assert ids(result.rows) == [null_price[0].id, *(r.id for r in listed)]  # nulls first when descending
    # NULLS LAST said: the dearest first (before, the clause was left unread), as the listing's nulls_first (through
    # the search service's gRPC); NULLS FIRST ascending likewise.
    last = await sql.execute(shop.deps, "SELECT id FROM shoes WHERE colour = 'red' OR price IS NULL "
                                        "ORDER BY price DESC NULLS LAST LIMIT 6")
    assert ids(last.rows) == [*(r.id for r in listed), null_price[0].id]
    first = await sql.execute(shop.deps, "SELECT id FROM shoes WHERE price IS NULL OR colour = 'red' "
                                         "ORDER BY price NULLS FIRST LIMIT 2")
    assert ids(first.rows) == [null_price[0].id, *(r.id for r in reversed(listed))][:2]
    assert result.columns == ("id", "name", "created_at", "price", "colour", "sizes", "in_stock", "listed_at",
                              "attributes")
    assert result.rows[0].values[-1] == {"note": "x"}
    assert result.rows[1].values[3:6] == (60.0, "red", ["43"])


async def test_count_and_group_by_are_the_count_and_group_calls(shop: Fakes) -> None:
    counted = await sql.execute(shop.deps, "SELECT count(*) FROM shoes WHERE '42' = ANY(sizes)")
    same = await images.count(shop.deps, "shoes", ImageFilter(where="contains(sizes, '42')"))
    assert counted.rows[0].values == (same,)
    assert counted.rows[0].values == (3,)
    grouped = await sql.execute(shop.deps, "SELECT colour, count(*) AS n FROM shoes GROUP BY colour")
    groups = await images.count_groups(shop.deps, "shoes", ["colour"])
    assert [r.values for r in grouped.rows] == [(g.key[0], g.count) for g in groups]
    assert grouped.rows[0].values in (("red", 2), ("blue", 2)) and grouped.columns == ("colour", "n")
    # LIMIT and OFFSET take the groups, most first, as they take rows (before, every group came back).
    first = await sql.execute(shop.deps, "SELECT colour, count(*) FROM shoes GROUP BY colour LIMIT 2")
    later = await sql.execute(shop.deps, "SELECT colour, count(*) FROM shoes GROUP BY colour LIMIT 5 OFFSET 1")
    assert [r.values for r in first.rows] == [r.values for r in grouped.rows[:2]]
    assert [r.values for r in later.rows] == [r.values for r in grouped.rows[1:6]] and len(grouped.rows) > 2
    assert (await sql.execute(shop.deps, "SELECT count(*) FROM shoes OFFSET 1")).rows == ()


async def test_insert_is_add_images_with_typed_values(shop: Fakes) -> None:
    shop.fetcher.pages["https://shop.example/b.png"] = png(20)
    result = await sql.execute(shop.deps, "INSERT INTO shoes (name, image, price, sizes, listed_at) VALUES "
                                          "('a.png', image('a.png'), 39.5, ARRAY['42'], TIMESTAMP '2024-02-01'), "
                                          "(NULL, image('https://shop.example/b.png'), 12, ARRAY[], NULL)",
                               {"a.png": png(10)})
    assert result.affected == 2 and [r.values[2] for r in result.rows] == ["added", "added"]
    got = await images.get_image(shop.deps, "shoes", result.rows[0].values[0])
    assert got.attributes["price"] == 39.5 and got.attributes["listed_at"] == datetime(2024, 2, 1, tzinfo=UTC)
    second = await images.get_image(shop.deps, "shoes", result.rows[1].values[0])
    assert second.name == "b.png" and second.attributes["price"] == 12.0
    via_api = await ingest.add_images(shop.deps, "shoes", [NewImage(png(10), name="a.png")])
    assert via_api[0].status.value == "duplicate" and via_api[0].id == result.rows[0].values[0]


async def test_a_failed_insert_changes_nothing(shop: Fakes) -> None:
    before = await images.count(shop.deps, "shoes")
    bad_rows = [
        ("(image('a.png'), 1), (image('b.png'), 'cheap')", InvalidAttributes),
        ("(image('a.png'), 1), (image('missing.png'), 2)", InvalidArgument),
        ("(image('a.png'), 1), (image('https://nowhere.example/x.png'), 2)", UrlFetchFailed),
        ("(image('a.png'), 1), (image('junk'), 2)", ImageSearchError),
    ]
    for rows, error in bad_rows:
        with pytest.raises(error):
            await sql.execute(shop.deps, f"INSERT INTO shoes (image, price) VALUES {rows}",
                              {"a.png": png(30), "b.png": png(31), "junk": b"not an image"})
    assert await images.count(shop.deps, "shoes") == before


async def test_update_is_update_images_and_keeps_vectors(shop: Fakes) -> None:
    target = (await images.list_images(shop.deps, "shoes", Listing(filter=ImageFilter(where="colour = 'green'"))))[0]
    before = (await shop.search.get("shoes", [target.id], with_vectors=True))[0]
    result = await sql.execute(shop.deps, f"UPDATE shoes SET price = 39.5, attributes.note = 'sale' "
                                          f"WHERE name = '{target.name}'")
    assert result.affected == 1
    after = (await shop.search.get("shoes", [target.id], with_vectors=True))[0]
    assert after.vectors == before.vectors
    assert after.attributes["price"] == 39.5 and after.attributes["note"] == "sale"
    via_api = await images.update_images(shop.deps, "shoes", {"price": 40.0}, ImageFilter(where="colour = 'green'"))
    assert via_api == 1
    assert (await images.get_image(shop.deps, "shoes", target.id)).attributes["price"] == 40.0


async def test_delete_is_delete_images_and_removes_blobs(shop: Fakes) -> None:
    keys_before = len(shop.blobs.objects)
    result = await sql.execute(shop.deps, "DELETE FROM shoes WHERE listed_at < TIMESTAMP '2024-01-01'")
    assert result.affected == 2
    assert await images.count(shop.deps, "shoes") == len(ROWS) - 2
    assert len(shop.blobs.objects) == keys_before - 2 * 2  # each image's bytes and local features
    via_api = await images.delete_images(shop.deps, "shoes", ImageFilter(where="listed_at < '2024-04-01'"))
    assert via_api == 1


async def test_a_delete_without_where_needs_to_be_asked_for(shop: Fakes) -> None:
    with pytest.raises(InvalidArgument, match="explicitly"):
        await sql.execute(shop.deps, "DELETE FROM shoes")
    assert await images.count(shop.deps, "shoes") == len(ROWS)
    assert (await sql.execute(shop.deps, "DELETE FROM shoes WHERE TRUE")).affected == len(ROWS)
    await ingest.add_images(shop.deps, "shoes", [NewImage(png(40))])
    assert (await sql.execute(shop.deps, "DELETE FROM shoes", delete_all=True)).affected == 1
    assert shop.blobs.objects == {}


async def test_drop_table_is_delete_album(shop: Fakes) -> None:
    assert (await sql.execute(shop.deps, "DROP TABLE shoes")).affected == 1
    with pytest.raises(AlbumNotFound):
        await albums.get(shop.deps, "shoes")
    assert (await sql.execute(shop.deps, "DROP TABLE IF EXISTS shoes")).affected == 0
    with pytest.raises(AlbumNotFound):
        await sql.execute(shop.deps, "DROP TABLE shoes")


# --- bad statements --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("statement", "error", "words"),
    [
        ("SELEC * FROM shoes", SqlError, "SELEC"),
        ("SELECT * FROM shoes WHERE price < AND colour = 'x'", SqlError, "position 35 near 'AND'"),
        ("SELECT * FROM shoes; DROP TABLE shoes", SqlError, "one statement"),
        ("SELECT * FROM shoes WHERE prcie < 50", InvalidFilter, "no column 'prcie'"),
        ("SELECT prcie FROM shoes", InvalidFilter, "no column 'prcie'"),
        ("SELECT * FROM shoes WHERE price < 'cheap'", InvalidFilter, "float column"),
        ("SELECT * FROM shoes WHERE colour = 'x' OR 1 = 1", SqlError, "compare a column"),
        ("SELECT * FROM shoes WHERE colour = 'x'' OR ''1''=''1'", None, ""),
        ('SELECT * FROM "shoes""; DROP TABLE x"', InvalidArgument, "album name"),
        ("SELECT * FROM nope", AlbumNotFound, "nope"),
        ("SELECT * FROM shoes a JOIN shoes b ON a.id = b.id", SqlError, "JOIN"),
        ("SELECT * FROM shoes WHERE id IN (SELECT id FROM shoes)", SqlError, "subqueries"),
        ("SELECT colour, price FROM shoes GROUP BY colour", SqlError, "GROUP BY"),
        ("UPDATE shoes SET price = 'cheap' WHERE colour = 'red'", InvalidAttributes, "price"),
        ("UPDATE shoes SET id = 'x'", InvalidArgument, "set by the system"),
        ("INSERT INTO shoes (name) VALUES ('a')", SqlError, "image column"),
        ("CREATE INDEX i ON shoes (price)", SqlError, "CREATE TABLE"),
        ("CREATE TABLE more (price DOUBLE) WITH (fillfactor = 70)", SqlError, "WITH (faces = true, details = true)"),
        ("CREATE TABLE more WITH (details = 'yes')", SqlError, "true or false"),
        ("SELECT * FROM shoes WHERE colour IN (" + ", ".join(f"'{i}'" for i in range(1100)) + ")", InvalidFilter,
         "1024"),
        ("SELECT * FROM shoes WHERE " + " OR ".join(f"price = {i}" for i in range(300)), InvalidFilter, "256"),
        ("SELECT * FROM shoes WHERE name = '" + "x" * 100_000 + "'", SqlError, "100000"),
        ("TRUNCATE shoes", SqlError, "starts with SELECT"),
        ("SELECT * FROM shoes a JOIN shoes b ON a.id = b.id", SqlError, "JOIN is not supported: a statement reads one"),
        ("SELECT * FROM shoes WHERE name LIKE 'red_shoe%'", SqlError,
         "'_' matches any one character in SQL; for the underscore itself write 'red\\_shoe%'"),
    ],
)
async def test_bad_statements_are_refused_and_change_nothing(shop: Fakes, statement: str,
                                                             error: type[Exception] | None, words: str) -> None:
    before = {i.id: i for i in await images.list_images(shop.deps, "shoes")}
    if error is None:
        assert (await sql.execute(shop.deps, statement)).rows == ()  # a quoted quote is part of the value
    else:
        with pytest.raises(error) as caught:
            await sql.execute(shop.deps, statement)
        assert words in str(caught.value)
    after = {i.id: i for i in await images.list_images(shop.deps, "shoes")}
    assert after == before
    assert (await albums.get(shop.deps, "shoes")).schema.names[0] == "price"


async def test_a_failed_update_changes_nothing(shop: Fakes) -> None:
    before = {i.id: i for i in await images.list_images(shop.deps, "shoes")}
    with pytest.raises(InvalidAttributes):
        await sql.execute(shop.deps, "UPDATE shoes SET colour = 'x', price = ARRAY['1']")
    assert {i.id: i for i in await images.list_images(shop.deps, "shoes")} == before


async def test_an_album_without_columns_reads_bare_names_as_attributes(make_fakes: MakeFakes) -> None:
    fakes = make_fakes()
    await albums.create(fakes.deps, "demo")
    await ingest.add_images(fakes.deps, "demo", [NewImage(png(1), attributes={"kind": "photo"}),
                                                 NewImage(png(2), attributes={"kind": "scan"})])
    result = await sql.execute(fakes.deps, "SELECT name, kind FROM demo WHERE kind = 'photo'")
    assert [r.values[1] for r in result.rows] == ["photo"]
    assert (await sql.execute(fakes.deps, "UPDATE demo SET kind = 'x' WHERE kind = 'scan'")).affected == 1

