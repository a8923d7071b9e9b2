"""Which images this process wrote lately, so that a read of others need not wait for Milvus' time tick.

A read at Session consistency waits until Milvus has made visible this client's last write to the
collection, which happens on its next time tick (every 200 ms): an add looks up which of its images
the album holds (and an insert which rows they had) right after the previous add's insert, and each
such look waited 140-340 ms (bench/adds.py). A read at Bounded consistency waits for nothing: it sees
every write older than Milvus' `common.gracefulTime` (5 s by default). So a read by image id at Bounded
sees the latest state of every image that this process has not written for longer than that; an image
written more recently, or an album changed as a whole lately (dropped, a version made, switched or
dropped), is read at Session as before. The window must be longer than the Milvus' graceful
time (SearchSettings.recent_writes_s). (A process that has not written to a collection gets no more from
Session than from Eventually: pymilvus has no write time of its to wait for, so such reads lose nothing.)
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable


class RecentWrites:
    """Per album: the images written within the last `window_s` seconds, and when the album last changed as a
    whole. Thread-safe; what is older than the window is forgotten as writes come."""

    def __init__(self, window_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.window_s = window_s
        self._clock = clock
        self._images: dict[str, OrderedDict[str, float]] = {}
        self._whole: dict[str, float] = {}
        self._lock = threading.Lock()

    def wrote(self, album: str, ids: Iterable[str]) -> None:
        """These images of the album are being written (or deleted): call before the write and again after it,
        so that the window starts when Milvus may last have stamped it."""
        if self.window_s <= 0:
            return
        now = self._clock()
        with self._lock:
            images = self._images.setdefault(album, OrderedDict())
            for image_id in ids:
                images[image_id] = now
                images.move_to_end(image_id)
            self._prune(album, now)

    def changed(self, album: str) -> None:
        """The album changed as a whole (dropped, a version made, switched or dropped)."""
        if self.window_s > 0:
            with self._lock:
                self._whole[album] = self._clock()

    def settled(self, album: str, ids: Iterable[str]) -> bool:
        """Whether none of these images, nor the album as a whole, was written within the window."""
        if self.window_s <= 0:
            return False
        now = self._clock()
        with self._lock:
            if now - self._whole.get(album, -float("inf")) <= self.window_s:
                return False
            self._prune(album, now)
            images = self._images.get(album)
            return not images or not any(i in images for i in ids)

    def _prune(self, album: str, now: float) -> None:
        images = self._images.get(album)
        while images and now - next(iter(images.values())) > self.window_s:
            images.popitem(last=False)
        if images is not None and not images:
            del self._images[album]
