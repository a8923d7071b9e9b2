"""The keypoint index over the real stack: in an album made with `details`, a small circular detail cut
out of a photo (as the evaluation set's GCompris details are) finds the photo it comes from, over HTTP,
gRPC, the CLI and SQL; the image's keypoint rows are in the album's companion collection in Milvus, and go
when the image goes. An album made without it has no such index until a re-embed with `details` gives it
one."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import httpx
import pytest
from imagesearch.v1 import gateway_pb2, gateway_pb2_grpc, search_pb2, search_pb2_grpc

from services.devstack import ROOT, Stack
from tests.conftest import SERVERS, SERVICES
from tests.gateway.stack_helpers import DETAILS, circular_detail, unique_album, wait_for_job

pytestmark = pytest.mark.stack

@dataclass(frozen=True)
class Album:
    name: str
    ids: dict[str, str]  # photo stem -> image id


@pytest.fixture(scope="module")
def album(_stack: Stack, photos: list[Path]) -> Album:
    _stack.ensure(SERVERS + SERVICES)
    name = unique_album("keypoints")
    with httpx.Client(base_url=_stack.http_url, timeout=120) as http:
        made = http.post("/v1/albums", json={"name": name, "details": True})
        assert made.status_code == 201 and made.json()["details"] is True, made.text
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


def detail_of(photos: list[Path], stem: str) -> bytes:
    return circular_detail(next(p for p in photos if p.stem == stem), DETAILS[stem])


def test_grpc_the_cli_and_sql_find_a_detail_as_http_does(stack: Stack, album: Album, photos: list[Path],
                                                         tmp_path: Path) -> None:
    detail = detail_of(photos, "astronaut")
    with grpc.insecure_channel(f"127.0.0.1:{stack.ports.gateway}") as channel:
        gateway = gateway_pb2_grpc.GatewayStub(channel)
        described = gateway.GetAlbum(gateway_pb2.GetAlbumRequest(name=album.name), timeout=60)
        assert described.details
        answer = gateway.SearchImages(gateway_pb2.SearchImagesRequest(album=album.name, image=detail, top_k=3),
                                      timeout=120)
        assert answer.hits[0].image.id == album.ids["astronaut"] and answer.hits[0].matches >= 6
    path = tmp_path / "detail.jpg"
    path.write_bytes(detail)
    env = {**os.environ, "IMAGESEARCH_URL": stack.http_url}
    cli = subprocess.run([sys.executable, "-m", "services.cli", "search", str(path), "--album", album.name,
                          "--top-k", "3"], capture_output=True, text=True, env=env, cwd=ROOT, timeout=120)
    assert cli.returncode == 0, cli.stderr
    first = cli.stdout.splitlines()[1].split()  # rank, distance, matches, name, link, attributes
    assert (first[0], first[3], int(first[2]) >= 6) == ("1", "astronaut", True), cli.stdout
    with httpx.Client(base_url=stack.http_url, timeout=120) as http:
        statement = f'SELECT name, matches FROM "{album.name}" ORDER BY feature <-> image(\'d.jpg\') LIMIT 1'
        rows = http.post("/v1/sql", data={"statement": statement},
                         files=[("file", ("d.jpg", detail, "image/jpeg"))])
        assert rows.status_code == 200, rows.text
        name, matches = rows.json()["rows"][0]["values"]
        assert (name, matches >= 6) == ("astronaut", True)


def test_an_album_made_without_details_gets_its_keypoint_index_by_a_re_embed(
        stack: Stack, photos: list[Path], tmp_path: Path) -> None:
    name = unique_album("later-details")
    chosen = [p for p in photos if p.stem in ("astronaut", "coffee", "chelsea")]
    env = {**os.environ, "IMAGESEARCH_URL": stack.http_url}
    made = subprocess.run([sys.executable, "-m", "services.cli", "create-album", name], capture_output=True,
                          text=True, env=env, cwd=ROOT, timeout=120)
    assert made.returncode == 0 and "keypoint" not in made.stdout, made.stderr
    detail = detail_of(photos, "astronaut")
    with httpx.Client(base_url=stack.http_url, timeout=120) as http, \
            grpc.insecure_channel(f"127.0.0.1:{stack.ports.gateway}") as channel, \
            grpc.insecure_channel(f"127.0.0.1:{stack.ports.search}") as search_channel:
        added = http.post(f"/v1/albums/{name}/images", files=[("file", (p.name, p.read_bytes())) for p in chosen],
                          data={"name": [p.stem for p in chosen]})
        assert added.status_code == 201, added.text
        assert http.get(f"/v1/albums/{name}").json()["details"] is False
        companion = search_pb2_grpc.SearchStub(search_channel)
        count = search_pb2.CountRequest(collection=f"{name}.keypoints")
        with pytest.raises(grpc.RpcError) as missing:  # no keypoint index, no keypoint rows
            companion.Count(count, timeout=60)
        assert missing.value.code() == grpc.StatusCode.NOT_FOUND
        gateway = gateway_pb2_grpc.GatewayStub(channel)
        job = gateway.ReembedAlbum(gateway_pb2.ReembedAlbumRequest(album=name, details=True), timeout=60)
        assert wait_for_job(http, job.id)["status"] == "done"
        assert gateway.GetAlbum(gateway_pb2.GetAlbumRequest(name=name), timeout=60).details
        assert companion.Count(count, timeout=60).count == len(chosen)
        after = http.post(f"/v1/albums/{name}/search", params={"top_k": 3},
                          files={"file": ("d.jpg", detail, "image/jpeg")}).json()["results"]
        assert (after[0]["name"], after[0]["matches"] >= 6) == ("astronaut", True), after
        listed = subprocess.run([sys.executable, "-m", "services.cli", "albums"], capture_output=True, text=True,
                                env=env, cwd=ROOT, timeout=120)
        assert any(line.startswith(name) and "details" in line for line in listed.stdout.splitlines()), listed.stdout
        assert http.delete(f"/v1/albums/{name}").status_code == 200


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
