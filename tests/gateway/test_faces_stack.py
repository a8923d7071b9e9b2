"""Faces over the real stack: an album created with faces finds a person from another photo of them, over
HTTP, gRPC and the CLI; a photo without a face, an album without faces and a face index out of range are
clear 4xx answers; deleting an image deletes its faces.

The photos are real: three White House photos of one person and one of another (public domain), from the
face_recognition 1.3.0 sdist's tests, fetched by scripts/setup.sh --dev into .cache/faces/people.
"""

from __future__ import annotations

import io
import json
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
from tests.conftest import SERVERS, SERVICES
from tests.extractor.test_faces import side_by_side
from tests.gateway.stack_helpers import unique_album, wait_for_job

pytestmark = pytest.mark.stack

PEOPLE = ROOT / ".cache" / "faces" / "people"


@dataclass(frozen=True)
class Album:
    name: str
    ids: dict[str, str]  # file stem -> image id


@pytest.fixture(scope="module")
def people() -> dict[str, Path]:
    found = {p.stem: p for p in sorted(PEOPLE.glob("*.jpg"))}
    assert {"obama", "obama2", "obama3", "biden"} <= set(found), "run scripts/setup.sh --dev (photos of people)"
    return found


@pytest.fixture(scope="module")
def album(_stack: Stack, people: dict[str, Path], photos: list[Path]) -> Album:
    """Two photos of one person, one of another, and two photos without a face."""
    _stack.ensure(SERVERS + SERVICES)
    name = unique_album("faces")
    chosen = [people["obama"], people["obama2"], people["biden"], photos[1], photos[2]]
    with httpx.Client(base_url=_stack.http_url, timeout=120) as http:
        created = http.post("/v1/albums", json={"name": name, "faces": True})
        assert created.status_code == 201, created.text
        assert created.json()["faces"] is True and created.json()["face_model"]
        files = [("file", (p.name, p.read_bytes(), "image/jpeg")) for p in chosen]
        before = faces_described(_stack)
        added = http.post(f"/v1/albums/{name}/images", files=files, data={
            "name": [p.stem for p in chosen],
            "attributes": [json.dumps({"person": person}) for person in ("obama", "obama", "biden", "", "")]})
        assert added.status_code == 201, added.text
    # An add's images took the face thread's adds turn: in turns with face searches, before an import's.
    after = faces_described(_stack)
    assert {lane: after[lane] - before[lane] for lane in after} == {"interactive": 0, "adds": 5, "bulk": 0}
    return Album(name, {p.stem: r["id"] for p, r in zip(chosen, added.json()["results"], strict=True)})


@pytest.fixture()
def http(stack: Stack) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=stack.http_url, timeout=120) as client:
        yield client


def face_search(http: httpx.Client, album: str, photo: bytes, **params: object) -> httpx.Response:
    return http.post(f"/v1/albums/{album}/faces/search", params=params, files={"file": ("q.jpg", photo, "image/jpeg")})


def faces_described(stack: Stack) -> dict[str, float]:
    """The extractor's count of images whose faces it looked for, by lane (its Prometheus metrics)."""
    from prometheus_client.parser import text_string_to_metric_families

    text = httpx.get(f"http://127.0.0.1:{stack.ports.extractor_metrics}/metrics", timeout=10).text
    return {s.labels["lane"]: s.value for family in text_string_to_metric_families(text)
            if family.name == "imagesearch_extractor_face_images" for s in family.samples if s.name.endswith("_total")}


def test_a_new_photo_of_a_person_finds_the_album_photos_of_that_person_only(
        stack: Stack, http: httpx.Client, album: Album, people: dict[str, Path]) -> None:
    before = faces_described(stack)
    answer = face_search(http, album.name, people["obama3"].read_bytes())
    assert answer.status_code == 200, answer.text
    # The query image took the face thread's interactive turn, not the queue of images being stored.
    after = faces_described(stack)
    assert (after["interactive"] - before["interactive"], after["bulk"] - before["bulk"]) == (1, 0)
    body = answer.json()
    assert len(body["faces"]) == 1 and body["face"] == 0
    assert {r["name"] for r in body["results"]} == {"obama", "obama2"}
    for hit in body["results"]:
        assert hit["distance"] <= body["max_distance"]
        box = hit["face"]
        assert 0 <= box["x"] < box["x"] + box["width"] <= hit["width"]
        assert 0 <= box["y"] < box["y"] + box["height"] <= hit["height"]
        assert len(box["landmarks"]) == 5
        assert hit["attributes"]["person"] == "obama"
    # The other person is found by their own photo, and an album image by its id (not itself).
    biden = face_search(http, album.name, people["biden"].read_bytes()).json()["results"]
    assert [r["name"] for r in biden] == ["biden"]
    by_id = http.post(f"/v1/albums/{album.name}/faces/search", data={"image_id": album.ids["obama"]})
    assert [r["name"] for r in by_id.json()["results"]] == ["obama2"]


def test_an_image_lists_its_faces_in_its_own_pixels(http: httpx.Client, album: Album, photos: list[Path]) -> None:
    faces = http.get(f"/v1/albums/{album.name}/images/{album.ids['obama']}/faces").json()
    assert faces["width"] == 910 and faces["height"] == 1137
    assert len(faces["faces"]) == 1 and faces["faces"][0]["width"] > 100
    none = http.get(f"/v1/albums/{album.name}/images/{album.ids[photos[2].stem]}/faces")
    assert none.status_code == 200 and none.json()["faces"] == []


def test_a_photo_without_a_face_an_album_without_faces_and_a_missing_face_are_clear_answers(
        http: httpx.Client, album: Album, people: dict[str, Path], photos: list[Path]) -> None:
    no_face = face_search(http, album.name, photos[2].read_bytes())
    assert no_face.status_code == 422 and no_face.json()["error"]["reason"] == "no_face_found"
    second = face_search(http, album.name, people["obama3"].read_bytes(), face=1)
    assert second.status_code == 400 and "1 face" in second.json()["error"]["message"]
    broken = face_search(http, album.name, b"not an image")
    assert broken.status_code == 422 and broken.json()["error"]["reason"] == "invalid_image"
    plain = unique_album("nofaces")
    assert http.post("/v1/albums", json={"name": plain}).status_code == 201
    refused = face_search(http, plain, people["obama3"].read_bytes())
    assert refused.status_code == 409 and refused.json()["error"]["reason"] == "faces_not_enabled"
    assert "faces" in refused.json()["error"]["message"]
    assert http.get(f"/v1/albums/{plain}").json()["faces"] is False
    listed = {a["name"]: a for a in http.get("/v1/albums").json()["albums"]}
    assert listed[album.name]["faces"] is True and not any("." in n for n in listed)
    assert http.delete(f"/v1/albums/{plain}").status_code == 200


def test_grpc_and_the_cli_search_faces_as_http_does(stack: Stack, http: httpx.Client, album: Album,
                                                   people: dict[str, Path], tmp_path: Path) -> None:
    photo = people["obama3"].read_bytes()
    over_http = face_search(http, album.name, photo).json()["results"]
    with grpc.insecure_channel(f"127.0.0.1:{stack.ports.gateway}") as channel:
        gateway = gateway_pb2_grpc.GatewayStub(channel)
        answer = gateway.SearchFaces(gateway_pb2.SearchFacesRequest(album=album.name, image=photo), timeout=60)
        assert [h.image.id for h in answer.hits] == [r["id"] for r in over_http]
        assert answer.hits[0].face.width == over_http[0]["face"]["width"]
        with pytest.raises(grpc.RpcError) as refused:
            gateway.SearchFaces(gateway_pb2.SearchFacesRequest(album=album.name, image=photo, face=3), timeout=60)
        assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    env = {**os.environ, "IMAGESEARCH_URL": stack.http_url}
    cli = subprocess.run([sys.executable, "-m", "services.cli", "faces", str(people["obama3"]), "--album", album.name,
                          "--json"], capture_output=True, text=True, env=env, cwd=ROOT, timeout=120)
    assert cli.returncode == 0, cli.stderr
    assert [r["name"] for r in json.loads(cli.stdout)["results"]] == [r["name"] for r in over_http]
    # An image's faces, as the gateway found them at import.
    shown = subprocess.run([sys.executable, "-m", "services.cli", "image", album.ids["obama"], "--album", album.name,
                            "--faces", "--json"], capture_output=True, text=True, env=env, cwd=ROOT, timeout=120)
    assert shown.returncode == 0, shown.stderr
    stored = http.get(f"/v1/albums/{album.name}/images/{album.ids['obama']}/faces").json()["faces"]
    assert json.loads(shown.stdout)["faces"] == stored and len(stored) == 1


def test_a_picture_of_two_people_lists_both_faces_and_each_finds_its_person(
        http: httpx.Client, album: Album, people: dict[str, Path]) -> None:
    picture = side_by_side(people["obama3"].read_bytes(), people["biden"].read_bytes())
    found = []
    for face in (0, 1):
        answer = face_search(http, album.name, picture, face=face)
        assert answer.status_code == 200, answer.text
        body = answer.json()
        assert len(body["faces"]) == 2 and body["face"] == face
        found.append(frozenset(r["name"] for r in body["results"]))
    assert set(found) == {frozenset({"obama", "obama2"}), frozenset({"biden"})}


def test_a_face_looked_for_in_a_region_is_boxed_in_the_whole_photo(
        stack: Stack, http: httpx.Client, album: Album, people: dict[str, Path], tmp_path: Path) -> None:
    """A region cuts the part of the query the detector looks at; the faces answered are where they are in the
    whole photo (not in the part cut), the same over HTTP, gRPC and the CLI."""
    picture = side_by_side(people["obama3"].read_bytes(), people["biden"].read_bytes())
    width, height = Image.open(io.BytesIO(picture)).size
    whole = face_search(http, album.name, picture).json()
    left_width = round(Image.open(people["obama3"]).width * height / Image.open(people["obama3"]).height)
    (right,) = [f for f in whole["faces"] if f["x"] >= left_width]
    region = f"{left_width},0,{width - left_width},{height}"
    answer = face_search(http, album.name, picture, region=region)
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert (body["width"], body["height"], len(body["faces"])) == (width, height, 1)
    (found,) = body["faces"]
    for key in ("x", "y", "width", "height"):
        assert abs(found[key] - right[key]) <= 0.05 * right["width"], (found, right)
    assert all(left_width <= x <= width for x, _ in found["landmarks"])
    assert [r["name"] for r in body["results"]] == ["biden"]
    with grpc.insecure_channel(f"127.0.0.1:{stack.ports.gateway}") as channel:
        over_grpc = gateway_pb2_grpc.GatewayStub(channel).SearchFaces(gateway_pb2.SearchFacesRequest(
            album=album.name, image=picture, region=gateway_pb2.Region(x=left_width, y=0, width=width - left_width,
                                                                        height=height)), timeout=60)
    assert (over_grpc.faces[0].x, over_grpc.width, [h.image.name for h in over_grpc.hits]) == (
        found["x"], width, ["biden"])
    (tmp_path / "two.jpg").write_bytes(picture)
    cli = subprocess.run([sys.executable, "-m", "services.cli", "faces", str(tmp_path / "two.jpg"), "--album",
                          album.name, "--region", region, "--json"], capture_output=True, text=True, cwd=ROOT,
                         env={**os.environ, "IMAGESEARCH_URL": stack.http_url}, timeout=120)
    assert cli.returncode == 0, cli.stderr
    assert json.loads(cli.stdout)["faces"] == body["faces"]


def test_recognize_by_faces_names_the_person_or_says_unknown(stack: Stack, http: httpx.Client, album: Album,
                                                              people: dict[str, Path]) -> None:
    def recognize(photo: bytes) -> dict[str, object]:
        answer = http.post(f"/v1/albums/{album.name}/recognize", params={"label": "person", "faces": "true"},
                           files={"file": ("q.jpg", photo, "image/jpeg")})
        assert answer.status_code == 200, answer.text
        return dict(answer.json())

    known = recognize(people["obama3"].read_bytes())
    assert known["label"] == "obama" and known["unknown"] is False
    # The face recognised is the one a face search takes (the largest), where it is in the photo.
    searched = face_search(http, album.name, people["obama3"].read_bytes()).json()
    assert known["face"] == searched["faces"][searched["face"]]
    assert [e["name"] for e in known["evidence"]][:2] == ["obama", "obama2"]  # type: ignore[index]
    # A person the album has no photo of: the nearest labelled face is another person's.
    album_without_biden = unique_album("faces-nobiden")
    assert http.post("/v1/albums", json={"name": album_without_biden, "faces": True}).status_code == 201
    photos = [people["obama"], people["obama2"]]
    http.post(f"/v1/albums/{album_without_biden}/images", files=[("file", (p.name, p.read_bytes())) for p in photos],
              data={"attributes": [json.dumps({"person": "obama"})] * 2})
    stranger = http.post(f"/v1/albums/{album_without_biden}/recognize", params={"label": "person", "faces": "true"},
                         files={"file": ("q.jpg", people["biden"].read_bytes(), "image/jpeg")}).json()
    assert stranger["unknown"] is True and stranger["label"] is None
    with grpc.insecure_channel(f"127.0.0.1:{stack.ports.gateway}") as channel:
        answer = gateway_pb2_grpc.GatewayStub(channel).Recognize(gateway_pb2.RecognizeRequest(
            album=album.name, image=people["obama3"].read_bytes(), label="person", faces=True), timeout=60)
        assert answer.label == "obama" and not answer.unknown
        assert (answer.face.x, answer.face.width) == (known["face"]["x"], known["face"]["width"])  # type: ignore[index]
        plain = gateway_pb2_grpc.GatewayStub(channel).Recognize(gateway_pb2.RecognizeRequest(
            album=album.name, image=people["obama3"].read_bytes(), label="person"), timeout=60)
        assert not plain.HasField("face")  # by the whole photo: no face
    assert http.delete(f"/v1/albums/{album_without_biden}").status_code == 200


def test_sql_orders_by_face_distance_and_recognises_by_face(http: httpx.Client, album: Album,
                                                            people: dict[str, Path]) -> None:
    photo = people["obama3"].read_bytes()

    def sql(statement: str) -> httpx.Response:
        return http.post("/v1/sql", data={"statement": statement}, files=[("file", ("q.jpg", photo, "image/jpeg"))])

    over_http = face_search(http, album.name, photo).json()["results"]
    answer = sql(f'SELECT name, distance FROM "{album.name}" ORDER BY face <=> image(\'q.jpg\') LIMIT 5')
    assert answer.status_code == 200, answer.text
    rows = answer.json()["rows"]
    assert [r["values"][0] for r in rows] == [h["name"] for h in over_http]
    assert [r["values"][1] for r in rows] == pytest.approx([h["distance"] for h in over_http], abs=1e-5)
    named = sql(f'SELECT recognize(image(\'q.jpg\'), \'person\', faces => true) FROM "{album.name}"').json()
    assert named["rows"][0]["values"][0] == "obama"
    filtered = sql(f'SELECT name FROM "{album.name}" WHERE person = \'obama\' ORDER BY face <-> image(\'q.jpg\')')
    assert filtered.status_code == 400 and "WHERE" in filtered.json()["error"]["message"]


def test_an_album_made_without_faces_gets_them_by_a_re_embed(stack: Stack, http: httpx.Client,
                                                             people: dict[str, Path]) -> None:
    name = unique_album("later-faces")
    assert http.post("/v1/albums", json={"name": name}).status_code == 201
    chosen = [people["obama"], people["obama2"], people["biden"]]
    added = http.post(f"/v1/albums/{name}/images", files=[("file", (p.name, p.read_bytes())) for p in chosen],
                      data={"name": [p.stem for p in chosen]})
    assert added.status_code == 201
    assert face_search(http, name, people["obama3"].read_bytes()).status_code == 409
    before = faces_described(stack)
    job = http.post(f"/v1/albums/{name}/reembed", params={"faces": "true"})
    assert job.status_code == 202, job.text
    assert wait_for_job(http, job.json()["id"])["status"] == "done"
    after = faces_described(stack)  # the re-embed's images waited behind any face search's
    assert (after["interactive"] - before["interactive"], after["bulk"] - before["bulk"]) == (0, 3)
    assert http.get(f"/v1/albums/{name}").json()["faces"] is True
    found = face_search(http, name, people["obama3"].read_bytes()).json()["results"]
    assert sorted(r["name"] for r in found) == ["obama", "obama2"]
    assert http.delete(f"/v1/albums/{name}").status_code == 200


def test_deleting_an_image_deletes_its_faces(http: httpx.Client, album: Album, people: dict[str, Path]) -> None:
    assert http.delete(f"/v1/albums/{album.name}/images/{album.ids['obama2']}").status_code == 200
    found = face_search(http, album.name, people["obama3"].read_bytes()).json()["results"]
    assert [r["name"] for r in found] == ["obama"]
