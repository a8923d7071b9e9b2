"""A dependency down: clear 503s with the right reason, nothing lost, and recovery once it is back.

Milvus is stopped in a stack of its own (tests.conftest's breakable stack); its restart is also where
the search service's index is shown to lose nothing across a restart."""

from __future__ import annotations

import io
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image

from services.devstack import Stack
from services.search.milvus_index import MilvusIndex
from tests.search.conftest import settings_for
from tests.search.test_index import DIM, ids, items_from, unit


def _album(client: httpx.Client) -> str:
    name = f"faults-{uuid.uuid4().hex[:8]}"
    assert client.post("/v1/albums", json={"name": name}).status_code == 201
    return name


def _add(client: httpx.Client, album: str, path: Path) -> httpx.Response:
    return client.post(f"/v1/albums/{album}/images", files=[("file", (path.name, path.read_bytes()))])


def _fresh_query(path: Path) -> bytes:
    """The photo with one pixel changed: bytes no earlier test searched, so no cached embedding answers."""
    with Image.open(path) as image:
        pixels = image.convert("RGB")
    pixels.putpixel((0, 0), tuple(int(b) for b in uuid.uuid4().bytes[:3]))
    out = io.BytesIO()
    pixels.save(out, format="PNG")
    return out.getvalue()


def _when(call: Callable[[], httpx.Response], status: int, timeout_s: float = 30, every_s: float = 0.5,
          meanwhile: int | None = None) -> httpx.Response:
    """The first answer of `call` with this status; the answers before it must have status `meanwhile`
    when one is given."""
    deadline = time.monotonic() + timeout_s
    while (answer := call()).status_code != status:
        if meanwhile is not None:
            assert answer.status_code == meanwhile, answer.text
        assert time.monotonic() < deadline, f"still {answer.status_code} after {timeout_s} s: {answer.text}"
        time.sleep(every_s)
    return answer


def _when_served(call: Callable[[], httpx.Response]) -> httpx.Response:
    """The first 200 answer of `call`; 503s are expected while a restarted Milvus loads the album."""
    return _when(call, 200, timeout_s=180, every_s=2, meanwhile=503)


def _count(client: httpx.Client, album: str) -> int:
    answer = client.get(f"/v1/albums/{album}")
    assert answer.status_code == 200, answer.text
    return int(answer.json()["image_count"])


@pytest.fixture()
def client(stack: Stack) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=stack.http_url, timeout=60) as http:
        yield http


def test_search_and_add_answer_503_while_the_extractor_is_down_and_work_again_after(
    stack: Stack, client: httpx.Client, photos: list[Path]
) -> None:
    album = _album(client)
    assert _add(client, album, photos[0]).status_code == 201
    stack.stop(("extractor",))
    try:
        search = client.post(f"/v1/albums/{album}/search", files={"file": _fresh_query(photos[1])})
        assert search.status_code == 503
        assert search.json()["error"]["reason"] == "extractor_unavailable"
        add = _add(client, album, photos[1])
        assert add.status_code == 503
        assert _count(client, album) == 1
    finally:
        stack.ensure(("extractor",))
    assert _add(client, album, photos[1]).status_code == 201
    assert _count(client, album) == 2
    hits = client.post(f"/v1/albums/{album}/search", files={"file": photos[1].read_bytes()}).json()["results"]
    assert hits[0]["name"] == photos[1].name


def test_calls_answer_503_while_the_search_service_is_down(
    stack: Stack, client: httpx.Client, photos: list[Path]
) -> None:
    album = _album(client)
    assert _add(client, album, photos[0]).status_code == 201
    stack.stop(("search",))
    try:
        search = client.post(f"/v1/albums/{album}/search", files={"file": _fresh_query(photos[0])})
        assert search.status_code == 503
        assert search.json()["error"]["reason"] == "search_unavailable"
        assert client.get("/readyz").status_code == 503
    finally:
        stack.ensure(("search",))
    assert _count(client, album) == 1


def test_calls_answer_503_while_milvus_is_down_and_the_album_survives(breakable_stack: Stack,
                                                                      photos: list[Path]) -> None:
    """Milvus stopped and started again: the search service, running through the outage, finds the
    restarted server by itself, and what was written before is there after, both to an index client held
    open across the restart (as the service's is) and to a fresh one (a fresh process's view)."""
    settings = settings_for(breakable_stack)
    before = MilvusIndex(settings)
    vectors = unit(np.random.default_rng(14), 10)
    before.create_collection("durable", DIM, "m")
    before.insert("durable", items_from(vectors))
    with httpx.Client(base_url=breakable_stack.http_url, timeout=60) as client:
        album = _album(client)
        assert _add(client, album, photos[0]).status_code == 201
        breakable_stack.stop(("milvus",))
        search = client.post(f"/v1/albums/{album}/search", files={"file": photos[0].read_bytes()})
        assert search.status_code == 503
        assert search.json()["error"]["reason"] == "store_unavailable"
        add = _add(client, album, photos[1])
        assert add.status_code == 503
        assert add.json()["error"]["reason"] == "store_unavailable"
        not_ready = _when(lambda: client.get("/readyz"), 503)  # the search service checks Milvus every 5 s
        assert "vector store" in not_ready.json()["checks"]["search"], not_ready.text
        assert not_ready.json()["checks"]["extractor"] == "ok"
        breakable_stack.ensure(("milvus",))
        answer = _when_served(
            lambda: client.post(f"/v1/albums/{album}/search", files={"file": photos[0].read_bytes()})
        )
        assert [h["name"] for h in answer.json()["results"]] == [photos[0].name]
        assert _count(client, album) == 1
        _when(lambda: client.get("/readyz"), 200)
    after = MilvusIndex(settings)
    try:
        assert ids(before.search("durable", vectors[6], 1)) == ["img6"]
        assert ids(after.search("durable", vectors[6], 1)) == ["img6"]
        assert after.count("durable") == 10
    finally:
        after.drop_collection("durable")
        before.close()
        after.close()
