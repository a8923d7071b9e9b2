"""The gateway process: it starts with every dependency down, answers 503 with the reason, and stops on SIGTERM."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator

import httpx
import pytest

from services.devstack import ROOT, free_port


@pytest.fixture()
def lonely_gateway() -> Iterator[str]:
    """A gateway whose extractor, search service, object store and Redis are all unreachable."""
    http_port = free_port()
    env = {**os.environ, "GATEWAY_HOST": "127.0.0.1", "GATEWAY_PORT": str(free_port()),
           "GATEWAY_HTTP_PORT": str(http_port), "GATEWAY_EXTRACTOR_TARGET": f"127.0.0.1:{free_port()}",
           "GATEWAY_SEARCH_TARGET": f"127.0.0.1:{free_port()}", "GATEWAY_S3_ENDPOINT": f"127.0.0.1:{free_port()}",
           "GATEWAY_REDIS_URL": f"redis://127.0.0.1:{free_port()}/0", "GATEWAY_S3_TIMEOUT_S": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "services.gateway"], cwd=ROOT, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{http_port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                break
        except httpx.HTTPError:
            time.sleep(0.1)
    try:
        yield url
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(15) == 0


def test_the_gateway_starts_without_its_dependencies_and_answers_503(lonely_gateway: str) -> None:
    with httpx.Client(base_url=lonely_gateway, timeout=30) as http:
        assert http.get("/healthz").status_code == 200
        ready = http.get("/readyz")
        assert ready.status_code == 503
        assert set(ready.json()["checks"]) == {"extractor", "search", "object_store", "redis"}
        created = http.post("/v1/albums", json={"name": "demo"})
        assert (created.status_code, created.json()["error"]["reason"]) == (503, "extractor_unavailable")
        found = http.post("/v1/albums/demo/search", data={"image_id": "0" * 32})
        assert (found.status_code, found.json()["error"]["reason"]) == (503, "search_unavailable")
        job = http.get("/v1/imports/abc")
        assert (job.status_code, job.json()["error"]["reason"]) == (503, "store_unavailable")
