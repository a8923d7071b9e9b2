"""Imports over the real stack: URLs, an archive with a manifest of typed attributes, progress, failures
named per image, cancelling, near-duplicates, and the same over gRPC; and a batch tried again after a
failed try, over the use cases' fakes and a real Redis."""

from __future__ import annotations

import asyncio
import hashlib
import io
import json
import tarfile
import threading
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest
from imagesearch.v1 import gateway_pb2, gateway_pb2_grpc

from services.cli import main as cli_main
from services.cli.jobs import start_import
from services.client import GatewayClient
from services.common.errors import InvalidArgument, NotFound, SearchUnavailable, StoreUnavailable, Unavailable
from services.common.schema import AlbumSchema, Column, ColumnType
from services.devstack import Stack
from services.gateway import import_queue as import_queue_module
from services.gateway.blobstore import features_key, image_key, staging_key
from services.gateway.deps import Deps
from services.gateway.import_queue import Batch, ClaimsRaced, ImportJob, ImportQueue, ImportStatus, ItemSource
from services.gateway.records import AddResult, Item, NewImage, OnDuplicate
from services.gateway.usecases import albums, images, imports, ingest, reembed
from services.gateway.usecases.shared import image_id_of
from tests.gateway.conftest import MakeFakes
from tests.gateway.fakes import Fakes, LoopbackSearch, NotedFile, SlowGet, png, tar_gz, until, zipped
from tests.gateway.stack_helpers import (
    cropped_copy,
    file_server,
    given_attributes,
    queue_in_db,
    unique_album,
    wait_for_job,
)

pytestmark = pytest.mark.stack


@pytest.fixture()
def http(stack: Stack) -> Any:
    with httpx.Client(base_url=stack.http_url, timeout=120) as client:
        yield client


def test_an_import_of_urls_reaches_done_with_each_failure_named(http: httpx.Client, photos: list[Path]) -> None:
    album = unique_album("urls")
    assert http.post("/v1/albums", json={"name": album}).status_code == 201
    with file_server(photos[0].parent) as base:
        urls = [f"{base}/{p.name}" for p in photos[:3]] + [f"{base}/missing.png"]
        created = http.post(f"/v1/albums/{album}/imports", json={"urls": urls, "attributes": {"source": "job"}})
        assert created.status_code == 202, created.text
        assert created.json()["status"] in ("queued", "running", "done") and created.json()["total"] == 4
        job = wait_for_job(http, created.json()["id"])
    assert (job["status"], job["processed"], job["counts"]["added"], job["counts"]["failed"]) == ("done", 4, 3, 1)
    assert job["rate"] > 0 and job["eta_s"] is None and job["source"] == "4 URLs"  # what listings name it by
    failures = http.get(f"/v1/imports/{job['id']}/results", params={"failed": True}).json()
    assert [(f["url"], f["error"]["reason"]) for f in failures["results"]] == [(urls[3], "url_fetch_failed")]
    assert failures["next_after"] is None
    pages, after = [], None  # the results a page of 3 at a time
    while True:
        page = http.get(f"/v1/imports/{job['id']}/results", params={"limit": 3, **({} if after is None else
                                                                                  {"after": after})}).json()
        pages.append([r["index"] for r in page["results"]])
        if (after := page["next_after"]) is None:
            break
    assert pages == [[0, 1, 2], [3]]
    for bad in ({"limit": 0}, {"limit": 10_001}, {"after": -1}):  # out of range: 400, as a listing's limit is
        refused = http.get(f"/v1/imports/{job['id']}/results", params=bad)
        assert (refused.status_code, refused.json()["error"]["reason"]) == (400, "invalid_argument"), refused.text
    not_a_number = http.get(f"/v1/imports/{job['id']}/results", params={"limit": "ten"})
    assert not_a_number.status_code == 422  # not of its type: 422, as the README says
    assert http.get(f"/v1/albums/{album}").json()["image_count"] == 3
    listed = http.get("/v1/imports", params={"album": album}).json()["imports"]
    assert [j["id"] for j in listed] == [job["id"]]


def test_an_archive_with_a_manifest_gets_typed_attributes(http: httpx.Client, photos: list[Path]) -> None:
    album = unique_album("zip")
    columns = [{"name": "price", "type": "float"}, {"name": "sizes", "type": "string_list"}]
    assert http.post("/v1/albums", json={"name": album, "columns": columns}).status_code == 201
    files = {f"shoes/{p.name}": p.read_bytes() for p in photos[:4]}
    files["shoes/broken.jpg"] = b"\xff\xd8 not really a jpeg"
    files["notes.txt"] = b"not an image, left out"
    files["__MACOSX/._x.png"] = b"left out"
    manifest = (f"file,name,price,sizes,kind\nshoes/{photos[0].name},,39.5,41|42,promo\n{photos[1].name},,12,,\n"
                f"shoes/{photos[2].name},,cheap,,\nshoes/gone.png,,1,,\nshoes/broken.jpg,Broken shoe,1,,\n"
                f"store/shoes/{photos[3].name},,5,,\n")  # the path from a folder above the one sent
    created = http.post(f"/v1/albums/{album}/imports", files={
        "archive": ("shoes.zip", zipped(files)), "manifest": ("shoes.csv", manifest.encode())})
    assert created.status_code == 422 and "price is a float column" in created.json()["error"]["message"]
    manifest = manifest.replace("cheap", "20")
    created = http.post(f"/v1/albums/{album}/imports", files={
        "archive": ("shoes.zip", zipped(files)), "manifest": ("shoes.csv", manifest.encode())},
        data={"attributes": '{"source": "zip"}'})
    assert created.status_code == 202, created.text
    job = wait_for_job(http, created.json()["id"])
    assert (job["total"], job["counts"]["added"], job["counts"]["failed"]) == (6, 4, 2)
    assert job["source"] == "shoes.zip + shoes.csv"
    failures = {(f["name"], f["file"]): f["error"]["reason"] for f in http.get(
        f"/v1/imports/{job['id']}/results", params={"failed": True}).json()["results"]}
    # Each by its name, and the file it is (a manifest's name names it otherwise).
    assert failures == {("Broken shoe", "shoes/broken.jpg"): "invalid_image",
                        ("shoes/gone.png", "shoes/gone.png"): "file_not_found"}
    images = {i["name"]: given_attributes(i["attributes"])
              for i in http.get(f"/v1/albums/{album}/images").json()["images"]}
    assert images[f"shoes/{photos[0].name}"] == {"price": 39.5, "sizes": ["41", "42"], "kind": "promo",
                                                 "source": "zip"}
    assert images[f"shoes/{photos[1].name}"] == {"price": 12.0, "sizes": None, "source": "zip"}
    assert images[f"shoes/{photos[3].name}"] == {"price": 5.0, "sizes": None, "source": "zip"}


def test_the_same_photo_twice_in_one_import_is_added_once(http: httpx.Client, photos: list[Path]) -> None:
    album = unique_album("twice")
    assert http.post("/v1/albums", json={"name": album}).status_code == 201
    files = {"a.jpg": photos[0].read_bytes(), "copy-of-a.jpg": photos[0].read_bytes(), "b.jpg": photos[1].read_bytes()}
    job = wait_for_job(http, http.post(f"/v1/albums/{album}/imports",
                                   files={"archive": ("twice.zip", zipped(files))}).json()["id"])
    assert (job["counts"]["added"], job["counts"]["duplicates"], job["processed"]) == (2, 1, 3)
    results = http.get(f"/v1/imports/{job['id']}/results").json()["results"]
    assert {r["name"]: r["status"] for r in results} == {"a.jpg": "added", "copy-of-a.jpg": "duplicate",
                                                         "b.jpg": "added"}
    assert http.get(f"/v1/albums/{album}").json()["image_count"] == 2


def test_an_import_sent_again_with_its_idempotency_key_is_answered_with_the_one_queued(
        http: httpx.Client, photos: list[Path]) -> None:
    """The gateway queued an import and stopped before it answered: the client sends it again with the same key
    and gets that import, not a second one running over the same images."""
    album = unique_album("idem")
    assert http.post("/v1/albums", json={"name": album}).status_code == 201
    archive = zipped({p.name: p.read_bytes() for p in photos[:2]})
    sent = [http.post(f"/v1/albums/{album}/imports", files={"archive": ("a.zip", archive)},
                      headers={"Idempotency-Key": key}) for key in ("try-1", "try-1", "try-2")]
    assert [r.status_code for r in sent] == [202, 202, 202], sent[-1].text
    assert sent[1].json()["id"] == sent[0].json()["id"] != sent[2].json()["id"]
    assert len(http.get("/v1/imports", params={"album": album}).json()["imports"]) == 2
    refused = http.post(f"/v1/albums/{album}/imports", files={"archive": ("a.zip", archive)},
                        headers={"Idempotency-Key": "k" * 201})
    assert refused.status_code == 422, refused.text
    wait_for_job(http, sent[2].json()["id"])


def gzipped_tar(content: bytes) -> bytes:
    """A .tar.gz of one image, `a.png`."""
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w:gz") as tar:
        member = tarfile.TarInfo("a.png")
        member.size = len(content)
        tar.addfile(member, io.BytesIO(content))
    return out.getvalue()


def test_bad_imports_are_refused_before_anything_is_queued(http: httpx.Client) -> None:
    album = unique_album("bad")
    assert http.post("/v1/albums", json={"name": album}).status_code == 201
    cases = [
        ({"json": {}}, 400),
        ({"json": {"urls": ["ftp://x/y.png"]}}, 400),
        ({"json": {"urls": ["http://x/y.png"], "on_duplicate": "maybe"}}, 400),
        ({"json": {"url": ["http://x/y.png"]}}, 400),  # misspelt: named, not left unread (then "needs URLs")
        ({"files": {"archive": ("x.zip", b"not an archive")}}, 400),
        ({"files": {"archive": ("x.zip", zipped({"a.txt": b"x"}))}}, 400),
        ({"files": {"archive": ("x.tar.gz", gzipped_tar(png(1))[:40])}}, 400),  # cut short: not a 500
        ({"files": {"archive": ("x.tar.gz", gzipped_tar(png(1))[:len(gzipped_tar(png(1))) // 2])}}, 400),
    ]
    for request, status in cases:
        answer = http.post(f"/v1/albums/{album}/imports", **request)
        assert answer.status_code == status, (request, answer.text)
    not_archive = http.post(f"/v1/albums/{album}/imports", files={"archive": ("x.zip", b"not an archive")}).json()
    assert not_archive["error"]["message"] == ("the archive is neither a zip nor a tar file (.zip, .tar, .tar.gz, "
                                               ".tar.bz2 or .tar.xz); its first bytes are b'not '")
    misspelt = http.post(f"/v1/albums/{album}/imports", json={"url": ["http://x/y.png"]}).json()
    assert misspelt["error"]["message"] == ("send JSON {\"urls\": [...]} or a multipart form with an archive: url: not "
                                            "a field of this request")
    photo = http.post(f"/v1/albums/{album}/imports", files={"archive": ("x.zip", png(2))}).json()
    assert photo["error"]["message"] == ("the archive is a PNG image, not a zip or tar file (.zip, .tar, .tar.gz, "
                                         ".tar.bz2 or .tar.xz): add images themselves with POST "
                                         "/v1/albums/{album}/images (the page's Add images)")
    assert http.post("/v1/albums/no-such-album/imports", json={"urls": ["http://x/y.png"]}).status_code == 404
    assert http.get("/v1/imports/0123456789abcdef0123456789abcdef").status_code == 404
    assert http.get(f"/v1/albums/{album}").json()["image_count"] == 0
    # A refused request leaves no import behind (before, a failed one, "nothing imported", for each).
    assert http.get("/v1/imports", params={"album": album}).json()["imports"] == []


def test_an_upload_stopped_midway_is_cancelled_by_its_key_over_http_and_grpc(
        stack: Stack, http: httpx.Client, photos: list[Path]) -> None:
    """A client stopped its upload, not knowing whether the gateway read it all: cancelled by its key before the
    request comes, the import it makes is cancelled as it starts, nothing staged; after, the import it made is
    cancelled and answered. Over gRPC alike; a bad key or an unknown album is refused."""
    album = unique_album("stopkey")
    assert http.post("/v1/albums", json={"name": album}).status_code == 201
    archive = zipped({p.name: p.read_bytes() for p in photos[:2]})
    early = http.post(f"/v1/albums/{album}/imports/cancel", json={"idempotency_key": "stopped-1"})
    assert (early.status_code, early.json()) == (200, {"import": None}), early.text
    late = http.post(f"/v1/albums/{album}/imports", files={"archive": ("a.zip", archive)},
                     headers={"Idempotency-Key": "stopped-1"})
    assert late.status_code == 202, late.text
    assert (late.json()["status"], late.json()["total"]) == ("cancelled", 0)
    again = http.post(f"/v1/albums/{album}/imports/cancel", json={"idempotency_key": "stopped-1"}).json()["import"]
    assert (again["id"], again["status"]) == (late.json()["id"], "cancelled")
    with grpc.insecure_channel(f"127.0.0.1:{stack.ports.gateway}") as channel:
        gateway = gateway_pb2_grpc.GatewayStub(channel)
        job = gateway.CreateImport(gateway_pb2.CreateImportRequest(album=album, archive=archive,
                                                                   idempotency_key="stopped-2"), timeout=60)
        by_key = gateway_pb2.CancelImportByKeyRequest(album=album, idempotency_key="stopped-2")
        answer = gateway.CancelImportByKey(by_key, timeout=10)
        assert answer.HasField("import_job") and answer.import_job.id == job.id
        assert answer.import_job.status in ("cancelled", "done")
        none = gateway.CancelImportByKey(gateway_pb2.CancelImportByKeyRequest(album=album, idempotency_key="other"),
                                         timeout=10)
        assert not none.HasField("import_job")
        with pytest.raises(grpc.RpcError) as refused:
            gateway.CancelImportByKey(gateway_pb2.CancelImportByKeyRequest(album=album), timeout=10)
        assert refused.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    bad = http.post(f"/v1/albums/{album}/imports/cancel", json={"idempotency_key": "line\nbreak"})
    assert (bad.status_code, bad.json()["error"]["reason"]) == (400, "invalid_argument"), bad.text
    assert http.post(f"/v1/albums/{album}/imports/cancel", json={}).status_code == 422
    missing = http.post(f"/v1/albums/{album}-gone/imports/cancel", json={"idempotency_key": "k"})
    assert missing.status_code == 404, missing.text
    assert http.get(f"/v1/albums/{album}").json()["image_count"] <= 2
    assert "/v1/albums/{album}/imports/cancel" in http.get("/openapi.json").json()["paths"]


class StoppedUpload(GatewayClient):
    """A client whose user presses Ctrl-C during an import's upload: `after_sending`, once the gateway has taken
    it (its answer not read), else before anything is sent; `answer_lost`: the gateway took it, its answer was
    lost on the way (the client waits to send it again: the user presses Ctrl-C during that wait)."""

    def __init__(self, base_url: str, after_sending: bool, answer_lost: bool = False) -> None:
        super().__init__(base_url)
        self.after_sending = after_sending
        self.answer_lost = answer_lost
        self.keys: list[str] = []

    def start_import(self, album: str, **fields: Any) -> dict[str, Any]:
        self.keys.append(fields["idempotency_key"])
        if self.after_sending:
            super().start_import(album, **fields)
        if self.answer_lost:
            raise httpx.RemoteProtocolError("Server disconnected without sending a response.")
        raise KeyboardInterrupt


def pressed_ctrl_c(seconds: float) -> None:
    raise KeyboardInterrupt


def test_the_cli_stopped_during_an_upload_cancels_the_import_the_gateway_made_or_makes_of_it(
        stack: Stack, http: httpx.Client, tmp_path: Path, photos: list[Path],
        capsys: pytest.CaptureFixture[str]) -> None:
    album = unique_album("cli-stop")
    assert http.post("/v1/albums", json={"name": album}).status_code == 201
    archive = tmp_path / "two.zip"
    archive.write_bytes(zipped({p.name: p.read_bytes() for p in photos[:2]}))
    taken = StoppedUpload(stack.http_url, after_sending=True)
    with pytest.raises(KeyboardInterrupt):
        start_import(taken, album, archive=archive)
    job = http.get("/v1/imports", params={"album": album}).json()["imports"][0]
    assert job["status"] == "cancelled" or (job["status"] == "done" and job["processed"] == 2)
    assert f"its import {job['id']} is {job['status']}" in capsys.readouterr().err
    early = StoppedUpload(stack.http_url, after_sending=False)
    with pytest.raises(KeyboardInterrupt):
        start_import(early, album, archive=archive)
    assert "before the gateway made an import of it (should it read the upload after all, that import is " \
        "cancelled as it starts" in capsys.readouterr().err
    late = http.post(f"/v1/albums/{album}/imports", files={"archive": ("two.zip", archive.read_bytes())},
                     headers={"Idempotency-Key": early.keys[0]})  # the stopped upload, read after all
    assert late.json()["status"] == "cancelled"
    assert cli_main(["--url", stack.http_url, "cancel-import", "--album", album, "--key", early.keys[0]]) == 0
    assert f"import {late.json()['id']}: cancelled" in capsys.readouterr().out
    assert cli_main(["--url", stack.http_url, "cancel-import", "--key", "k"]) == 2

    lost = StoppedUpload(stack.http_url, after_sending=True, answer_lost=True)
    with pytest.raises(KeyboardInterrupt):  # stopped while it waits to send again
        start_import(lost, album, archive=archive, sleep=pressed_ctrl_c)
    job = http.get("/v1/imports", params={"album": album}).json()["imports"][0]  # the newest
    assert job["id"] != late.json()["id"]
    assert job["status"] == "cancelled" or (job["status"] == "done" and job["processed"] == 2)
    assert f"its import {job['id']} is {job['status']}" in capsys.readouterr().err


def test_a_cancelled_import_stops_and_keeps_what_it_added(http: httpx.Client, photos: list[Path]) -> None:
    album = unique_album("cancel")
    assert http.post("/v1/albums", json={"name": album}).status_code == 201
    # Six batches: more than the workers run at once, so the cancel lands before the last ones start.
    files = {f"{n}-{p.name}": cropped_copy(p, keep=0.4 + n / 100) for n in range(24) for p in photos[:4]}
    created = http.post(f"/v1/albums/{album}/imports", files={"archive": ("many.zip", zipped(files))})
    cancelled = http.post(f"/v1/imports/{created.json()['id']}/cancel").json()
    assert cancelled["status"] in ("cancelled", "done")
    # A batch already running when the import was cancelled still finishes (and counts what it added);
    # none starts after it.
    def seen() -> tuple[int, int]:
        added = http.get(f"/v1/imports/{cancelled['id']}").json()["counts"]["added"]
        return added, http.get(f"/v1/albums/{album}").json()["image_count"]

    views, deadline = [(-2, -2), (-1, -1), seen()], time.monotonic() + 60
    while not (views[-1] == views[-2] == views[-3] and views[-1][0] == views[-1][1]) and time.monotonic() < deadline:
        time.sleep(3)
        views.append(seen())
    job = http.get(f"/v1/imports/{cancelled['id']}").json()
    assert job["status"] == cancelled["status"]
    assert views[-1][1] < len(files) if job["status"] == "cancelled" else views[-1][1] == len(files)
    time.sleep(3)
    assert seen() == views[-1]  # nothing more after the cancel


def test_near_duplicates_are_skipped_on_import_and_listed_in_the_album(
        http: httpx.Client, stack: Stack, photos: list[Path], capsys: pytest.CaptureFixture[str]) -> None:
    album = unique_album("near")
    assert http.post("/v1/albums", json={"name": album}).status_code == 201
    originals = {p.name: p.read_bytes() for p in photos[:3]}
    created = http.post(f"/v1/albums/{album}/imports", files={"archive": ("a.zip", zipped(originals))})
    wait_for_job(http, created.json()["id"])
    resaved = {f"again-{p.name}": cropped_copy(p, keep=1.0, quality=90) for p in photos[:3]}
    created = http.post(f"/v1/albums/{album}/imports", files={"archive": ("b.zip", zipped(resaved))},
                        data={"on_duplicate": "skip"})
    job = wait_for_job(http, created.json()["id"])
    assert job["counts"]["skipped"] == 3 and job["counts"]["added"] == 0
    kept = http.post(f"/v1/albums/{album}/imports", files={"archive": ("c.zip", zipped(resaved))})
    assert wait_for_job(http, kept.json()["id"])["counts"]["added"] == 3
    found = http.get(f"/v1/albums/{album}/duplicates").json()
    pairs = sorted(sorted([p.name, f"again-{p.name}"]) for p in photos[:3])
    assert sorted(sorted(i["name"] for i in g["images"]) for g in found["groups"]) == pairs
    assert found["max_distance"] > 0  # the gateway's near-duplicate distance, said

    # The same groups from the command line and over gRPC, the distance used said by both.
    capsys.readouterr()
    assert cli_main(["--url", stack.http_url, "duplicates", "--album", album]) == 0
    out, err = capsys.readouterr()
    assert out.count("group ") == 3 and out.count("again-") == 3
    assert f"album {album}: 3 group(s) of near-duplicates (6 images) within distance {found['max_distance']}" in err
    assert cli_main(["--url", stack.http_url, "duplicates", "--album", album, "--max-distance", "0"]) == 0
    assert "0 group(s)" in capsys.readouterr().err
    with grpc.insecure_channel(f"127.0.0.1:{stack.ports.gateway}") as channel:
        answer = gateway_pb2_grpc.GatewayStub(channel).FindDuplicates(
            gateway_pb2.FindDuplicatesRequest(album=album), timeout=30)
    assert sorted(sorted(i.name for i in g.images) for g in answer.groups) == pairs
    assert (answer.album, answer.max_distance) == (album, pytest.approx(found["max_distance"]))


def test_imports_over_grpc(stack: Stack, photos: list[Path]) -> None:
    album = unique_album("grpc-import")
    with grpc.insecure_channel(f"127.0.0.1:{stack.ports.gateway}") as channel:
        gateway = gateway_pb2_grpc.GatewayStub(channel)
        gateway.CreateAlbum(gateway_pb2.CreateAlbumRequest(name=album), timeout=30)
        manifest = "\n".join(json.dumps({"file": p.name, "n": i}) for i, p in enumerate(photos[:2]))
        job = gateway.CreateImport(gateway_pb2.CreateImportRequest(
            album=album, archive=zipped({p.name: p.read_bytes() for p in photos[:2]}), manifest=manifest,
            manifest_format="jsonl", archive_name="two.zip"), timeout=60)
        assert job.source == "two.zip + manifest.jsonl"
        deadline = time.monotonic() + 60
        while job.status not in ("done", "failed") and time.monotonic() < deadline:
            time.sleep(0.2)
            job = gateway.GetImport(gateway_pb2.GetImportRequest(id=job.id), timeout=10)
        assert (job.status, job.added) == ("done", 2)
        listed = gateway.ListImports(gateway_pb2.ListImportsRequest(album=album), timeout=10)
        assert [j.id for j in listed.imports] == [job.id]
        results = gateway.GetImportResults(gateway_pb2.GetImportResultsRequest(id=job.id), timeout=10)
        assert sorted(r.name for r in results.results) == sorted(p.name for p in photos[:2])
        keyed = [gateway.CreateImport(gateway_pb2.CreateImportRequest(
            album=album, archive=zipped({p.name: p.read_bytes() for p in photos[:2]}), idempotency_key="grpc-1"),
            timeout=60) for _ in range(2)]
        assert keyed[0].id == keyed[1].id != job.id
        assert not results.HasField("next_after")
        first = gateway.GetImportResults(gateway_pb2.GetImportResultsRequest(id=job.id, limit=1), timeout=10)
        assert ([r.index for r in first.results], first.next_after) == ([0], 0)
        rest = gateway.GetImportResults(gateway_pb2.GetImportResultsRequest(id=job.id, limit=1, after=0), timeout=10)
        assert [r.index for r in rest.results] == [1] and not rest.HasField("next_after")
        groups = gateway.FindDuplicates(gateway_pb2.FindDuplicatesRequest(album=album), timeout=30)
        assert list(groups.groups) == []


# --- a batch tried again, over the use cases' fakes and a real Redis -----------------------------------

# A Redis database no gateway of the session's stack reads: its import workers never take these batches.
RETRY_DB = 7


class LateInsert(LoopbackSearch):
    """A search service whose insert raises (`insert_error`) and lands only after the add's undo has deleted
    the vectors (an insert whose answer was lost, applied late): the images' vectors stay while their blobs
    go, so the album holds images without their bytes until the batch's retry stores them again."""

    def __init__(self) -> None:
        super().__init__()
        self.late: list[tuple[str, list[Item]]] = []

    async def insert(self, collection: str, items: Sequence[Item], version: int = 0) -> list[str]:
        if self.insert_error:
            self.late.append((collection, list(items)))
            raise self.insert_error
        return await super().insert(collection, items, version)

    async def delete(self, collection: str, ids: Sequence[str]) -> int:
        deleted = await super().delete(collection, ids)
        late, self.late = self.late, []
        for name, items in late:
            await (await self.client()).insert(name, items)
        return deleted


@pytest.fixture()
async def import_queue(_stack: Stack) -> AsyncIterator[ImportQueue]:
    async with queue_in_db(_stack, RETRY_DB) as queue:
        yield queue


@pytest.mark.anyio
async def test_a_batch_whose_results_were_all_recorded_before_its_worker_died_is_done_on_its_retry(
        make_fakes: MakeFakes, import_queue: ImportQueue) -> None:
    """A worker that dies after recording its batch's results, before acknowledging it: the batch is taken again and
    has nothing left to do, while the job runs on and after it has finished. Before, reading its (no) remaining items
    failed on Redis (HMGET with no field) as if Redis were down, so the batch was retried for ever, holding a worker
    (a gateway killed at that moment wedged every worker); and a retry after the job had finished left what the
    job staged, should the dead worker have been the one to delete it."""
    fakes = make_fakes(ingest_batch_size=2)
    await albums.create(fakes.deps, "demo")
    archive = io.BytesIO(zipped({f"p{n}.png": png(n, 64) for n in range(3)}))
    job = await imports.create(fakes.deps, import_queue, "demo", imports.ImportSpec(archive=archive))
    first, last = [await import_queue.take("test-worker", 100, 60_000) for _ in range(2)]
    assert first is not None and last is not None
    await imports.process_batch(fakes.deps, import_queue, first)

    await imports.process_batch(fakes.deps, import_queue, first)  # taken again while the job runs: nothing to do
    assert (await import_queue.get(job.id)).status is ImportStatus.RUNNING
    await imports.process_batch(fakes.deps, import_queue, last)
    assert (await import_queue.get(job.id)).status is ImportStatus.DONE
    await fakes.blobs.put(staging_key(job.id, 1), b"left by a worker that died", "application/octet-stream")
    await imports.process_batch(fakes.deps, import_queue, replace(last, deliveries=2))  # taken again, job done
    for batch in (first, last):
        await import_queue.done(batch.entry_id)
    job = await import_queue.get(job.id)
    assert (job.status, job.counts["added"]) == (ImportStatus.DONE, 3)
    assert not [key for key in fakes.blobs.objects if key.startswith("staging/")]
    assert await images.count(fakes.deps, "demo") == 3


@pytest.mark.anyio
async def test_a_staging_that_goes_on_slowly_is_not_taken_for_stopped(
        make_fakes: MakeFakes, import_queue: ImportQueue) -> None:
    """A living gateway whose staging waits (a pack's upload held) longer than import_staging_stale_s says its
    staging goes on: no sweep fails it, and it ends queued with every image."""
    fakes, gate, creating = await staging_import(make_fakes, import_queue, 12, import_staging_stale_s=0.4)
    first = await take_and_process(fakes, import_queue)
    await asyncio.sleep(1.0)  # held two and a half stale windows
    assert await imports.fail_stopped_staging(fakes.deps, import_queue) == []
    gate.set()
    assert (await creating).status in (ImportStatus.QUEUED, ImportStatus.RUNNING)
    await process_the_rest(fakes, import_queue)
    job = await import_queue.get(first.job_id)
    assert (job.status, job.counts["added"]) == (ImportStatus.DONE, 12)


@pytest.mark.anyio
@pytest.mark.parametrize("undo", ["vectors_kept", "vectors_back"])
async def test_a_batch_whose_insert_was_applied_yet_raised_is_made_whole_on_its_retry(
        make_fakes: MakeFakes, import_queue: ImportQueue, undo: str) -> None:
    """The first try's vectors insert is applied, then raises; the add's undo either cannot delete the vectors (Milvus
    still down: the blobs are kept) or deletes them before the insert lands (`LateInsert`: the blobs go). Either way
    the retry finds the batch's new images present while their claims say absent: they are made whole again (bytes
    and features written again, the rows kept) and counted added; taken as duplicates (or as their own near-
    duplicates), they would keep no bytes or be miscounted. Over the fakes only, not the real services: the failure
    is injected in the in-process search service, and what the gateway asks of the index here (get, insert and
    delete by id) Milvus answers as the exact index does (tests/search/test_index.py). The queue is the real one, in
    the session's Redis, whose claims (first try's answer kept) the retry relies on."""
    fakes = make_fakes(ingest_batch_size=8)
    if undo == "vectors_back":
        fakes.use_search(LateInsert())
    await albums.create(fakes.deps, "demo")
    await ingest.add_images(fakes.deps, "demo", [NewImage(png(0, 64), name="before.png")])
    files = {f"new-{n}.png": png(n, 64) for n in range(1, 7)} | {"twin-of-new-1.png": png(1, 64),
                                                                  "before.png": png(0, 64)}
    job = await imports.create(fakes.deps, import_queue, "demo",
                               imports.ImportSpec(archive=io.BytesIO(zipped(files)), on_duplicate=OnDuplicate.SKIP))
    batch = await import_queue.take("test-worker", 100, 60_000)
    assert batch is not None and list(batch.indexes) == list(range(8))

    fakes.search.insert_error = SearchUnavailable("answer lost")
    if undo == "vectors_kept":
        fakes.search.insert_applied, fakes.search.delete_error = True, SearchUnavailable("still down")
    with pytest.raises(SearchUnavailable):
        await imports.process_batch(fakes.deps, import_queue, batch)
    hashes = {hashlib.sha256(png(n, 64)).hexdigest() for n in range(7)}
    assert (await import_queue.get(job.id)).processed == 0 and await images.count(fakes.deps, "demo") == 7
    assert any(image_key("demo", h) not in fakes.blobs.objects for h in hashes) == (undo == "vectors_back")

    # The search service is back: the batch is processed again, as ImportWorker.handle does after an Unavailable.
    fakes.search.insert_error = fakes.search.delete_error = None
    await imports.process_batch(fakes.deps, import_queue, batch)
    await import_queue.done(batch.entry_id)
    assert await images.count(fakes.deps, "demo") == 7
    assert {i.id for i in fakes.search.index.get("demo", [image_id_of(h) for h in hashes])} == \
        {image_id_of(h) for h in hashes}
    # Each image's bytes and local features, and nothing else (no staged pack, no orphan blob).
    assert sorted(fakes.blobs.objects) == sorted(key for h in hashes for key in (image_key("demo", h),
                                                                                 features_key("demo", h)))
    assert all(fakes.blobs.objects[image_key("demo", hashlib.sha256(png(n, 64)).hexdigest())][0] == png(n, 64)
               for n in range(7))
    job = await import_queue.get(job.id)
    assert (job.status, job.counts) == (ImportStatus.DONE, {"added": 6, "duplicates": 2, "skipped": 0,
                                                            "replaced": 0, "failed": 0})
    assert {r["name"]: r["status"] for r in (await imports.results(import_queue, job.id)).results} == {
        **{f"new-{n}.png": "added" for n in range(1, 7)}, "twin-of-new-1.png": "duplicate",
        "before.png": "duplicate"}


async def slow_claims_import(make_fakes: MakeFakes, import_queue: ImportQueue, count: int
                             ) -> tuple[Fakes, SlowGet, ImportJob, Batch]:
    """An import of `count` images in one batch, taken, over a search service whose reads by id are held."""
    fakes = make_fakes(ingest_batch_size=8)
    search = fakes.use_search(SlowGet())
    await albums.create(fakes.deps, "demo")
    files = {f"p{n}.png": png(n, 64) for n in range(count)}
    job = await imports.create(fakes.deps, import_queue, "demo", imports.ImportSpec(archive=io.BytesIO(zipped(files))))
    batch = await import_queue.take("test-worker", 100, 60_000)
    assert batch is not None
    search.answer.clear()
    return fakes, search, job, batch


@pytest.mark.anyio
async def test_a_batch_is_embedded_while_the_album_is_slow_to_say_which_images_it_has(
        make_fakes: MakeFakes, import_queue: ImportQueue) -> None:
    """A batch's claims wait for the album to say which of its images it has: a new album's first reads wait for
    Milvus to load it (2-3 s), which stalled the first batch of every worker with the extractor idle. A claim not
    answered within ingest.DESCRIBE_AFTER_S has the batch embedded meanwhile, once: the add uses those embeddings. The
    same images imported again, with claims that answer at once, are not embedded at all (all duplicates)."""
    fakes, search, job, batch = await slow_claims_import(make_fakes, import_queue, 5)
    processing = asyncio.create_task(imports.process_batch(fakes.deps, import_queue, batch))
    await until(lambda: fakes.extractor.calls == [5], "the batch is embedded while its claims wait")
    assert search.waiting and not processing.done()
    search.answer.set()
    await processing
    await import_queue.done(batch.entry_id)
    assert fakes.extractor.calls == [5]  # embedded once
    job = await import_queue.get(job.id)
    assert (job.status, job.counts["added"]) == (ImportStatus.DONE, 5)
    assert await images.count(fakes.deps, "demo") == 5
    assert len([key for key in fakes.blobs.objects if key.startswith("albums/demo/images/")]) == 5

    files = {f"again-{n}.png": png(n, 64) for n in range(5)}
    again = await imports.create(fakes.deps, import_queue, "demo",
                                 imports.ImportSpec(archive=io.BytesIO(zipped(files))))
    await process_the_rest(fakes, import_queue)
    again = await import_queue.get(again.id)
    assert (again.status, again.counts["duplicates"]) == (ImportStatus.DONE, 5)
    assert fakes.extractor.calls == [5]  # the claims answered at once: nothing embedded


@pytest.mark.anyio
async def test_a_claim_that_fails_while_its_batch_is_embedded_writes_nothing_and_its_retry_adds_the_batch(
        make_fakes: MakeFakes, import_queue: ImportQueue) -> None:
    """The album's answer fails (Milvus down) while the batch is embedded meanwhile: the batch raises, to be tried
    again, having written nothing; its retry adds every image once."""
    fakes, search, job, batch = await slow_claims_import(make_fakes, import_queue, 3)
    search.error = SearchUnavailable("Milvus is down")
    processing = asyncio.create_task(imports.process_batch(fakes.deps, import_queue, batch))
    await until(lambda: fakes.extractor.calls == [3], "the batch is embedded while its claims wait")
    search.answer.set()
    with pytest.raises(SearchUnavailable):
        await processing
    assert await images.count(fakes.deps, "demo") == 0
    assert not [key for key in fakes.blobs.objects if not key.startswith("staging/")]
    assert (await import_queue.get(job.id)).processed == 0

    search.error = None
    await imports.process_batch(fakes.deps, import_queue, batch)
    await import_queue.done(batch.entry_id)
    job = await import_queue.get(job.id)
    assert (job.status, job.counts["added"]) == (ImportStatus.DONE, 3)
    assert await images.count(fakes.deps, "demo") == 3
    assert sorted(fakes.blobs.objects) == sorted(
        key for n in range(3) for h in [hashlib.sha256(png(n, 64)).hexdigest()]
        for key in (image_key("demo", h), features_key("demo", h)))


async def replacing_import(make_fakes: MakeFakes, import_queue: ImportQueue
                           ) -> tuple[Fakes, AddResult, ImportJob, Batch]:
    """An album holding old.png (price 5) and an import, on_duplicate=replace, of new.png (a near-duplicate
    of it) and other.png, its one batch taken: the fakes, old.png's result, the job, the batch."""
    fakes = make_fakes(ingest_batch_size=8)
    await albums.create(fakes.deps, "demo")
    (old,) = await ingest.add_images(fakes.deps, "demo", [NewImage(png(1, 64), name="old.png",
                                                                   attributes={"price": 5})])
    fakes.extractor.near_copies[png(2, 64)] = png(1, 64)
    job = await imports.create(fakes.deps, import_queue, "demo", imports.ImportSpec(
        archive=io.BytesIO(zipped({"new.png": png(2, 64), "other.png": png(3, 64)})),
        on_duplicate=OnDuplicate.REPLACE))
    batch = await import_queue.take("test-worker", 100, 60_000)
    assert batch is not None
    return fakes, old, job, batch


@pytest.mark.anyio
async def test_a_retry_after_a_try_that_replaced_an_image_keeps_the_row_that_try_wrote(
        make_fakes: MakeFakes, import_queue: ImportQueue) -> None:
    """on_duplicate=replace: the first try put the new image in place of its near-duplicate (taking over the
    old one's attributes, then deleting it) and stopped before recording its results (Redis gone, a killed
    gateway). Its retry finds the new image present and ours: it writes again what the image might lack
    (its bytes, its features) and leaves its row, whose attributes came from an image that is gone now; it
    is counted added (the retry cannot tell it replaced one)."""
    fakes, old, job, batch = await replacing_import(make_fakes, import_queue)
    record = import_queue.record

    async def lost(*args: object) -> int:
        raise SearchUnavailable("the gateway was killed before it recorded the batch")

    import_queue.record = lost  # type: ignore[method-assign]
    with pytest.raises(SearchUnavailable):
        await imports.process_batch(fakes.deps, import_queue, batch)
    new_id = image_id_of(hashlib.sha256(png(2, 64)).hexdigest())
    (first,) = fakes.search.index.get("demo", [new_id])
    assert first.attributes == {"price": 5} and not fakes.search.index.get("demo", [old.id or ""])
    del fakes.blobs.objects[features_key("demo", first.content_hash)]  # as an undone try would leave it

    import_queue.record = record  # type: ignore[method-assign]
    await imports.process_batch(fakes.deps, import_queue, batch)
    (again,) = fakes.search.index.get("demo", [new_id])
    assert (again.attributes, again.created_at_ms) == ({"price": 5}, first.created_at_ms)
    assert features_key("demo", first.content_hash) in fakes.blobs.objects
    assert await images.count(fakes.deps, "demo") == 2
    job = await import_queue.get(job.id)
    assert (job.status, job.counts["added"], job.counts["failed"]) == (ImportStatus.DONE, 2, 0)


@pytest.mark.anyio
async def test_a_retry_deletes_the_near_duplicate_its_first_try_left_in_place(
        make_fakes: MakeFakes, import_queue: ImportQueue) -> None:
    """on_duplicate=replace: the first try wrote the new image and stopped before deleting the one it replaces
    (Milvus refused the delete). The retry finds the new image present and ours, and deletes the old one:
    one of the two stays, and the job counts it replaced."""
    fakes, old, job, batch = await replacing_import(make_fakes, import_queue)
    fakes.search.delete_error = SearchUnavailable("Milvus refused the delete")
    with pytest.raises(SearchUnavailable):
        await imports.process_batch(fakes.deps, import_queue, batch)
    assert sorted(i.name for i in await images.list_images(fakes.deps, "demo")) == ["new.png", "old.png", "other.png"]

    fakes.search.delete_error = None
    await imports.process_batch(fakes.deps, import_queue, batch)
    listed = {i.name: i for i in await images.list_images(fakes.deps, "demo")}
    assert sorted(listed) == ["new.png", "other.png"] and listed["new.png"].attributes == {"price": 5}
    old_hash = hashlib.sha256(png(1, 64)).hexdigest()
    assert not [k for k in fakes.blobs.objects if old_hash in k]
    job = await import_queue.get(job.id)
    assert (job.status, job.counts["added"], job.counts["replaced"]) == (ImportStatus.DONE, 1, 1)
    results = {r["name"]: (r["status"], r["near"]) for r in (await imports.results(import_queue, job.id)).results}
    assert results == {"new.png": ("replaced", old.id), "other.png": ("added", None)}


@pytest.mark.anyio
async def test_an_idempotency_key_answers_the_import_its_first_try_queued_and_no_other(
        make_fakes: MakeFakes, import_queue: ImportQueue) -> None:
    fakes = make_fakes(ingest_batch_size=8)
    for album in ("demo", "other"):
        await albums.create(fakes.deps, album)
    fakes.fetcher.pages = {"http://photos.test/a.png": png(1, 64)}
    spec = imports.ImportSpec(urls=["http://photos.test/a.png"], idempotency_key="key-1")
    first = await imports.create(fakes.deps, import_queue, "demo", spec)
    assert (await imports.create(fakes.deps, import_queue, "demo", spec)).id == first.id
    assert (await imports.create(fakes.deps, import_queue, "other", spec)).id != first.id  # another album
    assert (await imports.create(fakes.deps, import_queue, "demo", replace(spec, idempotency_key="key-2"))).id \
        != first.id
    assert (await imports.create(fakes.deps, import_queue, "demo", replace(spec, idempotency_key=""))).id \
        != first.id
    # A first try that never finished staging (its gateway stopped): the next try is staged anew, and keyed.
    stopped = await import_queue.create("demo", "urls", "keep", key="key-3")
    again = await imports.create(fakes.deps, import_queue, "demo", replace(spec, idempotency_key="key-3"))
    assert again.id != stopped
    assert (await imports.create(fakes.deps, import_queue, "demo", replace(spec, idempotency_key="key-3"))).id \
        == again.id
    for bad in ("k" * 201, "line\nbreak", "clé"):
        with pytest.raises(InvalidArgument):
            await imports.create(fakes.deps, import_queue, "demo", replace(spec, idempotency_key=bad))


@pytest.mark.anyio
async def test_an_import_cancelled_by_its_key_is_cancelled_before_during_and_after_its_staging(
        make_fakes: MakeFakes, import_queue: ImportQueue, monkeypatch: pytest.MonkeyPatch) -> None:
    """Cancelled by its key before its request comes: the import is cancelled as it starts, nothing staged or
    queued; while it stages: staging stops, what was added stays, no pack is left; after it is done: answered as
    it ended. Another album's import with the same key is not touched."""
    fakes = make_fakes(ingest_batch_size=4)
    for album in ("demo", "other"):
        await albums.create(fakes.deps, album)
    files = {f"p{n:02d}.png": png(n, 64) for n in range(12)}

    def spec(key: str) -> imports.ImportSpec:
        return imports.ImportSpec(archive=io.BytesIO(zipped(files)), idempotency_key=key)

    assert await imports.cancel_by_key(fakes.deps, import_queue, "demo", "before") is None
    early = await imports.create(fakes.deps, import_queue, "demo", spec("before"))
    assert (early.status, early.total) == (ImportStatus.CANCELLED, 0)
    assert await import_queue.take("test-worker", 100, 60_000) is None and not staged(fakes)
    other = await imports.create(fakes.deps, import_queue, "other", spec("before"))
    assert other.status is ImportStatus.QUEUED
    await process_the_rest(fakes, import_queue)
    assert await images.count(fakes.deps, "other") == 12

    gate = held_pack(fakes, 2, seconds=0.1)
    creating = asyncio.create_task(imports.create(fakes.deps, import_queue, "demo", spec("during")))
    first = await take_and_process(fakes, import_queue)
    stopped = await imports.cancel_by_key(fakes.deps, import_queue, "demo", "during")
    assert stopped is not None and (stopped.id, stopped.status) == (first.job_id, ImportStatus.CANCELLED)
    gate.set()
    assert (await creating).status is ImportStatus.CANCELLED
    await process_the_rest(fakes, import_queue)
    assert await images.count(fakes.deps, "demo") == 4 and not staged(fakes)

    after = await imports.cancel_by_key(fakes.deps, import_queue, "other", "before")
    assert after is not None and (after.id, after.status) == (other.id, ImportStatus.DONE)  # not written over
    assert not await import_queue.set_status(other.id, ImportStatus.CANCELLED, unless_finished=True)
    assert (await import_queue.get(other.id)).status is ImportStatus.DONE

    with monkeypatch.context() as same_ms:  # the latest is the key's latest even in one millisecond (ids random)
        same_ms.setattr(import_queue_module, "_now_ms", lambda: 1_800_000_000_000)
        first = await import_queue.create("demo", "archive", key="resent")  # a try still staging when sent again
        second = await import_queue.create("demo", "archive", key="resent")
    latest = await imports.cancel_by_key(fakes.deps, import_queue, "demo", "resent")
    assert latest is not None and (latest.id, latest.status) == (second, ImportStatus.CANCELLED)
    assert (await import_queue.get(first)).status is ImportStatus.CANCELLED  # each import the key made

    async def search_down(*args: Any, **kwargs: Any) -> None:
        raise SearchUnavailable("the search service does not answer")

    monkeypatch.setattr(fakes.search, "get_collection", search_down)
    assert await imports.cancel_by_key(fakes.deps, import_queue, "demo", "search-down") is None  # Redis is enough
    monkeypatch.undo()
    late = await imports.create(fakes.deps, import_queue, "demo", spec("search-down"))
    assert (late.status, late.total) == (ImportStatus.CANCELLED, 0)
    for bad in ("", "k" * 201, "line\nbreak"):
        with pytest.raises(InvalidArgument):
            await imports.cancel_by_key(fakes.deps, import_queue, "demo", bad)
    with pytest.raises(NotFound):
        await imports.cancel_by_key(fakes.deps, import_queue, "gone", "before")


# --- staging: batches queued as they are staged ------------------------------------------------------


def held_pack(fakes: Fakes, pack: int, failing: int = -1, seconds: float = 0.0) -> asyncio.Event:
    """Holds the upload of the import's staged pack `pack` until the returned event is set; pack `failing`'s
    upload fails (the object store unavailable); with `seconds`, each staged pack goes up in a thread that long,
    as the real client's does: cancelling the call does not stop it."""
    gate, put = asyncio.Event(), fakes.blobs.put

    async def held(key: str, content: bytes, content_type: str, name: str = "") -> None:
        if not key.startswith("staging/"):
            return await put(key, content, content_type, name)
        if key.endswith(f"/{failing}"):
            raise StoreUnavailable("the object store is unavailable")
        if key.endswith(f"/{pack}"):
            await gate.wait()
        if seconds:
            await asyncio.to_thread(lambda: (time.sleep(seconds), fakes.blobs.objects.update(
                {key: (content, content_type, name)})))
        else:
            await put(key, content, content_type, name)

    fakes.blobs.put = held  # type: ignore[method-assign]
    return gate


async def take_and_process(fakes: Fakes, queue: ImportQueue) -> Batch:
    batch = await queue.take("test-worker", 2000, 60_000)
    assert batch is not None
    await imports.process_batch(fakes.deps, queue, batch)
    await queue.done(batch.entry_id)
    return batch


async def process_the_rest(fakes: Fakes, queue: ImportQueue) -> None:
    while (batch := await queue.take("test-worker", 200, 60_000)) is not None:
        await imports.process_batch(fakes.deps, queue, batch)
        await queue.done(batch.entry_id)


async def staging_import(make_fakes: MakeFakes, queue: ImportQueue, count: int, failing: int = -1,
                         seconds: float = 0.0, **settings: Any
                         ) -> tuple[Fakes, asyncio.Event, asyncio.Task[ImportJob]]:
    """An import of `count` images (batches of 4) being created, the upload of its third batch's pack held
    (`held_pack`): the fakes, the event that lets it go up, and the task creating the import."""
    fakes = make_fakes(ingest_batch_size=4, **settings)
    await albums.create(fakes.deps, "demo")
    gate = held_pack(fakes, 2, failing, seconds)
    files = {f"p{n:02d}.png": png(n, 64) for n in range(count)}
    creating = asyncio.create_task(imports.create(fakes.deps, queue, "demo",
                                                  imports.ImportSpec(archive=io.BytesIO(zipped(files)))))
    return fakes, gate, creating


def staged(fakes: Fakes) -> list[str]:
    return [key for key in fakes.blobs.objects if key.startswith("staging/")]


@pytest.mark.anyio
async def test_an_archive_s_first_batches_are_added_while_the_rest_is_still_staged(
        make_fakes: MakeFakes, import_queue: ImportQueue) -> None:
    """Ten images in batches of 4: the upload of the third batch's pack is held, and meanwhile the first two
    batches are taken and added (the job says staging, with the images staged so far as its total and its
    rate counted from then); once staging ends the job has its total, and the last batch completes it with
    every image once and no staged pack left."""
    fakes, gate, creating = await staging_import(make_fakes, import_queue, 10)
    first = [await take_and_process(fakes, import_queue) for _ in range(2)]
    assert sorted(i for b in first for i in b.indexes) == list(range(8))
    job = await import_queue.get(first[0].job_id)
    assert (job.status, job.total, job.counts["added"]) == (ImportStatus.STAGING, 8, 8)
    assert job.started_at_ms > 0 and job.eta_s() is None
    assert not creating.done()

    gate.set()
    job = await creating
    assert (job.status, job.total) == (ImportStatus.QUEUED, 10)
    last = await take_and_process(fakes, import_queue)
    assert list(last.indexes) == [8, 9]
    job = await import_queue.get(job.id)
    assert (job.status, job.counts["added"], job.counts["failed"]) == (ImportStatus.DONE, 10, 0)
    assert await images.count(fakes.deps, "demo") == 10
    assert not staged(fakes)


@pytest.mark.anyio
async def test_an_import_cancelled_while_it_stages_stops_staging_and_keeps_what_it_added(
        make_fakes: MakeFakes, import_queue: ImportQueue) -> None:
    """A cancel between two batches' staging: the batch added before it stays, staging stops (the job is not
    set queued over the cancel), the batches queued but not processed add nothing, and no staged pack is left,
    even those whose upload (in a thread) ends after the cancel."""
    fakes, gate, creating = await staging_import(make_fakes, import_queue, 24, seconds=0.2)
    first = await take_and_process(fakes, import_queue)
    await imports.cancel(fakes.deps, import_queue, first.job_id)
    gate.set()
    job = await creating
    assert job.status is ImportStatus.CANCELLED
    await process_the_rest(fakes, import_queue)
    job = await import_queue.get(job.id)
    assert (job.status, job.counts["added"]) == (ImportStatus.CANCELLED, 4)
    assert await images.count(fakes.deps, "demo") == 4
    assert not staged(fakes)


@pytest.mark.anyio
async def test_a_pack_that_cannot_be_staged_fails_the_import_saying_what_was_queued_and_leaves_no_pack(
        make_fakes: MakeFakes, import_queue: ImportQueue) -> None:
    """The second batch's pack cannot go up while the others' uploads (in threads) are under way: the create
    fails (503) saying some images were queued before, the job is failed, the packs that landed after the
    failure are deleted too, and what a queued batch may add is added whole."""
    fakes, gate, creating = await staging_import(make_fakes, import_queue, 16, failing=1, seconds=0.2)
    gate.set()
    with pytest.raises(StoreUnavailable, match="some of its images were queued before it"):
        await creating
    assert not staged(fakes)
    await process_the_rest(fakes, import_queue)
    jobs = await imports.list_all(import_queue, "demo")
    assert [(j.status, j.processed) for j in jobs] == [(ImportStatus.FAILED, 0)]
    assert "object store is unavailable" in jobs[0].error and await images.count(fakes.deps, "demo") == 0


@pytest.mark.anyio
async def test_an_import_whose_request_is_cancelled_while_it_stages_fails_at_once(
        make_fakes: MakeFakes, import_queue: ImportQueue) -> None:
    """The request creating the import is cancelled (a gRPC deadline) while a pack goes up in a thread: the job
    fails at once, saying why, what it added stays, and no staged pack is left once the upload has ended."""
    fakes, gate, creating = await staging_import(make_fakes, import_queue, 12, seconds=0.2)
    first = await take_and_process(fakes, import_queue)
    creating.cancel()
    gate.set()  # the uploads under way end (staging waits for them)
    with pytest.raises(asyncio.CancelledError):
        await creating
    job = await import_queue.get(first.job_id)
    assert job.status is ImportStatus.FAILED and "request that uploaded it was cancelled" in job.error
    await process_the_rest(fakes, import_queue)
    assert (await import_queue.get(job.id)).counts["added"] == 4 and await images.count(fakes.deps, "demo") == 4
    assert not staged(fakes)


@pytest.mark.anyio
@pytest.mark.parametrize("suffix", [".csv", ".jsonl"])
async def test_a_manifest_s_name_beside_the_file_or_url_names_the_image(
        make_fakes: MakeFakes, import_queue: ImportQueue, suffix: str) -> None:
    """A manifest row with a `name` beside its `file` or `url` names the image by it (not an attribute, which the
    built-in name column would hide); a row without one leaves the file's path or the URL's last part; a row naming
    its file by `name` alone finds it as before."""
    fakes = make_fakes(ingest_batch_size=2)
    await albums.create(fakes.deps, "demo", AlbumSchema.of([Column("price", ColumnType.FLOAT)]))
    fakes.fetcher.pages["https://shop.example/p/77.png"] = png(4, 64)
    rows = [{"file": "shoes/a.png", "name": "Red shoe", "price": 39.5}, {"file": "shoes/b.png", "price": 12.0},
            {"name": "c.png", "price": 5.0}, {"url": "https://shop.example/p/77.png", "name": "Blue boot"}]
    if suffix == ".csv":
        manifest = "file,url,name,price\n" + "".join(f"{r.get('file', '')},{r.get('url', '')},{r.get('name', '')},"
                                                     f"{r.get('price', '')}\n" for r in rows)
    else:
        manifest = "".join(json.dumps(r) + "\n" for r in rows)
    archive = io.BytesIO(zipped({"shoes/a.png": png(1, 64), "shoes/b.png": png(2, 64), "c.png": png(3, 64)}))
    job = await imports.create(fakes.deps, import_queue, "demo", imports.ImportSpec(
        archive=archive, manifest=manifest, manifest_name=f"shoes{suffix}"))
    await process_the_rest(fakes, import_queue)
    assert (await import_queue.get(job.id)).counts["added"] == 4
    listed = {i.name: i.attributes for i in await images.list_images(fakes.deps, "demo")}
    assert {name: attributes.get("price") for name, attributes in listed.items()} == \
        {"Red shoe": 39.5, "shoes/b.png": 12.0, "c.png": 5.0, "Blue boot": None}
    assert not any("name" in attributes for attributes in listed.values())


@pytest.mark.anyio
async def test_a_job_whose_batches_were_all_processed_while_it_staged_is_done_when_staging_ends(
        import_queue: ImportQueue) -> None:
    job_id = await import_queue.create("demo", "archive", "keep")
    assert await import_queue.add_batch(job_id, 0, [ItemSource("a.png", error="invalid_image: empty")]) \
        is ImportStatus.STAGING
    batch = await import_queue.take("test-worker", 200, 60_000)
    assert batch is not None
    await import_queue.record(job_id, {0: ("failed", {"index": 0, "status": "failed"})})
    await import_queue.done(batch.entry_id)
    assert (await import_queue.get(job_id)).status is ImportStatus.STAGING  # still staging: not done
    assert await import_queue.start(job_id, 1) is ImportStatus.DONE
    job = await import_queue.get(job_id)
    assert (job.status, job.total, job.counts["failed"]) == (ImportStatus.DONE, 1, 1) and job.finished_at_ms > 0


@pytest.mark.anyio
async def test_an_import_whose_staging_stopped_midway_is_failed_and_its_staged_packs_deleted(
        make_fakes: MakeFakes, import_queue: ImportQueue, monkeypatch: pytest.MonkeyPatch) -> None:
    """The gateway reading an upload stops while it stages (here its staging frozen: a pack's upload held, and
    nothing said of it since, as from a stopped gateway): once the job has been unheard of for
    import_staging_stale_s a worker's sweep fails it, naming why, and deletes its staged packs; the batch it had
    added stays, a batch it had queued adds nothing. A job that staged a moment ago is left alone, and a staging
    that wakes up after the sweep stops."""
    async def stopped(job_id: str) -> None:
        """A stopped gateway says nothing of its staging."""

    monkeypatch.setattr(import_queue, "touch_staging", stopped)
    # Stale after 1 s: the first batch's processing (a fraction of that) fits well before it, on a loaded machine too.
    fakes, gate, creating = await staging_import(make_fakes, import_queue, 12, import_staging_stale_s=1.0)
    first = await take_and_process(fakes, import_queue)
    assert await imports.fail_stopped_staging(fakes.deps, import_queue) == []  # staged a moment ago
    assert staged(fakes)

    await asyncio.sleep(1.1)
    assert await imports.fail_stopped_staging(fakes.deps, import_queue) == [first.job_id]
    assert await imports.fail_stopped_staging(fakes.deps, import_queue) == []
    assert not staged(fakes)
    await process_the_rest(fakes, import_queue)
    job = await import_queue.get(first.job_id)
    assert (job.status, job.counts["added"]) == (ImportStatus.FAILED, 4) and "upload stopped" in job.error
    assert await images.count(fakes.deps, "demo") == 4

    gate.set()
    assert (await creating).status is ImportStatus.FAILED
    await process_the_rest(fakes, import_queue)
    job = await import_queue.get(first.job_id)
    assert (job.counts["added"], "upload stopped" in job.error) == (4, True) and not staged(fakes)


@pytest.mark.anyio
@pytest.mark.parametrize("undo", ["vectors_kept", "vectors_back"])
async def test_a_url_that_answers_other_bytes_on_the_retry_makes_one_image(
        make_fakes: MakeFakes, import_queue: ImportQueue, undo: str) -> None:
    """A URL import's first try writes the image of the bytes the URL answered then, its insert raising yet
    applied (the vectors kept, or back after the undo deleted the blobs: an image without bytes); on the retry
    the URL answers other bytes. The retry deletes the first try's image and adds the new one: the item makes
    one image, whole, and a twin URL of the first bytes keeps its own."""
    fakes = make_fakes(ingest_batch_size=8)
    if undo == "vectors_back":
        fakes.use_search(LateInsert())
    await albums.create(fakes.deps, "demo")
    url, steady = "http://photos.test/today.png", "http://photos.test/steady.png"
    fakes.fetcher.pages = {url: png(1, 64), steady: png(2, 64)}
    job = await imports.create(fakes.deps, import_queue, "demo", imports.ImportSpec(urls=[url, steady]))
    batch = await import_queue.take("test-worker", 100, 60_000)
    assert batch is not None

    fakes.search.insert_error = SearchUnavailable("answer lost")
    if undo == "vectors_kept":
        fakes.search.insert_applied, fakes.search.delete_error = True, SearchUnavailable("still down")
    with pytest.raises(SearchUnavailable):
        await imports.process_batch(fakes.deps, import_queue, batch)
    first, second, kept = (image_id_of(hashlib.sha256(png(n, 64)).hexdigest()) for n in (1, 3, 2))
    assert {i.id for i in fakes.search.index.get("demo", [first, kept])} == {first, kept}

    fakes.search.insert_error = fakes.search.delete_error = None
    fakes.fetcher.pages[url] = png(3, 64)
    await imports.process_batch(fakes.deps, import_queue, batch)
    await import_queue.done(batch.entry_id)
    assert {i.id for i in fakes.search.index.get("demo", [first, second, kept])} == {second, kept}
    assert await images.count(fakes.deps, "demo") == 2
    hashes = [hashlib.sha256(png(n, 64)).hexdigest() for n in (3, 2)]
    assert sorted(fakes.blobs.objects) == sorted(key for h in hashes for key in (image_key("demo", h),
                                                                                 features_key("demo", h)))
    job = await import_queue.get(job.id)
    assert (job.status, job.counts["added"]) == (ImportStatus.DONE, 2)
    found = (await imports.results(import_queue, job.id)).results
    assert {r["url"]: r["id"] for r in found} == {url: second, steady: kept}


@pytest.mark.anyio
@pytest.mark.parametrize("third", [3, 1])
async def test_a_url_that_answers_other_bytes_on_each_of_two_retries_makes_one_image(
        make_fakes: MakeFakes, import_queue: ImportQueue, third: int) -> None:
    """Three tries of a URL import, the URL answering other bytes on the second, the first two leaving their
    image behind (its insert raising, then landing after the undo: an image without bytes) before they stop:
    the second deletes the first's image, the third the second's, whether it answers new bytes or the first
    try's again, and the item makes one image, whole."""
    fakes = make_fakes(ingest_batch_size=8)
    fakes.use_search(LateInsert())
    await albums.create(fakes.deps, "demo")
    url = "http://photos.test/changing.png"
    fakes.fetcher.pages = {url: png(1, 64)}
    job = await imports.create(fakes.deps, import_queue, "demo", imports.ImportSpec(urls=[url]))
    batch = await import_queue.take("test-worker", 100, 60_000)
    assert batch is not None
    made = {n: image_id_of(hashlib.sha256(png(n, 64)).hexdigest()) for n in (1, 2, 3)}

    fakes.search.insert_error = SearchUnavailable("answer lost")
    for n in (1, 2):
        fakes.fetcher.pages[url] = png(n, 64)
        with pytest.raises(SearchUnavailable):
            await imports.process_batch(fakes.deps, import_queue, batch)
        assert {i.id for i in fakes.search.index.get("demo", list(made.values()))} == {made[n]}

    fakes.search.insert_error = None
    fakes.fetcher.pages[url] = png(third, 64)
    await imports.process_batch(fakes.deps, import_queue, batch)
    await import_queue.done(batch.entry_id)
    assert {i.id for i in fakes.search.index.get("demo", list(made.values()))} == {made[third]}
    assert await images.count(fakes.deps, "demo") == 1
    digest = hashlib.sha256(png(third, 64)).hexdigest()
    assert sorted(fakes.blobs.objects) == sorted([image_key("demo", digest), features_key("demo", digest)])
    job = await import_queue.get(job.id)
    assert (job.status, job.counts["added"]) == (ImportStatus.DONE, 1)


@pytest.mark.anyio
@pytest.mark.parametrize("twin", [False, True])
async def test_a_url_that_fails_on_the_retry_leaves_no_image_of_its_first_try(
        make_fakes: MakeFakes, import_queue: ImportQueue, twin: bool) -> None:
    """A URL import's first try leaves its image behind (the insert raising, then landing after the undo) and
    stops; on the retry the URL answers 404: the item fails, and the image its first try made is deleted, unless
    another item of the job makes it too (a twin URL answering the same bytes)."""
    fakes = make_fakes(ingest_batch_size=8)
    fakes.use_search(LateInsert())
    await albums.create(fakes.deps, "demo")
    url, same = "http://photos.test/gone-soon.png", "http://photos.test/same-bytes.png"
    fakes.fetcher.pages = {url: png(1, 64), same: png(1, 64)}
    job = await imports.create(fakes.deps, import_queue, "demo", imports.ImportSpec(urls=[url, same] if twin
                                                                                     else [url]))
    batch = await import_queue.take("test-worker", 100, 60_000)
    assert batch is not None
    made = image_id_of(hashlib.sha256(png(1, 64)).hexdigest())

    fakes.search.insert_error = SearchUnavailable("answer lost")
    with pytest.raises(SearchUnavailable):
        await imports.process_batch(fakes.deps, import_queue, batch)
    assert [i.id for i in fakes.search.index.get("demo", [made])] == [made]

    fakes.search.insert_error = None
    del fakes.fetcher.pages[url]
    await imports.process_batch(fakes.deps, import_queue, batch)
    await import_queue.done(batch.entry_id)
    job = await import_queue.get(job.id)
    assert (job.status, job.counts["failed"], job.counts["added"]) == (ImportStatus.DONE, 1, int(twin))
    assert await images.count(fakes.deps, "demo") == int(twin)
    digest = hashlib.sha256(png(1, 64)).hexdigest()
    assert sorted(fakes.blobs.objects) == (sorted([image_key("demo", digest), features_key("demo", digest)])
                                           if twin else [])


async def recorded_job(import_queue: ImportQueue, failed: Sequence[int], total: int = 7) -> ImportJob:
    """A job of `total` items, each processed, those at `failed` failed."""
    job_id = await import_queue.create("demo", "urls", "keep")
    await import_queue.add_batch(job_id, 0, [ItemSource(f"{i}.png", url=f"http://x.test/{i}.png")
                                             for i in range(total)])
    await import_queue.start(job_id, total)
    await import_queue.record(job_id, {i: ("failed" if i in failed else "added",
                                           {"index": i, "name": f"{i}.png", "status": "failed" if i in failed else
                                            "added"}) for i in range(total)})
    return await import_queue.get(job_id)


async def pages_of(import_queue: ImportQueue, job: ImportJob, failed_only: bool, limit: int) -> list[list[int]]:
    pages: list[list[int]] = []
    after: int | None = None
    while not pages or after is not None:
        page = await imports.results(import_queue, job.id, failed_only, after, limit)
        pages.append([r["index"] for r in page.results])
        after = page.next_after
    return pages


@pytest.mark.anyio
async def test_a_cancel_of_an_import_forgotten_meanwhile_makes_no_job_again(make_fakes: MakeFakes,
                                                                         import_queue: ImportQueue) -> None:
    """An import refused while it staged is forgotten (`forget_unqueued`) between a cancel's read of it and its
    write: the cancel answers not found, and no job is made again of the status alone (it was, without an album or
    an expiry, answered for ever)."""
    fakes = make_fakes()
    job_id = await import_queue.create("demo", "archive")
    assert await import_queue.forget_unqueued(job_id)
    assert not await import_queue.set_status(job_id, ImportStatus.CANCELLED)
    with pytest.raises(NotFound):
        await imports.cancel(fakes.deps, import_queue, job_id)
    with pytest.raises(NotFound):
        await import_queue.get(job_id)
    kept = await import_queue.create("demo", "archive")
    await import_queue.add_batch(kept, 0, [ItemSource("a.png", url="http://x/a.png")])
    assert not await import_queue.forget_unqueued(kept)  # a batch queued: kept, and cancelled as ever
    assert (await imports.cancel(fakes.deps, import_queue, kept)).status is ImportStatus.CANCELLED


@pytest.mark.anyio
async def test_results_and_failures_are_read_a_page_at_a_time(import_queue: ImportQueue) -> None:
    """The failures are listed from an index of them, not by reading every result (an import of a million)."""
    job = await recorded_job(import_queue, failed=[1, 3, 4, 6])
    assert await import_queue.redis.zrange(f"import:{job.id}:failed", 0, -1) == [b"1", b"3", b"4", b"6"]
    assert 0 < await import_queue.redis.ttl(f"import:{job.id}:failed") <= import_queue.ttl_s
    assert await pages_of(import_queue, job, True, 2) == [[1, 3], [4, 6]]
    assert await pages_of(import_queue, job, True, 3) == [[1, 3, 4], [6]]
    assert await pages_of(import_queue, job, True, 10) == [[1, 3, 4, 6]]
    assert await pages_of(import_queue, job, False, 3) == [[0, 1, 2], [3, 4, 5], [6]]
    assert await pages_of(import_queue, await recorded_job(import_queue, failed=[]), True, 2) == [[]]
    for after, limit in ((-1, 10), (-2, 10), (None, 0), (None, imports.RESULTS_PAGE_MAX + 1)):
        with pytest.raises(InvalidArgument):
            await imports.results(import_queue, job.id, True, after, limit)


@pytest.mark.anyio
@pytest.mark.parametrize("before", [[1, 3, 4, 6], [1, 3]])
async def test_failures_recorded_by_the_release_before_are_listed_still(import_queue: ImportQueue,
                                                                         before: list[int]) -> None:
    """A job whose failures a gateway of the release before recorded, without the index of them: all of them, or
    the first ones (the job ran across the upgrade)."""
    job = await recorded_job(import_queue, failed=[1, 3, 4, 6])
    await import_queue.redis.zrem(f"import:{job.id}:failed", *before)
    assert await pages_of(import_queue, job, True, 2) == [[1, 3], [4, 6]]


@pytest.mark.anyio
async def test_a_re_embed_lists_the_failures_it_noted(import_queue: ImportQueue) -> None:
    """A re-embed records only its failures, at the positions of its walk (note_result), and keeps its counts."""
    job_id = await import_queue.create("demo", reembed.KIND, "keep")
    for position in (5, 2, 9):
        await import_queue.note_result(job_id, position, {"index": position, "name": f"img-{position}",
                                                          "status": "failed", "id": f"img-{position}"})
    await import_queue.save_fields(job_id, {"failed": 3})
    job = await import_queue.get(job_id)
    assert await pages_of(import_queue, job, False, 2) == [[2, 5], [9]]
    assert await pages_of(import_queue, job, True, 5) == [[2, 5, 9]]


@pytest.mark.anyio
async def test_a_re_embed_queued_twice_is_run_once(import_queue: ImportQueue) -> None:
    """Queueing a re-embed made again (the gateway's Redis client makes a command again when its connection was cut,
    maybe after Redis ran it) adds no second task: a second worker would run the same re-embed at once."""
    job_id = await import_queue.create("demo", reembed.KIND, "keep")
    assert await import_queue.start_whole(job_id, 7)
    assert not await import_queue.start_whole(job_id, 7)
    job = await import_queue.get(job_id)
    assert (job.status, job.total) == (ImportStatus.QUEUED, 7)
    first = await import_queue.take("worker-a", 200, 60_000)
    assert first is not None and first.job_id == job_id
    assert await import_queue.take("worker-b", 200, 60_000) is None
    await import_queue.done(first.entry_id)
    cancelled = await import_queue.create("demo", reembed.KIND, "keep")
    await import_queue.set_status(cancelled, ImportStatus.CANCELLED)
    assert not await import_queue.start_whole(cancelled, 7)  # cancelled meanwhile: not queued


@pytest.mark.anyio
async def test_a_claim_recorded_in_the_earlier_form_reads_as_the_first_try(import_queue: ImportQueue) -> None:
    """A job claimed by a gateway of the release before (one claim an item, {"id", "existed"}) goes on."""
    job_id = await import_queue.create("demo", "urls", "keep")
    await import_queue.redis.hset(f"import:{job_id}:claims", "0", json.dumps({"id": "a" * 32, "existed": False}))
    claims = await import_queue.claim_images(job_id, {0: ("a" * 32, True), 1: ("c" * 32, False)}, 0)
    assert (claims[0].id, claims[0].existed, claims[0].earlier_new) == ("a" * 32, False, ())
    assert (claims[1].id, claims[1].existed, claims[1].earlier_new) == ("c" * 32, False, ())
    claims = await import_queue.claim_images(job_id, {0: ("b" * 32, False)}, 0)
    assert (claims[0].id, claims[0].existed, claims[0].earlier_new) == ("b" * 32, False, ("a" * 32,))
    # The latest tries' index, built from the claims of both forms: "a" is no item's latest image any more.
    assert await import_queue.begin_forget(job_id, ["a" * 32, "b" * 32, "c" * 32], "0") == ("a" * 32,)


@pytest.mark.anyio
async def test_the_latest_tries_index_is_built_for_a_job_claimed_by_the_release_before(
        import_queue: ImportQueue) -> None:
    """Claims a gateway of the release before recorded (no index of the latest tries): the first claim or deletion
    check builds the index from them, and later claims keep it."""
    job_id = await import_queue.create("demo", "urls", "keep")
    await import_queue.redis.hset(f"import:{job_id}:claims", mapping={
        "0": json.dumps([["a" * 32, False], ["b" * 32, False]]), "1": json.dumps([["b" * 32, True]]),
        "2": json.dumps({"id": "c" * 32, "existed": False}), "3": json.dumps([["d" * 32, False], ["", False]])})
    assert await import_queue.begin_forget(job_id, ["a" * 32, "b" * 32, "c" * 32, "d" * 32], "0") == (
        "a" * 32, "d" * 32)
    await import_queue.end_forget(job_id, ["a" * 32, "d" * 32], "0")
    seen = await import_queue.forgets(job_id)
    await import_queue.claim_images(job_id, {0: ("d" * 32, False), 1: ("", False), 4: ("e" * 32, False)}, seen)
    assert await import_queue.begin_forget(job_id, ["a" * 32, "b" * 32, "c" * 32, "d" * 32, "e" * 32], "0") == (
        "a" * 32, "b" * 32)


@pytest.mark.anyio
async def test_a_claim_of_an_image_being_deleted_or_across_a_deletion_is_refused(
        import_queue: ImportQueue, monkeypatch: pytest.MonkeyPatch) -> None:
    """While a worker deletes an image (begin_forget .. end_forget) no claim names it; a claim by a caller that read
    the album before a deletion began or ended is refused whatever it names (what it read may be gone). A refused
    claim records nothing. One batch deletes an image at a time: another batch's check leaves it, another's end
    does not lift the mark, the same batch's retry renews it. A mark whose worker stopped holds claims back for
    FORGET_MARK_S only."""
    job_id = await import_queue.create("demo", "urls", "keep")
    x, y = "a" * 32, "b" * 32
    seen = await import_queue.forgets(job_id)
    assert await import_queue.begin_forget(job_id, [x], "8") == (x,)
    assert await import_queue.begin_forget(job_id, [x], "16") == ()  # batch 8 deletes it
    assert await import_queue.begin_forget(job_id, [x], "8") == (x,)  # batch 8's retry
    await import_queue.end_forget(job_id, [x], "16")
    with pytest.raises(ClaimsRaced):
        await import_queue.claim_images(job_id, {0: (x, True)}, seen)  # read before the deletion began
    during = await import_queue.forgets(job_id)
    with pytest.raises(ClaimsRaced):
        await import_queue.claim_images(job_id, {0: (x, True)}, during)  # names the image being deleted
    assert (await import_queue.claim_images(job_id, {1: (y, True)}, during))[1].existed  # another image goes on
    await import_queue.end_forget(job_id, [x], "8")
    for key in ("latest", "forgets"):  # (the marks, all gone, took their key with them)
        assert 0 < await import_queue.redis.ttl(f"import:{job_id}:{key}") <= import_queue.ttl_s
    with pytest.raises(ClaimsRaced):
        await import_queue.claim_images(job_id, {0: (x, True)}, during)  # read while it was being deleted
    assert await import_queue.redis.hget(f"import:{job_id}:claims", "0") is None
    claims = await import_queue.claim_images(job_id, {0: (x, False)}, await import_queue.forgets(job_id))
    assert (claims[0].id, claims[0].existed) == (x, False)

    assert await import_queue.begin_forget(job_id, [x, y, "c" * 32], "8") == ("c" * 32,)  # x and y are claimed now
    monkeypatch.setattr(import_queue_module, "FORGET_MARK_S", 0)
    await asyncio.sleep(0.01)
    assert await import_queue.claim_images(job_id, {2: ("c" * 32, True)}, await import_queue.forgets(job_id))
    assert await import_queue.begin_forget(job_id, ["d" * 32], "8") == ("d" * 32,)
    assert await import_queue.begin_forget(job_id, ["d" * 32], "16") == ("d" * 32,)  # batch 8's mark has lapsed


@pytest.mark.anyio
@pytest.mark.parametrize("when", ["while_deleting", "read_before"])
async def test_a_batch_making_an_image_another_batch_deletes_adds_it_itself(
        make_fakes: MakeFakes, import_queue: ImportQueue, monkeypatch: pytest.MonkeyPatch, when: str) -> None:
    """Batch A's retry deletes the image its first try left (its URL answers other bytes now) while batch B's item
    has those very bytes: B, claiming during the deletion, or after it on what it read of the album before, is
    refused; it reads the album again and adds the image itself, instead of counting a duplicate of an image
    that is gone."""
    fakes = make_fakes(ingest_batch_size=1)
    fakes.use_search(LateInsert())
    await albums.create(fakes.deps, "demo")
    url, twin = "http://photos.test/changing.png", "http://photos.test/twin.png"
    fakes.fetcher.pages = {url: png(1, 64), twin: png(1, 64)}
    job = await imports.create(fakes.deps, import_queue, "demo", imports.ImportSpec(urls=[url, twin]))
    first, second = [await import_queue.take("test-worker", 100, 60_000) for _ in range(2)]
    assert first is not None and second is not None and (first.first, second.first) == (0, 1)
    made, now = (image_id_of(hashlib.sha256(png(n, 64)).hexdigest()) for n in (1, 3))

    fakes.search.insert_error = SearchUnavailable("answer lost")
    with pytest.raises(SearchUnavailable):
        await imports.process_batch(fakes.deps, import_queue, first)
    assert [i.id for i in fakes.search.index.get("demo", [made])] == [made]  # the first try's image, left behind
    fakes.search.insert_error = None
    fakes.fetcher.pages[url] = png(3, 64)
    monkeypatch.setattr(imports, "CLAIM_PAUSE_S", 0.01)

    if when == "while_deleting":
        deleting, go_on = asyncio.Event(), asyncio.Event()
        delete_stored = imports.delete_stored

        async def slow_delete(deps: Deps, album: str, ids: list[str]) -> int:
            deleting.set()
            await go_on.wait()
            return await delete_stored(deps, album, ids)

        monkeypatch.setattr(imports, "delete_stored", slow_delete)
        retry = asyncio.create_task(imports.process_batch(fakes.deps, import_queue, first))
        await deleting.wait()
        with pytest.raises(Unavailable):  # refused on each try in place: the batch is left to be tried again
            await imports.process_batch(fakes.deps, import_queue, second)
        go_on.set()
        await retry
        await imports.process_batch(fakes.deps, import_queue, second)
    else:
        read, go_on = asyncio.Event(), asyncio.Event()
        get = fakes.search.get

        async def stale_get(collection: str, ids: Sequence[str], with_vectors: bool = False,
                            version: int = 0) -> list[Item]:
            found = await get(collection, ids, with_vectors, version)
            if not read.is_set():
                read.set()
                await go_on.wait()
            return found

        monkeypatch.setattr(fakes.search, "get", stale_get)
        making = asyncio.create_task(imports.process_batch(fakes.deps, import_queue, second))
        await read.wait()  # B has read the album: the first try's image is there
        await imports.process_batch(fakes.deps, import_queue, first)  # A deletes it meanwhile
        go_on.set()
        await making

    assert {i.id for i in fakes.search.index.get("demo", [made, now])} == {made, now}
    hashes = [hashlib.sha256(png(n, 64)).hexdigest() for n in (1, 3)]
    assert sorted(fakes.blobs.objects) == sorted(key for h in hashes for key in (image_key("demo", h),
                                                                                 features_key("demo", h)))
    job = await import_queue.get(job.id)
    assert (job.status, job.counts["added"], job.counts["duplicates"]) == (ImportStatus.DONE, 2, 0)
    found = (await imports.results(import_queue, job.id)).results
    assert {r["url"]: (r["status"], r["id"]) for r in found} == {url: ("added", now), twin: ("added", made)}


@pytest.mark.anyio
async def test_an_import_of_a_tar_gz_stages_it_off_the_event_loop(make_fakes: MakeFakes,
                                                                  import_queue: ImportQueue) -> None:
    """The import's staging reads its archive in worker threads only: meanwhile the loop runs (a ticker counts)."""
    fakes = make_fakes(ingest_batch_size=4)
    await albums.create(fakes.deps, "demo")
    archive = NotedFile(tar_gz({f"p{n:02d}.png": png(n, 64) for n in range(10)}), read_s=0.01)
    ticks = 0

    async def tick() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0)
            ticks += 1

    ticker = asyncio.create_task(tick())
    try:
        job = await imports.create(fakes.deps, import_queue, "demo", imports.ImportSpec(archive=archive))
    finally:
        ticker.cancel()
    assert (job.status, job.total) == (ImportStatus.QUEUED, 10)
    assert threading.get_ident() not in archive.readers and ticks > 10
    while (batch := await import_queue.take("test-worker", 200, 60_000)) is not None:
        await imports.process_batch(fakes.deps, import_queue, batch)
        await import_queue.done(batch.entry_id)
    assert await images.count(fakes.deps, "demo") == 10
