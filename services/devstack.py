"""Runs the whole system on one machine: the real servers (Milvus, S3, Redis) and the three services.

Used by `imagesearch up` and by the test suite's session fixtures. Every process listens on loopback
only, on ports from `Ports` (fixed defaults for `up`, free ones for tests), keeps its data under one
directory, and writes its log to `<data>/logs/<name>.log`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from services.search.milvus_index import milvus_answers

log = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parent.parent
S3_ACCESS_KEY = "imagesearch"
S3_SECRET_KEY = "imagesearch-secret"
# The search service's gRPC health name that follows its vector store (services.search.servicer.SERVICE_NAMES).
SEARCH_HEALTH_SERVICE = "imagesearch.v1.Search"
MILVUS_INTERNAL_PORTS = ("root-coord", "proxy-internal", "query-coord", "query-node", "index-coord",
                         "index-node", "data-coord", "data-node")
# Milvus' queryCoord.checkChannelInterval, ms (see `Stack.milvus`); docker-compose.yml gives its Milvus the same.
MILVUS_CHECK_CHANNEL_MS = 200
# SeaweedFS' `weed mini` listeners besides its S3 port, each given by its flag: left to it, they are
# 9333, 9340 (volume), 8888 (filer), each + 10000 for gRPC, 17000 and 23646 (admin), or the next ones up
# when taken, a look and then a bind that two servers starting at once can both make for the same port.
S3_INTERNAL_PORTS = ("master.port", "master.port.grpc", "volume.port", "volume.port.grpc", "filer.port",
                     "filer.port.grpc", "s3.port.grpc", "admin.port", "admin.port.grpc")


# "LOW-HIGH": the ports this environment's stacks pick their listeners from, instead of `_listen_ports`'
# whole range. Processes that start stacks side by side (the test suite's workers) each get a part of their
# own, so that none picks a port another has picked and not bound yet.
PORTS_ENV = "IMAGESEARCH_PORTS"


def _listen_ports() -> range:
    """Ports to pick listeners from: `PORTS_ENV`'s where it is set, else 24000 up to the kernel's range for
    outgoing connections' source ports.

    A port the kernel hands out (bind to port 0) lies in that range, so any process's next outgoing
    connection can take it between the pick and the listener's start; it failed a CI run (Milvus' query
    coordinator found its port held by a connection). Below 24000 lie many servers' default ports
    (SeaweedFS' own among them, where a `weed mini` not told otherwise listens: `S3_INTERNAL_PORTS`), which
    a listener picked there would take from them, or lose to them."""
    if chosen := os.environ.get(PORTS_ENV, "").strip():
        first, _, last = chosen.partition("-")
        try:
            ports = range(int(first), int(last) + 1)
        except ValueError:
            ports = range(0)
        if not ports or ports.start < 1024 or ports.stop > 65536:
            raise ValueError(f"{PORTS_ENV}={chosen!r}: expected LOW-HIGH, ports between 1024 and 65535")
        return ports
    try:
        low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        low = 32768
    return range(24000, low) if low > 25000 else range(0)


_PICK = random.SystemRandom()  # not the seeded global: two processes must not pick alike
# Every port free_port has handed out in this process. A pick is free when it is made, but its listener
# may start later, or stop and start again: a later pick must not take it meanwhile. A CI run failed so:
# a Milvus internal port, picked after the stack's ports (probed, not yet bound), was the port of a
# service that started after Milvus; Milvus came up (nothing of it listens there in 2.3), but its restart
# found the port held by that service.
_HANDED_OUT: set[int] = set()


def bindable(port: int) -> bool:
    """Whether a listener could take the loopback port now (nothing is bound to it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def free_port() -> int:
    """A loopback port no process listens on now, never one this process was given before."""
    ports = _listen_ports()
    for _ in range(200 if ports else 0):
        port = _PICK.choice(ports)
        if port not in _HANDED_OUT and bindable(port):
            _HANDED_OUT.add(port)
            return port
    while True:  # no pick range (the kernel's outgoing ports start low), or none found free: the kernel's pick
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind(("127.0.0.1", 0))
            port = int(sock.getsockname()[1])
        if port not in _HANDED_OUT:
            _HANDED_OUT.add(port)
            return port


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


@dataclass(frozen=True)
class Ports:
    milvus: int = 19530
    milvus_etcd: int = 2379
    milvus_etcd_peer: int = 2380
    s3: int = 9000
    redis: int = 6390
    extractor: int = 50051
    extractor_metrics: int = 9101
    search: int = 50052
    search_metrics: int = 9102
    gateway: int = 50050
    http: int = 8000

    @classmethod
    def free(cls) -> Ports:
        """Distinct free loopback ports for every listener (tests run beside anything else)."""
        return cls(**{f.name: free_port() for f in dataclasses.fields(cls)})


@dataclass
class ManagedProcess:
    """One child process with a readiness check and a polite stop."""

    name: str
    argv: list[str]
    log_path: Path
    ready: Callable[[], bool]
    env: dict[str, str] = field(default_factory=dict)
    cwd: Path = ROOT
    stop_signal: int = signal.SIGTERM
    # Signal the process's children instead (for a wrapper that would stop its child too abruptly).
    signal_children: bool = False
    # A signal sent to the process itself first, telling it that the stop is asked for (so that a wrapper
    # can tell its child's asked-for end from a crash); None: none.
    stop_notice: int | None = None
    proc: subprocess.Popen[bytes] | None = None
    log_offset: int = 0

    def start(self) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self.log_offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        env = {**os.environ, **self.env}
        with open(self.log_path, "ab") as out:
            self.proc = subprocess.Popen(
                self.argv, cwd=self.cwd, env=env, stdout=out, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL, start_new_session=True,
            )
        log.info("started %s (pid %d)", self.name, self.proc.pid)

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def wait_ready(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if not self.alive:
                raise RuntimeError(f"{self.name} exited during start; see {self.log_path}:\n{self.tail()}")
            if self.ready():
                return
            time.sleep(0.2)
        raise TimeoutError(f"{self.name} not ready after {timeout_s:.0f}s; see {self.log_path}:\n{self.tail()}")

    def output(self) -> str:
        """What this run of the process has logged so far."""
        try:
            with open(self.log_path, "rb") as fh:
                fh.seek(self.log_offset)
                return fh.read().decode(errors="replace")
        except OSError:
            return ""

    def tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def stop(self, timeout_s: float = 30.0) -> None:
        """Signals the whole process group (the server and any child it runs) and waits for all of it."""
        if self.proc is None:
            return
        pgid = self.proc.pid
        if self.proc.poll() is None or _group_alive(pgid):
            if self.stop_notice is not None and self.proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pgid, self.stop_notice)
            targets = child_pids(pgid) if self.signal_children else []
            for pid in targets:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, self.stop_signal)
            if not targets:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(pgid, self.stop_signal)
            deadline = time.monotonic() + timeout_s
            while (self.proc.poll() is None or _group_alive(pgid)) and time.monotonic() < deadline:
                time.sleep(0.1)
            if self.proc.poll() is None or _group_alive(pgid):
                log.warning("%s did not stop in %.0fs; killing it", self.name, timeout_s)
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(pgid, signal.SIGKILL)
                self.proc.wait(5)
        self.proc = None


def child_pids(pid: int) -> list[int]:
    """The direct children of a process (none if it is gone)."""
    try:
        return [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


def _group_alive(pgid: int) -> bool:
    """Whether any live (not zombie) process is left in the process group."""
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            return True
    return False


def _http_ok(url: str, accept: tuple[int, ...] = (200,)) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1) as resp:
            return resp.status in accept
    except urllib.error.HTTPError as exc:
        return exc.code in accept
    except (OSError, ValueError):
        return False


def _grpc_serving(port: int, service: str = "") -> bool:
    """Whether the health service at the port says `service` ("": the server as a whole) is SERVING."""
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        try:
            reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=service),
                                                              timeout=1)
        except grpc.RpcError:
            return False
    return bool(reply.status == health_pb2.HealthCheckResponse.SERVING)



def _bin(name: str) -> str:
    """A console script of the project's environment (the one running this code), or from PATH."""
    here = Path(sys.executable).parent / name
    found = str(here) if here.exists() else shutil.which(name)
    if not found:
        raise FileNotFoundError(f"{name} is not installed; run scripts/setup.sh")
    return found


def _internal_ports(data: Path, names: Sequence[str]) -> dict[str, int]:
    """Free ports for a server's internal listeners, chosen on its first start and kept in its data directory."""
    path = data / "internal-ports.json"
    if path.exists():
        return {str(k): int(v) for k, v in json.loads(path.read_text()).items()}
    ports = {name: free_port() for name in names}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(ports))
    return ports


class Stack:
    """The real servers and the three services, started in order and stopped in reverse."""

    def __init__(self, data_dir: Path, ports: Ports | None = None, service_env: dict[str, str] | None = None,
                 milvus_config: Sequence[str] = (), milvus_check_channel_ms: int = MILVUS_CHECK_CHANNEL_MS) -> None:
        self.data_dir = data_dir.resolve()
        self.ports = ports or Ports()
        self.service_env = service_env or {}
        # More of Milvus' settings, "key=value" each (e.g. dataCoord.segment.maxSize=2048: bench/scale.py).
        self.milvus_config = tuple(milvus_config)
        self.milvus_check_channel_ms = milvus_check_channel_ms  # Milvus' own default, 1000, in bench/album_ready.py
        self.logs = self.data_dir / "logs"
        self.processes: dict[str, ManagedProcess] = {}

    # --- the environment each service reads its settings from ---------------------------------------
    def env(self) -> dict[str, str]:
        p = self.ports
        return {
            "EXTRACTOR_HOST": "127.0.0.1",
            "EXTRACTOR_PORT": str(p.extractor),
            "EXTRACTOR_METRICS_PORT": str(p.extractor_metrics),
            "EXTRACTOR_MODEL_DIR": str(ROOT / ".cache" / "models"),
            "SEARCH_HOST": "127.0.0.1",
            "SEARCH_PORT": str(p.search),
            "SEARCH_METRICS_PORT": str(p.search_metrics),
            "SEARCH_MILVUS_URI": f"http://127.0.0.1:{p.milvus}",
            "GATEWAY_HOST": "127.0.0.1",
            "GATEWAY_PORT": str(p.gateway),
            "GATEWAY_HTTP_PORT": str(p.http),
            "GATEWAY_EXTRACTOR_TARGET": f"127.0.0.1:{p.extractor}",
            "GATEWAY_SEARCH_TARGET": f"127.0.0.1:{p.search}",
            "GATEWAY_S3_ENDPOINT": f"127.0.0.1:{p.s3}",
            "GATEWAY_S3_ACCESS_KEY": S3_ACCESS_KEY,
            "GATEWAY_S3_SECRET_KEY": S3_SECRET_KEY,
            "GATEWAY_REDIS_URL": f"redis://127.0.0.1:{p.redis}/0",
            "PYTHONUNBUFFERED": "1",
            **self.service_env,
        }

    # --- servers ------------------------------------------------------------------------------------
    def milvus(self) -> ManagedProcess:
        data = self.data_dir / "milvus"
        # Its internal ports too are chosen here (free ones), and its embedded etcd, which ignores
        # --etcd-port for its own listeners, gets a config file: so two stacks on a machine never collide.
        internal = [f"--{name}-port={port}" for name, port in self._milvus_internal_ports(data).items()]
        proxy = f"127.0.0.1:{self.ports.milvus}"
        proc = ManagedProcess(
            name="milvus",
            # Our launcher of the package's server: the ports asked for or a failed start, never others.
            argv=[sys.executable, "-m", "services.milvus_server", "--data", str(data),
                  "--proxy-port", str(self.ports.milvus), "--etcd-port", str(self.ports.milvus_etcd), *internal,
                  # Its default, 1800 s, lets a connected client hold up a stop for half an hour.
                  "--extra-config", "common.gracefulStopTimeout=10",
                  # A restarted server serves its collections only once the previous process's proxy
                  # session has expired (not revoked on stop, and renewed by the embedded etcd's restart):
                  # this TTL after the start, 30 s by default. With 15 s a live server, keeping its session
                  # alive every 5 s (TTL/3), can still miss two keep-alives on a busy machine.
                  "--extra-config", "common.session.ttl=15",
                  *(arg for setting in self.milvus_config for arg in ("--extra-config", setting))],
            env={"ETCD_CONFIG_PATH": str(self._etcd_config(data)),
                 # A key the package's config template lacks (its --extra-config only replaces the template's
                 # lines), so given as Milvus reads any key from its environment. How often the query
                 # coordinator looks for a loading collection's channels to subscribe: 1 s by default, the
                 # first of the ticks between a new collection's load and its first read (an album's, a
                 # re-embed's version). At 200 ms a new album answers ~2.0 s after its creation instead of
                 # ~3.0 s (its other tick, the collection observer's 1 s, is fixed), and Milvus idle with 30
                 # albums uses no more CPU than the spread between runs (bench/album_ready.py).
                 "QUERYCOORD_CHECKCHANNELINTERVAL": str(self.milvus_check_channel_ms)},
            log_path=self.logs / "milvus.log",
            # The banner says its health endpoint is up; the proxy answering says it serves clients.
            ready=lambda: "Ctrl+C to exit" in proc.output() and milvus_answers(proxy, timeout_s=2),
            # SIGTERM to the milvus binary itself: it stops gracefully (revoking its etcd sessions)
            # and the wrapper then exits. The wrapper's own stop SIGKILLs it after 1 s, which, with a
            # client connected, left a data directory that a restarted server never served again.
            stop_signal=signal.SIGTERM,
            signal_children=True,
            # The launcher then takes the server's end as asked for, not as a crash (services.milvus_server).
            stop_notice=signal.SIGUSR1,
        )
        return proc

    def _milvus_internal_ports(self, data: Path) -> dict[str, int]:
        """Chosen once per data directory: Milvus keeps its nodes' addresses in etcd across restarts."""
        return _internal_ports(data, MILVUS_INTERNAL_PORTS)

    def _s3_internal_ports(self, data: Path) -> dict[str, int]:
        """Chosen once per data directory, as Milvus' are: SeaweedFS' filer keeps where the volume server is."""
        return _internal_ports(data, S3_INTERNAL_PORTS)

    def _etcd_config(self, data: Path) -> Path:
        client = f"http://127.0.0.1:{self.ports.milvus_etcd}"
        peer = f"http://127.0.0.1:{self.ports.milvus_etcd_peer}"
        path = data / "etcd-embed.yaml"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(
            f"name: imagesearch\ndata-dir: {data / 'data' / 'etcd.data'}\n"
            f"listen-client-urls: {client}\nadvertise-client-urls: {client}\n"
            f"listen-peer-urls: {peer}\ninitial-advertise-peer-urls: {peer}\n"
            f"initial-cluster: imagesearch={peer}\n"
        )
        return path

    def s3(self) -> ManagedProcess:
        data = self.data_dir / "s3"
        data.mkdir(parents=True, exist_ok=True)
        return ManagedProcess(
            name="s3",
            argv=[_bin("weed"), "mini", f"-dir={data}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
                  f"-s3.port={self.ports.s3}", "-webdav=false", "-admin.ui=false", "-s3.port.iceberg=0",
                  # Its Lance listener defaults to 9101, the extractor's metrics port: off, like Iceberg's.
                  "-s3.port.lance=0",
                  # Its other listeners on free ports too, so that two stacks on a machine never collide.
                  *(f"-{flag}={port}" for flag, port in self._s3_internal_ports(data).items())],
            env={"AWS_ACCESS_KEY_ID": S3_ACCESS_KEY, "AWS_SECRET_ACCESS_KEY": S3_SECRET_KEY},
            log_path=self.logs / "s3.log",
            ready=lambda: _http_ok(f"http://127.0.0.1:{self.ports.s3}/", accept=(403,)),
        )

    def redis(self) -> ManagedProcess:
        data = self.data_dir / "redis"
        data.mkdir(parents=True, exist_ok=True)
        redis_server = shutil.which("redis-server") or "/usr/bin/redis-server"
        return ManagedProcess(
            name="redis",
            argv=[redis_server, "--port", str(self.ports.redis), "--bind", "127.0.0.1", "--dir", str(data),
                  "--appendonly", "yes", "--save", ""],
            log_path=self.logs / "redis.log",
            ready=lambda: port_open(self.ports.redis),
        )

    # --- services -----------------------------------------------------------------------------------
    def service(self, name: str, grpc_port: int, health_service: str = "") -> ManagedProcess:
        return ManagedProcess(
            name=name,
            argv=[sys.executable, "-m", f"services.{name}"],
            env=self.env(),
            log_path=self.logs / f"{name}.log",
            ready=lambda: _grpc_serving(grpc_port, health_service),
        )

    def start(self, names: tuple[str, ...] = ("milvus", "s3", "redis", "extractor", "search", "gateway")) -> None:
        """Starts the named parts in order, each ready before the next; the servers in parallel."""
        factories: dict[str, Callable[[], ManagedProcess]] = {
            "milvus": self.milvus,
            "s3": self.s3,
            "redis": self.redis,
            "extractor": lambda: self.service("extractor", self.ports.extractor),
            # Ready when its Search service is SERVING: Milvus answers and serves every album (each
            # loaded and caught up with its log, which takes up to ~30 s after a Milvus restart).
            "search": lambda: self.service("search", self.ports.search, SEARCH_HEALTH_SERVICE),
            "gateway": lambda: self.service("gateway", self.ports.gateway),
        }
        started = []
        for name in names:
            proc = factories[name]()
            proc.start()
            self.processes[name] = proc
            started.append(proc)
        for proc in started:
            self._wait_ready(proc)
        log.info("stack ready: %s", ", ".join(names))

    def _wait_ready(self, proc: ManagedProcess) -> None:
        """Waits for the part to be ready. A first start of Milvus whose launcher found one of the internal
        ports picked for it taken meanwhile (another process bound it between the pick and the start: two
        stacks or benches starting at once) is started again on freshly picked ones, twice at most."""
        for attempt in range(3):
            try:
                proc.wait_ready(timeout_s=240 if proc.name == "milvus" else 120)
                return
            except RuntimeError:
                if proc.name != "milvus" or attempt == 2 or not self._fresh_milvus_lost_a_port(proc):
                    raise
            log.warning("milvus: a port picked for it was taken meanwhile; starting it on others")
            (self.data_dir / "milvus" / "internal-ports.json").unlink()
            proc = self.milvus()
            proc.start()
            self.processes["milvus"] = proc

    def _fresh_milvus_lost_a_port(self, proc: ManagedProcess) -> bool:
        """Whether Milvus, never started on its data directory, failed because an internal port was taken."""
        taken = re.search(r"set (\w+)=\d+, but bind failed", proc.tail())
        internal = {name.replace("-", "_") + "_port" for name in MILVUS_INTERNAL_PORTS}
        return taken is not None and taken.group(1) in internal and \
            not (self.data_dir / "milvus" / "data" / "etcd.data").exists()

    def ensure(self, names: tuple[str, ...]) -> None:
        """Starts those of the named parts that are not running yet."""
        missing = tuple(n for n in names if n not in self.processes or not self.processes[n].alive)
        if missing:
            self.start(missing)

    def stop(self, names: tuple[str, ...] | None = None) -> None:
        for name in reversed(list(names or self.processes)):
            proc = self.processes.pop(name, None)
            if proc is not None:
                proc.stop()

    def kill(self, name: str) -> None:
        """Ends one part at once (SIGKILL to its whole process group), as a crash or an OOM kill would."""
        proc = self.processes.pop(name, None)
        if proc is None or proc.proc is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.proc.pid, signal.SIGKILL)
        proc.proc.wait(10)
        log.info("killed %s", name)

    def restart(self, name: str) -> None:
        """Stops and starts one part (the others keep running and must find it again by themselves)."""
        self.stop((name,))
        self.start((name,))

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.ports.http}"


class PartKeepsFailing(RuntimeError):
    """A part of the stack stopped again and again: restarting it more would hide what is wrong."""


class Supervisor:
    """Starts again a part of a running stack that stopped by itself (a crash, an OOM kill, `kill -9`), as
    docker-compose.yml's `restart: unless-stopped` and Kubernetes do for the same system, so that work in
    flight (an import, a re-embed) carries on by itself. A part that stops more than `max_restarts` times
    within `window_s` raises `PartKeepsFailing` instead."""

    def __init__(self, stack: Stack, max_restarts: int = 3, window_s: float = 300.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.stack = stack
        self.max_restarts = max_restarts
        self.window_s = window_s
        self.clock = clock
        self.restarts: dict[str, list[float]] = {}

    def check(self, announce: Callable[[str], None] = log.warning) -> list[str]:
        """Starts again every part found stopped; returns their names."""
        dead = [name for name, proc in self.stack.processes.items() if not proc.alive]
        for name in dead:
            now = self.clock()
            recent = [t for t in self.restarts.get(name, []) if now - t < self.window_s]
            popen = self.stack.processes[name].proc
            code = popen.poll() if popen is not None else None
            if len(recent) >= self.max_restarts:
                raise PartKeepsFailing(f"{name} stopped {len(recent) + 1} times within {self.window_s:.0f} s "
                                       f"(exit code {code}); see {self.stack.logs / (name + '.log')}")
            self.restarts[name] = [*recent, now]
            announce(f"{name} stopped by itself (exit code {code}); starting it again "
                     f"(log: {self.stack.logs / (name + '.log')})")
            try:
                self.stack.stop((name,))  # what is left of it: a child of a wrapper that was killed alone
                self.stack.start((name,))
            except (RuntimeError, TimeoutError) as exc:  # not up (yet): a stopped one is found again next time
                announce(f"{name} did not start: {exc}")
        return dead
