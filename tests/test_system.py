"""The system as a user runs it: the command line, and a restart that keeps every album."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import httpx

from services.devstack import ROOT, Stack


def _cli(stack: Stack, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "IMAGESEARCH_URL": stack.http_url}
    return subprocess.run([sys.executable, "-m", "services.cli", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)


def test_cli_ingests_a_folder_and_finds_a_photo_first(stack: Stack, photos: list[Path], tmp_path: Path) -> None:
    album = f"cli-{uuid.uuid4().hex[:8]}"
    folder = tmp_path / "pics"
    (folder / "sub").mkdir(parents=True)
    for i, photo in enumerate(photos[:5]):
        (folder / ("sub" if i % 2 else "") / photo.name).write_bytes(photo.read_bytes())
    (folder / "notes.txt").write_text("not an image, not picked up")

    ingest = _cli(stack, "ingest", str(folder), "--album", album, "--attributes", '{"source": "cli"}')
    assert ingest.returncode == 0, ingest.stderr
    assert "5 added" in ingest.stdout

    again = _cli(stack, "ingest", str(folder), "--album", album)
    assert "5 duplicate" in again.stdout

    search = _cli(stack, "search", str(photos[2]), "--album", album, "--top-k", "3")
    assert search.returncode == 0, search.stderr
    first = search.stdout.splitlines()[1].split()  # rank, distance, verified matches, name, url, attributes
    assert first[3] == photos[2].name
    assert float(first[1]) < 0.01 and int(first[2]) >= 100


def test_cli_reports_a_corrupt_file_and_keeps_the_rest(stack: Stack, photos: list[Path], tmp_path: Path) -> None:
    album = f"cli-{uuid.uuid4().hex[:8]}"
    (tmp_path / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    (tmp_path / photos[0].name).write_bytes(photos[0].read_bytes())
    result = _cli(stack, "ingest", str(tmp_path), "--album", album)
    assert result.returncode == 1
    assert "broken.jpg" in result.stdout + result.stderr
    assert "1 added" in result.stdout


def test_cli_search_of_an_unknown_album_says_so(stack: Stack, photos: list[Path]) -> None:
    result = _cli(stack, "search", str(photos[0]), "--album", "no-such-album")
    assert result.returncode == 2
    assert "album_not_found" in result.stderr


def test_albums_and_images_survive_a_restart_of_everything(stack: Stack, photos: list[Path]) -> None:
    album = f"restart-{uuid.uuid4().hex[:8]}"
    with httpx.Client(base_url=stack.http_url, timeout=60) as client:
        client.post("/v1/albums", json={"name": album})
        files = [("file", (p.name, p.read_bytes())) for p in photos[:4]]
        assert client.post(f"/v1/albums/{album}/images", files=files).status_code == 201
    stack.stop()
    stack.ensure(("milvus", "s3", "redis", "extractor", "search", "gateway"))
    with httpx.Client(base_url=stack.http_url, timeout=60) as client:
        # Milvus reloads the album's collection after a restart; until then reads answer 503.
        deadline = time.monotonic() + 180
        answer = client.get(f"/v1/albums/{album}")
        while (answer.status_code == 503 or answer.json().get("image_count") != 4) and time.monotonic() < deadline:
            time.sleep(2)
            answer = client.get(f"/v1/albums/{album}")
        assert answer.status_code == 200, answer.text
        assert answer.json()["image_count"] == 4
        hits = client.post(f"/v1/albums/{album}/search", params={"top_k": 2},
                           files={"file": photos[1].read_bytes()}).json()["results"]
        assert hits[0]["name"] == photos[1].name
        content = client.get(hits[0]["url"])
        assert content.status_code == 200
        assert content.content == photos[1].read_bytes()
