"""A box on the query image over the real stack: HTTP, gRPC, the CLI and SQL search only that part of
the photo, in the photo's pixels after its EXIF orientation; a bad box is a 4xx naming what is wrong."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import httpx
import pytest
from imagesearch.v1 import gateway_pb2, gateway_pb2_grpc
from PIL import Image

from services.devstack import ROOT, Stack
from services.gateway.regions import REGION_PATTERN
from tests.conftest import SERVERS, SERVICES
from tests.gateway.stack_helpers import unique_album

pytestmark = pytest.mark.stack

SIDE = 320
LEFT = f"0,0,{SIDE},{SIDE}"
RIGHT = f"{SIDE},0,{SIDE},{SIDE}"


@dataclass(frozen=True)
class Album:
    name: str
    ids: dict[str, str]  # photo stem -> image id


def two_photos_side_by_side(left: Path, right: Path) -> Image.Image:
    """A street-photo stand-in: two of the album's photos, each squashed to SIDE x SIDE, in one picture."""
    canvas = Image.new("RGB", (2 * SIDE, SIDE))
    for i, path in enumerate((left, right)):
        with Image.open(path) as image:
            canvas.paste(image.convert("RGB").resize((SIDE, SIDE)), (i * SIDE, 0))
    return canvas


def jpeg(image: Image.Image, orientation: int | None = None) -> bytes:
    out = io.BytesIO()
    exif = Image.Exif()
    if orientation is not None:
        exif[0x0112] = orientation
    image.save(out, format="JPEG", quality=92, exif=exif.tobytes())
    return out.getvalue()


@pytest.fixture(scope="module")
def album(_stack: Stack, photos: list[Path]) -> Album:
    _stack.ensure(SERVERS + SERVICES)
    name = unique_album("region")
    chosen = photos[:6]
    with httpx.Client(base_url=_stack.http_url, timeout=120) as http:
        assert http.post("/v1/albums", json={"name": name}).status_code == 201
        files = [("file", (p.name, p.read_bytes(), "application/octet-stream")) for p in chosen]
        added = http.post(f"/v1/albums/{name}/images", files=files, data={"name": [p.stem for p in chosen]})
        assert added.status_code == 201, added.text
    return Album(name, {p.stem: r["id"] for p, r in zip(chosen, added.json()["results"], strict=True)})


@pytest.fixture(scope="module")
def pair(photos: list[Path]) -> tuple[Path, Path]:
    return photos[1], photos[2]  # chelsea (a cat), coffee


@pytest.fixture()
def http(stack: Stack) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=stack.http_url, timeout=120) as client:
        yield client


def search(http: httpx.Client, album: str, content: bytes, **params: object) -> httpx.Response:
    return http.post(f"/v1/albums/{album}/search", params={"top_k": 3, **params},
                     files={"file": ("q.jpg", content, "image/jpeg")})


def first(response: httpx.Response) -> dict[str, object]:
    assert response.status_code == 200, response.text
    return dict(response.json()["results"][0])


def test_a_region_of_the_query_finds_the_photo_in_that_box(http: httpx.Client, album: Album,
                                                           pair: tuple[Path, Path]) -> None:
    left, right = pair
    query = jpeg(two_photos_side_by_side(left, right))
    for region, photo in ((LEFT, left), (RIGHT, right), (LEFT, left)):  # the same bytes, each box its own answer
        hit = first(search(http, album.name, query, region=region))
        assert hit["name"] == photo.stem, region
        assert hit["matches"] is not None and int(str(hit["matches"])) >= 20
    as_form = http.post(f"/v1/albums/{album.name}/search", params={"top_k": 3},
                        files={"file": ("q.jpg", query, "image/jpeg")}, data={"region": RIGHT})
    assert first(as_form)["name"] == right.stem


def test_a_region_is_in_the_pixels_of_the_photo_as_shown_after_its_exif_orientation(
        http: httpx.Client, album: Album, pair: tuple[Path, Path]) -> None:
    left, right = pair
    upright = two_photos_side_by_side(left, right)
    # Stored turned a quarter (640 x 320 shown, 320 x 640 stored); orientation 6 says: turn 90 clockwise to show.
    stored = upright.transpose(Image.Transpose.ROTATE_90)
    query = jpeg(stored, orientation=6)
    assert first(search(http, album.name, query, region=RIGHT))["name"] == right.stem
    assert first(search(http, album.name, query, region=LEFT))["name"] == left.stem
    outside = search(http, album.name, query, region=f"0,0,{SIDE},{2 * SIDE}")  # inside the stored pixels only
    assert outside.status_code == 422 and outside.json()["error"]["reason"] == "invalid_region"


def test_grpc_takes_a_typed_region_and_answers_as_http(stack: Stack, http: httpx.Client, album: Album,
                                                       pair: tuple[Path, Path]) -> None:
    query = jpeg(two_photos_side_by_side(*pair))
    over_http = first(search(http, album.name, query, region=RIGHT))
    with grpc.insecure_channel(f"127.0.0.1:{stack.ports.gateway}") as channel:
        gateway = gateway_pb2_grpc.GatewayStub(channel)
        request = gateway_pb2.SearchImagesRequest(album=album.name, image=query, top_k=3,
                                                  region=gateway_pb2.Region(x=SIDE, y=0, width=SIDE, height=SIDE))
        answer = gateway.SearchImages(request, timeout=60)
        assert answer.hits[0].image.id == over_http["id"]
        assert answer.hits[0].distance == pytest.approx(float(str(over_http["distance"])), abs=1e-6)
        with pytest.raises(grpc.RpcError) as refused:
            outside = gateway_pb2.Region(x=600, y=0, width=100, height=100)
            gateway.SearchImages(gateway_pb2.SearchImagesRequest(album=album.name, image=query, region=outside),
                                 timeout=60)
        assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert dict(refused.value.trailing_metadata() or ()).get("x-error-reason") == "invalid_region"


def test_sql_image_takes_a_region_and_answers_as_http(http: httpx.Client, album: Album,
                                                      pair: tuple[Path, Path]) -> None:
    query = jpeg(two_photos_side_by_side(*pair))
    over_http = search(http, album.name, query, region=LEFT).json()["results"]
    statement = (f"SELECT name, distance FROM \"{album.name}\" "
                 f"ORDER BY feature <=> image('q.jpg', region => '{LEFT}') LIMIT 3")
    response = http.post("/v1/sql", data={"statement": statement}, files={"file": ("q.jpg", query, "image/jpeg")})
    assert response.status_code == 200, response.text
    rows = response.json()["rows"]
    assert [r["image"]["id"] for r in rows] == [h["id"] for h in over_http]
    bad = statement.replace(LEFT, "1,2,3")
    refused = http.post("/v1/sql", data={"statement": bad}, files={"file": ("q.jpg", query, "image/jpeg")})
    assert refused.status_code == 400 and "x,y,w,h" in refused.json()["error"]["message"]


def test_cli_search_takes_a_region(stack: Stack, album: Album, pair: tuple[Path, Path], tmp_path: Path) -> None:
    query = tmp_path / "street.jpg"
    query.write_bytes(jpeg(two_photos_side_by_side(*pair)))
    env = {**os.environ, "IMAGESEARCH_URL": stack.http_url}
    done = subprocess.run([sys.executable, "-m", "services.cli", "search", str(query), "--album", album.name,
                           "--region", RIGHT], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert pair[1].stem in done.stdout.splitlines()[1]


@pytest.mark.parametrize(("region", "status", "reason"), [
    ("10,20,30", 400, "invalid_argument"),  # malformed
    ("a,b,c,d", 400, "invalid_argument"),
    ("-5,0,100,100", 400, "invalid_argument"),
    ("0,0,0,100", 400, "invalid_argument"),  # zero size
    ("0,0,4,100", 400, "invalid_argument"),  # too small to describe
    ("600,0,100,100", 422, "invalid_region"),  # past the right edge
    ("0,0,640,321", 422, "invalid_region"),
    ("99999999999999999999,0,10,10", 422, "invalid_region"),
])
def test_a_bad_region_is_a_4xx_naming_it(http: httpx.Client, album: Album, pair: tuple[Path, Path],
                                         region: str, status: int, reason: str) -> None:
    response = search(http, album.name, jpeg(two_photos_side_by_side(*pair)), region=region)
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["reason"] == reason and region[:20] in error["message"]


def test_a_region_needs_the_query_image_itself(http: httpx.Client, album: Album) -> None:
    response = http.post(f"/v1/albums/{album.name}/search", params={"region": LEFT},
                         data={"image_id": next(iter(album.ids.values()))})
    assert response.status_code == 400 and "region" in response.json()["error"]["message"]


def test_the_openapi_document_gives_the_region_and_its_format(http: httpx.Client) -> None:
    operation = http.get("/openapi.json").json()["paths"]["/v1/albums/{album}/search"]["post"]
    region = next(p for p in operation["parameters"] if p["name"] == "region")
    assert "x,y,w,h" in region["description"]
    assert region["schema"]["pattern"] == REGION_PATTERN
