"""devstack's port picks: free when picked, never one this process was given before, from the range the environment
names, and every listener of a server on a port the stack chose."""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import os
import socket
import time
from pathlib import Path

import pytest

from services import devstack
from services.devstack import (
    MILVUS_INTERNAL_PORTS,
    PORTS_ENV,
    S3_INTERNAL_PORTS,
    Ports,
    Stack,
    bindable,
    free_port,
)


def _pick_from(monkeypatch: pytest.MonkeyPatch, pool: list[int]) -> None:
    """The random pick then goes round `pool`, from its start."""
    order = itertools.cycle(pool)
    monkeypatch.setattr(devstack._PICK, "choice", lambda ports: next(order))


def _unused(count: int) -> list[int]:
    """Ports of the pick range that nothing listens on and that this process was never given."""
    found = []
    for port in devstack._listen_ports():
        if port not in devstack._HANDED_OUT and bindable(port):
            found.append(port)
            if len(found) == count:
                return found
    raise AssertionError("no free ports to test with")


def test_a_port_handed_out_is_not_handed_out_again_even_once_it_is_free_again(
        monkeypatch: pytest.MonkeyPatch) -> None:
    pool = _unused(2)
    _pick_from(monkeypatch, pool)
    assert free_port() == pool[0]  # nothing listens on it yet: its listener starts later, or stopped
    _pick_from(monkeypatch, pool)
    assert free_port() == pool[1]


def test_a_port_something_listens_on_is_not_picked(monkeypatch: pytest.MonkeyPatch) -> None:
    pool = _unused(2)
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as held:
        held.bind(("127.0.0.1", pool[0]))
        held.listen()
        _pick_from(monkeypatch, pool)
        assert free_port() == pool[1]


def test_milvus_internal_ports_are_none_of_the_stack_s_own(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The internal ports are picked after the stack's, which are not bound until their parts start. A CI run
    failed when one coincided: a service started on it after Milvus, and Milvus' restart found it held."""
    pool = _unused(len(dataclasses.fields(Ports)) + len(MILVUS_INTERNAL_PORTS))
    _pick_from(monkeypatch, pool)
    stack = Stack(tmp_path, Ports.free())
    _pick_from(monkeypatch, pool)  # the same picks again: those the stack was given are passed over
    internal = stack._milvus_internal_ports(tmp_path / "milvus")
    own = set(dataclasses.astuple(stack.ports))
    assert len(own) == len(dataclasses.fields(Ports))
    assert sorted(own | set(internal.values())) == sorted(pool)


def test_seaweedfs_internal_ports_are_chosen_once_and_none_of_the_stack_s_own(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Left to itself, `weed mini` takes 9333, 8888 and others, or the next ones up: two stacks starting at
    once (the suite's workers) could both take one."""
    pool = _unused(len(dataclasses.fields(Ports)) + len(S3_INTERNAL_PORTS))
    _pick_from(monkeypatch, pool)
    stack = Stack(tmp_path, Ports.free())
    _pick_from(monkeypatch, pool)
    internal = stack._s3_internal_ports(tmp_path / "s3")
    assert set(internal) == set(S3_INTERNAL_PORTS)
    assert sorted(set(dataclasses.astuple(stack.ports)) | set(internal.values())) == sorted(pool)
    assert Stack(tmp_path, stack.ports)._s3_internal_ports(tmp_path / "s3") == internal  # kept for its restarts
    argv = stack.s3().argv
    assert all(f"-{flag}={port}" in argv for flag, port in internal.items())


def _listening(pid: int) -> set[int]:
    """The TCP ports the process listens on (its sockets in /proc/net/tcp and tcp6, state LISTEN)."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        with contextlib.suppress(OSError):
            target = os.readlink(fd)
            if target.startswith("socket:["):
                inodes.add(target[len("socket:["):-1])
    ports = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] == "0A" and fields[9] in inodes:
                ports.add(int(fields[1].rsplit(":", 1)[1], 16))
    return ports


def test_the_object_store_listens_only_on_ports_the_stack_chose(tmp_path: Path) -> None:
    stack = Stack(tmp_path, Ports.free())
    try:
        stack.ensure(("s3",))
        process = stack.processes["s3"].proc
        assert process is not None
        chosen = {stack.ports.s3, *stack._s3_internal_ports(tmp_path / "s3").values()}
        deadline = time.monotonic() + 30
        while (listening := _listening(process.pid)) != chosen and time.monotonic() < deadline:
            assert listening <= chosen  # some listeners start after the S3 port answers, none elsewhere
            time.sleep(0.2)
        assert listening == chosen
    finally:
        stack.stop()


def test_the_environment_narrows_the_ports_picked(monkeypatch: pytest.MonkeyPatch) -> None:
    share = devstack._listen_ports()[-200:]
    monkeypatch.setenv(PORTS_ENV, f"{share.start}-{share.stop - 1}")
    assert devstack._listen_ports() == share
    assert all(free_port() in share for _ in range(5))


@pytest.mark.parametrize("value", ["30000", "30010-30000", "80-90", "30000-70000", "low-high"])
def test_a_range_of_ports_that_is_none_is_refused_by_name(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv(PORTS_ENV, value)
    with pytest.raises(ValueError, match=f"{PORTS_ENV}=.*LOW-HIGH"):
        free_port()
