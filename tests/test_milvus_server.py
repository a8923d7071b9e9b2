"""The Milvus launcher: a port another process holds fails the start, loudly, instead of moving."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

from services.devstack import ROOT


def test_a_held_proxy_port_fails_the_start_with_a_message(tmp_path: Path) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        port = held.getsockname()[1]
        done = subprocess.run(
            [sys.executable, "-m", "services.milvus_server", "--data", str(tmp_path / "milvus"),
             "--proxy-port", str(port)],
            cwd=ROOT, capture_output=True, text=True, timeout=60,
        )
    assert done.returncode == 1
    assert f"proxy_port={port}, but bind failed" in done.stderr
    assert "cannot start" in done.stderr
    assert not (tmp_path / "milvus" / "logs" / "milvus-stdout.log").exists()  # the server never ran
