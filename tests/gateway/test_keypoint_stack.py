"""The keypoint index over the real stack: a small circular detail cut out of a photo (as the evaluation
set's GCompris details are) finds the photo it comes from; the image's keypoint rows are in the album's
companion collection in Milvus, and go when the image goes."""

from __future__ import annotations

import io
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import httpx
import pytest
from imagesearch.v1 import search_pb2, search_pb2_grpc
from PIL import Image, ImageDraw

from services.devstack import Stack
from tests.conftest import SERVERS, SERVICES
from tests.gateway.stack_helpers import unique_album

pytestmark = pytest.mark.stack

# Circular details of 74 px on white, at the photo's own scale, whose keypoints match their photo.
DETAILS = {"astronaut": (260, 100), "motorcycle_left": (400, 250)}
SIDE = 74


@dataclass(frozen=True)
class Album:
    name: str
    ids: dict[str, str]  # photo stem -> image id


def circular_detail(path: Path, centre: tuple[int, int]) -> bytes:
    """The disc of SIDE pixels around `centre`, on white, as a JPEG."""
    x, y = centre
    with Image.open(path) as image:
        part = image.convert("RGB").crop((x - SIDE // 2, y - SIDE // 2, x + SIDE // 2, y + SIDE // 2))
    disc = Image.new("L", (SIDE, SIDE), 0)
    ImageDraw.Draw(disc).ellipse((0, 0, SIDE - 1, SIDE - 1), fill=255)
    out = Image.new("RGB", (SIDE, SIDE), "white")
    out.paste(part, (0, 0), disc)
    data = io.BytesIO()
    out.save(data, format="JPEG", quality=90)
    return data.getvalue()


@pytest.fixture(scope="module")
def album(_stack: Stack, photos: list[Path]) -> Album:
    _stack.ensure(SERVERS + SERVICES)
    name = unique_album("keypoints")
    with httpx.Client(base_url=_stack.http_url, timeout=120) as http:
        assert http.post("/v1/albums", json={"name": name}).status_code == 201
        files = [("file", (p.name, p.read_bytes(), "application/octet-stream")) for p in photos]
        added = http.post(f"/v1/albums/{name}/images", files=files, data={"name": [p.stem for p in photos]})
        assert added.status_code == 201, added.text
    return Album(name, {p.stem: r["id"] for p, r in zip(photos, added.json()["results"], strict=True)})


@pytest.fixture()
def companion(stack: Stack) -> Iterator[search_pb2_grpc.SearchStub]:
    with grpc.insecure_channel(f"127.0.0.1:{stack.ports.search}") as channel:
        yield search_pb2_grpc.SearchStub(channel)


def test_a_small_detail_finds_the_photo_it_comes_from(stack: Stack, album: Album, photos: list[Path]) -> None:
    with httpx.Client(base_url=stack.http_url, timeout=120) as http:
        for stem, centre in DETAILS.items():
            path = next(p for p in photos if p.stem == stem)
            found = http.post(f"/v1/albums/{album.name}/search", params={"top_k": 3},
                              files={"file": ("detail.jpg", circular_detail(path, centre), "image/jpeg")})
            assert found.status_code == 200, found.text
            first = found.json()["results"][0]
            assert (first["id"], first["matches"] >= 6) == (album.ids[stem], True), (stem, found.json())


def test_an_images_keypoint_rows_go_with_it(stack: Stack, album: Album,
                                            companion: search_pb2_grpc.SearchStub) -> None:
    keypoints = f"{album.name}.keypoints"
    image_id = album.ids["coffee"]
    stored = companion.Get(search_pb2.GetRequest(collection=keypoints, ids=[image_id], with_vectors=True)).items
    assert len(stored) == 1 and len(stored[0].vectors) >= 50
    before = companion.Count(search_pb2.CountRequest(collection=keypoints)).count
    assert len(album.ids) - 1 <= before <= len(album.ids)  # an image without keypoints (color.png) has no item
    with httpx.Client(base_url=stack.http_url, timeout=120) as http:
        assert http.delete(f"/v1/albums/{album.name}/images/{image_id}").status_code in (200, 204)
    assert not companion.Get(search_pb2.GetRequest(collection=keypoints, ids=[image_id])).items
    assert companion.Count(search_pb2.CountRequest(collection=keypoints)).count == before - 1
