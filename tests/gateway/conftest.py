"""Fixtures of the gateway's tests."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from tests.gateway.fakes import Fakes

MakeFakes = Callable[..., Fakes]


@pytest.fixture()
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture()
async def make_fakes() -> AsyncIterator[MakeFakes]:
    """Makes `Fakes` with the given gateway settings; their in-process search servers stop after the test."""
    made: list[Fakes] = []

    def make(**settings: Any) -> Fakes:
        made.append(Fakes(**settings))
        return made[-1]

    yield make
    for fakes in made:
        await fakes.aclose()
