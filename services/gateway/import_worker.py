"""The workers that run imports: take a batch, add it, acknowledge it; over and over, in each gateway.

A batch whose dependency is down (extractor, search service, object store) is kept and tried again
with a growing pause (at most RETRY_PAUSE_MAX_S), touched meanwhile so that no other worker takes it; a
worker that dies leaves its batch pending, and another one (or the same gateway restarted) takes it over
once Redis has not heard from the dead one for the takeover time (10 s), or at the latest once the batch has
been idle for the visibility timeout. A batch that keeps failing otherwise (a bug, not an
outage) fails its items after `max_attempts`. An import whose album was deleted or whose model no longer
matches fails whole.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
import uuid

from services.common.errors import AlbumNotFound, ImageSearchError, ModelMismatch, StoreUnavailable, Unavailable
from services.common.logs import request_id_var
from services.gateway.deps import Deps
from services.gateway.import_queue import TAKEOVER_S, Batch, ImportQueue, ImportStatus
from services.gateway.usecases import imports

log = logging.getLogger(__name__)

# The longest pause between two tries of a batch whose dependency is down: short, so that the import goes
# on within seconds of the dependency's return; a try while it is still down costs little (it fails at its
# first call to the dependency).
RETRY_PAUSE_MAX_S = 5.0
# How often each worker looks for imports whose staging stopped midway.
SWEEP_EVERY_S = 60.0


class ImportWorker:
    """One worker: a consumer of the import stream with a name of its own."""

    def __init__(self, deps: Deps, queue: ImportQueue, visibility_s: float = 60.0, max_attempts: int = 5,
                 poll_s: float = 1.0, takeover_s: float = TAKEOVER_S) -> None:
        self.deps = deps
        self.queue = queue
        self.visibility_s = visibility_s
        self.takeover_s = takeover_s
        self.max_attempts = max_attempts
        self.poll_s = poll_s
        self.consumer = f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"

    async def serve(self, restart_pause_s: float = 1.0) -> None:
        """`run`, started again (after a short pause) whenever it ends other than by the gateway stopping: an
        error nothing expected (or a call cancelled under it) must not leave the gateway without this
        worker while imports wait. It is logged with its traceback; a batch it held stays pending and is
        taken over (by this worker too) once it is no longer touched."""
        while True:
            try:
                await self.run()
            except asyncio.CancelledError:
                task = asyncio.current_task()
                if task is None or task.cancelling():  # the gateway is stopping
                    raise
                log.exception("import worker %s: a call was cancelled under it; starting it again", self.consumer)
            except Exception:  # the worker's supervisor: anything is logged, and the worker goes on
                log.exception("import worker %s stopped on an error; starting it again", self.consumer)
            await asyncio.sleep(restart_pause_s)

    async def run(self) -> None:
        """Runs until cancelled; while Redis is down it waits and tries again. Now and then (every
        SWEEP_EVERY_S) it also fails the imports whose staging stopped midway (`imports.fail_stopped_staging`)."""
        backoff = self.poll_s
        swept = time.monotonic()
        while True:
            try:
                if time.monotonic() - swept >= SWEEP_EVERY_S:
                    swept = time.monotonic()
                    await imports.fail_stopped_staging(self.deps, self.queue)
                batch = await self.queue.take(self.consumer, int(self.poll_s * 1000), int(self.visibility_s * 1000),
                                              int(self.takeover_s * 1000))
            except StoreUnavailable as exc:
                log.warning("import worker cannot reach Redis, retrying in %.0fs: %s", backoff, exc.message)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 30.0)
                continue
            backoff = self.poll_s
            if batch is not None:
                if batch.deliveries > 1:
                    log.info("import %s items %d-%d taken over by worker %s (try %d): its worker stopped", batch.job_id,
                             batch.first, batch.last, self.consumer, batch.deliveries)
                await self.handle(batch)

    async def handle(self, batch: Batch) -> None:
        """Processes one batch until it is done (or given up), then acknowledges it."""
        request_id_var.set(f"import-{batch.job_id[:12]}")
        attempts, pause = 0, 1.0
        keeper = asyncio.create_task(self._keep(batch))
        try:
            while True:
                try:
                    await imports.process_batch(self.deps, self.queue, batch)
                    break
                except Unavailable as exc:
                    log.warning("import %s items %d-%d wait for a dependency (%s); again in %.0fs", batch.job_id,
                                batch.first, batch.last, exc.message, pause)
                except (AlbumNotFound, ModelMismatch) as exc:
                    await self._fail_job(batch, exc)
                    break
                except Exception as exc:
                    attempts += 1
                    log.exception("import %s items %d-%d failed (attempt %d of %d)", batch.job_id, batch.first,
                                  batch.last, attempts, self.max_attempts)
                    if attempts + batch.deliveries - 1 >= self.max_attempts:
                        await self._fail_items(batch, exc)
                        break
                await asyncio.sleep(pause)
                pause = min(pause * 2, RETRY_PAUSE_MAX_S)
            await self.queue.done(batch.entry_id)
        except StoreUnavailable as exc:
            log.warning("import %s: Redis unavailable, the batch stays pending: %s", batch.job_id, exc.message)
        finally:
            keeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await keeper

    async def _keep(self, batch: Batch) -> None:
        """Touches the batch while it is worked on, so that it is not taken over: four times in the takeover
        time (Redis then knows this worker lives) and three in the visibility timeout (the batch is not idle)."""
        while True:
            await asyncio.sleep(max(min(self.takeover_s / 4, self.visibility_s / 3), 0.1))
            with contextlib.suppress(StoreUnavailable):
                await self.queue.touch(self.consumer, batch.entry_id)

    async def _fail_job(self, batch: Batch, exc: ImageSearchError) -> None:
        log.warning("import %s failed: %s", batch.job_id, exc.message)
        await self.queue.set_status(batch.job_id, ImportStatus.FAILED, f"{exc.reason}: {exc.message}")

    async def _fail_items(self, batch: Batch, exc: Exception) -> None:
        """Records the batch's items not yet done as failed, after the attempts allowed."""
        done = await self.queue.results(batch.job_id, list(batch.indexes))
        sources = await self.queue.items(batch.job_id, [i for i in batch.indexes if i not in done])
        message = f"gave up after {self.max_attempts} attempts: {type(exc).__name__}"
        failed = {i: ("failed", {"index": i, "name": s.name, "status": "failed", "id": None, "url": s.url,
                                 "file": s.file, "error": {"reason": "internal", "message": message}, "near": None})
                  for i, s in sources.items()}
        await self.queue.record(batch.job_id, failed)
