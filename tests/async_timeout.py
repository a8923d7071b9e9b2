"""A time limit on each async test, enforced inside its event loop (pytest plugin, loaded by tests/conftest.py).

pytest-timeout alone cannot end a hung async test cleanly. Its alarm raises `Failed` into whatever the
main thread runs, here the event loop. anyio's runner passes that on without cancelling the test, which
stays stuck in its runner task. An async fixture's teardown then waits for that task, and waits for ever:
an xdist worker of a CI run once hung for more than 20 minutes after one such test.

With this plugin an async test that overruns `async_test_timeout` (seconds, an ini option) is cancelled
inside its loop. The test fails with TimeoutError, chained to the cancellation that shows where it was
waiting; its fixtures are torn down, and the run goes on. The limit stays below pytest-timeout's, which
still ends a hung sync test.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Generator
from typing import Any

import anyio
import pytest

INI = "async_test_timeout"


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addini(INI, "seconds an async test may run before it is cancelled in its event loop (0: no limit)",
                  default="0")


@pytest.hookimpl(wrapper=True)
def pytest_pyfunc_call(pyfuncitem: pytest.Function) -> Generator[None, Any, Any]:
    test = pyfuncitem.obj
    seconds = float(pyfuncitem.config.getini(INI))
    if seconds <= 0 or not inspect.iscoroutinefunction(test):
        return (yield)

    @functools.wraps(test)
    async def bounded(*args: Any, **kwargs: Any) -> Any:
        try:
            with anyio.fail_after(seconds):
                return await test(*args, **kwargs)
        except TimeoutError as exc:
            raise TimeoutError(f"{pyfuncitem.nodeid} ran longer than {INI} = {seconds:g} s; the traceback "
                               "of the cancellation above shows where it was waiting") from exc

    pyfuncitem.obj = bounded
    try:
        return (yield)
    finally:
        pyfuncitem.obj = test
