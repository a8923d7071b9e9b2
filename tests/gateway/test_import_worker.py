"""An import worker outlives whatever ends its loop (ImportWorker.serve): an unexpected error, or a call
cancelled under it, is logged and the worker starts again; only the gateway's own cancel stops it.
(The worker's work over real Redis and services: tests/gateway/test_imports.py, tests/test_import_faults.py.)"""

from __future__ import annotations

import asyncio
import logging

import pytest

from services.gateway.import_worker import ImportWorker

pytestmark = pytest.mark.anyio


class Stumbling(ImportWorker):
    """A worker whose loop ends on an error, then on a cancelled call, then waits like one with nothing to do."""

    def __init__(self) -> None:
        self.consumer = "test-worker"
        self.starts = 0
        self.waiting = asyncio.Event()

    async def run(self) -> None:
        self.starts += 1
        if self.starts == 1:
            raise RuntimeError("an error nothing expected")
        if self.starts == 2:
            raise asyncio.CancelledError()  # a call cancelled under the worker, not the worker cancelled
        self.waiting.set()
        await asyncio.Event().wait()


async def test_a_worker_starts_again_after_an_error_or_a_cancelled_call_and_stops_when_cancelled(
        caplog: pytest.LogCaptureFixture) -> None:
    worker = Stumbling()
    with caplog.at_level(logging.ERROR, logger="services.gateway.import_worker"):
        task = asyncio.create_task(worker.serve(restart_pause_s=0.01))
        await asyncio.wait_for(worker.waiting.wait(), 5)
    assert worker.starts == 3
    assert [r.exc_info[0] for r in caplog.records if r.exc_info] == [RuntimeError, asyncio.CancelledError]
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert worker.starts == 3
