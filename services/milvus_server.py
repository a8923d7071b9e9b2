"""Runs the standalone Milvus server of the `milvus` package (milvus-lite) on exactly the ports asked for.

    python -m services.milvus_server --data DIR --proxy-port P --etcd-port E --root-coord-port R ...

The same command line as the package's `milvus-server`, with two of its port habits removed:

* Every `--*-port` is only a *starting point* there: a port it cannot bind is silently replaced by the
  next free one. Its probe binds without SO_REUSEADDR, so right after a restart, while the old
  connections to a port linger in TIME_WAIT, the proxy moved from the port clients use to the next
  one (and the embedded etcd's endpoint away from where etcd listens): the restarted server ran and
  never answered. Here a port is probed the way the server binds it (SO_REUSEADDR, as Go listeners
  do), and a port that is really taken fails the start with a message instead of moving.
* So a restarted server comes back exactly where its clients, and its own etcd sessions, expect it.
* Its `wait()` only returns after its own `stop()`: once the server process had exited (stopped by
  SIGTERM), the wrapper lingered until killed. Here it exits with the server, and as the server did
  when it ended by itself (killed by a signal: 128 + the signal), where the package would exit 0; a
  stop announced by SIGUSR1 first (devstack) exits 0.
"""

from __future__ import annotations

import signal
import socket
import sys
import time
from typing import Any

import milvus

_PORT_SUFFIX = "_port"


def _bind_like_the_server(self: Any, port: int) -> socket.socket | None:
    """A listening socket on 127.0.0.1:port, or None if another process holds the port."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(("127.0.0.1", port))
        sock.listen()
        return sock
    except OSError:
        sock.close()
        return None


_resolve_all_listen_ports = milvus.MilvusServerConfig.resolve_all_listen_ports


def _resolve_strictly(self: Any) -> None:
    """Marks every port as given (the package then raises if it cannot bind it) before resolving."""
    for key, (_, value) in self.configurable_items.items():
        if key.endswith(_PORT_SUFFIX) and value is not None:
            self.configs[key] = value
    try:
        _resolve_all_listen_ports(self)
    except RuntimeError as exc:  # the package would report it only as "Milvus server already stopped."
        print(f"milvus: cannot start: {exc} (another process holds the port)", file=sys.stderr, flush=True)
        raise SystemExit(1) from exc


# devstack sends it before it signals the server to stop (ManagedProcess.stop_notice): the server's end
# is then the one asked for, whatever its code (the binary panics while it shuts down: signal 6).
STOP_NOTICE = signal.SIGUSR1
_stop_asked = False


def _note_the_stop(signum: int, frame: Any) -> None:
    global _stop_asked
    _stop_asked = True


def _wait_for_the_server(self: Any) -> None:
    """Returns when the server process has exited; exits as it did when it ended by itself and not well
    (killed, or an error), so that whoever watches the wrapper sees a crash as one (the package's main
    would exit 0)."""
    while self.server_proc is not None and self.server_proc.poll() is None:
        time.sleep(0.1)
    code = self.server_proc.returncode if self.server_proc is not None else 0
    if code and not _stop_asked:
        print(f"milvus: the server ended with {'signal ' + str(-code) if code < 0 else 'exit code ' + str(code)}",
              file=sys.stderr, flush=True)
        raise SystemExit(128 - code if code < 0 else code)


def main() -> None:
    signal.signal(STOP_NOTICE, _note_the_stop)
    milvus.MilvusServerConfig.try_bind_port = _bind_like_the_server
    milvus.MilvusServerConfig.resolve_all_listen_ports = _resolve_strictly
    milvus.MilvusServer.wait = _wait_for_the_server
    milvus.main()


if __name__ == "__main__":
    main()
