"""A manifest cut for a folder sent in parts (POST /v1/albums/{album}/manifest-parts, gRPC CutManifest): the same
tests against both surfaces of the real gateway, and each part's manifest imported with its part."""

from __future__ import annotations

import csv
import io
import socket
import tarfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Protocol

import grpc
import httpx
import pytest
from imagesearch.v1 import gateway_pb2, gateway_pb2_grpc

from services.devstack import Stack
from tests.gateway.stack_helpers import given_attributes, unique_album


class Cut(Protocol):
    """Cuts (album, manifest, format, parts, its file's name) -> the manifests, or (status, reason) of a refusal."""

    def __call__(self, album: str, manifest: str, kind: str, parts: Sequence[Sequence[str]], name: str = ""
                 ) -> list[str] | tuple[int, str]: ...
GRPC_STATUS = {grpc.StatusCode.INVALID_ARGUMENT: 400, grpc.StatusCode.NOT_FOUND: 404}


@pytest.fixture()
def http(stack: Stack) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=stack.http_url, timeout=60) as client:
        yield client


@pytest.fixture(params=["http", "grpc"])
def cut(request: pytest.FixtureRequest, stack: Stack, http: httpx.Client) -> Iterator[Cut]:
    if request.param == "http":
        def by_http(album: str, manifest: str, kind: str, parts: Sequence[Sequence[str]], name: str = ""
                    ) -> list[str] | tuple[int, str]:
            answer = http.post(f"/v1/albums/{album}/manifest-parts", json={
                "manifest": manifest, "manifest_format": kind, "parts": parts, "manifest_name": name})
            if answer.status_code != 200:
                return answer.status_code, answer.json()["error"]["reason"]
            return list(answer.json()["manifests"])
        yield by_http
        return
    with grpc.insecure_channel(f"127.0.0.1:{stack.ports.gateway}") as channel:
        stub = gateway_pb2_grpc.GatewayStub(channel)

        def by_grpc(album: str, manifest: str, kind: str, parts: Sequence[Sequence[str]], name: str = ""
                    ) -> list[str] | tuple[int, str]:
            try:
                answer = stub.CutManifest(gateway_pb2.CutManifestRequest(
                    album=album, manifest=manifest, manifest_format=kind, manifest_name=name,
                    parts=[gateway_pb2.ManifestPart(files=files) for files in parts]))
            except grpc.RpcError as exc:
                reason = dict(exc.trailing_metadata() or ()).get("x-error-reason", "")  # type: ignore[attr-defined]
                code = exc.code()  # type: ignore[attr-defined]
                # a bad cell is INVALID_ARGUMENT with its reason, as an import's (HTTP 422)
                return (422 if reason == "invalid_attributes" and code == grpc.StatusCode.INVALID_ARGUMENT
                        else GRPC_STATUS.get(code, 500)), reason
            return list(answer.manifests)
        yield by_grpc


@pytest.fixture()
def shop(http: httpx.Client) -> Iterator[str]:
    album = unique_album("cut")
    assert http.post("/v1/albums", json={"name": album, "columns": [
        {"name": "price", "type": "float"}, {"name": "place", "type": "string"}]}).status_code == 201
    yield album
    http.delete(f"/v1/albums/{album}")


MANIFEST = ("file,price,place\n"
            "trip/a.png,1.5,harbour\n"          # a folder above the one sent: found by its tail
            "b.png,2,hills\n"
            "https://example.com/c.png,3,web\n"  # a URL row: with the first part
            "gone.png,4,nowhere\n"               # names no file: with the last part, which lists it as not found
            "x/d.png,5,\"quoted, with a comma\"\n"
            "y/d.png,6,twin\n")                  # d.png matches both equally: neither row


def _rows(text: str) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(text)))


def test_each_part_gets_the_rows_its_files_take(cut: Cut, shop: str) -> None:
    parts = [["a.png", "d.png"], ["sub/b.png"]]
    first, last = cut(shop, MANIFEST, "csv", parts)
    assert isinstance(first, str) and isinstance(last, str)
    assert [(r["file"], r["price"], r["place"]) for r in _rows(first)] == [
        ("trip/a.png", "1.5", "harbour"), ("https://example.com/c.png", "3", "web")]
    # b.png's row, then those naming no file: d.png's two (it took neither), listed by that import as not found
    assert [(r["file"], r["place"]) for r in _rows(last)] == [
        ("b.png", "hills"), ("gone.png", "nowhere"), ("x/d.png", "quoted, with a comma"), ("y/d.png", "twin")]

    first, last = cut(shop, MANIFEST, "csv", [["x/d.png"], ["b.png"]])  # d.png by its own path: its row
    assert [r["place"] for r in _rows(str(first))] == ["web", "quoted, with a comma"]
    assert [r["place"] for r in _rows(str(last))] == ["harbour", "hills", "nowhere", "twin"]

    jsonl = '{"file": "a.png", "price": 1}\n{"url": "https://example.com/c.png"}\n'
    assert cut(shop, jsonl, "jsonl", [["a.png"], ["b.png"]]) == [jsonl, ""]
    # the file's name says the format as an import's manifest file's does, over manifest_format
    for name in ("stock.JSONL", "stock.ndjson", "stock.json"):
        assert cut(shop, jsonl, "csv", [["a.png"], ["b.png"]], name) == [jsonl, ""]
    assert cut(shop, MANIFEST, "jsonl", parts, "Trip.CSV") == cut(shop, MANIFEST, "csv", parts)


def test_a_bad_cell_anywhere_or_a_bad_request_is_refused_with_its_reason(cut: Cut, shop: str) -> None:
    assert cut(shop, MANIFEST + "e.png,cheap,shop\n", "csv", [["e.png"], ["a.png"]]) == (422, "invalid_attributes")
    assert cut(shop, MANIFEST, "xml", [["a.png"]]) == (400, "invalid_argument")
    assert cut(shop, MANIFEST, "csv", [["a.png"]], "notes.txt") == (400, "invalid_argument")
    assert isinstance(cut(shop, MANIFEST, "CSV", [["a.png"]]), list)  # the format's case is not the caller's concern
    assert cut(shop, MANIFEST, "csv", []) == (400, "invalid_argument")
    assert cut(unique_album("missing"), MANIFEST, "csv", [["a.png"]]) == (404, "album_not_found")


def test_a_cut_over_its_size_is_refused_before_its_body_is_read(stack: Stack, shop: str) -> None:
    from services.gateway.usecases.manifests import MAX_REQUEST_BYTES

    # The request declares more than a cut takes and sends only its first bytes: answered without waiting for them.
    with socket.create_connection(("127.0.0.1", stack.ports.http), timeout=30) as conn:
        conn.sendall(f"POST /v1/albums/{shop}/manifest-parts HTTP/1.1\r\nHost: gateway\r\n"
                     f"Content-Type: application/json\r\nContent-Length: {MAX_REQUEST_BYTES + 1}\r\n\r\n"
                     '{"manifest": "'.encode())
        answer = b""
        while b"request_too_large" not in answer and (chunk := conn.recv(65536)):
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 413") and b'"reason":"request_too_large"' in answer.replace(b" ", b"")


def test_the_parts_imported_with_their_manifests_give_each_image_its_row(
        http: httpx.Client, shop: str, photos: list[Path]) -> None:
    names = [f"{k}-{photo.name}" for k, photo in enumerate(photos[:3])]
    manifest = "file,price,place\n" + "".join(f"trip/{n},{k + 1},p{k}\n" for k, n in enumerate(names)) + \
        "lost.png,9,gone\n"
    parts = [names[:2], names[2:]]
    answer = http.post(f"/v1/albums/{shop}/manifest-parts", json={"manifest": manifest, "parts": parts})
    assert answer.status_code == 200, answer.text
    for files, part_manifest in zip(parts, answer.json()["manifests"], strict=True):
        archive = io.BytesIO()
        with tarfile.open(fileobj=archive, mode="w") as tar:
            for name in files:
                tar.add(photos[names.index(name)], arcname=name)
        job = http.post(f"/v1/albums/{shop}/imports", files={
            "archive": ("trip.tar", archive.getvalue()), "manifest": ("trip.csv", part_manifest.encode())})
        assert job.status_code == 202, job.text
        for _ in range(300):
            state = http.get(f"/v1/imports/{job.json()['id']}").json()
            if state["status"] in ("done", "failed", "cancelled"):
                break
            time.sleep(0.2)
        assert state["status"] == "done"
    images = {i["name"]: given_attributes(i["attributes"])
              for i in http.get(f"/v1/albums/{shop}/images").json()["images"]}
    assert images == {n: {"price": float(k + 1), "place": f"p{k}"} for k, n in enumerate(names)}
    failed = http.get(f"/v1/imports/{job.json()['id']}/results", params={"failed": "true"}).json()["results"]
    assert [f["name"] for f in failed] == ["lost.png"]  # the row naming no file: with the last part


def test_an_import_refuses_a_manifest_format_as_a_cut_does(stack: Stack, http: httpx.Client, shop: str) -> None:
    """A JSON import's (and gRPC CreateImport's) manifest_format is read as the cut reads it: another than csv or
    jsonl is a bad request (400 invalid_argument, not a manifest with bad attributes), its case free."""
    manifest = '{"url": "http://127.0.0.1:9/x.png", "price": 1}\n'
    answer = http.post(f"/v1/albums/{shop}/imports", json={"manifest": manifest, "manifest_format": "xml"})
    assert (answer.status_code, answer.json()["error"]["reason"]) == (400, "invalid_argument"), answer.text
    assert "manifest_format is one of csv, jsonl" in answer.json()["error"]["message"]
    with grpc.insecure_channel(f"127.0.0.1:{stack.ports.gateway}") as channel:
        stub = gateway_pb2_grpc.GatewayStub(channel)
        with pytest.raises(grpc.RpcError) as refused:
            stub.CreateImport(gateway_pb2.CreateImportRequest(album=shop, manifest=manifest, manifest_format="xml"))
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT  # type: ignore[attr-defined]
    assert http.get("/v1/imports", params={"album": shop}).json()["imports"] == []  # nothing queued
    taken = http.post(f"/v1/albums/{shop}/imports", json={"manifest": manifest, "manifest_format": "JSONL"})
    assert taken.status_code == 202, taken.text
    http.post(f"/v1/imports/{taken.json()['id']}/cancel")  # not left to the workers the session's other tests share
    for _ in range(100):
        if http.get(f"/v1/imports/{taken.json()['id']}").json()["status"] in ("done", "failed", "cancelled"):
            break
        time.sleep(0.1)
