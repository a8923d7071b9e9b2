from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import TypeVar

import pytest

from services.extractor.batcher import BatcherClosed, DynamicBatcher

T = TypeVar("T")


def run(coro: Awaitable[T]) -> T:
    async def main() -> T:
        return await coro

    return asyncio.run(main())


class Recorder:
    """A batch function that doubles its items and records every batch it saw."""

    def __init__(self, delay_s: float = 0.0) -> None:
        self.batches: list[list[int]] = []
        self.delay_s = delay_s

    def __call__(self, items: list[int]) -> list[int]:
        self.batches.append(list(items))
        time.sleep(self.delay_s)
        return [2 * i for i in items]


def make(fn: Callable[[list[int]], Sequence[int]], max_batch: int, max_wait_s: float) -> DynamicBatcher[int, int]:
    return DynamicBatcher(fn, max_batch=max_batch, max_wait_s=max_wait_s)


async def submit_all(batcher: DynamicBatcher[int, int], items: Sequence[int]) -> list[int]:
    return list(await asyncio.gather(*(batcher.submit(i) for i in items)))


def test_each_caller_gets_its_own_result() -> None:
    async def scenario() -> list[int]:
        batcher = make(Recorder(), 8, 0.01)
        results = await submit_all(batcher, range(5))
        await batcher.close()
        return results

    assert run(scenario()) == [0, 2, 4, 6, 8]


def test_a_batch_leaves_as_soon_as_it_is_full() -> None:
    recorder = Recorder()

    async def scenario() -> float:
        batcher = make(recorder, 4, max_wait_s=30.0)
        started = time.monotonic()
        await submit_all(batcher, range(4))
        elapsed = time.monotonic() - started
        await batcher.close()
        return elapsed

    assert run(scenario()) < 1.0
    assert recorder.batches == [[0, 1, 2, 3]]


def test_a_partial_batch_leaves_after_the_maximum_wait() -> None:
    recorder = Recorder()

    async def scenario() -> float:
        batcher = make(recorder, 100, max_wait_s=0.1)
        started = time.monotonic()
        await submit_all(batcher, range(3))
        elapsed = time.monotonic() - started
        await batcher.close()
        return elapsed

    elapsed = run(scenario())
    assert 0.09 <= elapsed < 1.0
    assert recorder.batches == [[0, 1, 2]]


def test_concurrent_submits_share_one_batch() -> None:
    recorder = Recorder()

    async def scenario() -> None:
        batcher = make(recorder, 32, 0.05)
        await asyncio.gather(*(submit_all(batcher, [i]) for i in range(10)))
        await batcher.close()

    run(scenario())
    assert len(recorder.batches) == 1 and sorted(recorder.batches[0]) == list(range(10))


def test_more_items_than_max_batch_are_split_in_order() -> None:
    recorder = Recorder()

    async def scenario() -> list[int]:
        batcher = make(recorder, 4, 0.05)
        results = await submit_all(batcher, range(10))
        await batcher.close()
        return results

    assert run(scenario()) == [2 * i for i in range(10)]
    assert [len(b) for b in recorder.batches] == [4, 4, 2]


def test_an_exception_reaches_every_caller_of_the_batch() -> None:
    def explode(items: list[int]) -> list[int]:
        raise ValueError("model fell over")

    async def scenario() -> list[int | BaseException]:
        batcher = make(explode, 8, 0.02)
        outcomes = await asyncio.gather(*(batcher.submit(i) for i in range(3)), return_exceptions=True)
        await batcher.close()
        return outcomes

    outcomes = run(scenario())
    assert all(isinstance(o, ValueError) and "fell over" in str(o) for o in outcomes)


def test_a_wrong_number_of_results_is_an_error_for_every_caller() -> None:
    async def scenario() -> list[int | BaseException]:
        batcher = make(lambda items: items[:-1], 8, 0.02)
        outcomes = await asyncio.gather(*(batcher.submit(i) for i in range(3)), return_exceptions=True)
        await batcher.close()
        return outcomes

    outcomes = run(scenario())
    assert all(isinstance(o, RuntimeError) and "2 results for 3 items" in str(o) for o in outcomes)


def test_the_batcher_keeps_working_after_a_failed_batch() -> None:
    calls = {"n": 0}

    def flaky(items: list[int]) -> list[int]:
        calls["n"] += 1
        if calls["n"] == 1:
            raise ValueError("first batch fails")
        return items

    async def scenario() -> int:
        batcher = make(flaky, 8, 0.01)
        with pytest.raises(ValueError):
            await batcher.submit(1)
        result = await batcher.submit(7)
        await batcher.close()
        return result

    assert run(scenario()) == 7


def test_the_batch_function_runs_off_the_event_loop() -> None:
    loop_threads: set[int] = set()
    batch_threads: set[int] = set()

    def slow(items: list[int]) -> list[int]:
        batch_threads.add(threading.get_ident())
        time.sleep(0.3)
        return items

    async def ticker(stop: asyncio.Event) -> int:
        ticks = 0
        while not stop.is_set():
            loop_threads.add(threading.get_ident())
            ticks += 1
            await asyncio.sleep(0.01)
        return ticks

    async def scenario() -> int:
        batcher = make(slow, 8, 0.0)
        stop = asyncio.Event()
        ticks = asyncio.create_task(ticker(stop))
        await batcher.submit(1)
        stop.set()
        await batcher.close()
        return await ticks

    assert run(scenario()) >= 10, "the event loop was blocked while the batch ran"
    assert loop_threads.isdisjoint(batch_threads)


def test_close_finishes_queued_items_and_refuses_new_ones() -> None:
    recorder = Recorder(delay_s=0.05)

    async def scenario() -> list[int]:
        batcher = make(recorder, 2, 0.01)
        pending = [asyncio.ensure_future(batcher.submit(i)) for i in range(5)]
        await asyncio.sleep(0)
        await batcher.close()
        with pytest.raises(BatcherClosed):
            await batcher.submit(9)
        return [p.result() for p in pending]

    assert run(scenario()) == [0, 2, 4, 6, 8]


def test_a_caller_that_gives_up_does_not_disturb_the_others() -> None:
    recorder = Recorder()

    async def scenario() -> list[int]:
        batcher = make(recorder, 8, 0.05)
        gone = asyncio.ensure_future(batcher.submit(100))
        stays = [asyncio.ensure_future(batcher.submit(i)) for i in range(3)]
        await asyncio.sleep(0)
        gone.cancel()
        results = list(await asyncio.gather(*stays))
        await batcher.close()
        return results

    assert run(scenario()) == [0, 2, 4]
    assert recorder.batches == [[0, 1, 2]]


def test_a_batcher_needs_room_for_at_least_one_item() -> None:
    with pytest.raises(ValueError):
        make(Recorder(), 0, 0.01)


def test_with_concurrency_two_batches_run_at_once_and_the_queue_fills_the_next() -> None:
    both_running = threading.Barrier(2, timeout=10)
    batches: list[list[int]] = []

    def meet(items: list[int]) -> list[int]:
        batches.append(list(items))
        if len(batches) <= 2:
            both_running.wait()  # raises BrokenBarrierError unless the first two batches overlap
        return [2 * i for i in items]

    async def scenario() -> list[int]:
        batcher = DynamicBatcher(meet, max_batch=2, max_wait_s=0.01, concurrency=2)
        results = await submit_all(batcher, range(7))
        await batcher.close()
        return results

    assert run(scenario()) == [0, 2, 4, 6, 8, 10, 12]
    assert sorted(i for batch in batches for i in batch) == list(range(7))


def test_close_waits_for_every_batch_in_flight() -> None:
    recorder = Recorder(delay_s=0.2)

    async def scenario() -> list[asyncio.Task[int]]:
        batcher = DynamicBatcher(recorder, max_batch=1, max_wait_s=0.0, concurrency=2)
        tasks = [asyncio.create_task(batcher.submit(i)) for i in range(3)]
        await asyncio.sleep(0.05)
        await batcher.close()
        return tasks

    tasks = run(scenario())
    assert [t.result() for t in tasks] == [0, 2, 4]


def test_concurrency_below_one_is_refused() -> None:
    with pytest.raises(ValueError, match="concurrency"):
        DynamicBatcher(Recorder(), max_batch=1, max_wait_s=0.0, concurrency=0)
