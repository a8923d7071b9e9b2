"""The HTTP routes over in-memory fakes: status codes, JSON shapes, error bodies, request ids."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import httpx
import pytest
from redis.asyncio import Redis

from services.common.errors import SearchUnavailable
from services.gateway.app import create_app
from services.gateway.jobs import JobStore
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
    # Nothing listens on port 1: the job routes are not under test here.
    jobs = JobStore(Redis(port=1, socket_connect_timeout=0.2))
    app = create_app(fakes.settings, fakes.deps, jobs, {"search": _down, "extractor": _ok})
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


async def test_unknown_route_is_a_json_404(client: httpx.AsyncClient) -> None:
    response = await client.get("/v2/nothing")
    assert response.status_code == 404
    assert json.loads(response.text)["error"]["reason"] == "not_found"
