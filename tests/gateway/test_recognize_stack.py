"""Recognition over the real stack: HTTP, gRPC, the CLI and SQL give the same answer; bad input is a 4xx."""

from __future__ import annotations

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

from services.devstack import ROOT, Stack
from tests.conftest import SERVERS, SERVICES
from tests.gateway.stack_helpers import cropped_copy, unique_album

pytestmark = pytest.mark.stack

# The kind of each sample photo (tests.conftest.sample_photos order); the last one is left unlabelled.
KINDS = ["person", "animal", "food", "space", "vehicle", "space", "texture", "texture", "texture", None]


@dataclass(frozen=True)
class Labelled:
    album: str
    ids: list[str]
    photos: list[Path]


@pytest.fixture(scope="module")
def labelled(_stack: Stack, photos: list[Path]) -> Labelled:
    """An album of the sample photos, each with its kind as the undeclared attribute `kind`, and a declared
    column `breed` that no image has a value of."""
    _stack.ensure(SERVERS + SERVICES)
    album = unique_album("rec")
    chosen = photos[:len(KINDS)]
    with httpx.Client(base_url=_stack.http_url, timeout=120) as http:
        created = http.post("/v1/albums", json={"name": album, "columns": [{"name": "breed", "type": "string"}]})
        assert created.status_code == 201, created.text
        files = [("file", (p.name, p.read_bytes(), "application/octet-stream")) for p in chosen]
        attributes = [json.dumps({"kind": k} if k else {}) for k in KINDS[:len(chosen)]]
        added = http.post(f"/v1/albums/{album}/images", files=files,
                          data={"name": [p.stem for p in chosen], "attributes": attributes})
        assert added.status_code == 201, added.text
    return Labelled(album, [r["id"] for r in added.json()["results"]], chosen)


@pytest.fixture()
def http(stack: Stack) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=stack.http_url, timeout=120) as client:
        yield client


def recognize(http: httpx.Client, album: str, params: dict[str, object], **request: object) -> httpx.Response:
    return http.post(f"/v1/albums/{album}/recognize", params=params, **request)  # type: ignore[arg-type]


def test_a_copy_of_a_labelled_photo_gets_its_label_over_http(http: httpx.Client, labelled: Labelled) -> None:
    query = cropped_copy(labelled.photos[1])  # the cat
    response = recognize(http, labelled.album, {"label": "kind", "evidence": 3},
                         files={"file": ("q.jpg", query, "image/jpeg")})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["attribute"] == "kind" and body["candidates"][0]["label"] == "animal"
    assert body["evidence"][0]["id"] == labelled.ids[1] and body["evidence"][0]["labels"] == ["animal"]
    assert len(body["evidence"]) == 3 and body["evidence"][0]["thumbnail_url"].endswith("/thumbnail")
    assert 0 <= body["confidence"] <= 1 and 0 <= body["known"] <= 1
    assert body["calibration"]["images"] == 9 and body["calibration"]["labels"] == 6
    assert body["unknown"] is (body["label"] is None)


def test_an_album_image_is_recognised_by_id_without_itself(http: httpx.Client, labelled: Labelled) -> None:
    response = recognize(http, labelled.album, {"label": "kind", "evidence": 50}, data={"image_id": labelled.ids[6]})
    assert response.status_code == 200, response.text
    evidence = [e["id"] for e in response.json()["evidence"]]
    assert labelled.ids[6] not in evidence and len(evidence) == 8


def test_a_threshold_of_one_answers_unknown(http: httpx.Client, labelled: Labelled) -> None:
    body = recognize(http, labelled.album, {"label": "kind", "threshold": 1},
                     data={"image_id": labelled.ids[0]}).json()
    assert body["unknown"] is True and body["label"] is None and body["threshold"] == 1


@pytest.mark.parametrize(("params", "form", "status", "reason"), [
    ({"label": "colour"}, {"image_id": "x"}, 422, "unknown_label"),
    ({"label": "breed"}, {"image_id": "x"}, 422, "no_labels"),
    ({}, {"image_id": "x"}, 400, "invalid_argument"),
    ({"label": "kind"}, {}, 400, "invalid_argument"),
    ({"label": "kind", "threshold": 2}, {"image_id": "x"}, 400, "invalid_argument"),
])
def test_bad_requests_are_clear_4xx(http: httpx.Client, labelled: Labelled, params: dict[str, object],
                                    form: dict[str, str], status: int, reason: str) -> None:
    form = {k: labelled.ids[0] if v == "x" else v for k, v in form.items()}
    response = recognize(http, labelled.album, params, data=form)
    assert (response.status_code, response.json()["error"]["reason"]) == (status, reason), response.text


def test_an_unknown_album_is_404(http: httpx.Client) -> None:
    response = recognize(http, unique_album("none"), {"label": "kind"}, data={"image_id": "0" * 32})
    assert (response.status_code, response.json()["error"]["reason"]) == (404, "album_not_found")


def test_the_openapi_document_describes_recognize(http: httpx.Client) -> None:
    document = http.get("/openapi.json").json()
    operation = document["paths"]["/v1/albums/{album}/recognize"]["post"]
    schema = operation["responses"]["200"]["content"]["application/json"]["schema"]
    assert schema == {"$ref": "#/components/schemas/RecognizeOut"}
    assert {"label", "unknown", "confidence", "candidates", "evidence"} <= set(
        document["components"]["schemas"]["RecognizeOut"]["properties"])


def test_grpc_recognize_answers_as_http(stack: Stack, http: httpx.Client, labelled: Labelled) -> None:
    over_http = recognize(http, labelled.album, {"label": "kind"}, data={"image_id": labelled.ids[3]}).json()
    with grpc.insecure_channel(f"127.0.0.1:{stack.ports.gateway}") as channel:
        gateway = gateway_pb2_grpc.GatewayStub(channel)
        answer = gateway.Recognize(gateway_pb2.RecognizeRequest(album=labelled.album, image_id=labelled.ids[3],
                                                                label="kind"), timeout=60)
        assert [c.label for c in answer.candidates] == [c["label"] for c in over_http["candidates"]]
        assert [e.image.id for e in answer.evidence] == [e["id"] for e in over_http["evidence"]]
        assert answer.unknown == over_http["unknown"] and answer.HasField("label") == (not answer.unknown)
        assert answer.calibration.images == 9 and answer.calibration.HasField("top1")
        with pytest.raises(grpc.RpcError) as refused:
            gateway.Recognize(gateway_pb2.RecognizeRequest(album=labelled.album, image_id=labelled.ids[3],
                                                           label="breed"), timeout=60)
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert dict(refused.value.trailing_metadata() or ())["x-error-reason"] == "no_labels"  # type: ignore[attr-defined]


def test_sql_recognize_answers_as_http(http: httpx.Client, labelled: Labelled) -> None:
    query = cropped_copy(labelled.photos[7])  # grass
    over_http = recognize(http, labelled.album, {"label": "kind"},
                          files={"file": ("q.jpg", query, "image/jpeg")}).json()
    statement = f"SELECT recognize(image('q.jpg'), 'kind') FROM \"{labelled.album}\""
    response = http.post("/v1/sql", data={"statement": statement}, files={"file": ("q.jpg", query, "image/jpeg")})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["columns"] == ["label", "confidence", "unknown", "known"]
    row = body["rows"][0]
    assert row["values"] == [over_http["label"], over_http["confidence"], over_http["unknown"], over_http["known"]]
    assert row["image"]["id"] == over_http["evidence"][0]["id"]
    refused = http.post("/v1/sql", json={"statement": f"SELECT recognize(image('q.jpg'), 'breed') FROM "
                                                      f"\"{labelled.album}\""})
    assert refused.status_code == 400  # no part named q.jpg: refused before the album is read


def test_cli_recognize_prints_the_label_and_evidence(stack: Stack, labelled: Labelled, tmp_path: Path) -> None:
    query = tmp_path / "cat.jpg"
    query.write_bytes(cropped_copy(labelled.photos[1]))
    env = {**os.environ, "IMAGESEARCH_URL": stack.http_url}
    done = subprocess.run([sys.executable, "-m", "services.cli", "recognize", str(query), "--album", labelled.album,
                           "--label", "kind", "--threshold", "0"], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].startswith("animal  confidence ")
    assert any(labelled.photos[1].stem in line and "animal" in line for line in lines[1:])
    missing = subprocess.run([sys.executable, "-m", "services.cli", "recognize", str(query), "--album",
                              labelled.album, "--label", "breed"], cwd=ROOT, env=env, capture_output=True, text=True,
                             timeout=120)
    assert missing.returncode == 2 and "no_labels" in missing.stderr
