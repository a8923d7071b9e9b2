"""Session fixtures: one real stack (Milvus, S3, Redis, the three services) on free loopback ports.

Each fixture starts only the parts its tests need, the first time they are asked for, and the
whole stack stops at the end of the session. `./imagesearch test` runs the suite in two pytest-xdist
workers, a test file each at a time: each worker is a session with a stack of its own.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from services import devstack
from services.devstack import ROOT, Ports, Stack

pytest_plugins = ["tests.async_timeout"]

SERVERS = ("milvus", "s3", "redis")
SERVICES = ("extractor", "search", "gateway")

logging.getLogger("services.devstack").setLevel(logging.INFO)


def pytest_configure(config: pytest.Config) -> None:
    """Under pytest-xdist each worker starts stacks of its own, picking their ports from its own part of the
    range, so that no two workers pick the same port while neither has bound it yet."""
    worker, count = os.environ.get("PYTEST_XDIST_WORKER", ""), int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    ports = devstack._listen_ports()
    if worker.startswith("gw") and count > 1 and devstack.PORTS_ENV not in os.environ and len(ports) >= 100 * count:
        index = int(worker.removeprefix("gw"))
        share = ports[len(ports) * index // count:len(ports) * (index + 1) // count]
        os.environ[devstack.PORTS_ENV] = f"{share.start}-{share.stop - 1}"


def sample_photos(extra: tuple[str, ...] = ()) -> list[Path]:
    """Real photos shipped by scikit-image (no network needed), and any `extra` of its samples."""
    import skimage

    data = Path(skimage.__file__).parent / "data"
    names = ["astronaut.png", "chelsea.png", "coffee.png", "rocket.jpg", "motorcycle_left.png",
             "hubble_deep_field.jpg", "brick.png", "grass.png", "gravel.png", "color.png", *extra]
    return [data / n for n in names if (data / n).exists()]


@pytest.fixture(scope="session")
def photos() -> list[Path]:
    found = sample_photos()
    assert len(found) >= 6, "scikit-image's sample photos are missing"
    return found


@pytest.fixture(scope="session")
def _stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    # The URL tests serve images from 127.0.0.1 (tests.gateway.stack_helpers.file_server): that host
    # is allowed; any other private or local address stays refused, as in a deployment. Imports run in
    # batches of 16 on 2 workers, as the cancel tests count on (tests/gateway/test_imports.py, the page's):
    # more batches than workers, so that a cancel lands before the last ones start.
    stack = Stack(tmp_path_factory.mktemp("stack"), Ports.free(),
                  service_env={"GATEWAY_URL_ALLOWED_HOSTS": '["127.0.0.1"]', "GATEWAY_INGEST_BATCH_SIZE": "16",
                               "GATEWAY_IMPORT_WORKERS": "2"})
    yield stack
    stack.stop()


@pytest.fixture(scope="session")
def _breakable_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    # Started once for every test that breaks it: a stack's start and stop take half a minute.
    private = Stack(tmp_path_factory.mktemp("faults"), Ports.free(),
                    service_env={"GATEWAY_IMPORT_TAKEOVER_S": "5", "GATEWAY_INGEST_BATCH_SIZE": "8"})
    yield private
    private.stop()


@pytest.fixture()
def breakable_stack(_breakable_stack: Stack) -> Stack:
    """A second whole stack, for the tests that kill or stop its parts, so that the session's stack never
    sees them go away (restarted if a test left one stopped). Its import workers take over a dead one's
    batch once Redis has not heard from it for 5 s (its batches' visibility timeout stays the default minute)."""
    _breakable_stack.ensure(SERVERS + SERVICES)
    return _breakable_stack


@pytest.fixture(scope="session")
def milvus(_stack: Stack) -> Stack:
    """A real Milvus server; `stack.ports.milvus` is its port."""
    _stack.ensure(("milvus",))
    return _stack


@pytest.fixture(scope="session")
def servers(_stack: Stack) -> Stack:
    """Real Milvus, S3 (SeaweedFS) and Redis servers."""
    _stack.ensure(SERVERS)
    return _stack


@pytest.fixture()
def stack(_stack: Stack) -> Stack:
    """The whole system: servers and the three services (restarted if a test stopped one)."""
    _stack.ensure(SERVERS + SERVICES)
    return _stack


@pytest.fixture(scope="session")
def model_dir() -> Path:
    path = ROOT / ".cache" / "models"
    assert (path / "efficientnet-lite0.onnx").exists(), "run scripts/setup.sh to export the model"
    return path
