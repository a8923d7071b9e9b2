"""Two lanes through the extractor, so that a search never waits behind an import.

An import sends the extractor batches of images back to back (several workers, 32 images each). With one
decode pool and one batcher, both first in first out, a search's query image was decoded, described and run
only after every image queued before it: `bench/search_during_import.py` measured searches answering in
3.0 s (p50) during an import against 63 ms before it. Each lane has its own decode pool and its own batcher
over the same network: images to be stored (purpose INDEX: imports, adds, re-embeds) take the bulk lane, the
rest (queries, their variants, recognition) the interactive one. A query's image then starts at once, its
threads sharing the cores with the bulk lane's rather than queueing behind them; an idle lane costs only its
parked threads.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from services.extractor.batcher import DynamicBatcher
from services.extractor.descriptors import Purpose
from services.extractor.model import Embedded, EmbedJob, ImageEmbedder

# Items are decoded images with their purpose; results are each image's rows [R, dim] and labels.
VectorBatcher = DynamicBatcher[EmbedJob, Embedded]


@dataclass(frozen=True)
class Lane:
    """A decode pool (decoding, local features, proposals) and a batcher into the network."""

    decode_pool: ThreadPoolExecutor
    batcher: VectorBatcher

    @classmethod
    def build(cls, embedder: ImageEmbedder, name: str, decode_threads: int, max_batch: int, max_wait_s: float,
              concurrency: int) -> Lane:
        return cls(ThreadPoolExecutor(decode_threads, thread_name_prefix=f"{name}-decode"),
                   DynamicBatcher(embedder.embed_and_label, max_batch, max_wait_s, concurrency=concurrency))

    async def close(self) -> None:
        """Finishes what the lane holds, then stops its threads."""
        await self.batcher.close()
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
