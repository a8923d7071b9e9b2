"""The command line when the gateway cannot be reached: a clear error, and an import followed through a restart."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from services.cli import GatewayGone, follow_import, main
from services.client import ApiError
from services.devstack import free_port


def test_a_command_with_no_gateway_to_reach_says_so(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--url", f"http://127.0.0.1:{free_port()}", "albums"]) == 2
    err = capsys.readouterr().err
    assert "cannot reach the gateway at http://127.0.0.1:" in err and "imagesearch up" in err
    assert "Traceback" not in err


class Flaky:
    """A client whose gateway is away for `away` polls (refused, then 503 while it starts), then answers."""

    base_url = "http://gateway"

    def __init__(self, away: int) -> None:
        self.away = away
        self.polls = 0

    def get_import(self, import_id: str) -> dict[str, Any]:
        self.polls += 1
        if self.polls <= self.away:
            if self.polls % 2:
                raise httpx.ConnectError("[Errno 111] Connection refused")
            raise ApiError(503, "unavailable", "the gateway is starting")
        status = "done" if self.polls > self.away + 1 else "running"
        return {"id": import_id, "album": "a", "total": 4, "processed": 4 if status == "done" else 2,
                "status": status, "rate": 1.0, "eta_s": None, "counts": {"failed": 0}}


def test_an_import_is_followed_through_a_gateway_restart() -> None:
    client, slept = Flaky(away=4), []
    job = follow_import(client, {"id": "j1", "album": "a", "total": 4}, progress=False,  # type: ignore[arg-type]
                        sleep=slept.append)
    assert job["status"] == "done" and client.polls == 6
    assert slept.count(2.0) == 4  # waited while it was away


def test_a_gateway_away_too_long_leaves_the_import_to_itself() -> None:
    with pytest.raises(GatewayGone, match="import j1 goes on by itself: `imagesearch imports --album a`"):
        follow_import(Flaky(away=10**6), {"id": "j1", "album": "a", "total": 4}, progress=False,  # type: ignore[arg-type]
                      patience_s=0.0, sleep=lambda s: None)


def test_an_error_of_the_request_itself_is_not_waited_out() -> None:
    class Gone(Flaky):
        def get_import(self, import_id: str) -> dict[str, Any]:
            raise ApiError(404, "import_not_found", "no such import")

    with pytest.raises(ApiError):
        follow_import(Gone(0), {"id": "j1", "album": "a", "total": 4}, progress=False)  # type: ignore[arg-type]
