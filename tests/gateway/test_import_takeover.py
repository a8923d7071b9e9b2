"""A dead worker's batches are taken over as soon as Redis has not heard from it for the takeover time, not only
once they have been idle for the visibility timeout (a minute); a living worker keeps its batch. Over a real
Redis (the session stack's, a database its gateway does not read)."""

from __future__ import annotations

import asyncio
import contextlib
import io
import time
from collections.abc import AsyncIterator

import pytest

from services.devstack import Stack
from services.gateway.import_queue import GROUP, TASKS_KEY, ImportQueue, ImportStatus, ItemSource
from services.gateway.import_worker import ImportWorker
from services.gateway.usecases import albums, images, imports
from tests.gateway.conftest import MakeFakes
from tests.gateway.fakes import SlowGet, png, until, zipped
from tests.gateway.stack_helpers import queue_in_db

pytestmark = pytest.mark.anyio

# A Redis database no gateway of the session's stack reads (nor tests/gateway/test_imports.py's, 7).
TAKEOVER_DB = 8
# Far longer than any test here waits: a batch taken over was taken because its worker was unheard of.
VISIBILITY_MS = 600_000
TAKEOVER_MS = 300


@pytest.fixture()
async def queue(_stack: Stack) -> AsyncIterator[ImportQueue]:
    async with queue_in_db(_stack, TAKEOVER_DB) as queue:
        yield queue


async def _queued(queue: ImportQueue, batches: int) -> str:
    job_id = await queue.create("demo", "files")
    for n in range(batches):
        await queue.add_batch(job_id, n, [ItemSource(name=f"p{n}.png", url=f"http://127.0.0.1/p{n}.png")])
    return job_id


async def _take(queue: ImportQueue, consumer: str) -> tuple[str, int] | None:
    batch = await queue.take(consumer, 100, VISIBILITY_MS, TAKEOVER_MS)
    return (batch.entry_id, batch.first) if batch else None


async def test_a_batch_held_by_a_worker_redis_has_not_heard_from_is_taken_over_at_once(queue: ImportQueue) -> None:
    await _queued(queue, 2)
    held = await queue.take("dead", 100, VISIBILITY_MS, TAKEOVER_MS)
    assert held is not None and held.first == 0
    assert await _take(queue, "living") == (await _entry_of(queue, 1), 1)  # "dead" was heard from just now
    await asyncio.sleep(TAKEOVER_MS / 1000 + 0.1)
    taken = await queue.take("living", 100, VISIBILITY_MS, TAKEOVER_MS)
    assert taken is not None and (taken.entry_id, taken.first, taken.deliveries) == (held.entry_id, 0, 2)
    assert await _take(queue, "living") is None


async def test_a_worker_that_touches_its_batch_keeps_it(queue: ImportQueue) -> None:
    await _queued(queue, 1)
    held = await queue.take("busy", 100, VISIBILITY_MS, TAKEOVER_MS)
    assert held is not None
    deadline = time.monotonic() + 3 * TAKEOVER_MS / 1000
    while time.monotonic() < deadline:
        await asyncio.sleep(TAKEOVER_MS / 4000)
        await queue.touch("busy", held.entry_id)
        assert await _take(queue, "other") is None


async def test_a_consumer_unheard_of_that_holds_nothing_leaves_the_group(queue: ImportQueue) -> None:
    """Each gateway process's workers are consumers of their own: without this the group would keep every one
    that ever ran."""
    await _queued(queue, 1)
    held = await queue.take("gone", 100, VISIBILITY_MS, TAKEOVER_MS)
    assert held is not None
    await queue.done(held.entry_id)
    await asyncio.sleep(TAKEOVER_MS / 1000 + 0.1)
    assert await _take(queue, "other") is None
    assert b"gone" not in [c["name"] for c in await queue.redis.xinfo_consumers(TASKS_KEY, GROUP)]


async def test_an_import_whose_worker_died_holding_a_batch_is_finished_by_another_exactly_once(
        make_fakes: MakeFakes, queue: ImportQueue) -> None:
    """The worker dies in the middle of its batch (its task ends without a word to Redis, as a killed gateway's
    workers do): the other worker takes the batch over well within the visibility timeout, and every image is
    added once."""
    fakes = make_fakes(ingest_batch_size=2)
    slow = fakes.use_search(SlowGet())
    await albums.create(fakes.deps, "demo")
    archive = io.BytesIO(zipped({f"p{n}.png": png(n, 64) for n in range(4)}))
    job = await imports.create(fakes.deps, queue, "demo", imports.ImportSpec(archive=archive))
    slow.answer.clear()  # the first batch waits for the album's answer: its worker is in the middle of it
    dying = asyncio.create_task(ImportWorker(fakes.deps, queue, VISIBILITY_MS / 1000, poll_s=0.1,
                                             takeover_s=TAKEOVER_MS / 1000).run())
    await until(lambda: slow.waiting > 0, "the first worker in the middle of a batch")
    dying.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await dying
    slow.answer.set()
    living = asyncio.create_task(ImportWorker(fakes.deps, queue, VISIBILITY_MS / 1000, poll_s=0.1,
                                              takeover_s=TAKEOVER_MS / 1000).run())
    try:
        deadline = time.monotonic() + 20
        while (finished := await queue.get(job.id)).status is not ImportStatus.DONE:
            assert time.monotonic() < deadline, f"the import is still {finished.status} with {finished.counts}"
            await asyncio.sleep(0.05)
    finally:
        living.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await living
    assert (finished.counts["added"], finished.counts["failed"]) == (4, 0)
    assert await images.count(fakes.deps, "demo") == 4
    assert await queue.redis.xlen(TASKS_KEY) == 0


async def _entry_of(queue: ImportQueue, first: int) -> str:
    """The stream entry of the batch whose first item is `first`."""
    for entry_id, fields in await queue.redis.xrange(TASKS_KEY):
        if int(fields[b"first"]) == first:
            return entry_id.decode()
    raise AssertionError(f"no batch starts at item {first}")


@pytest.mark.parametrize("value", ["0", "-1", "soon"])
def test_a_takeover_time_that_is_not_a_positive_number_is_refused_by_name(
        value: str, monkeypatch: pytest.MonkeyPatch) -> None:
    from pydantic import ValidationError

    from services.gateway.settings import GatewaySettings

    monkeypatch.setenv("GATEWAY_IMPORT_TAKEOVER_S", value)
    with pytest.raises(ValidationError, match="import_takeover_s"):
        GatewaySettings()
