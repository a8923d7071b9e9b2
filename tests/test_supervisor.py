"""`imagesearch up` starts again a part that stopped by itself, as compose's `restart: unless-stopped` does."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest

from services.devstack import PartKeepsFailing, Ports, Stack, Supervisor, port_open


def crash(stack: Stack, name: str) -> None:
    """Ends the part as a crash would: SIGKILL from outside, the stack not told."""
    proc = stack.processes[name].proc
    assert proc is not None
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(10)


def test_a_part_that_stops_by_itself_is_started_again_until_it_keeps_failing(tmp_path: Path) -> None:
    stack = Stack(tmp_path, Ports.free())
    now = [0.0]
    supervisor = Supervisor(stack, max_restarts=2, window_s=60.0, clock=lambda: now[0])
    said: list[str] = []
    try:
        stack.start(("redis",))
        assert supervisor.check(said.append) == []
        crash(stack, "redis")
        assert not port_open(stack.ports.redis)
        assert supervisor.check(said.append) == ["redis"]
        assert port_open(stack.ports.redis) and stack.processes["redis"].alive
        assert "redis stopped by itself" in said[0] and "starting it again" in said[0]
        now[0] = 30.0
        crash(stack, "redis")
        assert supervisor.check(said.append) == ["redis"]
        now[0] = 50.0  # a third stop within the minute: restarting more would hide what is wrong
        crash(stack, "redis")
        with pytest.raises(PartKeepsFailing, match="redis stopped 3 times within 60 s"):
            supervisor.check(said.append)
        now[0] = 200.0  # long after: the earlier stops no longer count
        start = stack.start

        def slow(names: tuple[str, ...]) -> None:
            start(names)
            raise TimeoutError("redis not ready in 120 s")

        stack.start = slow  # type: ignore[method-assign]
        assert supervisor.check(said.append) == ["redis"]  # a start that times out does not end `up`
        assert said[-1] == "redis did not start: redis not ready in 120 s"
        stack.start = start  # type: ignore[method-assign]
        assert port_open(stack.ports.redis)
    finally:
        stack.stop()
