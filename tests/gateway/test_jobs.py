"""Ingest jobs over the real stack: URLs queued in Redis, fetched and added by the gateway's worker."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from services.devstack import Stack
from tests.gateway.stack_helpers import file_server, unique_album

pytestmark = pytest.mark.stack


def wait_for_job(http: httpx.Client, job_id: str, timeout_s: float = 60) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        job = http.get(f"/v1/jobs/{job_id}").json()
        if job["status"] in ("done", "failed"):
            return dict(job)
        time.sleep(0.2)
    raise AssertionError(f"job {job_id} not finished after {timeout_s}s")


def test_an_ingest_job_of_urls_reaches_done(stack: Stack, photos: list[Path]) -> None:
    album = unique_album("job")
    with httpx.Client(base_url=stack.http_url, timeout=60) as http, file_server(photos[0].parent) as base:
        assert http.post("/v1/albums", json={"name": album}).status_code == 201
        urls = [f"{base}/{p.name}" for p in photos[:3]] + [f"{base}/missing.png"]
        created = http.post(f"/v1/albums/{album}/jobs", json={"urls": urls, "attributes": {"source": "job"}})
        assert created.status_code == 202, created.text
        job = wait_for_job(http, created.json()["job_id"])
        assert (job["status"], job["total"], job["done"], job["failed"]) == ("done", 4, 3, 1)
        results = {r["url"]: r for r in job["results"]}
        assert results[urls[3]]["error"]["reason"] == "url_fetch_failed"
        assert http.get(f"/v1/albums/{album}").json()["image_count"] == 3
        hit = http.post(f"/v1/albums/{album}/search", data={"url": urls[1]}).json()["results"][0]
        assert (hit["name"], hit["attributes"]) == (photos[1].name, {"source": "job"})


def test_jobs_for_unknown_albums_or_ids_are_404(stack: Stack) -> None:
    with httpx.Client(base_url=stack.http_url, timeout=30) as http:
        assert http.post("/v1/albums/no-such-album/jobs", json={"urls": ["http://x/y.png"]}).status_code == 404
        assert http.get("/v1/jobs/0123456789abcdef").status_code == 404
        assert http.post("/v1/albums/no-such-album/jobs", json={"urls": []}).status_code == 422
