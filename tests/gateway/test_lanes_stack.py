"""Which of the extractor's lanes (services/extractor/lanes.py) the gateway's work takes, read from the
extractor's own metrics over the real stack: a search the interactive lane, an add's images the adds lane,
the images of an import or a re-embed the bulk one, whose threads run at the lowest priority."""

from __future__ import annotations

import io
import uuid
from pathlib import Path

import httpx
import pytest
from PIL import Image
from prometheus_client.parser import text_string_to_metric_families

from services.cli import pack_images
from services.client import GatewayClient, Upload
from services.devstack import Stack
from tests.gateway.stack_helpers import unique_album, wait_for_job

pytestmark = pytest.mark.stack


def images_requested(stack: Stack) -> dict[str, float]:
    """Images the extractor was sent to embed, by the lane they took."""
    text = httpx.get(f"http://127.0.0.1:{stack.ports.extractor_metrics}/metrics", timeout=10).text
    return {s.labels["lane"]: s.value for family in text_string_to_metric_families(text)
            if family.name == "imagesearch_extractor_images_requested" for s in family.samples
            if s.name.endswith("_total")}


def unseen(path: Path) -> bytes:
    """The photo with one pixel set from a fresh UUID: bytes no test sent before, which the gateway's
    query-embedding cache (by content hash) cannot answer, so the search goes to the extractor."""
    image = Image.open(path).convert("RGB")
    image.putpixel((0, 0), tuple(uuid.uuid4().bytes[:3]))
    out = io.BytesIO()
    image.save(out, "PNG")
    return out.getvalue()


def taken(before: dict[str, float], after: dict[str, float]) -> tuple[float, float, float]:
    """Images (interactive lane, adds lane, bulk lane) between two readings."""
    interactive, adds, bulk = (after[lane] - before[lane] for lane in ("interactive", "adds", "bulk"))
    return interactive, adds, bulk


def test_searches_take_the_interactive_lane_adds_the_adds_lane_and_imports_and_re_embeds_the_bulk_one(
        stack: Stack, photos: list[Path], tmp_path: Path) -> None:
    client = GatewayClient(stack.http_url)
    album = unique_album("lanes")
    client.create_album(album)

    before = images_requested(stack)
    added = client.add_images(album, [Upload(p.read_bytes(), p.name) for p in photos[:2]])
    assert [r["status"] for r in added["results"]] == ["added", "added"]
    after = images_requested(stack)
    assert taken(before, after) == (0, 2, 0)

    before = after
    client.search(album, image=unseen(photos[2]), top_k=3)
    after = images_requested(stack)
    assert taken(before, after)[0] >= 1 and taken(before, after)[1:] == (0, 0)

    archive = tmp_path / "more.tar"
    with open(archive, "wb") as out:
        pack_images(photos[3:5], out)
    before = after
    job = wait_for_job(client.http, client.start_import(album, archive=archive)["id"])
    assert (job["status"], job["counts"]["added"]) == ("done", 2)
    after = images_requested(stack)
    assert taken(before, after) == (0, 0, 2)

    before = after
    job = wait_for_job(client.http, client.reembed(album)["id"])
    assert job["status"] == "done", job
    after = images_requested(stack)
    assert taken(before, after) == (0, 0, 4)
