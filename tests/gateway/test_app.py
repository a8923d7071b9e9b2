"""The HTTP routes over in-memory fakes: status codes, JSON shapes, error bodies, request ids."""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator

import httpx
import pytest
from redis.asyncio import Redis

from services.common.errors import SearchUnavailable
from services.gateway.app import create_app
from services.gateway.import_queue import ImportQueue
from services.gateway.usecases import albums
from tests.gateway.conftest import MakeFakes
from tests.gateway.fakes import Fakes, png

pytestmark = pytest.mark.anyio


async def _ok() -> None:
    return None


async def _down() -> None:
    raise SearchUnavailable("search service is unavailable")


@pytest.fixture()
async def fakes(make_fakes: MakeFakes) -> Fakes:
    f = make_fakes(max_image_bytes=100_000, max_images_per_request=4)
    await albums.create(f.deps, "demo")
    return f


@pytest.fixture()
async def client(fakes: Fakes) -> AsyncIterator[httpx.AsyncClient]:
    # Nothing listens on port 1: the import routes are not under test here.
    queue = ImportQueue(Redis(port=1, socket_connect_timeout=0.2))
    app = create_app(fakes.settings, fakes.deps, queue, {"search": _down, "extractor": _ok})
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://gw") as c:
        yield c


def files(*contents: bytes) -> list[tuple[str, tuple[str, bytes, str]]]:
    return [("file", (f"f{i}.png", c, "image/png")) for i, c in enumerate(contents)]


async def test_create_and_get_album(client: httpx.AsyncClient) -> None:
    created = await client.post("/v1/albums", json={"name": "cats"})
    assert created.status_code == 201
    assert created.json()["name"] == "cats" and created.json()["metric"] == "cosine"
    assert (await client.get("/v1/albums/cats")).json()["image_count"] == 0
    names = [a["name"] for a in (await client.get("/v1/albums")).json()["albums"]]
    assert names == ["cats", "demo"]


async def test_errors_carry_reason_message_and_request_id(client: httpx.AsyncClient) -> None:
    response = await client.get("/v1/albums/nope", headers={"X-Request-ID": "req-123"})
    assert response.status_code == 404
    assert response.headers["x-request-id"] == "req-123"
    assert response.json()["error"] == {"reason": "album_not_found", "message": "album 'nope' does not exist",
                                        "request_id": "req-123"}
    assert (await client.post("/v1/albums", json={"name": "demo"})).status_code == 409
    assert (await client.post("/v1/albums", json={"name": "Bad Name"})).json()["error"]["reason"] == "invalid_argument"


async def test_validation_errors_use_the_error_shape(client: httpx.AsyncClient) -> None:
    response = await client.post("/v1/albums", json={})
    assert response.status_code == 422
    assert response.json()["error"]["reason"] == "invalid_argument"
    assert "name" in response.json()["error"]["message"]
    assert response.headers["x-request-id"]
    # A field the body does not have is named (before, a misspelt one was left unread: the album made without it);
    # a body that is not JSON is said to be so.
    misspelt = await client.post("/v1/albums", json={"name": "x", "colums": [{"name": "price", "type": "float"}]})
    assert (misspelt.status_code, misspelt.json()["error"]["message"]) == (422, "colums: not a field of this request")
    column = await client.post("/v1/albums", json={"name": "x", "columns": [{"name": "p", "type": "float", "n": 1}]})
    assert column.json()["error"]["message"] == "columns.0.n: not a field of this request"
    broken = await client.post("/v1/albums", content=b'{"name": ', headers={"content-type": "application/json"})
    assert broken.status_code == 422
    assert broken.json()["error"]["message"].startswith("the body is not JSON (")
    assert (await client.get("/v1/albums/x")).status_code == 404
    # The routes that read their own JSON body say the same.
    for path, body in (("/v1/sql", b'{"statement": '), ("/v1/albums/x/imports", b'{"urls": [')):
        cut = await client.post(path, content=body, headers={"content-type": "application/json"})
        assert cut.status_code == 400 and ": the body is not JSON (EOF while parsing" in \
            cut.json()["error"]["message"] and "character request" not in cut.json()["error"]["message"], cut.text
    misnamed = await client.post("/v1/sql", json={"statement": "DELETE FROM x", "delete-all": True})
    assert misnamed.json()["error"]["message"].endswith("or a multipart form: delete-all: not a field of this request")


async def test_add_images_answers_201_207_or_422(client: httpx.AsyncClient) -> None:
    ok = await client.post("/v1/albums/demo/images", files=files(png(1), png(2)),
                           data={"name": ["one", "two"], "attributes": '{"k": "v"}'})
    assert ok.status_code == 201, ok.text
    body = ok.json()
    assert (body["added"], body["duplicates"], body["failed"]) == (2, 0, 0)
    assert [r["name"] for r in body["results"]] == ["one", "two"]
    mixed = await client.post("/v1/albums/demo/images", files=files(png(1), b"junk", png(3)))
    assert mixed.status_code == 207
    statuses = [(r["index"], r["status"]) for r in mixed.json()["results"]]
    assert statuses == [(0, "duplicate"), (1, "failed"), (2, "added")]
    assert mixed.json()["results"][1]["error"]["reason"] == "invalid_image"
    bad = await client.post("/v1/albums/demo/images", files=files(b"junk"))
    assert bad.status_code == 422
    image = (await client.get(f"/v1/albums/demo/images/{body['results'][0]['id']}")).json()
    assert image["attributes"] == {"k": "v"}


async def test_a_single_file_over_the_byte_limit_is_413(client: httpx.AsyncClient) -> None:
    response = await client.post("/v1/albums/demo/images", files=files(b"x" * 100_001))
    assert response.status_code == 413
    assert response.json()["results"][0]["error"]["reason"] == "image_too_large"


async def test_an_upload_over_the_request_limit_is_refused_before_reading(client: httpx.AsyncClient) -> None:
    response = await client.post("/v1/albums/demo/search", files=files(b"x" * 1_200_000))
    assert response.status_code == 413
    assert response.json()["error"]["reason"] == "image_too_large"


async def test_too_many_files_is_invalid_argument(client: httpx.AsyncClient) -> None:
    response = await client.post("/v1/albums/demo/images", files=files(*(png(i) for i in range(5))))
    assert response.status_code == 400


async def test_search_by_upload_returns_results_with_urls(client: httpx.AsyncClient) -> None:
    await client.post("/v1/albums/demo/images", files=files(png(1), png(2)), data={"name": ["one", "two"]})
    response = await client.post("/v1/albums/demo/search?top_k=1", files=files(png(2)))
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["album"], body["metric"]) == ("demo", "cosine")
    assert [r["name"] for r in body["results"]] == ["two"]
    hit = body["results"][0]
    assert hit["url"].endswith("/content") and hit["thumbnail_url"].endswith("/thumbnail")
    content = await client.get(hit["url"])
    assert content.content == png(2) and content.headers["content-type"] == "image/png"
    thumb = await client.get(hit["thumbnail_url"], params={"size": 64})
    assert thumb.headers["content-type"] == "image/jpeg"


async def test_search_by_image_id_as_a_form_field(client: httpx.AsyncClient) -> None:
    added = (await client.post("/v1/albums/demo/images", files=files(png(1), png(2)))).json()
    response = await client.post("/v1/albums/demo/search", data={"image_id": added["results"][0]["id"]})
    assert [r["id"] for r in response.json()["results"]] == [added["results"][1]["id"]]


async def test_search_mode_as_a_query_parameter_or_a_form_field(client: httpx.AsyncClient, fakes: Fakes) -> None:
    await client.post("/v1/albums/demo/search", files=files(png(1)))
    assert fakes.search.last_search["primary_only"] is False
    await client.post("/v1/albums/demo/search", params={"mode": "similar"}, files=files(png(1)))
    assert (fakes.search.last_search["primary_only"], fakes.search.last_search["expand_k"]) == (True, 3)
    await client.post("/v1/albums/demo/search", files=files(png(1)), data={"mode": "copy"})
    assert fakes.search.last_search["primary_only"] is False
    await client.post("/v1/albums/demo/search", files=files(png(1)), data={"mode": "similar"})
    assert fakes.search.last_search["primary_only"] is True


@pytest.mark.parametrize(("params", "status", "reason"), [
    ({"mode": "bogus"}, 400, "invalid_argument"),
    ({"top_k": 0}, 400, "invalid_argument"),
    ({"top_k": 100000}, 400, "invalid_argument"),
    ({"top_k": "many"}, 422, "invalid_argument"),
    ({"filter": "{oops"}, 422, "invalid_filter"),
])
async def test_bad_search_parameters(client: httpx.AsyncClient, params: dict[str, object], status: int,
                                     reason: str) -> None:
    response = await client.post("/v1/albums/demo/search", params=params, files=files(png(1)))
    assert (response.status_code, response.json()["error"]["reason"]) == (status, reason)


async def test_search_without_a_query_is_invalid_argument(client: httpx.AsyncClient) -> None:
    response = await client.post("/v1/albums/demo/search")
    assert response.status_code == 400
    both = await client.post("/v1/albums/demo/search", files=files(png(1)), data={"url": "http://x/y.png"})
    assert both.status_code == 400


async def test_delete_image_then_it_is_gone(client: httpx.AsyncClient) -> None:
    added = (await client.post("/v1/albums/demo/images", files=files(png(1)))).json()
    image_id = added["results"][0]["id"]
    assert (await client.delete(f"/v1/albums/demo/images/{image_id}")).json() == {"deleted": True}
    assert (await client.get(f"/v1/albums/demo/images/{image_id}")).status_code == 404
    assert (await client.get("/v1/albums/demo/images")).json()["images"] == []


async def test_readyz_names_the_dependency_that_is_down(client: httpx.AsyncClient) -> None:
    response = await client.get("/readyz")
    assert response.status_code == 503
    assert response.json()["checks"] == {"search": "search_unavailable: search service is unavailable",
                                         "extractor": "ok"}
    assert (await client.get("/healthz")).status_code == 200


async def test_metrics_count_requests_by_route_template(client: httpx.AsyncClient) -> None:
    await client.get("/v1/albums/demo")
    text = (await client.get("/metrics")).text
    assert 'method="GET /v1/albums/{album}"' in text


async def test_openapi_document_and_web_page_are_served(client: httpx.AsyncClient) -> None:
    doc = (await client.get("/openapi.json")).json()
    assert "/v1/albums/{album}/search" in doc["paths"]
    parameters = doc["paths"]["/v1/albums/{album}/search"]["post"]["parameters"]
    mode = next(p for p in parameters if p["name"] == "mode")
    assert mode["in"] == "query" and mode["schema"]["enum"] == ["copy", "similar"] and "similar" in mode["description"]
    page = await client.get("/")
    assert page.status_code == 200 and "<html" in page.text.lower()
    # Its scripts and style sheet, each there, asked again by the browser each time (no stale script after an
    # upgrade); a file that is not there is the API's JSON 404.
    parts = re.findall(r'(?:src|href)="(/web/[^"]+)"', page.text)
    assert {"/web/page.css", "/web/common.js", "/web/jobs.js"} <= set(parts)
    for part in parts:
        served = await client.get(part)
        assert served.status_code == 200 and served.headers["cache-control"] == "no-cache", part
        assert served.headers["content-type"].startswith("text/css" if part.endswith(".css") else "text/javascript")
    assert '<link rel="icon" href="data:image/svg+xml,' in page.text  # its icon inline: no /favicon.ico asked
    missing = await client.get("/web/nothere.js")
    assert missing.status_code == 404 and missing.json()["error"]["reason"] == "not_found"


async def test_unknown_route_is_a_json_404(client: httpx.AsyncClient) -> None:
    response = await client.get("/v2/nothing")
    assert response.status_code == 404
    assert json.loads(response.text)["error"]["reason"] == "not_found"


# --- typed albums, filters, updates, SQL over HTTP ---------------------------------------------------

SHOE_COLUMNS = [{"name": "price", "type": "float"}, {"name": "colour", "type": "string"},
                {"name": "sizes", "type": "string_list"}, {"name": "listed_at", "type": "timestamp"}]


async def _shop(client: httpx.AsyncClient) -> list[str]:
    created = await client.post("/v1/albums", json={"name": "shoes", "columns": SHOE_COLUMNS})
    assert created.status_code == 201, created.text
    assert created.json()["columns"] == SHOE_COLUMNS
    rows = [{"price": 30, "colour": "red", "sizes": ["41"], "listed_at": "2024-01-02T03:04:05Z"},
            {"price": 45.5, "colour": "blue", "sizes": ["42"]}, {"colour": "red", "kind": "promo"}]
    added = await client.post("/v1/albums/shoes/images", files=files(png(1), png(2), png(3)),
                              data={"attributes": [json.dumps(r) for r in rows]})
    assert added.status_code == 201, added.text
    return [r["id"] for r in added.json()["results"]]


async def test_a_typed_album_shows_its_columns_and_typed_values(client: httpx.AsyncClient) -> None:
    ids = await _shop(client)
    assert (await client.get("/v1/albums/shoes")).json()["columns"] == SHOE_COLUMNS
    first = (await client.get(f"/v1/albums/shoes/images/{ids[0]}")).json()
    assert first["attributes"] == {"price": 30.0, "colour": "red", "sizes": ["41"],
                                   "listed_at": "2024-01-02T03:04:05Z"}
    third = (await client.get(f"/v1/albums/shoes/images/{ids[2]}")).json()
    assert third["attributes"] == {"price": None, "colour": "red", "sizes": None, "listed_at": None, "kind": "promo"}


async def test_a_wrong_type_fails_that_image_naming_image_attribute_and_value(client: httpx.AsyncClient) -> None:
    await _shop(client)
    response = await client.post("/v1/albums/shoes/images", files=files(png(4), png(5)),
                                 data={"name": ["good.png", "bad.png"],
                                       "attributes": ['{"price": 3}', '{"price": "cheap"}']})
    assert response.status_code == 207
    failed = response.json()["results"][1]
    assert failed["error"]["reason"] == "invalid_attributes"
    assert all(word in failed["error"]["message"] for word in ("bad.png", "price", "cheap"))


async def test_list_count_and_group_with_a_where_filter(client: httpx.AsyncClient) -> None:
    await _shop(client)
    listed = await client.get("/v1/albums/shoes/images", params={"where": "colour = 'red'", "order_by": "price"})
    assert [i["attributes"]["price"] for i in listed.json()["images"]] == [30.0, None]
    count = await client.get("/v1/albums/shoes/images/count", params={"filter": '{"price": {"lt": 40}}'})
    assert count.json() == {"count": 1}
    groups = await client.get("/v1/albums/shoes/images/groups", params={"by": "colour"})
    assert groups.json() == {"columns": ["colour"], "groups": [{"key": ["red"], "count": 2},
                                                               {"key": ["blue"], "count": 1}]}
    bad = await client.get("/v1/albums/shoes/images", params={"where": "price <"})
    assert (bad.status_code, bad.json()["error"]["reason"]) == (422, "invalid_filter")
    assert "position" in bad.json()["error"]["message"]
    unknown = await client.get("/v1/albums/shoes/images/count", params={"where": "prcie < 3"})
    assert unknown.status_code == 422 and "prcie" in unknown.json()["error"]["message"]


async def test_search_takes_a_where_filter_and_a_max_distance(client: httpx.AsyncClient) -> None:
    ids = await _shop(client)
    found = await client.post("/v1/albums/shoes/search", params={"where": "colour = 'red'"}, files=files(png(2)))
    assert {r["id"] for r in found.json()["results"]} == {ids[0], ids[2]}
    exact = await client.post("/v1/albums/shoes/search", params={"max_distance": 0.0001}, files=files(png(2)))
    assert [r["id"] for r in exact.json()["results"]] == [ids[1]]
    negative = await client.post("/v1/albums/shoes/search", params={"max_distance": -1}, files=files(png(2)))
    assert negative.status_code == 400


async def test_patch_changes_attributes_without_re_embedding(client: httpx.AsyncClient, fakes: Fakes) -> None:
    ids = await _shop(client)
    calls = len(fakes.extractor.calls)
    one = await client.patch(f"/v1/albums/shoes/images/{ids[0]}", json={"attributes": {"price": 39.5, "x": 1}})
    assert one.status_code == 200 and one.json()["attributes"]["price"] == 39.5 and one.json()["attributes"]["x"] == 1
    many = await client.patch("/v1/albums/shoes/images", params={"where": "colour = 'red'"},
                              json={"attributes": {"colour": "crimson"}})
    assert many.json() == {"updated": 2}
    wrong = await client.patch("/v1/albums/shoes/images", params={"all": "true"}, json={"attributes": {"price": "x"}})
    assert wrong.status_code == 422 and wrong.json()["error"]["reason"] == "invalid_attributes"
    nowhere = await client.patch("/v1/albums/shoes/images", json={"attributes": {"price": 1}})
    assert nowhere.status_code == 400 and "explicitly" in nowhere.json()["error"]["message"]
    assert len(fakes.extractor.calls) == calls
    prices = {i["id"]: i["attributes"]["price"] for i in (await client.get("/v1/albums/shoes/images")).json()["images"]}
    assert prices == {ids[0]: 39.5, ids[1]: 45.5, ids[2]: None}


async def test_delete_by_filter_needs_a_filter_or_all(client: httpx.AsyncClient, fakes: Fakes) -> None:
    await _shop(client)
    refused = await client.delete("/v1/albums/shoes/images")
    assert refused.status_code == 400
    deleted = await client.delete("/v1/albums/shoes/images", params={"where": "price > 40"})
    assert deleted.json() == {"deleted": 1}
    assert (await client.delete("/v1/albums/shoes/images", params={"all": "true"})).json() == {"deleted": 2}
    assert not [k for k in fakes.blobs.objects if k.startswith("albums/shoes/")]


async def test_sql_over_json_and_multipart(client: httpx.AsyncClient) -> None:
    created = await client.post("/v1/sql", json={"statement": "CREATE TABLE hats (price DOUBLE, brand VARCHAR)"})
    assert created.status_code == 200 and created.json()["affected"] == 1
    insert = "INSERT INTO hats (name, image, price) VALUES ('a.png', image('a.png'), 10), ('b.png', image('b.png'), 20)"
    uploads = [("file", ("a.png", png(1), "image/png")), ("file", ("b.png", png(2), "image/png"))]
    inserted = await client.post("/v1/sql", data={"statement": insert}, files=uploads)
    assert inserted.status_code == 200, inserted.text
    assert inserted.json()["affected"] == 2
    nearest = "SELECT name, price, distance FROM hats WHERE price < 15 ORDER BY feature <-> image('q.png') LIMIT 5"
    query = [("file", ("q.png", png(1), "image/png"))]
    selected = await client.post("/v1/sql", data={"statement": nearest}, files=query)
    body = selected.json()
    assert body["columns"] == ["name", "price", "distance"]
    assert body["rows"][0]["values"][:2] == ["a.png", 10.0] and body["rows"][0]["image"]["thumbnail_url"]
    assert body["rows"][0]["values"][2] == pytest.approx(0, abs=1e-3)
    counted = await client.post("/v1/sql", json={"statement": "SELECT count(*) FROM hats"})
    assert counted.json()["rows"] == [{"values": [2], "image": None}]


@pytest.mark.parametrize(("body", "status", "reason"), [
    ({"statement": "SELEC 1"}, 400, "invalid_sql"),
    ({"statement": "SELECT * FROM demo; DROP TABLE demo"}, 400, "invalid_sql"),
    ({"statement": "SELECT * FROM nope"}, 404, "album_not_found"),
    ({"statement": "SELECT * FROM demo WHERE kind = 1 AND kind < 'x' AND x"}, 200, None),
    ({"statement": "DELETE FROM demo"}, 400, "invalid_argument"),
    ({"sql": "SELECT 1"}, 400, "invalid_argument"),
])
async def test_bad_sql_requests_get_the_right_status(client: httpx.AsyncClient, body: dict[str, str], status: int,
                                                      reason: str | None) -> None:
    response = await client.post("/v1/sql", json=body)
    assert response.status_code == status, response.text
    if reason:
        assert response.json()["error"]["reason"] == reason


async def test_a_name_ending_in_a_newline_is_refused_everywhere(client: httpx.AsyncClient) -> None:
    assert (await client.post("/v1/albums", json={"name": "demo\n"})).status_code == 400
    assert (await client.get("/v1/albums/demo%0A")).status_code == 400
    listed = [a["name"] for a in (await client.get("/v1/albums")).json()["albums"]]
    assert listed == ["demo"]
    filtered = await client.post("/v1/albums/demo/search", params={"filter": '{"kind\\n": 1}'}, files=files(png(1)))
    assert filtered.status_code == 422


async def test_huge_offsets_and_a_zero_thumbnail_are_refused_not_failed(client: httpx.AsyncClient) -> None:
    added = (await client.post("/v1/albums/demo/images", files=files(png(1)))).json()["results"][0]["id"]
    far = await client.get("/v1/albums/demo/images", params={"offset": 2147483648})
    assert far.status_code == 200 and far.json()["images"] == []  # (Milvus answers 400: page with `after`)
    for offset in (2**63, 10**30):
        response = await client.get("/v1/albums/demo/images", params={"offset": offset})
        assert response.status_code == 400, (offset, response.text)
    assert (await client.get(f"/v1/albums/demo/images/{added}/thumbnail", params={"size": 0})).status_code == 400


async def test_an_unknown_http_method_is_counted_under_one_label(client: httpx.AsyncClient) -> None:
    for word in ("ANYTOKEN", "BREW", "X1"):
        await client.request(word, "/healthz")
    text = (await client.get("/metrics")).text
    assert "ANYTOKEN" not in text and "BREW" not in text and 'method="OTHER unmatched"' in text.replace(
        'method="OTHER /healthz"', 'method="OTHER unmatched"')


async def test_the_openapi_document_says_what_the_server_enforces(client: httpx.AsyncClient, fakes: Fakes) -> None:
    doc = (await client.get("/openapi.json")).json()
    add = doc["paths"]["/v1/albums/{album}/images"]["post"]["responses"]
    for status in ("413", "422"):
        schema = add[status]["content"]["application/json"]["schema"]
        refs = {s.get("$ref", "").rsplit("/", 1)[-1] for s in schema.get("anyOf", [schema])}
        assert refs == {"AddImagesOut", "ErrorBody"}, (status, schema)
    album = next(p for p in doc["paths"]["/v1/albums/{album}"]["get"]["parameters"] if p["name"] == "album")
    assert album["schema"]["pattern"] == "^[a-z0-9][a-z0-9_-]{0,62}$"
    assert doc["components"]["schemas"]["AlbumCreate"]["properties"]["name"]["pattern"] == album["schema"]["pattern"]
    search_params = {p["name"]: p for p in doc["paths"]["/v1/albums/{album}/search"]["post"]["parameters"]}
    top_k = search_params["top_k"]["schema"]
    assert top_k["maximum"] == fakes.settings.max_top_k
    listing = {p["name"]: p["schema"] for p in doc["paths"]["/v1/albums/{album}/images"]["get"]["parameters"]}
    assert listing["limit"]["maximum"] == 1000 and listing["offset"]["minimum"] == 0
    thumb = {p["name"]: p["schema"] for p in doc["paths"]["/v1/albums/{album}/images/{image_id}/thumbnail"]["get"][
        "parameters"]}
    assert (thumb["size"]["minimum"], thumb["size"]["maximum"]) == (1, 1024)
    assert doc["components"]["schemas"]["ColumnType"]["enum"] == ["string", "int", "float", "bool", "timestamp",
                                                                  "string_list"]
    assert "/v1/sql" in doc["paths"] and "multipart/form-data" in doc["paths"]["/v1/sql"]["post"]["requestBody"][
        "content"]


async def test_a_method_the_path_does_not_allow_is_405_naming_the_allowed_ones(client: httpx.AsyncClient) -> None:
    response = await client.request("TRACE", "/v1/albums/demo")
    assert response.status_code == 405
    assert set(response.headers["allow"].split(", ")) == {"GET", "DELETE"}
    assert response.json()["error"]["reason"] == "method_not_allowed"


async def test_an_attribute_integer_past_64_bits_is_422_not_a_server_error(client: httpx.AsyncClient) -> None:
    huge = '{"n": [50814117832107746858797580265979904]}'
    added = await client.post("/v1/albums/demo/images", files=files(png(1)), data={"attributes": huge})
    assert added.status_code == 422, added.text  # the image fails alone, naming why
    assert added.json()["results"][0]["error"]["reason"] == "invalid_attributes"
    image_id = (await client.post("/v1/albums/demo/images", files=files(png(1)))).json()["results"][0]["id"]
    for url in (f"/v1/albums/demo/images/{image_id}", "/v1/albums/demo/images?all=true"):
        changed = await client.patch(url, json={"attributes": json.loads(huge)})
        assert (changed.status_code, changed.json()["error"]["reason"]) == (422, "invalid_attributes"), url


async def test_the_document_asks_for_a_file_part_and_offers_no_null_one(client: httpx.AsyncClient) -> None:
    schemas = (await client.get("/openapi.json")).json()["components"]["schemas"]
    add = next(v for k, v in schemas.items() if k.startswith("Body_add_images"))["properties"]["file"]
    search = next(v for k, v in schemas.items() if k.startswith("Body_search_album"))["properties"]["file"]
    assert add["minItems"] == 1 and "anyOf" not in search and search["type"] == "string"


async def test_the_sql_json_body_is_described_in_the_document_itself(client: httpx.AsyncClient) -> None:
    doc = (await client.get("/openapi.json")).json()
    body = doc["paths"]["/v1/sql"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert "$ref" not in json.dumps(body) and body["required"] == ["statement"]


async def test_an_empty_after_is_the_first_page_as_the_document_says(client: httpx.AsyncClient) -> None:
    doc = (await client.get("/openapi.json")).json()
    after = next(p for p in doc["paths"]["/v1/albums/{album}/images"]["get"]["parameters"] if p["name"] == "after")
    assert after["schema"]["pattern"] == "^([0-9a-f]{32})?$"
    assert (await client.get("/v1/albums/demo/images?after=")).status_code == 200


async def test_an_undeclared_attribute_may_hold_a_long_string_as_the_document_says(client: httpx.AsyncClient) -> None:
    schemas = (await client.get("/openapi.json")).json()["components"]["schemas"]
    value = schemas["ImageChanges"]["properties"]["attributes"]["additionalProperties"]
    assert {"type": "string"} in value["anyOf"]
    image_id = (await client.post("/v1/albums/demo/images", files=files(png(1)))).json()["results"][0]["id"]
    changed = await client.patch(f"/v1/albums/demo/images/{image_id}", json={"attributes": {"note": "x" * 5000}})
    assert changed.status_code == 200 and changed.json()["attributes"]["note"] == "x" * 5000


async def test_patch_or_delete_of_images_count_is_405_not_a_change_to_an_image_named_count(
        client: httpx.AsyncClient) -> None:
    for method, path in (("PATCH", "count"), ("DELETE", "count"), ("PATCH", "groups"), ("DELETE", "groups")):
        response = await client.request(method, f"/v1/albums/demo/images/{path}", json={"attributes": {"k": 1}})
        assert (response.status_code, response.headers.get("allow")) == (405, "GET"), (method, path)
    doc = (await client.get("/openapi.json")).json()
    assert "/v1/albums/{album}/images/{image_id}" in doc["paths"]
    assert (await client.get("/v1/albums/demo/images/nope")).json()["error"]["reason"] == "image_not_found"
    assert 'method="GET /v1/albums/{album}/images/{image_id}"' in (await client.get("/metrics")).text
