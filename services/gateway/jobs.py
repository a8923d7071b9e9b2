"""Ingest jobs: lists of image URLs added to an album in the background, tracked in Redis.

    jobs:queue              a list of job ids waiting for a worker (RPUSH to submit, BLPOP to take)
    job:<id>                a hash: album, urls, attributes, status, total, done, failed, error, times
    job:<id>:results        a list of JSON results, one per URL, in the order they finished

A worker task in each gateway process takes jobs one at a time and runs their URLs, a batch at a
time, through the same add-images use case as an upload. Redis errors become `StoreUnavailable`.
"""

from __future__ import annotations

import asyncio
import enum
import json
import logging
import time
import uuid
from collections.abc import Awaitable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from redis.asyncio import Redis
from redis.exceptions import RedisError
from redis.typing import EncodableT, FieldT

from services.common.errors import ImageSearchError, InvalidArgument, NotFound, StoreUnavailable
from services.common.logs import request_id_var
from services.gateway.deps import Deps
from services.gateway.records import AddStatus, JsonObject, NewImage
from services.gateway.urlfetch import name_from_url
from services.gateway.usecases import ingest

log = logging.getLogger(__name__)

T = TypeVar("T")

QUEUE_KEY = "jobs:queue"
JOB_TTL_S = 7 * 24 * 3600
MAX_URLS = 10_000


class JobStatus(enum.StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"


@dataclass(frozen=True)
class Job:
    """A job's state as GET /v1/jobs/{id} shows it."""

    id: str
    album: str
    status: JobStatus
    total: int
    done: int
    failed: int
    error: str
    created_at_ms: int
    updated_at_ms: int
    results: list[JsonObject] = field(default_factory=list)


def _job_key(job_id: str) -> str:
    return f"job:{job_id}"


def _results_key(job_id: str) -> str:
    return f"job:{job_id}:results"


def _now_ms() -> int:
    return int(time.time() * 1000)


class JobStore:
    """Jobs and their queue in Redis."""

    def __init__(self, redis: Redis, ttl_s: int = JOB_TTL_S) -> None:
        self.redis = redis
        self.ttl_s = ttl_s

    async def _run(self, operation: Awaitable[T]) -> T:
        try:
            return await operation
        except (RedisError, OSError) as exc:
            raise StoreUnavailable(f"the job store (Redis) is unavailable: {exc}") from exc

    async def ping(self) -> None:
        """Raises StoreUnavailable unless Redis answers."""
        await self._run(self.redis.ping())

    async def submit(self, album: str, urls: Sequence[str], attributes: JsonObject | None = None) -> str:
        """Records a queued job and puts it on the queue; returns its id."""
        if not urls:
            raise InvalidArgument("a job needs at least one URL")
        if len(urls) > MAX_URLS:
            raise InvalidArgument(f"{len(urls)} URLs in one job; the limit is {MAX_URLS}")
        job_id = uuid.uuid4().hex
        now = _now_ms()
        fields: dict[FieldT, EncodableT] = {
            "album": album, "urls": json.dumps(list(urls)), "attributes": json.dumps(attributes or {}),
            "status": JobStatus.QUEUED.value, "total": len(urls), "done": 0, "failed": 0, "error": "",
            "created_at_ms": now, "updated_at_ms": now, "request_id": request_id_var.get(),
        }
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hset(_job_key(job_id), mapping=fields)
            pipe.expire(_job_key(job_id), self.ttl_s)
            pipe.rpush(QUEUE_KEY, job_id)
            await self._run(pipe.execute())
        log.info("queued job %s: %d URL(s) into album %s", job_id, len(urls), album)
        return job_id

    async def get(self, job_id: str) -> Job:
        raw = await self._run(self.redis.hgetall(_job_key(job_id))) if job_id.isalnum() else {}
        if not raw:
            raise NotFound(f"no job {job_id[:80]!r}")
        fields = {_text(k): _text(v) for k, v in raw.items()}
        results = await self._run(self.redis.lrange(_results_key(job_id), 0, -1))
        return Job(
            id=job_id, album=fields.get("album", ""), status=JobStatus(fields.get("status", "queued")),
            total=int(fields.get("total", 0)), done=int(fields.get("done", 0)), failed=int(fields.get("failed", 0)),
            error=fields.get("error", ""), created_at_ms=int(fields.get("created_at_ms", 0)),
            updated_at_ms=int(fields.get("updated_at_ms", 0)), results=[json.loads(_text(r)) for r in results],
        )

    async def spec(self, job_id: str) -> tuple[str, list[str], JsonObject, str]:
        """The album, URLs, attributes and request id a job was submitted with."""
        fields = {_text(k): _text(v) for k, v in (await self._run(self.redis.hgetall(_job_key(job_id)))).items()}
        if not fields:
            raise NotFound(f"no job {job_id!r}")
        return (fields["album"], json.loads(fields["urls"]), json.loads(fields.get("attributes") or "{}"),
                fields.get("request_id", "-"))

    async def next(self, timeout_s: float) -> str | None:
        """The next queued job id, waiting up to timeout_s for one."""
        popped = await self._run(self.redis.blpop([QUEUE_KEY], timeout=timeout_s))
        return _text(popped[1]) if popped else None

    async def set_status(self, job_id: str, status: JobStatus, error: str = "") -> None:
        await self._run(self.redis.hset(_job_key(job_id), mapping={
            "status": status.value, "error": error, "updated_at_ms": _now_ms()}))

    async def record(self, job_id: str, results: Sequence[JsonObject]) -> None:
        """Appends finished results and counts them as done or failed."""
        if not results:
            return
        failed = sum(1 for r in results if r["status"] == AddStatus.FAILED)
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.rpush(_results_key(job_id), *(json.dumps(r) for r in results))
            pipe.expire(_results_key(job_id), self.ttl_s)
            pipe.hincrby(_job_key(job_id), "done", len(results) - failed)
            pipe.hincrby(_job_key(job_id), "failed", failed)
            pipe.hset(_job_key(job_id), "updated_at_ms", _now_ms())
            await self._run(pipe.execute())


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class IngestWorker:
    """Takes jobs off the queue and runs them through `ingest.add_images`, a batch of URLs at a time."""

    def __init__(self, store: JobStore, deps: Deps, batch_size: int = 16, poll_s: float = 1.0) -> None:
        self.store = store
        self.deps = deps
        self.batch_size = batch_size
        self.poll_s = poll_s

    async def run(self) -> None:
        """Runs until cancelled; while Redis is down it waits and tries again."""
        backoff = self.poll_s
        while True:
            try:
                job_id = await self.store.next(self.poll_s)
            except StoreUnavailable as exc:
                log.warning("ingest worker cannot reach Redis, retrying in %.0fs: %s", backoff, exc.message)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 30.0)
                continue
            backoff = self.poll_s
            if job_id:
                await self.process(job_id)

    async def process(self, job_id: str) -> None:
        """Runs one job to done (some URLs may have failed) or failed (the job could not run)."""
        try:
            album, urls, attributes, request_id = await self.store.spec(job_id)
        except ImageSearchError as exc:
            log.warning("cannot read job %s: %s", job_id, exc.message)
            return
        request_id_var.set(request_id)
        try:
            await self.store.set_status(job_id, JobStatus.RUNNING)
            for start in range(0, len(urls), self.batch_size):
                batch = urls[start:start + self.batch_size]
                await self.store.record(job_id, await self._run_batch(album, start, batch, attributes))
            await self.store.set_status(job_id, JobStatus.DONE)
            log.info("job %s done: %d URL(s) into album %s", job_id, len(urls), album)
        except ImageSearchError as exc:
            log.warning("job %s failed: %s", job_id, exc.message)
            await self._fail(job_id, f"{exc.reason}: {exc.message}")
        except Exception:
            log.exception("job %s failed unexpectedly", job_id)
            await self._fail(job_id, "internal error")

    async def _fail(self, job_id: str, error: str) -> None:
        try:
            await self.store.set_status(job_id, JobStatus.FAILED, error)
        except StoreUnavailable as exc:
            log.warning("cannot mark job %s failed: %s", job_id, exc.message)

    async def _run_batch(self, album: str, start: int, urls: list[str], attributes: JsonObject) -> list[JsonObject]:
        fetched = await asyncio.gather(*(self.deps.fetch_url(u) for u in urls), return_exceptions=True)
        results: dict[int, JsonObject] = {}
        images: list[NewImage] = []
        positions: list[int] = []
        for offset, (url, outcome) in enumerate(zip(urls, fetched, strict=True)):
            if isinstance(outcome, ImageSearchError):
                results[offset] = _result(start + offset, url, AddStatus.FAILED, "", outcome.reason, outcome.message)
            elif isinstance(outcome, BaseException):
                raise outcome
            else:
                images.append(NewImage(content=outcome, name=name_from_url(url), attributes=dict(attributes)))
                positions.append(offset)
        if images:
            for offset, added in zip(positions, await ingest.add_images(self.deps, album, images), strict=True):
                error = added.error
                results[offset] = _result(start + offset, urls[offset], added.status, added.id,
                                          error.reason if error else "", error.message if error else "")
        return [results[i] for i in sorted(results)]


def _result(index: int, url: str, status: AddStatus, image_id: str, reason: str, message: str) -> JsonObject:
    return {"index": index, "url": url, "status": status.value, "id": image_id,
            "error": {"reason": reason, "message": message} if reason else None}
