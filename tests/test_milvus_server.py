"""The Milvus launcher: a port another process holds fails the start, loudly, instead of moving."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

from services.devstack import MILVUS_INTERNAL_PORTS, ROOT, Ports, Stack, child_pids, free_port
from services.search.milvus_index import milvus_answers


def test_a_held_proxy_port_fails_the_start_with_a_message(tmp_path: Path) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        port = held.getsockname()[1]
        # Every other port free, not the package's defaults (2379 for etcd, 53100 and up for its parts): an
        # `imagesearch up`, or another test's Milvus, may hold those, and the start then fails on them first.
        done = subprocess.run(
            [sys.executable, "-m", "services.milvus_server", "--data", str(tmp_path / "milvus"),
             "--proxy-port", str(port), "--etcd-port", str(free_port()),
             *(f"--{name}-port={free_port()}" for name in MILVUS_INTERNAL_PORTS)],
            cwd=ROOT, capture_output=True, text=True, timeout=60,
        )
    assert done.returncode == 1
    assert f"proxy_port={port}, but bind failed" in done.stderr
    assert "cannot start" in done.stderr
    assert not (tmp_path / "milvus" / "logs" / "milvus-stdout.log").exists()  # the server never ran


def test_a_first_start_whose_internal_port_was_taken_meanwhile_starts_on_others(tmp_path: Path) -> None:
    """Two stacks starting at once: a port picked for one's Milvus is bound by another before it starts."""
    stack = Stack(tmp_path, Ports.free())
    data = tmp_path / "milvus"
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        taken = held.getsockname()[1]
        data.mkdir()
        (data / "internal-ports.json").write_text(json.dumps({name: taken if name == "query-node" else free_port()
                                                               for name in MILVUS_INTERNAL_PORTS}))
        try:
            stack.start(("milvus",))
            assert milvus_answers(f"127.0.0.1:{stack.ports.milvus}", timeout_s=5)
            assert taken not in json.loads((data / "internal-ports.json").read_text()).values()
            assert f"query_node_port={taken}, but bind failed" in (tmp_path / "logs" / "milvus.log").read_text()
        finally:
            stack.stop()


def test_a_server_killed_under_the_launcher_ends_it_as_a_crash(tmp_path: Path) -> None:
    """The launcher exits as the server did (128 + the signal), so a supervisor sees a crash, not a clean exit."""
    stack = Stack(tmp_path, Ports.free())
    try:
        stack.start(("milvus",))
        launcher = stack.processes["milvus"].proc
        assert launcher is not None
        (server,) = child_pids(launcher.pid)
        os.kill(server, signal.SIGKILL)
        assert launcher.wait(30) == 128 + signal.SIGKILL
        assert "milvus: the server ended with signal 9" in (tmp_path / "logs" / "milvus.log").read_text()
    finally:
        stack.stop()


def test_a_stop_asked_for_is_not_taken_for_a_crash(tmp_path: Path) -> None:
    """The server panics while it shuts down (signal 6); a stop devstack announced still ends the launcher with 0."""
    stack = Stack(tmp_path, Ports.free())
    stack.start(("milvus",))
    launcher = stack.processes["milvus"].proc
    assert launcher is not None
    stack.stop()
    assert launcher.returncode == 0
    assert "the server ended with" not in (tmp_path / "logs" / "milvus.log").read_text()
