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
(`FaceTurns`), which takes the images of face searches and of adds (`DescribeFacesRequest.to_store` with
`interactive`) in turns, and those of imports and re-embeds when neither waits: a face search waits for at most
the one image under way and one of an add, instead of every image an import or an add queued before it (an
add of 256 photos into a face album held face searches up to ~22 s: `bench/search_during_import.py --faces
--during add`); an add still moves while searches keep coming (searches first, always, held a 256-photo add past
the gateway's 60 s deadline in that bench).
"""

from __future__ import annotations

import functools
import logging
import os
import sys
import threading
from collections import deque
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
    """One thread that runs jobs one at a time, by lane (`LANES`): the interactive lane's (face searches) and the
    adds lane's take turns while both have jobs waiting, so that a search waits for at most one image of an add
    and an add is not held up for as long as searches keep coming; the bulk lane's (imports, re-embeds) run when
    neither has one. Within a lane, in the order they came. A job cancelled before its turn (its call was) is
    not run."""

    LANES = ("interactive", "adds", "bulk")

    @staticmethod
    def lane_of(interactive: bool, to_store: bool) -> str:
        """The lane of a request's images: a face search's, an add's (someone waits, to be stored), or an
        import's or a re-embed's (nobody waits)."""
        if not interactive:
            return "bulk"
        return "adds" if to_store else "interactive"

    def __init__(self, name: str = "faces") -> None:
        self._waiting: dict[str, deque[tuple[Callable[[], Any], Future[Any]]]] = {lane: deque() for lane in self.LANES}
        self._changed = threading.Condition()
        self._last = ""
        self._closing = False
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def submit(self, lane: str, fn: Callable[..., T], *args: Any) -> Future[T]:
        """`fn(*args)` on the thread, in its lane's turn (one of `LANES`)."""
        future: Future[T] = Future()
        with self._changed:
            self._waiting[lane].append((functools.partial(fn, *args), future))
            self._changed.notify()
        return future

    def _next(self) -> tuple[Callable[[], Any], Future[Any]] | None:
        """The job whose turn it is (waiting for one); None once shut down and every job run."""
        with self._changed:
            while not (waiting := [lane for lane in self.LANES if self._waiting[lane]]):
                if self._closing:
                    return None
                self._changed.wait()
            lane = waiting[0]
            if lane == "interactive" and self._last == "interactive" and "adds" in waiting:
                lane = "adds"  # a search went last: an add's image now
            self._last = lane
            return self._waiting[lane].popleft()

    def _run(self) -> None:
        while (job := self._next()) is not None:
            fn, future = job
            if not future.set_running_or_notify_cancel():
                continue
            try:
                future.set_result(fn())
            except BaseException as exc:  # the caller's to handle, as an executor's future carries it
                future.set_exception(exc)

    def shutdown(self) -> None:
        """Runs the jobs already submitted, then stops the thread."""
        with self._changed:
            self._closing = True
            self._changed.notify()
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
