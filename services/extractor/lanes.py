"""Three lanes through the extractor, so that a search never waits behind an import or an add.

An import sends the extractor batches of images back to back (several workers, 32 images each). With one
decode pool and one batcher, both first in first out, a search's query image was decoded, described and run
only after every image queued before it: `bench/search_during_import.py` measured searches answering in
2.5 s (p50) during an import against 72 ms before it. Each lane has its own decode pool and its own batcher
over the same network: images to be stored by imports and re-embeds (purpose INDEX) take the bulk lane, the
other images someone waits for the interactive one: queries, their variants, recognition
(`EmbedRequest.interactive`, which the gateway sets on every request but its import workers'). A query's
image then starts at once, beside the bulk work rather than behind it, and the bulk lane's threads run at a
lower priority (a higher niceness: `ExtractorSettings.bulk_niceness`), so that the cores go to the query
first; with no query about, the bulk lane has them all. An idle lane costs only its parked threads.

The images of an add (someone waits, but they are to be stored: purpose INDEX with `interactive`) take a
third lane, `adds`, between the two: an add of up to 256 images (the web page's, a script's) in the
interactive lane held every search made meanwhile behind all of them, seconds
(`bench/search_during_import.py --during add`). Its threads run at a niceness between the others'
(`ExtractorSettings.adds_niceness`): a search gets the cores before an add, an add before an import.

Face detection is not split so: it stays one image at a time, in one thread (dlib's models run in two
threads at once were many times slower than one after the other). The lanes share that thread
(`FaceTurns`), which takes the images someone waits for (a face search's, an add's) before any waiting
image of an import or a re-embed: a face search waits for at most the one image under way, instead of every
image an import queued before it.
"""

from __future__ import annotations

import functools
import itertools
import logging
import os
import queue
import sys
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar

from services.extractor.batcher import DynamicBatcher
from services.extractor.descriptors import Purpose
from services.extractor.model import Embedded, EmbedJob, ImageEmbedder

log = logging.getLogger(__name__)

# Items are decoded images with their purpose; results are each image's rows [R, dim] and labels.
VectorBatcher = DynamicBatcher[EmbedJob, Embedded]
T = TypeVar("T")


def pool(threads: int, name: str, niceness: int = 0) -> ThreadPoolExecutor:
    """A thread pool whose threads run `niceness` lower in priority than the process (Linux, where a thread has
    its own; elsewhere they keep the process's)."""

    def lower_priority() -> None:
        try:
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), os.getpriority(os.PRIO_PROCESS, 0) + niceness)
        except OSError as exc:
            log.warning("the %s threads keep the process's priority: %s", name, exc)

    lower = niceness > 0 and sys.platform == "linux"
    return ThreadPoolExecutor(threads, thread_name_prefix=name, initializer=lower_priority if lower else None)


@dataclass(frozen=True)
class Lane:
    """A decode pool (decoding, local features, proposals) and a batcher into the network, with its threads."""

    name: str
    decode_pool: ThreadPoolExecutor
    batch_pool: ThreadPoolExecutor
    batcher: VectorBatcher

    @classmethod
    def build(cls, embedder: ImageEmbedder, name: str, decode_threads: int, max_batch: int, max_wait_s: float,
              concurrency: int, niceness: int = 0) -> Lane:
        batch_pool = pool(concurrency, f"{name}-batch", niceness)
        return cls(name, pool(decode_threads, f"{name}-decode", niceness), batch_pool,
                   DynamicBatcher(embedder.embed_and_label, max_batch, max_wait_s, batch_pool, concurrency))

    async def close(self) -> None:
        """Finishes what the lane holds, then stops its threads."""
        await self.batcher.close()
        self.batch_pool.shutdown(wait=True)
        self.decode_pool.shutdown(wait=True)


class FaceTurns:
    """One thread that runs jobs one at a time: the interactive lane's in the order they came, then the bulk
    lane's. A job cancelled before its turn (its call was) is not run."""

    def __init__(self, name: str = "faces") -> None:
        self._jobs: queue.PriorityQueue[tuple[int, int, Callable[[], Any] | None, Future[Any] | None]] = \
            queue.PriorityQueue()
        self._order = itertools.count()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def submit(self, interactive: bool, fn: Callable[..., T], *args: Any) -> Future[T]:
        future: Future[T] = Future()
        self._jobs.put((0 if interactive else 1, next(self._order), functools.partial(fn, *args), future))
        return future

    def _run(self) -> None:
        while True:
            _, _, job, future = self._jobs.get()
            if job is None or future is None:
                return
            if not future.set_running_or_notify_cancel():
                continue
            try:
                future.set_result(job())
            except BaseException as exc:  # the caller's to handle, as an executor's future carries it
                future.set_exception(exc)

    def shutdown(self) -> None:
        """Runs the jobs already submitted, then stops the thread."""
        self._jobs.put((2, next(self._order), None, None))
        self._thread.join()


@dataclass(frozen=True)
class Lanes:
    """The interactive lane (searches), the adds lane (images to be stored that someone waits for) and the bulk
    lane (images imports and re-embeds store), and their shared face thread."""

    interactive: Lane
    adds: Lane
    bulk: Lane
    faces: FaceTurns

    def of(self, purpose: Purpose, interactive: bool = False) -> Lane:
        """The lane an image embedded for this purpose takes; `interactive`: the request says someone waits."""
        if purpose is Purpose.INDEX:
            return self.adds if interactive else self.bulk
        return self.interactive

    async def close(self) -> None:
        await self.interactive.close()
        await self.adds.close()
        await self.bulk.close()
        self.faces.shutdown()
