"""Two lanes through the extractor, so that a search never waits behind an import.

An import sends the extractor batches of images back to back (several workers, 32 images each). With one
decode pool and one batcher, both first in first out, a search's query image was decoded, described and run
only after every image queued before it: `bench/search_during_import.py` measured searches answering in
2.5 s (p50) during an import against 72 ms before it. Each lane has its own decode pool and its own batcher
over the same network: images to be stored (purpose INDEX: imports, adds, re-embeds) take the bulk lane, the
rest (queries, their variants, recognition) the interactive one. A query's image then starts at once, beside
the bulk work rather than behind it, and the bulk lane's threads run at a lower priority (a higher niceness:
`ExtractorSettings.bulk_niceness`), so that the cores go to the query first; with no query about, the bulk
lane has them all. An idle lane costs only its parked threads.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from services.extractor.batcher import DynamicBatcher
from services.extractor.descriptors import Purpose
from services.extractor.model import Embedded, EmbedJob, ImageEmbedder

log = logging.getLogger(__name__)

# Items are decoded images with their purpose; results are each image's rows [R, dim] and labels.
VectorBatcher = DynamicBatcher[EmbedJob, Embedded]


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

    decode_pool: ThreadPoolExecutor
    batch_pool: ThreadPoolExecutor
    batcher: VectorBatcher

    @classmethod
    def build(cls, embedder: ImageEmbedder, name: str, decode_threads: int, max_batch: int, max_wait_s: float,
              concurrency: int, niceness: int = 0) -> Lane:
        batch_pool = pool(concurrency, f"{name}-batch", niceness)
        return cls(pool(decode_threads, f"{name}-decode", niceness), batch_pool,
                   DynamicBatcher(embedder.embed_and_label, max_batch, max_wait_s, batch_pool, concurrency))

    async def close(self) -> None:
        """Finishes what the lane holds, then stops its threads."""
        await self.batcher.close()
        self.batch_pool.shutdown(wait=True)
        self.decode_pool.shutdown(wait=True)


@dataclass(frozen=True)
class Lanes:
    """The interactive lane (searches) and the bulk lane (images to be stored)."""

    interactive: Lane
    bulk: Lane

    def of(self, purpose: Purpose) -> Lane:
        """The lane an image embedded for this purpose takes."""
        return self.bulk if purpose is Purpose.INDEX else self.interactive

    async def close(self) -> None:
        await self.interactive.close()
        await self.bulk.close()
