"""Imports and re-embeds: background jobs started, followed with a progress bar, listed and cancelled."""

from __future__ import annotations

import argparse
import functools
import json
import sys
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import httpx

from services.client import ApiError, GatewayClient

# How long `ingest` and `reembed` wait for an unreachable gateway before leaving the job to itself.
UNREACHABLE_PATIENCE_S = 600.0


class GatewayGone(Exception):
    """The gateway could not be reached for longer than a wait allows."""


class Patience:
    """Waits out a gateway that cannot be reached (refused, the connection dropped, 502/503 while it restarts;
    with `timeouts`, no answer in time, a 504 from a proxy in front of it too), `patience_s` at most at a time;
    any other error is the request's own and raised."""

    def __init__(self, client: GatewayClient, patience_s: float, sleep: Callable[[float], None],
                 timeouts: bool = True) -> None:
        self.client = client
        self.patience_s = patience_s
        self.sleep = sleep
        self.timeouts = timeouts
        self.since: float | None = None

    def wait(self, exc: Exception, then: str) -> None:
        """After `exc`: sleeps a little if the gateway may come back, else raises (GatewayGone saying `then`
        once the patience is spent)."""
        timed_out = isinstance(exc, httpx.TimeoutException) or (isinstance(exc, ApiError) and exc.status == 504)
        if (isinstance(exc, ApiError) and exc.status not in (502, 503, 504)) or (timed_out and not self.timeouts):
            raise exc
        now = time.monotonic()
        self.since = self.since or now
        if now - self.since > self.patience_s:
            raise GatewayGone(f"the gateway at {self.client.base_url} has not answered for {self.patience_s:.0f} s "
                              f"({exc}); {then}") from exc
        self.sleep(2.0)

    def reached(self) -> None:
        self.since = None


def start_import(client: GatewayClient, album: str, patience_s: float = UNREACHABLE_PATIENCE_S,
                 sleep: Callable[[float], None] = time.sleep, **fields: Any) -> dict[str, Any]:
    """Sends an import, again if the gateway stopped before it answered (killed while it read or staged the
    upload) once it answers again: what the stopped gateway had added already counts as duplicates, and its
    job is failed by the gateway's workers. A timeout (ours, or a proxy's 504) is not sent again: the gateway
    may still be staging, and would then run the import twice."""
    patience = Patience(client, patience_s, sleep, timeouts=False)
    told = False
    key = uuid.uuid4().hex  # every try is the same import: one the gateway queued is answered, not run again
    try:
        while True:
            try:
                return client.start_import(album, idempotency_key=key, **fields)
            except (httpx.TransportError, ApiError) as exc:
                patience.wait(exc, "the import was not queued: run the same command again")
                if not told:
                    print(f"the gateway did not take the import ({_why(exc)}); sending it again when it "
                          "answers", file=sys.stderr)
                    told = True
    except KeyboardInterrupt:  # during an upload, or the wait before the next: a try may have been read all
        _cancel_unanswered(client, album, key)
        raise


def _cancel_unanswered(client: GatewayClient, album: str, key: str) -> None:
    """Cancels by its key an import whose request was stopped before its answer came: the gateway may have read
    the upload and made an import, or may make it still."""
    try:
        job = client.cancel_import_by_key(album, key, timeout_s=30.0)  # its staged packs deleted first
    except (httpx.HTTPError, ApiError) as exc:
        print(f"the upload was stopped, and its import could not be cancelled ({_why(exc)}): should the gateway have "
              f"read it all, `imagesearch cancel-import --album {album} --key {key}` stops it", file=sys.stderr)
        return
    if job is None:
        print("the upload was stopped before the gateway made an import of it (should it read the upload after all, "
              "that import is cancelled as it starts, nothing of it added)", file=sys.stderr)
    else:
        print(f"the upload was stopped; its import {job['id']} is {job['status']} after {job['processed']} of "
              f"{job['total']} image(s)", file=sys.stderr)


def make_album(client: GatewayClient, album: str, columns: Mapping[str, str] | None = None,
               patience_s: float = UNREACHABLE_PATIENCE_S, sleep: Callable[[float], None] = time.sleep) -> bool:
    """Creates the album (with these declared columns: name -> type) unless it exists; True if this made it. A
    gateway that cannot be reached (restarting as the command starts) is waited for, as `start_import` waits."""
    patience = Patience(client, patience_s, sleep)
    told = False
    while True:
        try:
            if client.get_album(album) is not None:
                return False
            client.create_album(album, [{"name": n, "type": k} for n, k in (columns or {}).items()])
            return True
        except (httpx.TransportError, ApiError) as exc:
            if isinstance(exc, ApiError) and exc.status == 409:  # made meanwhile (a try whose answer was lost)
                return False
            patience.wait(exc, "nothing was sent: run the same command again")
            if not told:
                print(f"the gateway does not answer ({_why(exc)}); waiting for it", file=sys.stderr)
                told = True


def _why(exc: Exception) -> str:
    """What a failed call to the gateway met: its answer (a 503 naming Redis, say), or the connection's error."""
    return f"{exc.status} {exc.reason}" if isinstance(exc, ApiError) else type(exc).__name__


def follow_import(client: GatewayClient, job: dict[str, Any], progress: bool = True,
                  patience_s: float = UNREACHABLE_PATIENCE_S, sleep: Callable[[float], None] = time.sleep
                  ) -> dict[str, Any]:
    """Waits for an import (or re-embed) to finish, with a progress bar; the job as it ended (`JobsProgress`)."""
    doing = "re-embed" if job.get("kind") == "reembed" else "import"
    with JobsProgress(client, f"{doing} {job['album']}", progress, patience_s, sleep) as jobs:
        jobs.add(job)
        jobs.wait()
        return jobs.jobs[0]


ENDED = ("done", "failed", "cancelled")


class JobsProgress:
    """Follows the jobs of one command (an ingest sent in parts: a job a part) with one progress bar: their items
    done of their totals and of the items still to be sent (`to_send`), the rate and time left of the job under way
    (the gateway's, of the whole job whoever started it, not tqdm's of the polls). A gateway that cannot be reached
    (restarting, its host rebooting) is waited for up to `patience_s` at a time: the jobs go on by themselves
    meanwhile (they live in Redis; any gateway's workers carry them on). A job that ended cancelled or failed is
    read again until its counts settle (`_settled`)."""

    def __init__(self, client: GatewayClient, desc: str, progress: bool = True,
                 patience_s: float = UNREACHABLE_PATIENCE_S, sleep: Callable[[float], None] = time.sleep,
                 parts: int = 1) -> None:
        from tqdm import tqdm

        self.client, self.sleep, self.parts = client, sleep, parts
        self.patience = Patience(client, patience_s, sleep)
        self.jobs: list[dict[str, Any]] = []
        self.to_send = 0
        self.started = time.monotonic()
        self.bar = tqdm(total=0, unit="img", disable=not progress, desc=desc,
                        bar_format="{l_bar}{bar}| {n_fmt}/{total_fmt} [{elapsed}{postfix}]")

    def __enter__(self) -> JobsProgress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.bar.close()

    def add(self, job: dict[str, Any]) -> None:
        self.jobs.append(job)
        self._show()

    def sending(self, part: int) -> None:
        """Says that the part (from 1) is being sent."""
        self.bar.set_postfix_str(f"sending part {part} of {self.parts}")

    @property
    def running(self) -> list[dict[str, Any]]:
        return [job for job in self.jobs if job.get("status") not in ENDED]

    def wait(self, running_at_most: int = 0) -> None:
        """Polls the jobs until at most this many have not ended."""
        while len(self.running) > running_at_most:
            for i, job in enumerate(self.jobs):
                if job.get("status") in ENDED:
                    continue
                doing = "re-embed" if job.get("kind") == "reembed" else "import"
                try:
                    job = self.jobs[i] = self.client.get_import(job["id"])
                except (httpx.TransportError, ApiError) as exc:
                    met = "answers " + _why(exc) if isinstance(exc, ApiError) else f"unreachable ({_why(exc)})"
                    self.bar.set_postfix_str(f"gateway {met}, waiting: the {doing} goes on")
                    self.patience.wait(exc, f"{doing} {job['id']} goes on by itself: `imagesearch imports --album "
                                            f"{job['album']}` shows it")
                    break
                self.patience.reached()
                self._show()
                if job["status"] in ENDED and job["status"] != "done":
                    self.jobs[i] = _settled(self.client, job, self.sleep, functools.partial(self._read, i))
            else:
                if len(self.running) > running_at_most:
                    self.sleep(0.5)

    def _read(self, i: int, job: dict[str, Any]) -> None:
        self.jobs[i] = job
        self._show()

    def _show(self) -> None:
        known = [job for job in self.jobs if "counts" in job]  # not one known by its id alone, before its read
        if self.parts > 1:
            self.bar.set_postfix_str(parts_words(known, self.parts, self.to_send, time.monotonic() - self.started),
                                     refresh=False)
        elif known:
            self.bar.set_postfix_str(progress_words(known[0]), refresh=False)
        self.bar.total = sum(job["total"] for job in known) + self.to_send
        self.bar.update(sum(job["processed"] for job in known) - self.bar.n)
        self.bar.refresh()


def progress_words(job: dict[str, Any]) -> str:
    """How a job under way goes, as its progress bar says it (`_state_words`), and its failures so far."""
    return _state_words(job) + _failed_words(job["counts"]["failed"])


def _state_words(job: dict[str, Any]) -> str:
    """Its upload being staged (its first batches maybe added meanwhile), waiting for a worker, starting (no rate
    yet), its rate and about how long is left, finishing (every item done, the album being switched or the last
    results written), or how it ended."""
    rate, eta = job["rate"], job.get("eta_s")
    if job["status"] in ENDED:
        return str(job["status"])
    if job["status"] == "staging":  # its first batches may be added while the rest is staged
        return f"{rate:.1f} img/s, the rest being staged" if rate else "staging the upload"
    if job["status"] == "queued":
        return "waiting for a worker"
    if job["processed"] >= job["total"]:
        return "finishing"
    if not rate:
        return "starting"
    return f"{rate:.1f} img/s" + (f", about {duration(eta)} left" if eta is not None else "")


def _failed_words(failed: int) -> str:
    return f", {failed} failed" if failed else ""


def parts_words(jobs: Sequence[dict[str, Any]], parts: int, to_send: int, elapsed_s: float) -> str:
    """How an ingest sent in parts goes: the part under way's words until images are done, then the rate of the
    whole ingest so far and about how long is left of it (the parts not sent yet counted in), which part, and the
    failures so far."""
    current = next((job for job in jobs if job["status"] not in ENDED), None)
    processed = sum(job["processed"] for job in jobs)
    left = sum(job["total"] for job in jobs) + to_send - processed
    failed = sum(job["counts"]["failed"] for job in jobs)
    if current is None:
        words = f"{len(jobs)} of {parts} parts ended"
    elif processed and elapsed_s > 0:
        rate = processed / elapsed_s
        words = f"{rate:.1f} img/s, about {duration(left / rate)} left, part {jobs.index(current) + 1} of {parts}"
    else:
        words = f"{_state_words(current)}, part {jobs.index(current) + 1} of {parts}"
    return words + _failed_words(failed)


def duration(seconds: float) -> str:
    """45s, 12m 05s, 2h 35m."""
    s = max(0, round(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m {s % 60:02d}s"
    return f"{s // 3600}h {s % 3600 // 60:02d}m"


# A cancelled or failed import's batches under way when it ended still record what they add (it stays): its
# counts are read again until they have not changed for this long, for at most `SETTLE_MAX_S`.
SETTLE_QUIET_S = 2.0
SETTLE_MAX_S = 30.0


def _settled(client: GatewayClient, job: dict[str, Any], sleep: Callable[[float], None],
             read: Callable[[dict[str, Any]], None] = lambda job: None) -> dict[str, Any]:
    """The ended import once its counts stop changing (or as last read, should the gateway not answer); `read`
    is told each reading."""
    quiet = waited = 0.0
    while quiet < SETTLE_QUIET_S and waited < SETTLE_MAX_S:
        sleep(0.5)
        waited += 0.5
        try:
            latest = client.get_import(job["id"])
        except (httpx.TransportError, ApiError):
            return job
        quiet = quiet + 0.5 if latest["processed"] == job["processed"] else 0.0
        job = latest
        read(job)
    return job


def counts_text(counts: dict[str, int]) -> str:
    """An import's counts in words: added and failed always, the others where there are any."""
    words = {"added": "added", "duplicates": "duplicate", "skipped": "skipped (near-duplicate)",
             "replaced": "replaced", "failed": "failed"}
    return ", ".join(f"{counts[k]} {w}" for k, w in words.items() if counts.get(k) or k in ("added", "failed"))


def import_summary(album: str, job: dict[str, Any], counts: dict[str, int]) -> str:
    """What an ended import did, in a line: its counts, and how it ended unless done."""
    summary = counts_text(counts)
    if job["status"] == "done":
        return f"album {album}: {summary}"
    why = f": {job['error']}" if job.get("error") else ""
    return f"album {album}: {summary} (import {job['status']}{why}; what it added stays)"


def cmd_imports(args: argparse.Namespace, client: GatewayClient) -> int:
    jobs = client.list_imports(args.album)
    for job in jobs:
        print(import_line(job))
    if not jobs:
        print("no imports or re-embeds" + (f" of album {args.album}" if args.album else ""), file=sys.stderr)
    return 0


def import_line(job: dict[str, Any]) -> str:
    """A job of the listing in a line: what it is, how far, what it did, and why it ended so if it failed."""
    counts = job["counts"]
    if job["kind"] == "reembed":
        did = f"{counts['added']} re-embedded, {counts['failed']} left out"
    else:
        did = counts_text(counts)
    rate = f"  {job['rate']:.1f} img/s" if job["rate"] else ""
    why = f"  ({job['error']})" if job.get("error") else ""
    source = f"  {job['source']}" if job.get("source") else ""
    return (f"{job['id']}  {job['album']:<20s} {job['kind']:<8s} {job['status']:<9s} "
            f"{job['processed']:>7d}/{job['total']:<7d} {did}{rate}{source}{why}")


def cmd_import_results(args: argparse.Namespace, client: GatewayClient) -> int:
    """Every item's result (only the failures with --failed), one JSON object a line, in item order: read a page
    at a time, so an import of any size streams."""
    for result in client.import_results(args.id, failed_only=args.failed):
        print(json.dumps(result, ensure_ascii=False))
    return 0


def cmd_cancel_import(args: argparse.Namespace, client: GatewayClient) -> int:
    if (args.id is None) == (args.key is None) or (args.key is not None and not args.album):
        print("cancel-import needs an import's id, or --album and --key (the idempotency key its request was sent "
              "with)", file=sys.stderr)
        return 2
    if args.key is not None:
        found = client.cancel_import_by_key(args.album, args.key)
        if found is None:
            print(f"no import of key {args.key!r} in album {args.album} yet: one made with it is cancelled as it "
                  "starts")
            return 0
        job = found
    else:
        job = client.cancel_import(args.id)
    under_way = "; the batches under way when it was cancelled still add theirs (`imagesearch imports` shows the " \
        "final counts)" if job["status"] == "cancelled" and job["processed"] < job["total"] else ""
    print(f"import {job['id']}: {job['status']} after {job['processed']} of {job['total']} image(s){under_way}")
    return 0


def cmd_reembed(args: argparse.Namespace, client: GatewayClient) -> int:
    print(f"re-embedding album {args.album} from its stored images; it answers searches as it is meanwhile ...")
    job = follow_import(client, client.reembed(args.album, faces=args.faces, details=args.details), progress=True)
    for failure in client.import_results(job["id"], failed_only=True):
        error = failure.get("error") or {}
        print(f"left out {failure['id']}: {error.get('reason')}: {error.get('message')}")
    album = client.get_album(args.album) or {}
    print(f"album {args.album}: {job['counts']['added']} images re-embedded ({job['status']}), model "
          f"{album.get('model', '?')}" + (f": {job['error']}" if job.get("error") else ""))
    return 0 if job["status"] == "done" and not job["counts"]["failed"] else 1


def add_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    imports = sub.add_parser("imports", help="list imports, newest first")
    imports.add_argument("--album", help="only this album's")
    results = sub.add_parser("import-results", help="each item's result of an import (or re-embed), one JSON "
                                                    "object a line, in item order")
    results.add_argument("id", help="the import's id (`imagesearch imports` lists them)")
    results.add_argument("--failed", action="store_true", help="only the items that failed, with their reasons")
    cancel = sub.add_parser("cancel-import", help="stop an import (what it added stays)")
    cancel.add_argument("id", nargs="?", help="the import's id (`imagesearch imports` lists them)")
    cancel.add_argument("--album", help="with --key: the album the import was sent to")
    cancel.add_argument("--key", help="instead of an id: the Idempotency-Key its request was sent with (an upload "
                                      "stopped midway: the import it made, or makes later, is cancelled)")
    reembed = sub.add_parser("reembed", help="re-embed an album's images with the extractor's current model")
    reembed.add_argument("--album", required=True, help="the album's name")
    reembed.add_argument("--faces", action="store_true",
                         help="make the album index faces, finding those of the images it holds")
    reembed.add_argument("--details", action="store_true",
                         help="make the album keep a keypoint index, indexing the images it holds")
    imports.set_defaults(run=cmd_imports)
    results.set_defaults(run=cmd_import_results)
    cancel.set_defaults(run=cmd_cancel_import)
    reembed.set_defaults(run=cmd_reembed)
