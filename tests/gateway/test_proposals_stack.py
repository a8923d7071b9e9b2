"""Region proposals over the real stack: a search asking for them answers for the whole photo and for each
region of it worth searching, over HTTP, gRPC and the CLI, each region as a search of its box would."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest
from imagesearch.v1 import gateway_pb2, gateway_pb2_grpc
from PIL import Image

from services.devstack import ROOT, Stack
from tests.conftest import SERVERS, SERVICES
from tests.gateway.stack_helpers import unique_album

pytestmark = pytest.mark.stack

Box = tuple[int, int, int, int]


def two_photos_apart(left: Path, right: Path) -> tuple[bytes, dict[str, Box]]:
    """Two of the album's photos 300 px wide on a 900x420 grey ground, far apart; each one's box by stem."""
    canvas = Image.new("RGB", (900, 420), (128, 128, 128))
    boxes = {}
    for i, path in enumerate((left, right)):
        with Image.open(path) as image:
            photo = image.convert("RGB")
            photo.thumbnail((300, 300))
            canvas.paste(photo, (60 + 480 * i, 60))
            boxes[path.stem] = (60 + 480 * i, 60, photo.width, photo.height)
    out = io.BytesIO()
    canvas.save(out, "JPEG", quality=92)
    return out.getvalue(), boxes


def iou(a: Box, b: Box) -> float:
    inter_w = max(0, min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0]))
    inter_h = max(0, min(a[1] + a[3], b[1] + b[3]) - max(a[1], b[1]))
    inter = inter_w * inter_h
    return inter / (a[2] * a[3] + b[2] * b[3] - inter)


def box_of(region: dict[str, Any]) -> Box:
    return region["x"], region["y"], region["width"], region["height"]


@pytest.fixture(scope="module")
def album(_stack: Stack, photos: list[Path]) -> str:
    _stack.ensure(SERVERS + SERVICES)
    name = unique_album("proposals")
    chosen = photos[:6]
    with httpx.Client(base_url=_stack.http_url, timeout=120) as http:
        assert http.post("/v1/albums", json={"name": name}).status_code == 201
        files = [("file", (p.name, p.read_bytes(), "application/octet-stream")) for p in chosen]
        added = http.post(f"/v1/albums/{name}/images", files=files, data={"name": [p.stem for p in chosen]})
        assert added.status_code == 201, added.text
    return name


@pytest.fixture(scope="module")
def scene(photos: list[Path]) -> tuple[bytes, dict[str, Box]]:
    return two_photos_apart(photos[1], photos[2])  # chelsea (a cat), coffee


@pytest.fixture()
def http(stack: Stack) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=stack.http_url, timeout=120) as client:
        yield client


def search(http: httpx.Client, album: str, content: bytes, **params: object) -> httpx.Response:
    return http.post(f"/v1/albums/{album}/search", params={"top_k": 3, **params},
                     files={"file": ("q.jpg", content, "image/jpeg")})


def test_each_photo_of_the_scene_is_proposed_and_its_region_finds_it(
        http: httpx.Client, album: str, scene: tuple[bytes, dict[str, Box]]) -> None:
    content, boxes = scene
    answer = search(http, album, content, proposals=3)
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["results"] and 1 <= len(body["regions"]) <= 3
    assert [r["score"] for r in body["regions"]] == sorted((r["score"] for r in body["regions"]), reverse=True)
    for stem, truth in boxes.items():
        region = max(body["regions"], key=lambda r: iou(box_of(r["region"]), truth))
        assert iou(box_of(region["region"]), truth) >= 0.5, (stem, body["regions"])
        assert region["results"][0]["name"] == stem
        # The same as a search of that box.
        x, y, w, h = box_of(region["region"])
        boxed = search(http, album, content, region=f"{x},{y},{w},{h}").json()
        assert [r["id"] for r in boxed["results"]] == [r["id"] for r in region["results"]]
    assert search(http, album, content).json()["regions"] == []  # not asked: none, and no regions searched


def test_proposals_are_refused_with_a_region_an_image_id_or_out_of_range(
        http: httpx.Client, album: str, scene: tuple[bytes, dict[str, Box]]) -> None:
    content, _ = scene
    for params in ({"proposals": 9}, {"proposals": -1}, {"proposals": 2, "region": "0,0,100,100"}):
        answer = search(http, album, content, **params)
        assert answer.status_code == 400 and answer.json()["error"]["reason"] == "invalid_argument", params
    listed = http.get(f"/v1/albums/{album}/images").json()["images"]
    by_id = http.post(f"/v1/albums/{album}/search", params={"proposals": 2}, data={"image_id": listed[0]["id"]})
    assert by_id.status_code == 400 and by_id.json()["error"]["reason"] == "invalid_argument"


def test_grpc_answers_the_regions_as_http(stack: Stack, http: httpx.Client, album: str,
                                          scene: tuple[bytes, dict[str, Box]]) -> None:
    content, _ = scene
    over_http = search(http, album, content, proposals=3).json()
    with grpc.insecure_channel(f"127.0.0.1:{stack.ports.gateway}") as channel:
        stub = gateway_pb2_grpc.GatewayStub(channel)
        reply = stub.SearchImages(gateway_pb2.SearchImagesRequest(album=album, image=content, top_k=3, proposals=3),
                                  timeout=120)
        assert [(r.region.x, r.region.y, r.region.width, r.region.height) for r in reply.regions] == [
            box_of(r["region"]) for r in over_http["regions"]]
        assert [[h.image.id for h in r.hits] for r in reply.regions] == [
            [h["id"] for h in r["results"]] for r in over_http["regions"]]
        with pytest.raises(grpc.RpcError) as caught:
            stub.SearchImages(gateway_pb2.SearchImagesRequest(album=album, image=content, proposals=2,
                                                              region=gateway_pb2.Region(x=0, y=0, width=50, height=50)),
                              timeout=60)
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT  # type: ignore[attr-defined]


def test_cli_search_shows_each_proposed_region_with_its_results(
        stack: Stack, album: str, scene: tuple[bytes, dict[str, Box]], tmp_path: Path) -> None:
    content, _ = scene
    query = tmp_path / "scene.jpg"
    query.write_bytes(content)
    env = {**os.environ, "IMAGESEARCH_URL": stack.http_url}
    done = subprocess.run([sys.executable, "-m", "services.cli", "search", str(query), "--album", album,
                           "--proposals"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "region 1: --region " in done.stdout and "region 2: --region " in done.stdout
    assert "chelsea" in done.stdout and "coffee" in done.stdout
