"""An album past Milvus' query window (16,384 rows a query): every image listed once by id pages, counted,
exported, changed and deleted by filter. Its rows are written straight through the search service (one small
vector each; no image bytes are needed for these)."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

import grpc
import httpx
import numpy as np
import pytest
from imagesearch.v1 import gateway_pb2, gateway_pb2_grpc

from services.common.grpc_client import open_channel
from services.devstack import ROOT, Stack
from services.gateway.clients import GrpcVectorSearch
from services.gateway.records import Item
from tests.gateway.stack_helpers import given_attributes, unique_album

pytestmark = pytest.mark.stack

IMAGES = 16_500


async def _fill(stack: Stack, album: str, dim: int) -> None:
    rng = np.random.default_rng(5)
    async with open_channel(f"127.0.0.1:{stack.ports.search}") as channel:
        search = GrpcVectorSearch(channel, 120)
        for start in range(0, IMAGES, 1500):
            vectors = rng.standard_normal((min(1500, IMAGES - start), dim)).astype(np.float32)
            await search.insert(album, [
                Item(id=f"{start + i:032x}", name=f"n{start + i}", content_hash=f"{start + i:064x}",
                     attributes={"bucket": (start + i) % 10}, created_at_ms=1, vectors=[v.tolist()])
                for i, v in enumerate(vectors)])


def test_an_album_past_the_query_window_is_walked_whole(stack: Stack, tmp_path: Path) -> None:
    album = unique_album("large")
    with httpx.Client(base_url=stack.http_url, timeout=300) as http:
        created = http.post("/v1/albums", json={"name": album})
        asyncio.run(_fill(stack, album, created.json()["dim"]))
        assert http.get(f"/v1/albums/{album}").json()["image_count"] == IMAGES

        seen, after = [], ""
        while True:
            page = http.get(f"/v1/albums/{album}/images", params={"limit": 1000, "after": after}).json()
            seen.extend(i["id"] for i in page["images"])
            if page["next_after"] is None:
                break
            after = page["next_after"]
        assert len(seen) == len(set(seen)) == IMAGES and seen == sorted(seen)
        assert http.get(f"/v1/albums/{album}/images/count", params={"where": "bucket = 3"}).json()["count"] == 1650

        env = {**os.environ, "IMAGESEARCH_URL": stack.http_url}
        out = tmp_path / "album.jsonl"
        exported = subprocess.run([sys.executable, "-m", "services.cli", "export", "--album", album, "--out", str(out)],
                                  cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
        assert exported.returncode == 0, exported.stderr
        rows = [json.loads(line) for line in out.read_text().splitlines()]
        piped = subprocess.run(f"{sys.executable} -m services.cli export --album {album} | head -1", shell=True,
                               cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
        assert json.loads(piped.stdout)["name"] == "n0" and piped.stderr == "", piped.stderr  # stopped quietly
        assert len(rows) == IMAGES and given_attributes(rows[0]["attributes"]) == {"bucket": 0}
        assert rows[-1]["name"] == f"n{IMAGES - 1}"
        # The export's own answer, a line an image streamed, over HTTP (what the CLI reads) and gRPC, filtered.
        with http.stream("GET", f"/v1/albums/{album}/export", params={"where": "bucket = 3"}) as streamed:
            assert streamed.headers["content-type"] == "application/x-ndjson"
            assert streamed.headers["content-disposition"] == f"attachment; filename*=UTF-8''{album}.jsonl"
            lines = [json.loads(line) for line in streamed.iter_lines()]
        assert len(lines) == 1650 and [r["id"] for r in lines] == sorted(r["id"] for r in lines)
        assert {given_attributes(r["attributes"])["bucket"] for r in lines} == {3}
        with grpc.insecure_channel(f"127.0.0.1:{stack.ports.gateway}") as channel:
            request = gateway_pb2.ExportImagesRequest(album=album, where="bucket = 3")
            assert [i.id for i in gateway_pb2_grpc.GatewayStub(channel).ExportImages(request, timeout=120)] == \
                [r["id"] for r in lines]

        updated = http.patch(f"/v1/albums/{album}/images", params={"where": "bucket < 9"},
                             json={"attributes": {"seen": True}})
        assert updated.json() == {"updated": 14_850}
        assert http.get(f"/v1/albums/{album}/images/count", params={"where": "seen = true"}).json()["count"] == 14_850
        deleted = http.delete(f"/v1/albums/{album}/images", params={"where": "seen = true"})
        assert deleted.json() == {"deleted": 14_850}
        assert http.get(f"/v1/albums/{album}").json()["image_count"] == 1650
        http.delete(f"/v1/albums/{album}")
