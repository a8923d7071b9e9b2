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
from tests.gateway.stack_helpers import cropped_copy, unique_album

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

    report = http.post(f"/v1/albums/{album}/reembed")
    assert report.status_code == 200, report.text
    body = report.json()
    assert (body["previous_model"], body["images"], body["failed"]) == (OLD_MODEL, 4, [])
    assert body["model"] == http.get(f"/v1/albums/{album}").json()["model"] != OLD_MODEL

    found = search(http, album, cropped_copy(photos[2]))
    assert found.status_code == 200, found.text
    first = found.json()["results"][0]
    assert (first["name"], first["attributes"]) == (photos[2].stem, {"n": 2})
    http.delete(f"/v1/albums/{album}")
