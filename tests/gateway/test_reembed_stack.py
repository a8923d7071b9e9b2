"""An album made under another model, over the real stack: refused with 409, re-embedded, searchable again."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import httpx
import pytest

from services.common.grpc_client import open_channel
from services.devstack import Stack
from services.gateway.clients import GrpcVectorSearch
from tests.gateway.stack_helpers import cropped_copy, given_attributes, unique_album, wait_for_job

pytestmark = pytest.mark.stack

OLD_MODEL = "efficientnet-lite0/gem3/224/squash/v1"


@pytest.fixture()
def http(stack: Stack) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=stack.http_url, timeout=120) as client:
        yield client


async def _as_old_model(stack: Stack, album: str) -> None:
    """Recreates the album's vectors as an older pipeline's (same dim, other model id, other vectors);
    its blobs stay in the object store, as they would after a model upgrade."""
    async with open_channel(f"127.0.0.1:{stack.ports.search}") as channel:
        search = GrpcVectorSearch(channel, 30)
        info = await search.get_collection(album)
        items = await search.query(album, None, 100)
        await search.drop_collection(album)
        await search.create_collection(album, info.dim, OLD_MODEL)
        await search.insert(album, [replace(i, vectors=[[1.0] + [0.0] * (info.dim - 1)]) for i in items])


def old_album(stack: Stack, http: httpx.Client, photos: list[Path]) -> str:
    album = unique_album("old")
    assert http.post("/v1/albums", json={"name": album}).status_code == 201
    files = [("file", (p.name, p.read_bytes(), "application/octet-stream")) for p in photos[:4]]
    data = {"name": [p.stem for p in photos[:4]], "attributes": [f'{{"n": {i}}}' for i in range(4)]}
    assert http.post(f"/v1/albums/{album}/images", files=files, data=data).status_code == 201
    asyncio.run(_as_old_model(stack, album))
    return album


def search(http: httpx.Client, album: str, content: bytes) -> httpx.Response:
    return http.post(f"/v1/albums/{album}/search", files={"file": ("q.jpg", content, "image/jpeg")})


def test_an_album_of_another_model_is_refused_then_reembedded_and_found_again(
    stack: Stack, http: httpx.Client, photos: list[Path]
) -> None:
    album = old_album(stack, http, photos)
    refused = search(http, album, cropped_copy(photos[2]))
    assert refused.status_code == 409, refused.text
    assert refused.json()["error"]["reason"] == "model_mismatch"
    assert "reembed" in refused.json()["error"]["message"]

    started = http.post(f"/v1/albums/{album}/reembed")
    assert started.status_code == 202, started.text
    assert http.post(f"/v1/albums/{album}/reembed").json()["id"] == started.json()["id"]  # the one under way
    job = wait_for_job(http, started.json()["id"])
    assert (job["status"], job["kind"], job["total"], job["counts"]["added"], job["counts"]["failed"]) == (
        "done", "reembed", 4, 4, 0)
    assert http.get(f"/v1/albums/{album}").json()["model"] != OLD_MODEL

    found = search(http, album, cropped_copy(photos[2]))
    assert found.status_code == 200, found.text
    first = found.json()["results"][0]
    assert (first["name"], given_attributes(first["attributes"])) == (photos[2].stem, {"n": 2})
    http.delete(f"/v1/albums/{album}")


def test_an_album_answers_searches_while_it_is_re_embedded(stack: Stack, http: httpx.Client,
                                                            photos: list[Path]) -> None:
    album = unique_album("live")
    assert http.post("/v1/albums", json={"name": album}).status_code == 201
    files = [("file", (f"{n}-{p.name}", cropped_copy(p, keep=0.6 + n / 50), "image/jpeg"))
             for n in range(6) for p in photos[:6]]
    assert http.post(f"/v1/albums/{album}/images", files=files).status_code == 201
    job = http.post(f"/v1/albums/{album}/reembed").json()
    answers = []
    while (job := http.get(f"/v1/imports/{job['id']}").json())["status"] not in ("done", "failed"):
        answer = search(http, album, photos[0].read_bytes())
        answers.append((answer.status_code, len(answer.json().get("results", []))))
    assert job["status"] == "done" and job["counts"]["added"] == 36
    assert answers and all(a == (200, 10) for a in answers), answers
    assert http.get(f"/v1/albums/{album}").json()["image_count"] == 36
    albums = [a["name"] for a in http.get("/v1/albums").json()["albums"]]
    assert albums.count(album) == 1  # the new version took the album's place; no second album shows
    http.delete(f"/v1/albums/{album}")
