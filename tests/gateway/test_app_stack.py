"""The HTTP API over the real stack: Milvus, S3, Redis, the extractor, the search service and the gateway."""

from __future__ import annotations

import io
import json
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from PIL import Image

from services.devstack import Stack, free_port
from tests.common.test_local_features import MIN_MATCHES
from tests.conftest import SERVERS, SERVICES
from tests.gateway.stack_helpers import (
    cropped_copy,
    decompression_bomb,
    file_server,
    given_attributes,
    rotated_copy,
    unique_album,
)

pytestmark = pytest.mark.stack

ATTRIBUTES = [{"kind": "person", "n": 0}, {"kind": "animal", "n": 1}, {"kind": "food", "n": 2},
              {"kind": "thing", "n": 3}, {"kind": "thing", "n": 4}, {"kind": "space", "n": 5}]


@pytest.fixture()
def http(stack: Stack) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=stack.http_url, timeout=60) as client:
        yield client


def upload(paths: list[Path], names: list[str] | None = None,
           attributes: list[dict[str, object]] | None = None) -> dict[str, Any]:
    files = [("file", (p.name, p.read_bytes(), "application/octet-stream")) for p in paths]
    data: dict[str, list[str]] = {}
    if names:
        data["name"] = names
    if attributes:
        data["attributes"] = [json.dumps(a) for a in attributes]
    return {"files": files, "data": data}


def new_album(http: httpx.Client) -> str:
    name = unique_album()
    response = http.post("/v1/albums", json={"name": name})
    assert response.status_code == 201, response.text
    return name


def fill(http: httpx.Client, photos: list[Path]) -> tuple[str, list[dict[str, Any]]]:
    """An album of six photos added in one request, with attributes; returns its name and results."""
    album = new_album(http)
    chosen = photos[:6]
    response = http.post(f"/v1/albums/{album}/images", **upload(chosen, [p.stem for p in chosen], ATTRIBUTES))
    assert response.status_code == 201, response.text
    body = response.json()
    assert (body["added"], body["duplicates"], body["failed"]) == (6, 0, 0)
    return album, body["results"]


@pytest.fixture(scope="module")
def shared(_stack: Stack, photos: list[Path]) -> tuple[str, list[dict[str, Any]]]:
    """One filled album for the tests that leave it as they found it (creating an album takes seconds)."""
    _stack.ensure(SERVERS + SERVICES)
    with httpx.Client(base_url=_stack.http_url, timeout=60) as client:
        return fill(client, photos)


@pytest.fixture()
def filled(stack: Stack, http: httpx.Client,
           shared: tuple[str, list[dict[str, Any]]]) -> tuple[str, list[dict[str, Any]]]:
    """The shared album, checked to hold its six photos still."""
    assert count(http, shared[0]) == 6
    return shared


def count(http: httpx.Client, album: str) -> int:
    return int(http.get(f"/v1/albums/{album}").json()["image_count"])


def test_a_photo_searched_by_its_own_bytes_comes_first(http: httpx.Client, photos: list[Path],
                                                       filled: tuple[str, list[dict[str, Any]]]) -> None:
    album, results = filled
    response = http.post(f"/v1/albums/{album}/search", params={"top_k": 3},
                         files={"file": (photos[2].name, photos[2].read_bytes())})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["metric"] == "cosine" and body["album"] == album and body["model"]
    assert len(body["results"]) == 3
    first = body["results"][0]
    assert (first["id"], first["name"]) == (results[2]["id"], photos[2].stem)
    assert first["distance"] < 0.01
    assert given_attributes(first["attributes"]) == ATTRIBUTES[2]
    assert first["url"] == f"/v1/albums/{album}/images/{first['id']}/content"
    assert count(http, album) == 6


def test_a_cropped_recompressed_copy_finds_its_original_first(
        http: httpx.Client, photos: list[Path], filled: tuple[str, list[dict[str, Any]]]) -> None:
    album, results = filled
    for index in (0, 1, 3):
        query = cropped_copy(photos[index])
        response = http.post(f"/v1/albums/{album}/search", files={"file": ("crop.jpg", query, "image/jpeg")})
        assert response.json()["results"][0]["id"] == results[index]["id"], photos[index].name


def test_copy_search_verifies_the_nearest_images_and_similar_search_does_not(
        http: httpx.Client, photos: list[Path], filled: tuple[str, list[dict[str, Any]]]) -> None:
    album, results = filled
    query = {"file": ("crop.jpg", cropped_copy(photos[0], keep=0.6, quality=50), "image/jpeg")}
    hits = http.post(f"/v1/albums/{album}/search", params={"top_k": 6}, files=query).json()["results"]
    assert hits[0]["id"] == results[0]["id"] and hits[0]["matches"] >= 40
    assert all(h["matches"] is not None and h["matches"] < MIN_MATCHES for h in hits[1:5])  # the 5 nearest are verified
    assert hits[5]["matches"] is None
    query = {"file": ("crop.jpg", cropped_copy(photos[0], keep=0.6, quality=50), "image/jpeg")}
    similar = http.post(f"/v1/albums/{album}/search", params={"top_k": 6, "mode": "similar"}, files=query).json()
    assert all(h["matches"] is None for h in similar["results"])


def test_the_documented_curl_command_works(stack: Stack, photos: list[Path],
                                           filled: tuple[str, list[dict[str, Any]]]) -> None:
    if not shutil.which("curl"):
        pytest.skip("curl is not installed")
    album, results = filled
    out = subprocess.run(["curl", "-sS", "-F", f"file=@{photos[1]}",
                          f"{stack.http_url}/v1/albums/{album}/search?top_k=5"],
                         capture_output=True, check=True, timeout=60)
    body = json.loads(out.stdout)
    assert len(body["results"]) == 5 and body["results"][0]["id"] == results[1]["id"]


def test_search_by_image_id_leaves_out_the_query_image(http: httpx.Client,
                                                       filled: tuple[str, list[dict[str, Any]]]) -> None:
    album, results = filled
    query_id = results[0]["id"]
    response = http.post(f"/v1/albums/{album}/search", params={"top_k": 10}, data={"image_id": query_id})
    assert response.status_code == 200, response.text
    ids = [r["id"] for r in response.json()["results"]]
    assert query_id not in ids and len(ids) == 5
    missing = http.post(f"/v1/albums/{album}/search", data={"image_id": "0" * 32})
    assert (missing.status_code, missing.json()["error"]["reason"]) == (404, "image_not_found")


def test_similar_mode_searches_by_image_id_as_a_query_parameter_or_a_form_field(
        http: httpx.Client, filled: tuple[str, list[dict[str, Any]]]) -> None:
    album, results = filled
    query_id = results[0]["id"]
    copies = http.post(f"/v1/albums/{album}/search", params={"top_k": 10}, data={"image_id": query_id})
    for request in ({"params": {"top_k": 10, "mode": "similar"}, "data": {"image_id": query_id}},
                    {"params": {"top_k": 10}, "data": {"image_id": query_id, "mode": "similar"}}):
        response = http.post(f"/v1/albums/{album}/search", **request)  # type: ignore[arg-type]
        assert response.status_code == 200, response.text
        ids = [r["id"] for r in response.json()["results"]]
        assert query_id not in ids and sorted(ids) == sorted(r["id"] for r in copies.json()["results"])


def test_a_turned_copy_is_found_first_and_verified(
        http: httpx.Client, photos: list[Path], filled: tuple[str, list[dict[str, Any]]]) -> None:
    """In an album this small the turned photo is among the upright vector's nearest few, where its
    keypoints verify it (the query's variants are for albums where it is not: tests/gateway/test_verification.py)."""
    album, results = filled
    original = results[3]["id"]
    query = {"file": ("turned.png", rotated_copy(photos[3], 90), "image/png")}
    response = http.post(f"/v1/albums/{album}/search", params={"top_k": 6}, files=query)
    assert response.status_code == 200, response.text
    first = response.json()["results"][0]
    assert first["id"] == original and first["matches"] >= 40


def test_an_unknown_search_mode_is_a_400_naming_the_modes(http: httpx.Client,
                                                          filled: tuple[str, list[dict[str, Any]]]) -> None:
    album, results = filled
    for request in ({"params": {"mode": "bogus"}, "data": {"image_id": results[0]["id"]}},
                    {"data": {"image_id": results[0]["id"], "mode": "bogus"}}):
        response = http.post(f"/v1/albums/{album}/search", **request)  # type: ignore[arg-type]
        assert response.status_code == 400, response.text
        error = response.json()["error"]
        assert error["reason"] == "invalid_argument"
        assert "'bogus'" in error["message"] and "'copy', 'similar'" in error["message"]


def test_search_by_url_fetches_the_photo(http: httpx.Client, photos: list[Path],
                                         filled: tuple[str, list[dict[str, Any]]]) -> None:
    album, results = filled
    with file_server(photos[4].parent) as base:
        response = http.post(f"/v1/albums/{album}/search", data={"url": f"{base}/{photos[4].name}"})
        assert response.status_code == 200, response.text
        assert response.json()["results"][0]["id"] == results[4]["id"]
        not_found = http.post(f"/v1/albums/{album}/search", data={"url": f"{base}/no-such-file.png"})
        assert (not_found.status_code, not_found.json()["error"]["reason"]) == (422, "url_fetch_failed")
    unreachable = http.post(f"/v1/albums/{album}/search", data={"url": f"http://127.0.0.1:{free_port()}/x.jpg"})
    assert (unreachable.status_code, unreachable.json()["error"]["reason"]) == (422, "url_fetch_failed")


def test_urls_of_private_or_local_hosts_are_not_fetched(http: httpx.Client, photos: list[Path],
                                                        filled: tuple[str, list[dict[str, Any]]]) -> None:
    # The same server by a name the stack does not allow (only 127.0.0.1 is), and the metadata
    # endpoint of cloud machines: refused before any request is made.
    album, _ = filled
    with file_server(photos[4].parent) as base:
        local = base.replace("127.0.0.1", "localhost")
        for url in (f"{local}/{photos[4].name}", "http://169.254.169.254/latest/meta-data/",
                    f"http://[::1]:{free_port()}/x.jpg", "http://10.0.0.1/x.jpg"):
            response = http.post(f"/v1/albums/{album}/search", data={"url": url})
            assert (response.status_code, response.json()["error"]["reason"]) == (422, "url_fetch_failed"), url
            assert "private or local address" in response.json()["error"]["message"]


def test_filters_on_attributes(http: httpx.Client, photos: list[Path],
                               filled: tuple[str, list[dict[str, Any]]]) -> None:
    album, results = filled
    query = {"file": (photos[0].name, photos[0].read_bytes())}
    things = http.post(f"/v1/albums/{album}/search", params={"filter": '{"kind": "thing"}'}, files=query)
    assert things.status_code == 200, things.text
    assert sorted(r["id"] for r in things.json()["results"]) == sorted([results[3]["id"], results[4]["id"]])
    ranged = http.post(f"/v1/albums/{album}/search", params={"filter": '{"n": {"gte": 4}}'}, files=query)
    assert {r["attributes"]["n"] for r in ranged.json()["results"]} == {4, 5}
    malformed = http.post(f"/v1/albums/{album}/search", params={"filter": '{"kind": '}, files=query)
    assert (malformed.status_code, malformed.json()["error"]["reason"]) == (422, "invalid_filter")


def test_get_content_thumbnail_and_list(http: httpx.Client, photos: list[Path],
                                        filled: tuple[str, list[dict[str, Any]]]) -> None:
    album, results = filled
    image_id = results[3]["id"]
    image = http.get(f"/v1/albums/{album}/images/{image_id}").json()
    assert image["name"] == photos[3].stem and given_attributes(image["attributes"]) == ATTRIBUTES[3]
    assert image["size_bytes"] == photos[3].stat().st_size
    content = http.get(image["url"])
    assert content.content == photos[3].read_bytes()
    assert content.headers["content-type"] == image["content_type"]
    assert content.headers["content-type"] in ("image/png", "image/jpeg")
    thumbnail = http.get(image["thumbnail_url"], params={"size": 128})
    assert thumbnail.headers["content-type"] == "image/jpeg"
    with Image.open(io.BytesIO(thumbnail.content)) as thumb:
        assert max(thumb.size) <= 128
    assert http.get(image["thumbnail_url"], params={"size": 128}).content == thumbnail.content
    listed = http.get(f"/v1/albums/{album}/images", params={"limit": 4}).json()["images"]
    rest = http.get(f"/v1/albums/{album}/images", params={"limit": 4, "offset": 4}).json()["images"]
    assert len(listed) == 4 and len(rest) == 2
    assert {i["id"] for i in listed + rest} == {r["id"] for r in results}


def test_an_export_streams_every_matching_image_as_a_json_line_and_refuses_before_the_first(
        http: httpx.Client, filled: tuple[str, list[dict[str, Any]]]) -> None:
    album, results = filled
    exported = http.get(f"/v1/albums/{album}/export")
    assert exported.status_code == 200 and exported.headers["content-type"] == "application/x-ndjson"
    assert exported.headers["content-disposition"] == f"attachment; filename*=UTF-8''{album}.jsonl"
    listed = http.get(f"/v1/albums/{album}/images", params={"limit": 100}).json()["images"]
    assert [json.loads(line) for line in exported.text.splitlines()] == [  # as listed, by id
        {k: v for k, v in image.items() if k not in ("content_type", "size_bytes")} for image in listed]
    things = http.get(f"/v1/albums/{album}/export", params={"where": "kind = 'thing'"}).text.splitlines()
    assert sorted(json.loads(line)["id"] for line in things) == sorted(
        r["id"] for r, a in zip(results, ATTRIBUTES, strict=True) if a["kind"] == "thing")
    assert http.get(f"/v1/albums/{album}/export", params={"where": "kind = 'none such'"}).text == ""
    missing = http.get("/v1/albums/no-such-album/export")
    assert (missing.status_code, missing.json()["error"]["reason"]) == (404, "album_not_found")
    bad = http.get(f"/v1/albums/{album}/export", params={"where": "kind ="})
    assert bad.status_code in (400, 422) and bad.json()["error"]["reason"] == "invalid_filter"


def test_an_export_line_holds_a_name_with_line_separators_whole(http: httpx.Client, photos: list[Path]) -> None:
    """JSON lets U+2028, U+2029 and U+0085 through unescaped; readers that split lines at them too (Python's
    splitlines, httpx's iter_lines) would cut the line: they are escaped."""
    album = unique_album("export")
    assert http.post("/v1/albums", json={"name": album}).status_code == 201
    name = "a\u2028b\u2029c\u0085d"
    added = http.post(f"/v1/albums/{album}/images", files=[("file", ("x.png", photos[0].read_bytes()))],
                      data={"name": [name]})
    assert added.status_code == 201, added.text
    lines = http.get(f"/v1/albums/{album}/export").text.splitlines()
    assert len(lines) == 1 and json.loads(lines[0])["name"] == name
    assert "content_type" not in json.loads(lines[0])  # not read by a listing: not written as null
    http.delete(f"/v1/albums/{album}")


def test_a_deleted_image_is_gone_from_search_and_count(http: httpx.Client, photos: list[Path]) -> None:
    album, results = fill(http, photos)
    image_id = results[1]["id"]
    assert http.delete(f"/v1/albums/{album}/images/{image_id}").json() == {"deleted": True}
    assert count(http, album) == 5
    assert http.get(f"/v1/albums/{album}/images/{image_id}").status_code == 404
    assert http.get(f"/v1/albums/{album}/images/{image_id}/content").status_code == 404
    response = http.post(f"/v1/albums/{album}/search", params={"top_k": 10},
                         files={"file": (photos[1].name, photos[1].read_bytes())})
    assert image_id not in [r["id"] for r in response.json()["results"]]
    again = http.delete(f"/v1/albums/{album}/images/{image_id}")
    assert (again.status_code, again.json()["error"]["reason"]) == (404, "image_not_found")


def test_the_same_bytes_twice_are_a_duplicate(http: httpx.Client, photos: list[Path],
                                              filled: tuple[str, list[dict[str, Any]]]) -> None:
    album, results = filled
    response = http.post(f"/v1/albums/{album}/images", **upload([photos[0]]))
    assert response.status_code == 201
    assert response.json()["results"][0]["status"] == "duplicate"
    assert response.json()["results"][0]["id"] == results[0]["id"]
    assert count(http, album) == 6


def test_a_batch_with_one_corrupt_file_stores_the_others(http: httpx.Client, photos: list[Path]) -> None:
    album = new_album(http)
    corrupt = photos[0].read_bytes()[:2000]
    files = [("file", (photos[6].name, photos[6].read_bytes())), ("file", ("broken.png", corrupt)),
             ("file", (photos[7].name, photos[7].read_bytes()))]
    response = http.post(f"/v1/albums/{album}/images", files=files)
    assert response.status_code == 207, response.text
    body = response.json()
    assert [r["status"] for r in body["results"]] == ["added", "failed", "added"]
    assert body["results"][1]["name"] == "broken.png"
    assert body["results"][1]["error"]["reason"] == "invalid_image"
    assert count(http, album) == 2


@pytest.mark.parametrize(("what", "content", "status", "reasons"), [
    ("corrupt", b"\x89PNG\r\n\x1a\n" + b"\x00" * 200, 422, {"invalid_image"}),
    ("text", b"hello, this is not an image\n" * 10, 422, {"invalid_image"}),
    ("empty", b"", 422, {"invalid_image"}),
    ("bomb", None, None, {"image_too_large", "invalid_image"}),
])
def test_bad_uploads_are_refused_and_leave_the_album_unchanged(
        http: httpx.Client, filled: tuple[str, list[dict[str, Any]]], what: str, content: bytes | None,
        status: int | None, reasons: set[str]) -> None:
    album, _ = filled
    data = decompression_bomb() if content is None else content
    response = http.post(f"/v1/albums/{album}/images", files={"file": (f"{what}.png", data)})
    assert response.status_code == (status or response.status_code) and response.status_code in (413, 422)
    assert response.json()["results"][0]["error"]["reason"] in reasons
    search = http.post(f"/v1/albums/{album}/search", files={"file": (f"{what}.png", data)})
    assert search.status_code in (413, 422) and search.json()["error"]["reason"] in reasons
    assert count(http, album) == 6


def test_an_upload_over_the_byte_limit_is_413(http: httpx.Client, filled: tuple[str, list[dict[str, Any]]]) -> None:
    album, _ = filled
    big = b"\xff\xd8\xff" + b"\x00" * (20 * 1024 * 1024)
    response = http.post(f"/v1/albums/{album}/images", files={"file": ("big.jpg", big)})
    assert response.status_code == 413
    assert response.json()["results"][0]["error"]["reason"] == "image_too_large"
    assert count(http, album) == 6


def test_bad_requests_get_the_right_status(http: httpx.Client, photos: list[Path],
                                           filled: tuple[str, list[dict[str, Any]]]) -> None:
    album, _ = filled
    query = {"file": (photos[0].name, photos[0].read_bytes())}
    unknown = http.post("/v1/albums/no-such-album/search", files=query)
    assert (unknown.status_code, unknown.json()["error"]["reason"]) == (404, "album_not_found")
    assert http.post("/v1/albums/no-such-album/images", files=query).status_code == 404
    for top_k in (0, 100000):
        response = http.post(f"/v1/albums/{album}/search", params={"top_k": top_k}, files=query)
        assert response.status_code in (400, 422), top_k
    attrs = http.post(f"/v1/albums/{album}/images", files={"file": (photos[8].name, photos[8].read_bytes())},
                      data={"attributes": "{not json"})
    assert attrs.status_code == 422
    assert attrs.json()["results"][0]["error"]["reason"] == "invalid_attributes"
    assert http.post("/v1/albums", json={"name": album}).status_code == 409
    assert http.post("/v1/albums", json={"name": "Not Valid!"}).status_code == 400
    assert http.post("/v1/albums", json={"name": f"{album}\n"}).status_code == 400
    far = http.get(f"/v1/albums/{album}/images", params={"offset": 2147483648})
    assert far.status_code == 400 and "after" in far.json()["error"]["message"]
    image_id = http.get(f"/v1/albums/{album}/images").json()["images"][0]["id"]
    assert http.get(f"/v1/albums/{album}/images/{image_id}/thumbnail", params={"size": 0}).status_code == 400
    assert http.get(f"/v1/albums/{album}/images", params={"where": "n <"}).status_code == 422
    assert http.request("ANYTOKEN", "/healthz").status_code in (404, 405)
    assert "ANYTOKEN" not in http.get("/metrics").text
    assert count(http, album) == 6


def test_request_id_is_echoed_and_openapi_served(http: httpx.Client) -> None:
    response = http.get("/v1/albums", headers={"X-Request-ID": "trace-me-42"})
    assert response.headers["x-request-id"] == "trace-me-42"
    assert http.get("/healthz").headers["x-request-id"]
    doc = http.get("/openapi.json").json()
    assert {"/v1/albums", "/v1/albums/{album}/images", "/v1/albums/{album}/search", "/v1/imports/{import_id}"} <= set(
        doc["paths"])
    assert http.get("/readyz").status_code == 200
    assert "imagesearch_rpc_requests_total" in http.get("/metrics").text
    assert "<html" in http.get("/").text


def test_delete_album_removes_it(http: httpx.Client, photos: list[Path]) -> None:
    album = new_album(http)
    http.post(f"/v1/albums/{album}/images", **upload(photos[:2]))
    assert http.delete(f"/v1/albums/{album}").json() == {"deleted": True}
    assert http.get(f"/v1/albums/{album}").status_code == 404
    assert album not in [a["name"] for a in http.get("/v1/albums").json()["albums"]]
