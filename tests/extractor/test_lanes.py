"""The extractor's lanes (services/extractor/lanes.py): which lane a purpose takes, and the bulk lane's lower
priority; the face thread's order. That a query is answered beside an import's batch is tested end to end in
test_servicer.py, a face search's beside an add's faces in test_faces.py."""

from __future__ import annotations

import os
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from pydantic import ValidationError

from services.extractor.descriptors import Purpose
from services.extractor.lanes import FaceTurns, Lanes, pool
from services.extractor.settings import ExtractorSettings


def niceness_of_a_thread(threads: ThreadPoolExecutor) -> int:
    return threads.submit(lambda: os.getpriority(os.PRIO_PROCESS, threading.get_native_id())).result()


@pytest.mark.skipif(sys.platform != "linux", reason="a thread has its own priority on Linux only")
def test_a_pools_threads_run_at_the_niceness_asked_for_and_the_rest_keep_the_process_s() -> None:
    base = os.getpriority(os.PRIO_PROCESS, 0)
    lowered, plain = pool(1, "lowered", 5), pool(1, "plain")
    try:
        assert niceness_of_a_thread(lowered) == min(base + 5, 19)
        assert niceness_of_a_thread(plain) == base
        assert os.getpriority(os.PRIO_PROCESS, 0) == base  # the calling thread is left as it was
    finally:
        lowered.shutdown()
        plain.shutdown()


def test_images_to_be_stored_take_the_bulk_lane_those_of_an_add_the_adds_lane_and_searches_the_interactive_one(
        ) -> None:
    interactive, adds, bulk = object(), object(), object()
    lanes = Lanes(interactive, adds, bulk, object())  # type: ignore[arg-type]
    assert lanes.of(Purpose.INDEX) is bulk
    assert lanes.of(Purpose.INDEX, interactive=True) is adds
    for waited in (False, True):
        assert lanes.of(Purpose.QUERY, waited) is interactive
        assert lanes.of(Purpose.QUERY_VARIANTS, waited) is interactive


@pytest.mark.parametrize("value", ["-1", "20", "low"])
@pytest.mark.parametrize("lane", ["bulk", "adds"])
def test_a_lane_s_niceness_outside_0_to_19_is_refused_by_name(lane: str, value: str,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(f"EXTRACTOR_{lane.upper()}_NICENESS", value)
    with pytest.raises(ValidationError, match=f"{lane}_niceness"):
        ExtractorSettings()


def test_the_face_thread_runs_one_job_at_a_time_searches_and_adds_in_turns_then_imports() -> None:
    turns = FaceTurns()
    gate, ran, running = threading.Event(), [], []

    def job(name: str) -> str:
        running.append(name)
        assert len(running) == 1, f"{running} at once"
        if name == "first":
            gate.wait(10)
        ran.append(name)
        running.remove(name)
        return name

    first = turns.submit("bulk", job, "first")  # under way while the rest are queued
    while not first.running():
        time.sleep(0.001)
    queued = [("bulk", "bulk-1"), ("adds", "add-1"), ("interactive", "query-1"), ("bulk", "bulk-2"),
              ("adds", "add-2"), ("interactive", "query-2")]
    futures = [turns.submit(lane, job, name) for lane, name in queued]
    assert turns.submit("interactive", job, "cancelled").cancel()  # cancelled before its turn: not run
    gate.set()
    assert [f.result(10) for f in futures] == [name for _, name in queued]  # none ran beside another
    turns.shutdown()
    assert ran == ["first", "query-1", "add-1", "query-2", "add-2", "bulk-1", "bulk-2"]


@pytest.mark.parametrize(("interactive", "to_store", "lane"), [
    (True, False, "interactive"),  # a face search's query image
    (True, True, "adds"),  # an add's images
    (False, True, "bulk"),  # an import's or a re-embed's
    (False, False, "bulk"),  # a client from before `to_store` that nobody waits for
])
def test_a_face_request_s_lane(interactive: bool, to_store: bool, lane: str) -> None:
    assert FaceTurns.lane_of(interactive, to_store) == lane


def test_a_failing_face_job_fails_its_caller_alone() -> None:
    turns = FaceTurns()
    try:
        with pytest.raises(ZeroDivisionError):
            turns.submit("interactive", lambda: 1 / 0).result(10)
        assert turns.submit("bulk", lambda: 2).result(10) == 2
    finally:
        turns.shutdown()
