"""The command line when the gateway cannot be reached: a clear error, and an import followed through a restart."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import httpx
import pytest

from services.cli import (
    GatewayGone,
    build_parser,
    follow_import,
    import_line,
    import_summary,
    main,
    print_sql_result,
    start_import,
)
from services.cli.ingest import _guessed_columns, _split_manifest, interrupted, upload_parts
from services.cli.jobs import make_album, parts_words, progress_words
from services.client import ApiError
from services.common.manifest import ManifestFiles, parse_manifest
from services.devstack import free_port


def test_every_command_but_up_names_what_runs_it() -> None:
    commands = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction)).choices
    assert len(commands) >= 19
    assert [name for name, parser in commands.items() if not callable(parser.get_default("run"))] == ["up"]


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


class Cancelled:
    """A client whose import is cancelled at its second poll, while two batches are under way: they record what
    they add over the next polls (processed 10, then 12, then 14, then no more)."""

    base_url = "http://gateway"

    def __init__(self) -> None:
        self.polls = 0

    def get_import(self, import_id: str) -> dict[str, Any]:
        self.polls += 1
        processed = 6 if self.polls == 1 else min(14, 10 + 2 * (self.polls - 2))
        return {"id": import_id, "album": "a", "total": 40, "processed": processed, "rate": 1.0, "eta_s": None,
                "status": "running" if self.polls == 1 else "cancelled", "error": "",
                "counts": {"added": processed, "duplicates": 0, "skipped": 0, "replaced": 0, "failed": 0}}


def test_a_cancelled_import_is_reported_cancelled_with_what_its_batches_under_way_added() -> None:
    """The CLI following an import that someone cancels (the page, `imagesearch cancel-import`) reads it again until
    its counts stop changing, since the batches under way when it was cancelled still add theirs, and its summary
    says it was cancelled (before: the counts of the poll that saw it cancelled, and no word of it)."""
    client, slept = Cancelled(), []
    job = follow_import(client, {"id": "j1", "album": "a", "total": 40}, progress=False,  # type: ignore[arg-type]
                        sleep=slept.append)
    assert (job["status"], job["processed"]) == ("cancelled", 14)
    assert import_summary("a", job, job["counts"]) == \
        "album a: 14 added, 0 failed (import cancelled; what it added stays)"
    failed = {**job, "status": "failed", "error": "upload_interrupted: the upload stopped"}
    assert import_summary("a", failed, failed["counts"]).endswith("(import failed: upload_interrupted: the upload "
                                                                  "stopped; what it added stays)")
    assert import_summary("a", {**job, "status": "done"}, job["counts"]) == "album a: 14 added, 0 failed"


def test_a_progress_bar_says_how_its_job_goes_in_words() -> None:
    """Before: `0.0 img/s, left -` while an upload was staged or before the first batch, and a re-embed's
    `left 0s` while its album was switched."""
    def job(status: str, processed: int, total: int, rate: float, eta: float | None, failed: int = 0) -> dict[str, Any]:
        return {"status": status, "processed": processed, "total": total, "rate": rate, "eta_s": eta,
                "counts": {"added": processed - failed, "failed": failed}}

    assert progress_words(job("staging", 0, 0, 0.0, None)) == "staging the upload"
    assert progress_words(job("staging", 8, 8, 4.0, None)) == "4.0 img/s, the rest being staged"
    assert progress_words(job("queued", 0, 40, 0.0, None)) == "waiting for a worker"
    assert progress_words(job("running", 0, 40, 0.0, None)) == "starting"
    assert progress_words(job("running", 10, 40, 2.5, 12.0, failed=1)) == "2.5 img/s, about 12s left, 1 failed"
    assert progress_words(job("running", 10, 50_000, 40.0, 1249.6)) == "40.0 img/s, about 20m 50s left"
    assert progress_words(job("running", 10, 500_000, 40.0, 12_499.8)) == "40.0 img/s, about 3h 28m left"
    assert progress_words(job("running", 40, 40, 2.5, 0.0)) == "finishing"
    assert progress_words(job("done", 40, 40, 2.5, None)) == "done"

    # An ingest in parts: the rate and time left of the whole, the parts not sent counted in.
    sent = [job("done", 20, 20, 4.0, None, failed=1), job("staging", 0, 0, 0.0, None)]
    assert parts_words(sent[1:], 3, 40, 2.0) == "staging the upload, part 1 of 3"
    assert parts_words(sent, 3, 20, 10.0) == "2.0 img/s, about 10s left, part 2 of 3, 1 failed"
    assert parts_words([sent[0], job("done", 20, 20, 4.0, None)], 3, 20, 10.0) == "2 of 3 parts ended, 1 failed"


def test_files_are_sent_in_parts_of_so_many_images_and_bytes(tmp_path: Path) -> None:
    sizes = [10, 10, 10, 10, 50, 10, 10]  # a file over the bytes alone goes alone
    entries = []
    for n, size in enumerate(sizes):
        (tmp_path / f"{n}.png").write_bytes(b"x" * size)
        entries.append((tmp_path / f"{n}.png", f"{n}.png"))
    entries.append((tmp_path / "gone.png", "gone.png"))  # unreadable: reported when packed, counted as nothing
    parts = upload_parts(entries, 3, 35)
    assert [[name for _, name in part] for part in parts] == [
        ["0.png", "1.png", "2.png"], ["3.png"], ["4.png"], ["5.png", "6.png", "gone.png"]]
    assert upload_parts([], 3, 35) == []


class PartsGateway:
    """A gateway taking an ingest's parts: someone cancels the first (the page) after it added 5, while the second
    runs (it adds 8 more after its cancel); or it refuses the second part (400)."""

    base_url = "http://gateway"

    def __init__(self, refuse_second: bool = False) -> None:
        self.refuse_second = refuse_second
        self.sent: list[str] = []
        self.cancelled: list[str] = []

    def get_album(self, album: str) -> dict[str, Any]:
        return {"name": album}

    def start_import(self, album: str, **fields: Any) -> dict[str, Any]:
        if self.refuse_second and self.sent:
            raise ApiError(400, "invalid_argument", "no")
        self.sent.append(fields["archive_name"])
        return self._job(f"j{len(self.sent)}", "queued", 0)

    def get_import(self, import_id: str) -> dict[str, Any]:
        if self.refuse_second:
            return self._job(import_id, "done", 20)
        if import_id == "j1":
            return self._job(import_id, "cancelled", 5)
        if import_id in self.cancelled:
            return self._job(import_id, "cancelled", 8)
        return self._job(import_id, "running", 3)

    def cancel_import(self, import_id: str) -> dict[str, Any]:
        self.cancelled.append(import_id)
        return self._job(import_id, "cancelled", 3)

    def import_results(self, import_id: str, failed_only: bool = False) -> list[dict[str, Any]]:
        return []

    @staticmethod
    def _job(import_id: str, status: str, added: int) -> dict[str, Any]:
        return {"id": import_id, "album": "a", "status": status, "total": 20, "processed": added, "rate": 1.0,
                "eta_s": None, "error": "", "counts": {"added": added, "duplicates": 0, "failed": 0}}


def test_an_ingest_in_parts_stops_when_a_part_is_cancelled_or_refused(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """A part cancelled: the part sent after it (running) is cancelled too and no more are sent. A part refused:
    those sent finish, and the summary says which were not sent and why."""
    monkeypatch.setattr("services.cli.jobs.SETTLE_QUIET_S", 0.0)
    for n in range(60):
        (tmp_path / f"{n:02d}.png").write_bytes(b"x")
    args = build_parser().parse_args(["ingest", str(tmp_path), "--album", "a", "--images-per-upload", "20",
                                      "--quiet"])
    client = PartsGateway()
    assert args.run(args, client) == 1
    name = f"{tmp_path.name}.tar"
    assert client.sent == [f"{name} (part 1 of 3)", f"{name} (part 2 of 3)"]  # the second sent as the first ran
    assert client.cancelled == ["j2"]
    assert capsys.readouterr().out.splitlines() == [
        "album a: 13 added, 0 failed (import cancelled: part 3 of 3 not sent; what it added stays)"]

    refusing = PartsGateway(refuse_second=True)
    assert args.run(args, refusing) == 1
    assert capsys.readouterr().out.splitlines() == [
        "album a: 20 added, 0 failed (import incomplete: parts 2-3 of 3 not sent: 400 invalid_argument: no; what it "
        "added stays)"]


def test_an_ingest_stopped_by_ctrl_c_says_what_goes_on_and_what_was_not_sent() -> None:
    follow = "(`imagesearch imports --album a`)"
    assert interrupted("a", 0, 1) == "interrupted: no import goes on"
    assert interrupted("a", 0, 3) == "interrupted: no import goes on; parts 1-3 of 3 not sent"
    assert interrupted("a", 2, 3) == f"interrupted: the 2 import(s) sent go on by themselves {follow}; part 3 of 3 " \
        "not sent"
    assert interrupted("a", 3, 3) == f"interrupted: the 3 import(s) sent go on by themselves {follow}"  # all sent
    assert interrupted("a", 1, 1) == f"interrupted: the 1 import(s) sent go on by themselves {follow}"


@pytest.mark.parametrize("suffix", [".csv", ".jsonl"])
def test_each_part_s_manifest_gives_its_files_the_rows_the_whole_manifest_gives_them(tmp_path: Path,
                                                                                   suffix: str) -> None:
    """As the gateway would read the whole manifest for one import: a row found by a trailing path in another part,
    a URL row in the first part, a row naming no file in the last; and a file that two rows match equally well
    (x.png: a/x.png and c/x.png) takes neither, though its part holds only one of them (c/x.png)."""
    class Album:
        def album(self, name: str) -> dict[str, Any]:
            return {"columns": [{"name": "n", "type": "int"}]}

    rows = [("a/x.png", 1), ("c/x.png", 2), ("y.png", 3), ("http://h/u.png", 4), ("gone.png", 5)]
    manifest = tmp_path / f"m{suffix}"
    manifest.write_text("file,n\n" + "".join(f"{f},{n}\n" for f, n in rows) if suffix == ".csv" else
                        "".join(json.dumps({"file": f, "n": n}) + "\n" for f, n in rows))
    names = ["a/x.png", "b/y.png", "c/x.png", "x.png"]
    parts = [[(tmp_path / n, n) for n in names[:2]], [(tmp_path / n, n) for n in names[2:]]]
    work = tmp_path / "work"
    work.mkdir()
    written = _split_manifest(Album(), "a", manifest, parts, work)  # type: ignore[arg-type]
    got = {}
    for path, part in zip(written, parts, strict=True):
        assert path is not None
        read = parse_manifest(path.read_text(), suffix, {"n": "int"})
        files = ManifestFiles(k for k in read if not k.startswith("http"))
        got.update({name: read[key].get("n") if (key := files.key_of(name)) else None for _, name in part})
        got.update({k: read[k]["n"] for k in read if k.startswith("http") or k not in files.matched})
    assert got == {"a/x.png": 1, "b/y.png": 3, "c/x.png": 2, "x.png": None, "http://h/u.png": 4, "gone.png": 5}


def test_a_cancel_says_that_the_batches_under_way_still_add_theirs(capsys: pytest.CaptureFixture[str]) -> None:
    class Cancelling:
        def cancel_import(self, import_id: str) -> dict[str, Any]:
            return {"id": import_id, "status": "cancelled", "processed": 192, "total": 691}

    args = build_parser().parse_args(["cancel-import", "j1"])
    assert args.run(args, Cancelling()) == 0
    assert capsys.readouterr().out == ("import j1: cancelled after 192 of 691 image(s); the batches under way when it "
                                       "was cancelled still add theirs (`imagesearch imports` shows the final "
                                       "counts)\n")


def test_an_ingest_refuses_what_it_cannot_send_before_asking_the_gateway(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A file named that is not an image nor an archive (before: sent, then "the import holds no images"), and
    --attributes that are not JSON (before: a bare JSON error): said at once, nothing sent (no gateway here)."""
    notes = tmp_path / "hostname"
    notes.write_text("x")
    (tmp_path / "a.png").write_bytes(b"x")
    url = f"http://127.0.0.1:{free_port()}"
    assert main(["--url", url, "ingest", str(notes), str(tmp_path / "a.png"), "--album", "a"]) == 2
    assert f"not an image file (.bmp .gif .jpeg .jpg .png .tif .tiff .webp) nor an archive (.zip .tar .tar.gz .tgz " \
           f".tar.bz2 .tar.xz): {notes}" in capsys.readouterr().err
    assert main(["--url", url, "ingest", str(tmp_path / "a.png"), "--album", "a", "--attributes", "{bad"]) == 2
    assert "error: --attributes '{bad' is not a JSON object: Expecting property name" in capsys.readouterr().err


def test_images_ordered_by_a_column_show_its_value(capsys: pytest.CaptureFixture[str]) -> None:
    """Beside each name, the value it is ordered by: a built-in (when added) or an attribute (NULL for none)."""
    class Listing:
        def list_images(self, album: str, **asked: Any) -> dict[str, Any]:
            return {"images": [{"id": "i1", "name": "a.png", "created_at_ms": 1_700_000_000_000, "content_hash": "h1",
                                "attributes": {"price": 9.5}},
                               {"id": "i2", "name": "b.png", "created_at_ms": 1_700_000_060_000, "content_hash": "h2",
                                "attributes": {}}]}

    added = ["created_at=2023-11-14T22:13:20+00:00", "created_at=2023-11-14T22:14:20+00:00"]
    for column, shown in (("created_at", added), ("price", ["price=9.5", "price=NULL"]),
                          ("content_hash", ["content_hash=h1", "content_hash=h2"])):
        args = build_parser().parse_args(["images", "--album", "a", "--order-by", column])
        assert args.run(args, Listing()) == 0
        assert [line.split()[2] for line in capsys.readouterr().out.splitlines()] == shown


def test_delete_album_asks_first_at_a_terminal(monkeypatch: pytest.MonkeyPatch,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    """At a terminal the album is deleted only once the user says yes (or with --yes); a script is not asked."""
    class Albums:
        def __init__(self) -> None:
            self.deleted: list[str] = []

        def get_album(self, album: str) -> dict[str, Any]:
            return {"name": album, "image_count": 12}

        def delete_album(self, album: str) -> None:
            self.deleted.append(album)

    asked: list[str] = []
    answers = iter(["n", "yes"])
    monkeypatch.setattr("sys.stdin.isatty", lambda: True)
    monkeypatch.setattr("builtins.input", lambda prompt: asked.append(prompt) or next(answers))
    client = Albums()
    args = build_parser().parse_args(["delete-album", "shop"])
    assert args.run(args, client) == 1 and client.deleted == []
    assert asked == ["delete album shop and its 12 image(s) for good? [y/N] "]
    assert args.run(args, client) == 0 and client.deleted == ["shop"]
    sure = build_parser().parse_args(["delete-album", "shop", "--yes"])
    assert sure.run(sure, client) == 0 and len(asked) == 2 and client.deleted == ["shop", "shop"]
    monkeypatch.setattr("sys.stdin.isatty", lambda: False)  # a script
    assert args.run(args, client) == 0 and len(asked) == 2
    assert capsys.readouterr().out.splitlines() == ["kept album shop"] + ["deleted album shop"] * 3


class DroppedUploads:
    """A client whose gateway drops the import's upload `drops` times (refused, the connection cut while it read
    the upload, 502 from a proxy while it restarts), then queues it."""

    base_url = "http://gateway"

    def __init__(self, drops: int, error: Exception | None = None) -> None:
        self.drops = drops
        self.error = error
        self.sent = 0
        self.keys: list[str] = []

    def start_import(self, album: str, **fields: Any) -> dict[str, Any]:
        self.sent += 1
        self.keys.append(fields.pop("idempotency_key"))
        if self.error is not None:
            raise self.error
        if self.sent <= self.drops:
            raise [httpx.ConnectError("[Errno 111] Connection refused"),
                   httpx.RemoteProtocolError("Server disconnected without sending a response."),
                   ApiError(502, "bad_gateway", "upstream restarting")][(self.sent - 1) % 3]
        return {"id": "j1", "album": album, "total": 4, "status": "queued", **fields}


def test_an_upload_the_gateway_dropped_is_sent_again_once_it_answers(capsys: pytest.CaptureFixture[str]) -> None:
    client, slept = DroppedUploads(drops=3), []
    job = start_import(client, "a", sleep=slept.append, on_duplicate="skip")  # type: ignore[arg-type]
    assert (job["id"], job["on_duplicate"], client.sent, slept) == ("j1", "skip", 4, [2.0, 2.0, 2.0])
    assert len(set(client.keys)) == 1 and len(client.keys[0]) == 32  # one import, tried 4 times
    start_import(client, "a", sleep=slept.append)  # type: ignore[arg-type]
    assert len(set(client.keys)) == 2  # another import
    assert capsys.readouterr().err.count("sending it again when it answers") == 1  # said once


@pytest.mark.parametrize("error", [ApiError(400, "invalid_argument", "not an archive"),
                                   httpx.ReadTimeout("timed out"), ApiError(504, "gateway_timeout", "proxy gave up")])
def test_an_upload_refused_or_timed_out_is_not_sent_again(error: Exception) -> None:
    """A request the gateway refused is its own error; one that timed out (here, or at a proxy in front of the
    gateway) may still be staging there."""
    client = DroppedUploads(drops=0, error=error)
    with pytest.raises(type(error)):
        start_import(client, "a", sleep=lambda s: None)  # type: ignore[arg-type]
    assert client.sent == 1


def test_a_gateway_away_too_long_leaves_the_upload_unsent() -> None:
    with pytest.raises(GatewayGone, match="the import was not queued: run the same command again"):
        start_import(DroppedUploads(drops=10**6), "a", patience_s=0.0, sleep=lambda s: None)  # type: ignore[arg-type]


def _job(**fields: Any) -> dict[str, Any]:
    counts = {"added": 0, "duplicates": 0, "skipped": 0, "replaced": 0, "failed": 0, **fields.pop("counts", {})}
    return {"id": "j1", "album": "a", "kind": "archive", "status": "done", "total": 4, "processed": 4, "rate": 2.0,
            "error": None, **fields, "counts": counts}


def test_the_listing_of_imports_says_what_each_job_is_did_and_why_it_failed() -> None:
    assert import_line(_job(counts={"added": 3, "failed": 1})) == \
        "j1  a                    archive  done            4/4       3 added, 1 failed  2.0 img/s"
    again = import_line(_job(counts={"duplicates": 4}))  # the same archive again: nothing added, and why
    assert again.endswith("0 added, 4 duplicate, 0 failed  2.0 img/s")
    named = import_line(_job(counts={"added": 4}, source="holiday.tar"))  # what was imported, when the gateway says
    assert named.endswith("4 added, 0 failed  2.0 img/s  holiday.tar")
    reembed = import_line(_job(kind="reembed", counts={"added": 4}))
    assert " reembed " in reembed and "4 re-embedded, 0 left out" in reembed and "added" not in reembed
    failed = import_line(_job(status="failed", total=0, processed=0, rate=0.0,
                              error="invalid_archive: neither a zip nor a tar"))
    assert failed.endswith("0/0       0 added, 0 failed  (invalid_archive: neither a zip nor a tar)")


def test_an_sql_table_cuts_a_long_value_in_the_middle_so_names_sharing_a_folder_stay_apart(
        capsys: pytest.CaptureFixture[str]) -> None:
    names = [f"gcompris_categorization_resource_images_fishes_fish{i}.jpg" for i in (1, 10)]
    print_sql_result({"statement": "SELECT", "album": "shop", "took_ms": 1.0, "columns": ["name", "price"],
                      "rows": [{"values": [n, 9.5]} for n in names]}, "http://x")
    lines = capsys.readouterr().out.splitlines()
    assert lines[2].split() == ["gcompris_categorization…_images_fishes_fish1.jpg", "9.5"]
    assert lines[3].split() == ["gcompris_categorization…images_fishes_fish10.jpg", "9.5"]
    assert len(lines[3].split()[0]) == 48 and lines[-1] == "SELECT shop: 2 row(s) in 1.0 ms"
    print_sql_result({"statement": "SELECT", "album": "shop", "took_ms": 1.0, "columns": ["name"],
                      "rows": [{"values": ["a"], "image": {"url": "/v1/albums/shop/images/1/content"}}]}, "http://x")
    header, rule, row, _ = capsys.readouterr().out.splitlines()  # a row of an image: its link, under "image"
    assert (header.split(), rule.split(), row.split()) == (
        ["name", "image"], ["----", "-----"], ["a", "http://x/v1/albums/shop/images/1/content"])


class AlbumAway:
    """A client whose gateway is away for `away` calls (refused, then 503 while it starts), then has no album `a`
    until asked to make it; `made` says what creating it answers (its album, or 409: made meanwhile)."""

    base_url = "http://gateway"

    def __init__(self, away: int, made: Exception | None = None) -> None:
        self.away, self.made = away, made
        self.calls: list[str] = []

    def _call(self, what: str) -> None:
        self.calls.append(what)
        if len(self.calls) <= self.away:
            raise httpx.ConnectError("refused") if len(self.calls) % 2 else ApiError(503, "unavailable", "starting")

    def get_album(self, album: str) -> dict[str, Any] | None:
        self._call("get")
        return None

    def create_album(self, album: str, columns: Any = ()) -> dict[str, Any]:
        self._call("create")
        if self.made is not None:
            raise self.made
        return {"name": album}


def test_ingest_waits_for_a_gateway_restarting_as_it_starts_before_making_the_album(
        capsys: pytest.CaptureFixture[str]) -> None:
    client, slept = AlbumAway(away=3), []
    assert make_album(client, "a", sleep=slept.append)  # type: ignore[arg-type]
    assert client.calls == ["get", "get", "get", "get", "create"] and slept == [2.0] * 3
    assert "the gateway does not answer (ConnectError); waiting for it" in capsys.readouterr().err
    raced = AlbumAway(away=0, made=ApiError(409, "already_exists", "album 'a' already exists"))
    assert not make_album(raced, "a", sleep=slept.append)  # type: ignore[arg-type]
    with pytest.raises(GatewayGone, match="nothing was sent"):
        make_album(AlbumAway(away=10**6), "a", patience_s=0.0, sleep=lambda s: None)  # type: ignore[arg-type]
    with pytest.raises(ApiError):  # the request's own error: not waited out
        make_album(AlbumAway(away=0, made=ApiError(400, "invalid_argument", "bad name")), "a")  # type: ignore[arg-type]


def test_ingest_declares_no_column_that_its_csv_cells_and_its_json_value_type_apart(tmp_path: Any) -> None:
    manifest = tmp_path / "stock.csv"
    manifest.write_text("file,price,in_stock\na.png,3,1\nb.png,,0\n")
    # in_stock: numbers in the cells, true for the rows without one: left undeclared (either type refuses the other).
    assert _guessed_columns(manifest, {"in_stock": True, "source": "shop", "price": 9.5}) == {
        "source": "string", "price": "float"}
