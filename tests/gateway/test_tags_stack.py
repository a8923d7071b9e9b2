"""Tags over the real stack: the network's ImageNet labels stored at import, found by a word over HTTP,
gRPC, the CLI and SQL, in albums with and without declared columns; bad input is a 4xx, an unknown word
finds nothing."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest
from imagesearch.v1 import gateway_pb2, gateway_pb2_grpc

from services.devstack import ROOT, Stack
from tests.conftest import SERVERS, SERVICES
from tests.gateway.stack_helpers import unique_album, wait_for_job

pytestmark = pytest.mark.stack


@dataclass(frozen=True)
class Tagged:
    album: str
    ids: dict[str, str]  # photo stem -> image id


def add_photos(http: httpx.Client, album: str, photos: list[Path], columns: list[dict[str, str]] | None = None,
               attributes: list[str] | None = None) -> dict[str, str]:
    created = http.post("/v1/albums", json={"name": album, "columns": columns or []})
    assert created.status_code == 201, created.text
    files = [("file", (p.name, p.read_bytes(), "application/octet-stream")) for p in photos]
    data: dict[str, Any] = {"name": [p.stem for p in photos]}
    if attributes:
        data["attributes"] = attributes
    added = http.post(f"/v1/albums/{album}/images", files=files, data=data)
    assert added.status_code == 201, added.text
    return {p.stem: r["id"] for p, r in zip(photos, added.json()["results"], strict=True)}


@pytest.fixture(scope="module")
def tagged(_stack: Stack, photos: list[Path]) -> Tagged:
    """The sample photos (coffee, chelsea the cat, a rocket, ...) in an album without declared columns."""
    _stack.ensure(SERVERS + SERVICES)
    album = unique_album("tags")
    with httpx.Client(base_url=_stack.http_url, timeout=120) as http:
        return Tagged(album, add_photos(http, album, photos[:6]))


@pytest.fixture()
def http(stack: Stack) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=stack.http_url, timeout=120) as client:
        yield client


def by_tag(http: httpx.Client, album: str, tag: str, **params: str) -> list[str]:
    response = http.get(f"/v1/albums/{album}/images", params={"tag": tag, **params})
    assert response.status_code == 200, response.text
    return [image["name"] for image in response.json()["images"]]


def test_an_added_photo_gets_its_imagenet_labels_as_tags_with_scores(http: httpx.Client, tagged: Tagged) -> None:
    coffee = http.get(f"/v1/albums/{tagged.album}/images/{tagged.ids['coffee']}").json()["attributes"]
    assert coffee["tags"][0] == "espresso" and coffee["tag_scores"][0] > 0.5
    assert len(coffee["tags"]) == len(coffee["tag_scores"]) <= 5 and min(coffee["tag_scores"]) >= 0.1
    chelsea = http.get(f"/v1/albums/{tagged.album}/images/{tagged.ids['chelsea']}").json()["attributes"]
    assert chelsea["tags"][0] == "Egyptian cat"


def test_a_word_finds_the_images_tagged_with_a_label_it_is_a_lemma_of(http: httpx.Client, tagged: Tagged) -> None:
    assert by_tag(http, tagged.album, "espresso") == ["coffee"]
    assert by_tag(http, tagged.album, "EGYPTIAN_cat") == ["chelsea"]  # case and '_' do not matter
    # "offshore rig" is the second lemma of "drilling platform", the rocket's first label.
    rocket = http.get(f"/v1/albums/{tagged.album}/images/{tagged.ids['rocket']}").json()["attributes"]
    assert rocket["tags"][0] == "drilling platform"
    assert by_tag(http, tagged.album, "offshore rig") == ["rocket"]


def test_an_unknown_word_finds_nothing_and_a_malformed_one_is_400(http: httpx.Client, tagged: Tagged) -> None:
    assert by_tag(http, tagged.album, "no-such-word") == []
    for bad in ("", " ", "x" * 300, "a\x01b"):  # "": before, every image
        for path in ("images", "export"):
            response = http.get(f"/v1/albums/{tagged.album}/{path}", params={"tag": bad})
            assert (response.status_code, response.json()["error"]["reason"]) == (400, "invalid_argument"), bad
    missing = http.get(f"/v1/albums/{unique_album('none')}/images", params={"tag": "espresso"})
    assert missing.status_code == 404


def test_a_tag_combines_with_a_filter_and_sql_reads_tags_with_any(http: httpx.Client, tagged: Tagged) -> None:
    assert by_tag(http, tagged.album, "espresso", where="name = 'coffee'") == ["coffee"]
    assert by_tag(http, tagged.album, "espresso", where="name = 'chelsea'") == []
    bad = http.get(f"/v1/albums/{tagged.album}/images", params={"tag": "espresso", "where": "name = "})
    assert bad.status_code == 422 and bad.json()["error"]["reason"] == "invalid_filter"
    statement = f"SELECT name FROM \"{tagged.album}\" WHERE 'espresso' = ANY(tags)"
    rows = http.post("/v1/sql", json={"statement": statement}).json()["rows"]
    assert [row["values"][0] for row in rows] == ["coffee"]


def test_a_declared_tags_column_holds_them_typed_and_an_album_with_other_columns_as_attributes(
    http: httpx.Client, photos: list[Path],
) -> None:
    typed, other = unique_album("typed"), unique_album("other")
    add_photos(http, typed, photos[1:3], columns=[{"name": "tags", "type": "string_list"}])
    add_photos(http, other, photos[1:3], columns=[{"name": "price", "type": "float"}])
    for album, column in ((typed, "tags"), (other, "attributes.tags")):
        assert by_tag(http, album, "espresso") == ["coffee"]
        found = http.get(f"/v1/albums/{album}/images", params={"where": f"'espresso' = ANY({column})"}).json()
        assert [image["name"] for image in found["images"]] == ["coffee"]
    image = http.get(f"/v1/albums/{typed}/images", params={"tag": "espresso"}).json()["images"][0]
    assert image["attributes"]["tags"][0] == "espresso"
    for album in (typed, other):
        http.delete(f"/v1/albums/{album}")


def test_tags_a_caller_sets_are_kept_and_found(http: httpx.Client, photos: list[Path]) -> None:
    album = unique_album("own")
    ids = add_photos(http, album, photos[2:3], attributes=['{"tags": ["morning", "Cup"]}'])
    attributes = http.get(f"/v1/albums/{album}/images/{ids['coffee']}").json()["attributes"]
    assert attributes == {"tags": ["morning", "Cup"]}
    assert by_tag(http, album, "morning") == ["coffee"] and by_tag(http, album, "espresso") == []
    http.delete(f"/v1/albums/{album}")


def test_re_embedding_gives_an_untagged_image_its_tags(http: httpx.Client, photos: list[Path]) -> None:
    album = unique_album("retag")
    ids = add_photos(http, album, photos[2:3])
    cleared = http.patch(f"/v1/albums/{album}/images/{ids['coffee']}",
                         json={"attributes": {"tags": None, "tag_scores": None}})
    assert cleared.status_code == 200, cleared.text
    assert by_tag(http, album, "espresso") == []
    job = wait_for_job(http, http.post(f"/v1/albums/{album}/reembed").json()["id"])
    assert job["status"] == "done", job
    assert by_tag(http, album, "espresso") == ["coffee"]
    http.delete(f"/v1/albums/{album}")


def test_grpc_and_the_cli_find_images_by_a_word(stack: Stack, tagged: Tagged) -> None:
    with grpc.insecure_channel(f"127.0.0.1:{stack.ports.gateway}") as channel:
        gateway = gateway_pb2_grpc.GatewayStub(channel)
        listed = gateway.ListImages(gateway_pb2.ListImagesRequest(album=tagged.album, tag="Espresso"), timeout=60)
        assert [image.name for image in listed.images] == ["coffee"]
        with pytest.raises(grpc.RpcError) as refused:
            gateway.ListImages(gateway_pb2.ListImagesRequest(album=tagged.album, tag=" "), timeout=60)
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    env = {**os.environ, "IMAGESEARCH_URL": stack.http_url}
    done = subprocess.run([sys.executable, "-m", "services.cli", "images", "--album", tagged.album, "--tag",
                           "egyptian cat"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[0].startswith(tagged.ids["chelsea"]) and "Egyptian cat 0." in done.stdout
