"""Long work survives its parts dying under it. An import: the gateway killed, the extractor killed, the
object store killed and Milvus stopped, each in the middle of one import, and started again; it finishes
by itself with every image in the album exactly once, and no blob, local features, keypoint rows or staged
copy left without its image. A re-embed: the gateway killed in its middle; the album answers from its old vectors
until the re-embed, gone on from where it stopped, puts the new ones in their place."""

from __future__ import annotations

import io
import os
import random
import subprocess
import sys
import tarfile
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest
from imagesearch.v1 import search_pb2, search_pb2_grpc
from minio import Minio
from PIL import Image
from playwright.sync_api import Route, expect, sync_playwright

from services.devstack import ROOT, S3_ACCESS_KEY, S3_SECRET_KEY, Stack
from tests.conftest import SERVERS, SERVICES
from tests.gateway.test_web_page import CHROMIUM, VIEWPORT, open_album, screenshot

IMAGES = 160


def distinct_images(photos: list[Path], count: int) -> list[tuple[str, bytes]]:
    """Small, different images (random crops of real photos, each tinted its own way)."""
    rng = random.Random(7)
    sources = []
    for path in photos:
        with Image.open(path) as image:
            sources.append(image.convert("RGB"))
    made = []
    for n in range(count):
        source = sources[n % len(sources)]
        w, h = source.size
        side = rng.randint(min(w, h) // 3, min(w, h) // 2)
        x, y = rng.randint(0, w - side), rng.randint(0, h - side)
        tile = source.crop((x, y, x + side, y + side)).resize((160, 160))
        tint = Image.new("RGB", tile.size, tuple(rng.randint(0, 255) for _ in range(3)))  # type: ignore[arg-type]
        out = io.BytesIO()
        Image.blend(tile, tint, 0.25).save(out, format="PNG")
        made.append((f"img{n:03d}.png", out.getvalue()))
    return made


def _when(check: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        assert time.monotonic() < deadline, f"{what}: not after {timeout_s} s"
        time.sleep(0.3)


@pytest.fixture(scope="module")
def stack(_breakable_stack: Stack) -> Iterator[Stack]:
    """The stack whose parts these tests kill (tests.conftest's breakable stack: workers that take over a
    dead one's batch once Redis has not heard from it for 5 s), stopped after them: no later test needs it."""
    _breakable_stack.ensure(SERVERS + SERVICES)
    yield _breakable_stack
    _breakable_stack.stop()


def test_an_import_finishes_exactly_once_through_a_dead_gateway_extractor_object_store_and_milvus(
    stack: Stack, photos: list[Path]
) -> None:
    images = distinct_images(photos, IMAGES)
    archive = io.BytesIO()
    with tarfile.open(fileobj=archive, mode="w") as tar:
        for name, content in images:
            info = tarfile.TarInfo(name)
            info.size = len(content)
            tar.addfile(info, io.BytesIO(content))
    with httpx.Client(base_url=stack.http_url, timeout=120) as http:
        # With a keypoint index: its rows must come out exactly once too.
        assert http.post("/v1/albums", json={"name": "faults", "details": True}).status_code == 201
        created = http.post("/v1/albums/faults/imports", files={"archive": ("shots.tar", archive.getvalue())},
                            data={"attributes": '{"source": "import"}'})
        assert created.status_code == 202, created.text
        job_id = created.json()["id"]

        def processed() -> int:
            try:
                return int(http.get(f"/v1/imports/{job_id}").json()["processed"])
            except httpx.HTTPError:
                return -1

        for part, after in (("gateway", 10), ("extractor", 45), ("s3", 80), ("milvus", 115)):
            _when(lambda after=after: processed() >= after, 300, f"{after} processed before {part} dies")  # type: ignore[misc]
            done_before = processed()
            if part == "milvus":
                stack.stop(("milvus",))  # SIGKILL of a standalone Milvus may leave a store it cannot reopen
            else:
                stack.kill(part)
            time.sleep(3)
            stack.ensure(SERVERS + SERVICES)
            assert done_before < IMAGES, f"the import ended before {part} died"

        def finished() -> bool:
            answer = http.get(f"/v1/imports/{job_id}")
            return answer.status_code == 200 and answer.json()["status"] in ("done", "failed", "cancelled")

        _when(finished, 600, "the import finishing")
        job = http.get(f"/v1/imports/{job_id}").json()
        assert (job["status"], job["total"], job["processed"]) == ("done", IMAGES, IMAGES), job
        assert job["counts"] == {"added": IMAGES, "duplicates": 0, "skipped": 0, "replaced": 0, "failed": 0}
        results = http.get(f"/v1/imports/{job_id}/results").json()["results"]
        assert sorted(r["index"] for r in results) == list(range(IMAGES))
        assert http.get("/v1/albums/faults").json()["image_count"] == IMAGES
        ids, after = [], ""
        while page := http.get("/v1/albums/faults/images", params={"limit": 100, "after": after}).json()["images"]:
            ids.extend(i["id"] for i in page)
            after = page[-1]["id"]
        assert len(ids) == len(set(ids)) == IMAGES
        assert {r["id"] for r in results} == set(ids)

    store = Minio(f"127.0.0.1:{stack.ports.s3}", access_key=S3_ACCESS_KEY, secret_key=S3_SECRET_KEY, secure=False)
    keys = [o.object_name for o in store.list_objects("imagesearch", recursive=True)]
    assert len([k for k in keys if k.startswith("albums/faults/images/")]) == IMAGES
    assert len([k for k in keys if k.startswith("albums/faults/features/")]) == IMAGES
    assert not [k for k in keys if k.startswith("staging/")]
    stored = {k.rsplit("/", 1)[-1][:32] for k in keys if k.startswith("albums/faults/images/")}
    assert stored == set(ids)
    with grpc.insecure_channel(f"127.0.0.1:{stack.ports.search}") as channel:  # the keypoint rows: no orphan
        companion = search_pb2_grpc.SearchStub(channel)
        rows = companion.Query(search_pb2.QueryRequest(collection="faults.keypoints", limit=1000)).items
    source = {r["id"]: photos[r["index"] % len(photos)].stem for r in results}
    keypointless = {i for i in ids if source[i] == "color"}  # a flat synthetic chart: no SIFT keypoints
    indexed = [r.id for r in rows]
    assert len(indexed) == len(set(indexed)) and set(indexed) <= set(ids)  # no orphan, none twice
    assert set(ids) - set(indexed) <= keypointless  # every image with keypoints has its rows


def test_an_ingest_sent_in_parts_finishes_exactly_once_through_a_dead_gateway(stack: Stack, photos: list[Path],
                                                                            tmp_path: Path) -> None:
    """`imagesearch ingest` of a folder in parts of 30: the gateway killed once the three are queued, while they are
    embedded: the command waits for it and ends with every image once, three imports done and no staged copy left.
    (A gateway killed while it stages a part leaves that try failed and its batches' images counted duplicates by
    the try sent again: `test_an_import_finishes_exactly_once...` and the CLI's tests cover that path.)"""
    folder = tmp_path / "shots"
    folder.mkdir()
    for name, content in distinct_images(photos, 90):
        (folder / name).write_bytes(content)
    env = {**os.environ, "IMAGESEARCH_URL": stack.http_url}
    ingest = subprocess.Popen([sys.executable, "-m", "services.cli", "ingest", str(folder), "--album", "parts",
                               "--images-per-upload", "30", "--quiet"], cwd=ROOT, env=env, text=True,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    with httpx.Client(base_url=stack.http_url, timeout=60) as http:
        def all_queued() -> bool:
            try:
                jobs = http.get("/v1/imports", params={"album": "parts"}).json()["imports"]
            except httpx.HTTPError:
                return False
            return len(jobs) == 3 and jobs[0]["status"] in ("queued", "running")  # the newest: part 3

        _when(all_queued, 300, "the third part queued")
        assert ingest.poll() is None, "the ingest ended before the gateway died"
        stack.kill("gateway")
        time.sleep(3)
        stack.ensure(SERVERS + SERVICES)
        out, err = ingest.communicate(timeout=600)
        assert ingest.returncode == 0, out + err
        assert out.splitlines()[-1] == "album parts: 90 added, 0 failed", out + err
        jobs = http.get("/v1/imports", params={"album": "parts"}).json()["imports"]
        assert sorted((j["source"], j["status"], j["counts"]["added"]) for j in jobs) == [
            (f"shots.tar (part {k} of 3)", "done", 30) for k in (1, 2, 3)], jobs
        ids, after = [], ""
        while page := http.get("/v1/albums/parts/images", params={"limit": 100, "after": after}).json()["images"]:
            ids.extend(i["id"] for i in page)
            after = page[-1]["id"]
        assert len(ids) == len(set(ids)) == 90
    store = Minio(f"127.0.0.1:{stack.ports.s3}", access_key=S3_ACCESS_KEY, secret_key=S3_SECRET_KEY, secure=False)
    keys = [o.object_name for o in store.list_objects("imagesearch", recursive=True)]
    assert len([k for k in keys if k.startswith("albums/parts/images/")]) == 90
    assert not [k for k in keys if k.startswith("staging/")]


def test_the_page_sends_a_folder_in_parts_through_a_dead_gateway(stack: Stack, photos: list[Path], tmp_path: Path,
                                                                 tmp_path_factory: pytest.TempPathFactory) -> None:
    """The web page sends a folder in three parts; the gateway is killed as the second part goes up (the first
    part's import done) and started again a few seconds later. The page says it waits for the gateway, sends the
    part again once it answers (one import, the same Idempotency-Key each try), then the third: every image once,
    three imports done, no staged copy left."""
    if not Path(CHROMIUM).exists():
        pytest.skip("Debian's chromium is not installed (scripts/setup.sh --dev installs it)")
    folder = tmp_path / "trip"
    folder.mkdir()
    for name, content in distinct_images(photos, 5):
        (folder / name).write_bytes(content)
    with httpx.Client(base_url=stack.http_url, timeout=60) as http, sync_playwright() as playwright:
        assert http.post("/v1/albums", json={"name": "pageparts"}).status_code == 201
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--disable-gpu"])
        page = browser.new_context(viewport=VIEWPORT, base_url=stack.http_url).new_page()
        errors: list[str] = []
        page.on("pageerror", lambda error: errors.append(str(error)))
        page.goto("/")
        open_album(page, "pageparts", 0)
        page.evaluate("UPLOAD_PART.images = 2")  # 1,000 on the page: 5 images then go up in 3 parts
        tries: list[str] = []

        def kill_at_the_second_part(route: Route) -> None:
            tries.append(route.request.headers.get("idempotency-key") or "")
            if len(tries) == 2:
                _when(lambda: http.get("/v1/imports", params={"album": "pageparts"}).json()["imports"][0]["status"]
                      == "done", 120, "the first part done")
                stack.kill("gateway")
            route.continue_()

        page.route("**/v1/albums/*/imports", kill_at_the_second_part)
        page.click("#tabFolder")
        page.set_input_files("#importFolder", str(folder))
        expect(page.locator("#folderPicked")).to_contain_text("sent in 3 parts")
        page.click("#startImport")
        expect(page.locator("#importMsg")).to_have_text(
            "The upload did not get through (the gateway cannot be reached); it is sent again when the gateway "
            "answers.", timeout=60_000)
        screenshot(page, "test_the_page_sends_a_folder_in_parts_through_a_dead_gateway_waiting",
                   tmp_path_factory.getbasetemp() / "screenshots")
        time.sleep(3)
        stack.ensure(SERVERS + SERVICES)
        expect(page.locator("#importMsg")).to_have_text("Import of trip/ started in 3 parts: 5 images queued.",
                                                        timeout=120_000)
        for k in range(3):
            row = page.locator("#jobs .job", has_text=f"trip/ (part {k + 1} of 3)")
            expect(row.locator(".status")).to_have_text("done", timeout=60_000)
        screenshot(page, "test_the_page_sends_a_folder_in_parts_through_a_dead_gateway",
                   tmp_path_factory.getbasetemp() / "screenshots")
        browser.close()
        assert not errors, f"the page raised: {errors}"
        assert len(tries) >= 4 and len(set(tries)) == 3 and len(set(tries[1:-1])) == 1  # the second part, resent
        jobs = http.get("/v1/imports", params={"album": "pageparts"}).json()["imports"]
        assert sorted((j["source"], j["status"], j["counts"]["added"]) for j in jobs) == [
            (f"trip.tar (part {k} of 3)", "done", added) for k, added in ((1, 2), (2, 2), (3, 1))], jobs
        ids = [i["id"] for i in http.get("/v1/albums/pageparts/images", params={"limit": 100}).json()["images"]]
        assert len(ids) == len(set(ids)) == 5
    store = Minio(f"127.0.0.1:{stack.ports.s3}", access_key=S3_ACCESS_KEY, secret_key=S3_SECRET_KEY, secure=False)
    keys = [o.object_name for o in store.list_objects("imagesearch", recursive=True)]
    assert len([k for k in keys if k.startswith("albums/pageparts/images/")]) == 5
    assert not [k for k in keys if k.startswith("staging/")]


def test_a_re_embed_goes_on_after_the_gateway_dies_and_the_album_answers_all_along(
    stack: Stack, photos: list[Path]
) -> None:
    images = distinct_images(photos, 80)
    with httpx.Client(base_url=stack.http_url, timeout=120) as http:
        assert http.post("/v1/albums", json={"name": "again"}).status_code == 201
        for start in range(0, len(images), 40):
            files = [("file", (name, content, "image/png")) for name, content in images[start:start + 40]]
            assert http.post("/v1/albums/again/images", files=files).status_code == 201
        job_id = http.post("/v1/albums/again/reembed").json()["id"]

        def progress() -> dict[str, Any]:
            return dict(http.get(f"/v1/imports/{job_id}").json())

        _when(lambda: progress()["counts"]["added"] >= 16, 300, "part of the re-embed done")
        assert progress()["status"] == "running"
        stack.kill("gateway")
        stack.ensure(("gateway",))
        answers = []
        while (job := progress())["status"] not in ("done", "failed", "cancelled"):
            found = http.post("/v1/albums/again/search", files={"file": images[3][1]})
            answers.append((found.status_code, found.json()["results"][0]["name"] if found.status_code == 200 else ""))
        assert (job["status"], job["total"], job["counts"]["added"], job["counts"]["failed"]) == ("done", 80, 80, 0)
        assert all(a == (200, images[3][0]) for a in answers), answers
        assert http.get("/v1/albums/again").json()["image_count"] == 80
        assert [a["name"] for a in http.get("/v1/albums").json()["albums"]].count("again") == 1


def test_the_gateway_answers_at_once_after_redis_restarts(stack: Stack) -> None:
    """Its pooled connections to the Redis that died are dead: each is remade on its first use, not answered
    with a 503 (one a pooled connection, seen right after Redis was back)."""
    with httpx.Client(base_url=stack.http_url, timeout=30) as http:
        def listing() -> int:
            return http.get("/v1/imports", params={"limit": 5}).status_code

        with ThreadPoolExecutor(8) as pool:  # several pooled connections, each used since
            assert set(pool.map(lambda _: listing(), range(40))) == {200}
        stack.kill("redis")
        stack.ensure(SERVERS + SERVICES)
        with ThreadPoolExecutor(8) as pool:
            assert list(pool.map(lambda _: listing(), range(40))) == [200] * 40
