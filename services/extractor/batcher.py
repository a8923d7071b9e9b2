"""Dynamic batching: single items from many concurrent callers leave together as one batch.

A queue of (item, future); a background task takes the first item, then waits at most `max_wait_s`
for more, and sends the batch as soon as it holds `max_batch` items or the wait is over. The batch
function runs in a thread (it is blocking numpy/onnxruntime work), never on the event loop. Its
output must have one entry per input; if it raises, or miscounts, every caller of that batch gets
the exception.

Up to `concurrency` batches run at once. With one, the cores idle while a batch's Python and numpy
steps (stacking, pooling, whitening) and the model's least parallel layers run; a second batch fills
them (bench/extract_probe.py, 2 CPU cores: one worker 72, two 107 images/s). While every slot is
busy, items queue up and the next batch leaves fuller.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Executor, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Generic, TypeVar

from prometheus_client import Counter, Histogram

log = logging.getLogger(__name__)

T = TypeVar("T")
R = TypeVar("R")

BATCH_SIZE = Histogram(
    "imagesearch_extractor_batch_size",
    "Images per batch sent through the model.",
    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024),
)
BATCH_SECONDS = Histogram(
    "imagesearch_extractor_batch_seconds",
    "Time to run one batch through the model.",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
)
IMAGES_EMBEDDED = Counter("imagesearch_extractor_images_embedded", "Images embedded successfully.")


class BatcherClosed(RuntimeError):
    """`submit` was called after `close`."""


@dataclass
class _Pending(Generic[T, R]):
    item: T
    future: asyncio.Future[R]


class DynamicBatcher(Generic[T, R]):
    """`await submit(item)` -> that item's entry of `batch_fn([... items ...])`."""

    def __init__(
        self,
        batch_fn: Callable[[list[T]], Sequence[R]],
        max_batch: int,
        max_wait_s: float,
        executor: Executor | None = None,
        concurrency: int = 1,
    ) -> None:
        if max_batch < 1:
            raise ValueError(f"max_batch must be >= 1, got {max_batch}")
        if concurrency < 1:
            raise ValueError(f"concurrency must be >= 1, got {concurrency}")
        self.batch_fn = batch_fn
        self.max_batch = max_batch
        self.max_wait_s = max_wait_s
        self.concurrency = concurrency
        self._own_executor = executor is None
        self._executor = executor or ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="batch")
        self._queue: asyncio.Queue[_Pending[T, R] | None] = asyncio.Queue()
        self._worker: asyncio.Task[None] | None = None
        self._closed = False
        self._stopping = False

    async def submit(self, item: T) -> R:
        """Queues one item and waits for its result (or the exception its batch raised)."""
        if self._closed:
            raise BatcherClosed("the batcher is closed")
        if self._worker is None:
            self._worker = asyncio.create_task(self._run_forever(), name="dynamic-batcher")
        future: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        self._queue.put_nowait(_Pending(item, future))
        return await future

    async def close(self) -> None:
        """Stops taking items, finishes every item already queued, then stops the worker."""
        if self._closed:
            return
        self._closed = True
        if self._worker is not None:
            self._queue.put_nowait(None)
            await self._worker
        if self._own_executor:
            self._executor.shutdown(wait=True)

    async def _run_forever(self) -> None:
        slots = asyncio.Semaphore(self.concurrency)
        running: set[asyncio.Task[None]] = set()

        def done(task: asyncio.Task[None]) -> None:
            running.discard(task)
            slots.release()

        while not self._stopping:
            await slots.acquire()  # a free slot first, so a batch never waits for one once formed
            batch = await self._next_batch()
            if not batch:
                slots.release()
                continue
            task = asyncio.create_task(self._run_batch(batch))
            running.add(task)
            task.add_done_callback(done)
        await asyncio.gather(*running)

    async def _next_batch(self) -> list[_Pending[T, R]]:
        """Waits for one item, then until max_batch items or max_wait_s, whichever comes first."""
        first = await self._take(deadline=None)
        if first is None:
            return []
        batch = [first]
        deadline = time.monotonic() + self.max_wait_s
        while len(batch) < self.max_batch:
            pending = await self._take(deadline)
            if pending is None:
                break
            batch.append(pending)
        return batch

    async def _take(self, deadline: float | None) -> _Pending[T, R] | None:
        """The next queued item; None at the deadline, or at the close marker (which ends the worker
        after this batch: the queue is FIFO, so every item submitted before close is already taken)."""
        if self._stopping:
            return None
        if not self._queue.empty():
            entry = self._queue.get_nowait()
        elif deadline is None:
            entry = await self._queue.get()
        else:
            try:
                entry = await asyncio.wait_for(self._queue.get(), deadline - time.monotonic())
            except TimeoutError:
                return None
        if entry is None:
            self._stopping = True
        return entry

    async def _run_batch(self, batch: list[_Pending[T, R]]) -> None:
        live = [p for p in batch if not p.future.done()]  # callers that gave up are skipped
        if not live:
            return
        BATCH_SIZE.observe(len(live))
        started = time.perf_counter()
        try:
            results = await asyncio.get_running_loop().run_in_executor(
                self._executor, self.batch_fn, [p.item for p in live]
            )
            if len(results) != len(live):
                raise RuntimeError(f"batch function returned {len(results)} results for {len(live)} items")
        except Exception as exc:
            log.exception("batch of %d failed", len(live))
            for p in live:
                _set_exception(p.future, exc)
            return
        finally:
            BATCH_SECONDS.observe(time.perf_counter() - started)
        IMAGES_EMBEDDED.inc(len(live))
        for p, result in zip(live, results, strict=True):
            if not p.future.done():
                p.future.set_result(result)


def _set_exception(future: asyncio.Future[R], exc: BaseException) -> None:
    if not future.done():
        future.set_exception(exc)
