"""The `imagesearch` command line: run the system, ingest images, search, manage albums.

    imagesearch up [--data DIR] [--port 8000]        run servers + services, load the demo album
    imagesearch ingest PATH|URL... --album A         add files, folders (recursively) or URLs
    imagesearch search IMAGE|URL --album A [--similar] [--where TEXT] [--region X,Y,W,H] [--proposals [N]]
                                                     the nearest images (and of each region proposed)
    imagesearch recognize IMAGE|URL --album A --label category          the label, or unknown
    imagesearch images --album A [--tag espresso] [--where TEXT]     list images (found by a word)
    imagesearch sql "SELECT ... ORDER BY feature <-> image('q.jpg')"   run one SQL statement
    imagesearch albums | create-album A --column price:float | delete-album A
    imagesearch reembed --album A                    re-embed an album with the current model
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import signal
import sys
import tarfile
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import IO, Any

import httpx

from services.client import ApiError, GatewayClient, Upload

DEFAULT_URL = os.environ.get("IMAGESEARCH_URL", "http://127.0.0.1:8000")
# `up` keeps its data in the project's folder, wherever it is run from (IMAGESEARCH_DATA: elsewhere).
DEFAULT_DATA = os.environ.get("IMAGESEARCH_DATA", str(Path(__file__).resolve().parent.parent / ".data"))
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".gif", ".bmp", ".tif", ".tiff"}
DEMO_ALBUM = "demo"
# How long `ingest` and `reembed` wait for an unreachable gateway before leaving the job to itself.
UNREACHABLE_PATIENCE_S = 600.0
# scikit-image's sample photos, with attributes to try filters on (e.g. {"kind": "photo"}).
DEMO_PHOTOS: dict[str, dict[str, Any]] = {
    "astronaut.png": {"kind": "photo", "subject": "person"},
    "chelsea.png": {"kind": "photo", "subject": "cat"},
    "coffee.png": {"kind": "photo", "subject": "food"},
    "rocket.jpg": {"kind": "photo", "subject": "vehicle"},
    "motorcycle_left.png": {"kind": "photo", "subject": "vehicle"},
    "motorcycle_right.png": {"kind": "photo", "subject": "vehicle"},
    "camera.png": {"kind": "photo", "subject": "person"},
    "horse.png": {"kind": "drawing", "subject": "animal"},
    "hubble_deep_field.jpg": {"kind": "photo", "subject": "space"},
    "moon.png": {"kind": "photo", "subject": "space"},
    "coins.png": {"kind": "photo", "subject": "object"},
    "page.png": {"kind": "scan", "subject": "text"},
    "text.png": {"kind": "photo", "subject": "text"},
    "brick.png": {"kind": "texture", "subject": "wall"},
    "grass.png": {"kind": "texture", "subject": "plant"},
    "gravel.png": {"kind": "texture", "subject": "ground"},
    "retina.jpg": {"kind": "microscopy", "subject": "eye"},
    "ihc.png": {"kind": "microscopy", "subject": "tissue"},
    "cell.png": {"kind": "microscopy", "subject": "cell"},
    "clock_motion.png": {"kind": "photo", "subject": "object"},
    "color.png": {"kind": "photo", "subject": "object"},
}


def iter_image_files(paths: Sequence[str]) -> Iterator[Path]:
    """Files named directly, and image files found under folders (sorted, recursively)."""
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            yield from sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
        else:
            yield path


ARCHIVE_SUFFIXES = (".zip", ".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tar.xz")


def pack_images(paths: Sequence[Path], out: IO[bytes]) -> tuple[int, list[str]]:
    """Writes a tar (uncompressed: images are) of the image files under the folders and of the files
    given; members are named by their path under their folder (a file given alone: its name), which is
    what a manifest's `file` column names. Returns (how many, the files that could not be read)."""
    unreadable: list[str] = []
    count = 0
    with tarfile.open(fileobj=out, mode="w|") as tar:
        for path in paths:
            root = path if path.is_dir() else path.parent
            for file in iter_image_files([str(path)]):
                try:
                    tar.add(str(file), arcname=file.relative_to(root).as_posix(), recursive=False)
                    count += 1
                except OSError as exc:
                    unreadable.append(f"{file}: {exc}")
    return count, unreadable


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
    while True:
        try:
            return client.start_import(album, idempotency_key=key, **fields)
        except (httpx.TransportError, ApiError) as exc:
            patience.wait(exc, "the import was not queued: run the same command again")
            if not told:
                print(f"the gateway did not take the import ({type(exc).__name__}); sending it again when it "
                      "answers", file=sys.stderr)
                told = True


def follow_import(client: GatewayClient, job: dict[str, Any], progress: bool = True,
                  patience_s: float = UNREACHABLE_PATIENCE_S, sleep: Callable[[float], None] = time.sleep
                  ) -> dict[str, Any]:
    """Waits for an import to finish, with a progress bar (rate and time left from the gateway). A gateway
    that cannot be reached (restarting, its host rebooting) is waited for up to `patience_s` at a time: the
    import goes on by itself meanwhile (the job lives in Redis, any gateway's workers carry it on)."""
    from tqdm import tqdm

    patience = Patience(client, patience_s, sleep)
    doing = "re-embed" if job.get("kind") == "reembed" else "import"
    # The rate and time left are the gateway's (of the whole job, whoever started it), not tqdm's of the polls.
    with tqdm(total=job["total"], unit="img", disable=not progress, desc=f"{doing} {job['album']}",
              bar_format="{l_bar}{bar}| {n_fmt}/{total_fmt} [{elapsed}{postfix}]") as bar:
        while True:
            try:
                job = client.get_import(job["id"])
            except (httpx.TransportError, ApiError) as exc:
                bar.set_postfix_str(f"gateway unreachable ({type(exc).__name__}), waiting: the {doing} goes on")
                patience.wait(exc, f"{doing} {job['id']} goes on by itself: `imagesearch imports --album "
                                   f"{job['album']}` shows it")
                continue
            patience.reached()
            bar.update(job["processed"] - bar.n)
            eta = f"{job['eta_s']:.0f}s" if job.get("eta_s") is not None else "-"
            bar.set_postfix_str(f"{job['rate']:.1f} img/s, left {eta}, {job['counts']['failed']} failed")
            if job["status"] in ("done", "failed", "cancelled"):
                return job if job["status"] == "done" else _settled(client, job, sleep)
            sleep(0.5)


# A cancelled or failed import's batches under way when it ended still record what they add (it stays): its
# counts are read again until they have not changed for this long, for at most `SETTLE_MAX_S`.
SETTLE_QUIET_S = 2.0
SETTLE_MAX_S = 30.0


def _settled(client: GatewayClient, job: dict[str, Any], sleep: Callable[[float], None]) -> dict[str, Any]:
    """The ended import once its counts stop changing (or as last read, should the gateway not answer)."""
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
    return job


def cmd_ingest(args: argparse.Namespace, client: GatewayClient) -> int:
    urls = [p for p in args.paths if p.startswith(("http://", "https://"))]
    local = [Path(p) for p in args.paths if p not in urls]
    manifest, common = _attributes_source(args.attributes)
    # Checked before anything is sent or made: a mistyped path is not an empty import into a new album.
    missing = [str(p) for p in [*local, *([manifest] if manifest else [])] if not p.exists()]
    if missing:
        raise FileNotFoundError(f"no such file or folder: {', '.join(missing)} (paths are read from "
                                f"{Path.cwd()})")
    with tempfile.TemporaryDirectory(prefix="imagesearch-") as work:
        archive: Path | None = None
        unreadable: list[str] = []
        if len(local) == 1 and local[0].is_file() and local[0].name.lower().endswith(ARCHIVE_SUFFIXES):
            archive = local[0]
        elif local:
            archive = Path(work) / "images.tar"
            with open(archive, "wb") as out:
                packed, unreadable = pack_images(local, out)
            if not packed and not urls:
                for problem in unreadable:
                    print(f"failed {problem}", file=sys.stderr)
                raise ValueError(f"no image file ({' '.join(sorted(IMAGE_SUFFIXES))}) in {', '.join(map(str, local))}")
            print(f"sending {packed} image file(s) ...", file=sys.stderr)
        if client.get_album(args.album) is None:
            client.create_album(args.album)
            print(f"created album {args.album}", file=sys.stderr)
        job = start_import(client, args.album, archive=archive, urls=urls, manifest=manifest, attributes=common,
                           on_duplicate=args.on_duplicate)
    job = follow_import(client, job, progress=not args.quiet)
    for failure in client.import_results(job["id"], failed_only=True):
        error = failure.get("error") or {}
        print(f"failed {failure['name']}: {error.get('reason')}: {error.get('message')}")
    for problem in unreadable:
        print(f"failed {problem}")
    counts = {**job["counts"], "failed": job["counts"]["failed"] + len(unreadable)}
    print(import_summary(args.album, job, counts))
    return 1 if counts["failed"] or job["status"] != "done" else 0


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


def _attributes_source(given: Sequence[str] | None) -> tuple[Path | None, dict[str, Any] | None]:
    """(a manifest to send, attributes for every image) from --attributes, given once or twice: a JSON object,
    and/or the path of a CSV/JSONL manifest with a row per file (the gateway reads it by the album's column
    types; a row's value wins over the object's)."""
    manifest: Path | None = None
    common: dict[str, Any] | None = None
    for value in given or []:
        if value.lstrip().startswith("{"):
            parsed = json.loads(value)
            if not isinstance(parsed, dict) or common is not None:
                raise ValueError("--attributes takes one JSON object and/or one .csv/.jsonl manifest")
            common = parsed
        elif manifest is None:
            manifest = Path(value)
        else:
            raise ValueError("--attributes takes one JSON object and/or one .csv/.jsonl manifest")
    return manifest, common


def cmd_export(args: argparse.Namespace, client: GatewayClient) -> int:
    """Writes every image's metadata (id, name, attributes, creation time, content hash) as JSON lines,
    walking the album by id pages (any size of album)."""
    out = open(args.out, "w", encoding="utf-8") if args.out else sys.stdout  # noqa: SIM115 (stdout is not ours to close)
    count, after = 0, ""
    try:
        while True:
            page = client.list_images(args.album, limit=1000, after=after, where=args.where)
            for image in page["images"]:
                out.write(json.dumps({k: image[k] for k in ("id", "name", "attributes", "created_at_ms",
                                                              "content_hash")}, ensure_ascii=False) + "\n")
            count += len(page["images"])
            if page.get("next_after") is None:
                break
            after = page["next_after"]
    finally:
        if args.out:
            out.close()
    print(f"exported {count} image(s) of album {args.album}", file=sys.stderr)
    return 0


def cmd_imports(args: argparse.Namespace, client: GatewayClient) -> int:
    for job in client.list_imports(args.album):
        print(import_line(job))
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
    return (f"{job['id']}  {job['album']:<20s} {job['kind']:<8s} {job['status']:<9s} "
            f"{job['processed']:>7d}/{job['total']:<7d} {did}{rate}{why}")


def cmd_import_results(args: argparse.Namespace, client: GatewayClient) -> int:
    """Every item's result (only the failures with --failed), one JSON object a line, in item order: read a page
    at a time, so an import of any size streams."""
    for result in client.import_results(args.id, failed_only=args.failed):
        print(json.dumps(result, ensure_ascii=False))
    return 0


def cmd_cancel_import(args: argparse.Namespace, client: GatewayClient) -> int:
    job = client.cancel_import(args.id)
    print(f"import {job['id']}: {job['status']} after {job['processed']} of {job['total']} image(s)")
    return 0


def _query_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("query", nargs="?", help="an image file, or an http(s) URL of one")
    parser.add_argument("--image-id", help="instead, an image of the album (its id: `images`, `search` list them)")


def query_of(args: argparse.Namespace) -> dict[str, Any]:
    """The query image of a search, recognise or faces command: a file's bytes, a URL, or an album image's id."""
    if bool(args.query) == bool(args.image_id):
        raise ValueError("give a query image (a file or URL) or --image-id, one of them")
    if args.image_id:
        return {"image_id": args.image_id}
    if args.query.startswith(("http://", "https://")):
        return {"url": args.query}
    return {"image": Path(args.query).read_bytes()}


def cmd_search(args: argparse.Namespace, client: GatewayClient) -> int:
    filter_doc = json.loads(args.filter) if args.filter else None
    mode = "similar" if args.similar else "copy"
    options: dict[str, Any] = {"top_k": args.top_k, "filter": filter_doc, "mode": mode, "where": args.where,
                               "max_distance": args.max_distance, "region": args.region,
                               "proposals": args.proposals or 0}
    answer = client.search(args.album, **query_of(args), **options)
    print(f"{len(answer['results'])} results in {answer['took_ms']:.1f} ms "
          f"(distance: {answer['metric']}; then matching points where verified)")
    _print_hits(answer["results"], client)
    for n, proposed in enumerate(answer.get("regions", []), 1):
        box = proposed["region"]
        print(f"\nregion {n}: --region {box['x']},{box['y']},{box['width']},{box['height']} "
              f"(score {proposed['score']:.2f}): {len(proposed['results'])} results")
        _print_hits(proposed["results"], client)
    return 0


def _print_hits(hits: list[dict[str, Any]], client: GatewayClient) -> None:
    for rank, hit in enumerate(hits, 1):
        attrs = json.dumps(hit.get("attributes") or {})
        matches = "" if hit.get("matches") is None else f"{hit['matches']:4d}"
        link = f"{client.base_url}{hit['url']}"
        print(f"{rank:3d}  {hit['distance']:.4f} {matches:>4s}  {hit['name']:<32s} {link}  {attrs}")


def cmd_faces(args: argparse.Namespace, client: GatewayClient) -> int:
    """The album's images where the person of the query photo's face appears, nearest first."""
    options: dict[str, Any] = {"top_k": args.top_k, "max_distance": args.max_distance, "face": args.face}
    answer = client.search_faces(args.album, **query_of(args), **options)
    if args.json:
        print(json.dumps(answer))
        return 0
    face = answer["faces"][answer["face"]]
    print(f"{len(answer['faces'])} face(s) in the query; searched face {answer['face']} at "
          f"{face['x']},{face['y']} {face['width']}x{face['height']}: {len(answer['results'])} images of that person "
          f"(distance <= {answer['max_distance']}) in {answer['took_ms']:.1f} ms")
    for rank, hit in enumerate(answer["results"], 1):
        box = hit["face"]
        print(f"{rank:3d}  {hit['distance']:.4f}  {hit['name']:<32s} face {box['x']},{box['y']} "
              f"{box['width']}x{box['height']}  {client.base_url}{hit['url']}")
    return 0


def cmd_recognize(args: argparse.Namespace, client: GatewayClient) -> int:
    options: dict[str, Any] = {"evidence": args.evidence, "threshold": args.threshold, "faces": args.faces}
    answer = client.recognize(args.album, args.label, **query_of(args), **options)
    top = answer["candidates"][0] if answer["candidates"] else None
    if answer["unknown"]:
        nearest = f" (nearest label {top['label']!r}, confidence {top['confidence']:.2f})" if top else ""
        print(f"unknown: the photo is of none of album {args.album}'s {args.label} labels "
              f"(known {answer['known']:.2f} < threshold {answer['threshold']:.2f}){nearest}")
    else:
        print(f"{answer['label']}  confidence {answer['confidence']:.2f}  "
              f"(known {answer['known']:.2f}, threshold {answer['threshold']:.2f})")
    for other in answer["candidates"][1:]:
        print(f"  or {other['label']}  confidence {other['confidence']:.2f}")
    calibration = answer["calibration"]
    if calibration["top1"] is not None:
        print(f"calibrated on {calibration['images']} labelled images, {calibration['labels']} labels "
              f"(leave-one-out top-1 {calibration['top1']:.2f})")
    for rank, e in enumerate(answer["evidence"], 1):
        print(f"{rank:3d}  {e['distance']:.4f}  {', '.join(e['labels']):<24s} {e['name']:<32s} "
              f"{client.base_url}{e['url']}")
    return 0


def cmd_images(args: argparse.Namespace, client: GatewayClient) -> int:
    """Lists an album's images (those tagged with a word's labels, with --tag), a line each: id, name
    and its tags with their probabilities."""
    page = client.list_images(args.album, limit=args.limit, where=args.where, tag=args.tag, order_by=args.order_by,
                              desc=args.desc, after=args.after or "", offset=args.offset)
    for image in page["images"]:
        attributes = image.get("attributes") or {}
        tags, scores = attributes.get("tags") or [], attributes.get("tag_scores") or []
        shown = ", ".join(f"{t} {s:.2f}" if isinstance(s, int | float) else str(t)
                          for t, s in zip(tags, [*scores, *[None] * len(tags)], strict=False))
        print(f"{image['id']}  {image['name']:<32s}  {shown}")
    if not page["images"]:
        more = " more" if args.after or args.offset else ""  # past a last page that was full
        print(f"no{more} images{f' tagged {args.tag!r}' if args.tag else ''} in album {args.album}", file=sys.stderr)
    elif page.get("next_after"):
        print(f"more: --after {page['next_after']}", file=sys.stderr)
    elif args.order_by and len(page["images"]) == args.limit:
        print(f"more: --offset {args.offset + args.limit}", file=sys.stderr)
    return 0


def cmd_duplicates(args: argparse.Namespace, client: GatewayClient) -> int:
    """The album's groups of near-duplicates, the largest first: a line a group, then a line an image (id,
    name, link); with --json the gateway's answer."""
    found = client.duplicates(args.album, args.max_distance)
    if args.json:
        print(json.dumps(found, indent=2, ensure_ascii=False))
        return 0
    for number, group in enumerate(found["groups"], 1):
        print(f"group {number}: {len(group['images'])} images, each within {group['distance']:.4f} of another")
        for image in group["images"]:
            print(f"  {image['id']}  {image['name']:<40s}  {client.base_url}{image['url']}")
    in_groups = sum(len(g["images"]) for g in found["groups"])
    print(f"album {args.album}: {len(found['groups'])} group(s) of near-duplicates ({in_groups} images) within "
          f"distance {found['max_distance']}", file=sys.stderr)
    return 0


def cmd_albums(args: argparse.Namespace, client: GatewayClient) -> int:
    for album in client.list_albums():
        columns = ", ".join(f"{c['name']} {c['type']}" for c in album.get("columns", []))
        print(f"{album['name']:<24s} {album['image_count']:>8d} images  model {album['model']}"
              + (f"  columns: {columns}" if columns else "") + ("  faces" if album.get("faces") else "")
              + ("  details" if album.get("details") else ""))
    return 0


def cmd_create_album(args: argparse.Namespace, client: GatewayClient) -> int:
    columns = []
    for spec in args.column or []:
        name, _, kind = spec.partition(":")
        columns.append({"name": name.strip(), "type": kind.strip() or "string"})
    album = client.create_album(args.album, columns, faces=args.faces, details=args.details)
    keeps = [what for what, on in (("faces", album.get("faces")), ("a keypoint index for details",
                                                                    album.get("details"))) if on]
    print(f"created album {album['name']}" + (f" with columns {', '.join(c['name'] for c in columns)}" if columns
                                              else "") + (f" (indexing {' and '.join(keeps)})" if keeps else ""))
    return 0


# A string literal of a SQL statement: 'it''s' (quotes doubled inside).
_SQL_STRING = re.compile(r"'((?:[^']|'')*)'")


def named_files(statement: str, given: Sequence[str]) -> dict[str, bytes]:
    """The images a statement names as local files: `--file NAME=PATH` given, and every string literal of
    the statement that is the path of a file here (uploaded under that name)."""
    files: dict[str, bytes] = {}
    for spec in given:
        name, _, path = spec.partition("=")
        files[name] = Path(path or name).read_bytes()
    for match in _SQL_STRING.finditer(statement):
        literal = match.group(1).replace("''", "'")
        if literal not in files and not literal.startswith(("http://", "https://")) and Path(literal).is_file():
            files[literal] = Path(literal).read_bytes()
    return files


def cmd_sql(args: argparse.Namespace, client: GatewayClient) -> int:
    answer = client.sql(args.statement, named_files(args.statement, args.file or []), args.delete_all)
    if args.json:
        print(json.dumps(answer, indent=2))
        return 0
    print_sql_result(answer, client.base_url)
    return 0


# The widest a table's cell is printed (--json has every value whole).
CELL_WIDTH = 48


def fit(text: str, width: int) -> str:
    """The text, cut in the middle where it is wider: names that share a long beginning (a folder's path) keep
    the end that tells them apart."""
    if len(text) <= width:
        return text
    head = (width - 1) // 2
    return f"{text[:head]}…{text[len(text) - (width - 1 - head):]}"


def print_sql_result(answer: dict[str, Any], base_url: str) -> None:
    """A statement's result as a table (SELECT), or what it changed."""
    columns, rows = answer.get("columns") or [], answer.get("rows") or []
    if columns:
        cells = [[_cell_text(v) for v in row["values"]] for row in rows]
        widths = [min(CELL_WIDTH, max([len(c), *(len(r[i]) for r in cells)])) for i, c in enumerate(columns)]
        print("  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True)))
        print("  ".join("-" * w for w in widths))
        for row, cell in zip(rows, cells, strict=True):
            link = f"  {base_url}{row['image']['url']}" if row.get("image") else ""
            print("  ".join(fit(v, w).ljust(w) for v, w in zip(cell, widths, strict=True)) + link)
    summary = f"{answer['statement']} {answer['album']}: "
    summary += f"{answer['affected']} affected" if answer.get("affected") is not None else f"{len(rows)} row(s)"
    print(f"{summary} in {answer['took_ms']:.1f} ms")


def _cell_text(value: Any) -> str:
    if value is None:
        return "NULL"
    if isinstance(value, float):
        return f"{value:.4f}"
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)


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


def cmd_delete_album(args: argparse.Namespace, client: GatewayClient) -> int:
    client.delete_album(args.album)
    print(f"deleted album {args.album}")
    return 0


def load_demo_album(client: GatewayClient) -> None:
    """Adds scikit-image's sample photos to the `demo` album unless it already holds them."""
    import skimage

    album = client.ensure_album(DEMO_ALBUM)
    data = Path(skimage.__file__).parent / "data"
    photos = [data / name for name in DEMO_PHOTOS if (data / name).exists()]
    if album.get("image_count", 0) >= len(photos):
        print(f"album {DEMO_ALBUM} is there with {album['image_count']} images")
        return
    uploads = [Upload.from_path(p, DEMO_PHOTOS[p.name]) for p in photos]
    answer = client.add_images(DEMO_ALBUM, uploads)
    print(f"album {DEMO_ALBUM}: {answer['added']} added, {answer['duplicates']} already there")


def cmd_up(args: argparse.Namespace) -> int:
    from services.devstack import PartKeepsFailing, Ports, Stack, Supervisor, port_open

    ports = Ports(http=args.port)
    busy = [f"{name}={port}" for name, port in vars(ports).items() if port_open(port)]
    if busy:
        print(f"ports already in use: {', '.join(busy)} (is the system already running?)", file=sys.stderr)
        return 1
    stack = Stack(Path(args.data), ports)
    stop = threading.Event()

    def on_term(*_: object) -> None:
        stop.set()
        raise KeyboardInterrupt  # also out of a start or restart under way (Milvus can take minutes)

    signal.signal(signal.SIGTERM, on_term)
    try:
        print(f"starting Milvus, S3, Redis and the services (data in {stack.data_dir}, logs in {stack.logs}) ...")
        stack.start()
        client = GatewayClient(stack.http_url)
        if not args.no_demo:
            load_demo_album(client)
        print(f"\nready: {stack.http_url}/   (API docs: {stack.http_url}/docs, gRPC API on 127.0.0.1:{ports.gateway})")
        print(f"try:   curl -F file=@photo.jpg '{stack.http_url}/v1/albums/{DEMO_ALBUM}/search?top_k=5'")
        print("Ctrl-C stops everything; a part that stops by itself is started again")
        supervisor = Supervisor(stack)
        while not stop.is_set():
            try:
                supervisor.check(announce=lambda line: print(line, file=sys.stderr))
            except PartKeepsFailing as exc:
                print(f"{exc}; stopping", file=sys.stderr)
                return 1
            stop.wait(1.0)
    except KeyboardInterrupt:
        pass
    finally:
        print("\nstopping ...")
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        stack.stop()
        print("stopped")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="imagesearch", description="Search by image.")
    parser.add_argument("--url", default=DEFAULT_URL, help="the gateway's HTTP address (env IMAGESEARCH_URL)")
    sub = parser.add_subparsers(dest="command", required=True)
    up = sub.add_parser("up", help="run the whole system on this machine")
    up.add_argument("--data", default=DEFAULT_DATA, help="where data is kept (env IMAGESEARCH_DATA)")
    up.add_argument("--port", type=int, default=8000, help="HTTP port of the API and web page")
    up.add_argument("--no-demo", action="store_true", help="do not load the demo album")
    ingest = sub.add_parser("ingest", help="import image files, folders (recursively), zip/tar archives or URLs into "
                                           "an album, in the background, with a progress bar")
    ingest.add_argument("paths", nargs="+")
    ingest.add_argument("--album", required=True)
    ingest.add_argument("--attributes", action="append",
                        help="a JSON object given to every image, or a .csv/.jsonl manifest with a row per file (a "
                             "'file' column, then the attributes); both: give it twice (a row's value wins)")
    ingest.add_argument("--on-duplicate", choices=["keep", "skip", "replace"], default="keep",
                        help="an image within the near-duplicate distance of one in the album: keep it too, skip "
                             "it, or replace the old one")
    ingest.add_argument("--quiet", action="store_true", help="no progress bar")
    export = sub.add_parser("export", help="write every image's metadata as JSON lines (any size of album)")
    export.add_argument("--album", required=True)
    export.add_argument("--out", help="a file to write (default: standard output)")
    export.add_argument("--where", help="only the images matching this filter")
    listing = sub.add_parser("images", help="list an album's images with their tags; --tag finds them by a word")
    listing.add_argument("--album", required=True)
    listing.add_argument("--tag", help="a word: images whose ImageNet labels have it among their WordNet lemmas "
                                       "(e.g. espresso, 'tabby cat'), or a tag set by hand")
    listing.add_argument("--where", help="only the images matching this filter too")
    listing.add_argument("--limit", type=int, default=50, help="at most this many (1 to 1000)")
    listing.add_argument("--order-by", help="a column (or name, created_at) to order by; default: by id")
    listing.add_argument("--desc", action="store_true", help="with --order-by: the largest first")
    listing.add_argument("--after", help="by id: the page after this id (the `more:` line of the page before)")
    listing.add_argument("--offset", type=int, default=0, help="with --order-by: skip this many")
    dupes = sub.add_parser("duplicates", help="groups of near-duplicate images of an album (the same photo resaved, "
                                              "resized, lightly edited)")
    dupes.add_argument("--album", required=True)
    dupes.add_argument("--max-distance", type=float, help="at most this far apart (cosine distance; default: the "
                                                          "gateway's near-duplicate distance, the one imports use)")
    dupes.add_argument("--json", action="store_true", help="the answer as JSON")
    imports = sub.add_parser("imports", help="list imports, newest first")
    imports.add_argument("--album")
    results = sub.add_parser("import-results", help="each item's result of an import (or re-embed), one JSON "
                                                    "object a line, in item order")
    results.add_argument("id")
    results.add_argument("--failed", action="store_true", help="only the items that failed, with their reasons")
    cancel = sub.add_parser("cancel-import", help="stop an import (what it added stays)")
    cancel.add_argument("id")
    search = sub.add_parser("search", help="find an album's images nearest to an image file or URL")
    _query_arguments(search)
    search.add_argument("--album", required=True)
    search.add_argument("--top-k", type=int, default=5)
    search.add_argument("--filter", help='a JSON filter, e.g. \'{"kind": "photo"}\'')
    search.add_argument("--where", help="a text filter, e.g. \"price < 50 and colour in ('red', 'blue')\"")
    search.add_argument("--max-distance", type=float, help="no image farther than this (cosine distance)")
    search.add_argument("--similar", action="store_true",
                        help="find images like the query rather than copies of it (search mode 'similar')")
    search.add_argument("--region", metavar="X,Y,W,H",
                        help="search only this box of the query image, in its pixels (after EXIF orientation)")
    search.add_argument("--proposals", type=int, nargs="?", const=3, metavar="N",
                        help="also propose N (default 3, at most 5) regions of the query worth searching (objects "
                             "or salient parts) and show each one's results")
    recognize = sub.add_parser("recognize", help="the label an image file or URL most likely has among an album's "
                                                 "labelled images, or unknown")
    _query_arguments(recognize)
    recognize.add_argument("--album", required=True)
    recognize.add_argument("--label", required=True, help="the label attribute, e.g. category")
    recognize.add_argument("--evidence", type=int, default=5, help="nearest labelled images to show")
    recognize.add_argument("--threshold", type=float,
                           help="answer unknown below this known probability (default: the album's own)")
    recognize.add_argument("--faces", action="store_true",
                           help="by the photo's largest face (an album created with --faces; e.g. --label person)")
    faces = sub.add_parser("faces", help="find the images of an album (created with --faces) where the person of a "
                                         "photo's face appears")
    _query_arguments(faces)
    faces.add_argument("--album", required=True)
    faces.add_argument("--top-k", type=int, default=10)
    faces.add_argument("--max-distance", type=float, help="faces farther than this are other people (cosine "
                                                          "distance; default: the gateway's)")
    faces.add_argument("--face", type=int, default=0, help="which face of the photo: 0 the largest (default), 1 ...")
    faces.add_argument("--json", action="store_true", help="print the answer as JSON")
    sub.add_parser("albums", help="list albums")
    create = sub.add_parser("create-album", help="create an album, with declared (typed) columns")
    create.add_argument("album")
    create.add_argument("--faces", action="store_true", help="also find the faces of every image added (for `faces`)")
    create.add_argument("--details", action="store_true",
                        help="also keep a keypoint index of every image added, so that a close-up of a detail finds "
                             "the image it was cut from (~200 KB per image: for albums up to some 100,000 images)")
    create.add_argument("--column", action="append", metavar="NAME:TYPE",
                        help="a declared column; TYPE is string, int, float, bool, timestamp or string_list")
    sql = sub.add_parser("sql", help="run one SQL statement (CREATE TABLE, INSERT, SELECT, UPDATE, DELETE, DROP)")
    sql.add_argument("statement")
    sql.add_argument("--file", action="append", metavar="NAME=PATH",
                     help="an image the statement names as image('NAME'); local paths in the statement are sent "
                          "by themselves")
    sql.add_argument("--delete-all", action="store_true", help="let a DELETE without WHERE delete every image")
    sql.add_argument("--json", action="store_true", help="print the answer as JSON")
    reembed = sub.add_parser("reembed", help="re-embed an album's images with the extractor's current model")
    reembed.add_argument("--album", required=True)
    reembed.add_argument("--faces", action="store_true",
                         help="make the album index faces, finding those of the images it holds")
    reembed.add_argument("--details", action="store_true",
                         help="make the album keep a keypoint index, indexing the images it holds")
    delete = sub.add_parser("delete-album", help="delete an album and its images")
    delete.add_argument("album")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    if args.command == "up":
        return cmd_up(args)
    handlers = {"ingest": cmd_ingest, "search": cmd_search, "albums": cmd_albums, "delete-album": cmd_delete_album,
                "reembed": cmd_reembed, "create-album": cmd_create_album, "sql": cmd_sql, "imports": cmd_imports,
                "cancel-import": cmd_cancel_import, "import-results": cmd_import_results, "export": cmd_export,
                "recognize": cmd_recognize, "images": cmd_images, "faces": cmd_faces, "duplicates": cmd_duplicates}
    client = GatewayClient(args.url)
    try:
        return handlers[args.command](args, client)
    except httpx.TimeoutException as exc:
        print(f"error: the gateway at {args.url} did not answer in time ({type(exc).__name__}); what was asked may "
              "still be under way (an import: `imagesearch imports` lists it)", file=sys.stderr)
        return 2
    except httpx.TransportError as exc:
        print(f"error: cannot reach the gateway at {args.url} ({type(exc).__name__}: {exc}); is it running? "
              "(`imagesearch up` starts it; --url or IMAGESEARCH_URL point elsewhere)", file=sys.stderr)
        return 2
    except (ApiError, GatewayGone, OSError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    finally:
        client.close()


if __name__ == "__main__":
    sys.exit(main())
