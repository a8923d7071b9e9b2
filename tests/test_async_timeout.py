"""tests/async_timeout.py: a hung async test fails in its own event loop, its fixtures are torn down, and the
run goes on. Run in a pytest of its own (a subprocess), with a one-second limit."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from services.devstack import ROOT

HUNG = '''
import asyncio
from pathlib import Path

import pytest


@pytest.fixture()
def anyio_backend():
    return "asyncio"


@pytest.fixture()
async def resource():
    yield
    Path("torn-down").write_text("yes")


@pytest.mark.anyio
async def test_hangs(resource):
    await asyncio.Event().wait()


def test_runs_after():
    pass
'''


def test_a_hung_async_test_fails_in_its_loop_and_its_fixtures_are_torn_down(tmp_path: Path) -> None:
    (tmp_path / "test_hung.py").write_text(HUNG)
    run = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "tests.async_timeout",
                          "-o", "async_test_timeout=1", "--timeout=120", "test_hung.py"],
                         cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True, text=True,
                         timeout=100)
    out = run.stdout + run.stderr
    assert run.returncode == 1, out
    assert "1 failed, 1 passed" in out and "ran longer than async_test_timeout = 1 s" in out, out
    assert "await asyncio.Event().wait()" in out, out  # where it was waiting
    assert (tmp_path / "torn-down").read_text() == "yes"
