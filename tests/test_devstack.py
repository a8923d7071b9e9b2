"""devstack's port picks: free when picked, and never one this process was given before."""

from __future__ import annotations

import dataclasses
import itertools
import socket
from pathlib import Path

import pytest

from services import devstack
from services.devstack import MILVUS_INTERNAL_PORTS, Ports, Stack, bindable, free_port


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
