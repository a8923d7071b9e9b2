"""`imagesearch ingest`: files, folders (packed as a tar), archives, URLs and a manifest sent as an import job."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import tempfile
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import httpx

from services.cli.jobs import GatewayGone, JobsProgress, import_summary, make_album, start_import
from services.cli.packing import ARCHIVE_SUFFIXES, IMAGE_SUFFIXES, image_entries, pack_entries
from services.client import ApiError, GatewayClient, shown_name
from services.common.errors import InvalidAttributes
from services.common.manifest import cut_manifest, guess_column_types, json_column_types
from services.common.schema import MAX_COLUMNS

# An ingest of many files is sent in parts, an import job each: a gateway that stops mid-upload costs that part's
# upload again, not the whole folder's, neither side holds a copy of the whole folder, and each part is sent while
# the one before it is embedded.
UPLOAD_IMAGES = 1000
UPLOAD_BYTES = 512 * 1024 * 1024


def cmd_ingest(args: argparse.Namespace, client: GatewayClient) -> int:
    urls = [p for p in args.paths if p.startswith(("http://", "https://"))]
    local = [Path(p) for p in args.paths if p not in urls]
    manifest, common = _attributes_source(args.attributes)
    # Checked before anything is sent or made: a mistyped path is not an empty import into a new album.
    missing = [str(p) for p in [*local, *([manifest] if manifest else [])] if not p.exists()]
    if missing:
        raise FileNotFoundError(f"no such file or folder: {', '.join(missing)} (paths are read from "
                                f"{Path.cwd()})")
    if args.images_per_upload < 1:
        raise ValueError("--images-per-upload is 1 or more")
    others = [str(p) for p in local if p.is_file() and p.suffix.lower() not in IMAGE_SUFFIXES
              and not p.name.lower().endswith(ARCHIVE_SUFFIXES)]
    if others:  # named, so not left out as a folder's other files are: said before anything is sent
        raise ValueError(f"not an image file ({' '.join(sorted(IMAGE_SUFFIXES))}) nor an archive "
                         f"({' '.join(ARCHIVE_SUFFIXES)}): {', '.join(others)}")
    given = local[0] if len(local) == 1 and local[0].is_file() and local[0].name.lower().endswith(
        ARCHIVE_SUFFIXES) else None
    entries = image_entries(local) if local and given is None else []
    parts = upload_parts(entries, args.images_per_upload, UPLOAD_BYTES) or [[]]
    with tempfile.TemporaryDirectory(prefix="imagesearch-") as work_dir:
        work = Path(work_dir)
        unreadable: list[str] = []
        first = given or (_pack(parts[0], work / "part-1.tar", unreadable) if parts[0] else None)
        if given is None and local and len(parts) == 1 and len(unreadable) == len(entries) and not urls:
            for problem in unreadable:
                print(f"failed {problem}", file=sys.stderr)
            raise ValueError(f"no image file ({' '.join(sorted(IMAGE_SUFFIXES))}) in {', '.join(map(str, local))}")
        if entries:
            print(f"sending {len(entries) - (len(unreadable) if len(parts) == 1 else 0)} image file(s)" + (
                f" in {len(parts)} parts of up to {args.images_per_upload}, an import each" if len(parts) > 1 else "")
                + " ...", file=sys.stderr)
        _make_album(client, args.album, manifest, common)
        manifests = _split_manifest(client, args.album, manifest, parts, work) if manifest and len(parts) > 1 \
            else [manifest] * len(parts)
        name = _listed_as(local, first)

        def send(k: int) -> dict[str, Any]:
            # The part before's archive goes now, not once its import is taken: between the gateway's answer and
            # the progress counting the import, Ctrl-C would find it uncounted (said not to go on).
            if k > 0 and given is None:
                (work / f"part-{k}.tar").unlink(missing_ok=True)
            archive = first if k == 0 else _pack(parts[k], work / f"part-{k + 1}.tar", unreadable)
            return start_import(client, args.album, archive=archive, urls=urls if k == 0 else [],
                                manifest=manifests[k], attributes=common, on_duplicate=args.on_duplicate,
                                archive_name=f"{name} (part {k + 1} of {len(parts)})" if len(parts) > 1 else name)

        with JobsProgress(client, f"import {args.album}", not args.quiet, parts=len(parts)) as jobs:
            try:
                note = _send_in_turn(client, jobs, [len(part) for part in parts], send)
            except KeyboardInterrupt:
                jobs.bar.close()
                print(interrupted(args.album, len(jobs.jobs), len(parts)), file=sys.stderr)
                return 130
    return _report(client, args.album, jobs.jobs, note, unreadable)


def _send_in_turn(client: GatewayClient, jobs: JobsProgress, sizes: Sequence[int],
                  send: Callable[[int], dict[str, Any]]) -> str:
    """Sends the parts (their sizes in images) one after another, each once the one before the last is done (so
    one is embedded while the next is staged), and follows them to their end; returns what was not sent and why
    ('' when all were). A part cancelled (the page, `cancel-import`) cancels the part sent after it and no more
    are sent; a failed one stops the sending; a part the gateway does not take (after the first: the first's
    error is the command's) leaves those sent to finish."""
    note = ""
    for k in range(len(sizes)):
        jobs.to_send = sum(sizes[k + 1:])
        jobs.sending(k + 1)
        try:
            jobs.add(send(k))
        except (ApiError, GatewayGone, httpx.HTTPError) as exc:
            if k == 0:
                raise
            note = f"{_parts_text(k + 1, len(sizes))} not sent: {exc}"
            break
        jobs.wait(running_at_most=1)
        ended = next((job for job in jobs.jobs if job["status"] in ("failed", "cancelled")), None)
        if ended is not None:
            if ended["status"] == "cancelled":
                for job in jobs.running:  # the part sent after it: the user stopped the ingest
                    with contextlib.suppress(ApiError, httpx.HTTPError):  # it then runs on: the summary says so
                        client.cancel_import(job["id"])
            note = f"{_parts_text(k + 2, len(sizes))} not sent" if k + 1 < len(sizes) else ""
            break
    jobs.to_send = 0
    jobs.wait()
    return note


def interrupted(album: str, sent: int, parts: int) -> str:
    """What an ingest stopped by Ctrl-C says, `sent` of its `parts` taken by the gateway (a part stopped during its
    upload is not: its import is cancelled by its key, services.cli.jobs.start_import)."""
    going = f"the {sent} import(s) sent go on by themselves (`imagesearch imports --album {album}`)" if sent \
        else "no import goes on"
    unsent = f"; {_parts_text(sent + 1, parts)} not sent" if parts > 1 and sent < parts else ""
    return f"interrupted: {going}{unsent}"


def _parts_text(first: int, parts: int) -> str:
    """Parts `first` to the last: "part 3 of 3", "parts 3-5 of 5"."""
    return f"part {first} of {parts}" if first == parts else f"parts {first}-{parts} of {parts}"


def _report(client: GatewayClient, album: str, jobs: Sequence[dict[str, Any]], note: str, unreadable: Sequence[str]
            ) -> int:
    """Prints each failure of the ingest's imports and a summary line (with `note`, what was not sent); the exit
    status (1: something failed, or the ingest ended before all was done)."""
    for job in jobs:
        for failure in client.import_results(job["id"], failed_only=True):
            error = failure.get("error") or {}
            file = failure.get("file") or ""
            # named by its manifest: its file beside
            shown = failure["name"] + (f" ({file})" if file and file != failure["name"] else "")
            print(f"failed {shown}: {error.get('reason')}: {error.get('message')}")
    for problem in unreadable:
        print(f"failed {problem}")
    counts = {key: sum(job["counts"].get(key, 0) for job in jobs) for key in jobs[0]["counts"]}
    counts["failed"] += len(unreadable)
    ended = next((job for job in jobs if job["status"] != "done"), jobs[-1])
    if note:
        ended = {**ended, "status": "incomplete" if ended["status"] == "done" else ended["status"],
                 "error": "; ".join(filter(None, [ended.get("error"), note]))}
    print(import_summary(album, ended, counts))
    return 1 if counts["failed"] or ended["status"] != "done" else 0


def upload_parts(entries: Sequence[tuple[Path, str]], most_images: int, most_bytes: int
                 ) -> list[list[tuple[Path, str]]]:
    """The files in parts of at most `most_images` files and `most_bytes` (a larger file alone), in order."""
    parts: list[list[tuple[Path, str]]] = []
    size = 0
    for entry in entries:
        try:
            bytes_ = entry[0].stat().st_size
        except OSError:  # unreadable: reported when it is packed
            bytes_ = 0
        if not parts or len(parts[-1]) >= most_images or (parts[-1] and size + bytes_ > most_bytes):
            parts.append([])
            size = 0
        parts[-1].append(entry)
        size += bytes_
    return parts


def _pack(entries: Sequence[tuple[Path, str]], archive: Path, unreadable: list[str]) -> Path:
    with open(archive, "wb") as out:
        unreadable.extend(pack_entries(entries, out))
    return archive


def _make_album(client: GatewayClient, album: str, manifest: Path | None, common: Mapping[str, Any] | None) -> None:
    """Makes the album unless it exists. A CSV manifest's cells are text: a new album declares its columns (and
    those of the attributes given to all), so that filters compare numbers as numbers. (JSON values keep their
    types undeclared.)"""
    guessed = _guessed_columns(manifest, common) if manifest is not None and manifest.suffix.lower() == ".csv" \
        else {}
    if make_album(client, album, guessed):
        print(f"created album {album}" + (f" with columns {_columns_text(guessed)} (the types the cells of "
              f"{manifest.name if manifest else ''} read as; `create-album` first to choose others)" if guessed
              else ""), file=sys.stderr)
    elif undeclared := {n: k for n, k in guessed.items()
                        if n not in {c["name"] for c in client.album(album).get("columns", [])}}:
        print(f"note: album {album} declares no column {', '.join(undeclared)}: those cells are stored as "
              f"text, which filters compare as text (a new album declares them: {_columns_text(undeclared)})",
              file=sys.stderr)


def _split_manifest(client: GatewayClient, album: str, manifest: Path, parts: Sequence[Sequence[tuple[Path, str]]],
                    work: Path) -> list[Path | None]:
    """The manifest cut into one per part (`cut_manifest`), written under `work`: read whole first by the album's
    column types, so that a bad cell anywhere refuses the ingest before any part is sent."""
    text = manifest.read_bytes().decode("utf-8-sig", errors="replace")  # as the gateway reads an upload
    columns = {c["name"]: c["type"] for c in client.album(album).get("columns", [])}
    try:
        texts = cut_manifest(text, manifest.suffix, columns, [[name for _, name in entries] for entries in parts])
    except InvalidAttributes as exc:
        raise ValueError(f"{manifest}: {exc.message}") from None
    written: list[Path | None] = []
    for k, part_text in enumerate(texts):
        folder = work / f"manifest-{k + 1}"
        folder.mkdir()
        path = folder / manifest.name
        path.write_text(part_text, encoding="utf-8")
        written.append(path)
    return written


def _guessed_columns(manifest: Path, common: Mapping[str, Any] | None) -> dict[str, str]:
    """The columns to declare for a CSV manifest and the attributes given to all: each typed as its cells read, and
    as its JSON value; one the two type apart is left undeclared (a row without the cell takes the JSON value)."""
    cells = guess_column_types(manifest.read_text(encoding="utf-8-sig"))
    given = json_column_types(common or {})
    kinds = {**given, **cells}
    agreed = {name: kind for name, kind in kinds.items() if given.get(name, kind) == cells.get(name, kind)}
    return dict(list(agreed.items())[:MAX_COLUMNS])


def _columns_text(columns: Mapping[str, str]) -> str:
    """Columns as `create-album --column` takes them: "price:float in_stock:bool"."""
    return " ".join(f"{name}:{kind}" for name, kind in columns.items())


def _listed_as(local: Sequence[Path], archive: Path | None) -> str:
    """What the import is listed as when the CLI packed folders: the folder's name ("holiday.tar", as the page
    names a folder it sends); empty otherwise (an archive given is listed by its own name, the client's default)."""
    if archive is None or not local or archive == local[0]:
        return ""
    folder = Path(os.path.abspath(local[0])) if len(local) == 1 else None  # as typed: a link by its own name
    named = shown_name(folder)[:100] if folder is not None and folder.name else "images"
    return f"{named}.tar"


def _attributes_source(given: Sequence[str] | None) -> tuple[Path | None, dict[str, Any] | None]:
    """(a manifest to send, attributes for every image) from --attributes, given once or twice: a JSON object,
    and/or the path of a CSV/JSONL manifest with a row per file (the gateway reads it by the album's column
    types; a row's value wins over the object's)."""
    manifest: Path | None = None
    common: dict[str, Any] | None = None
    for value in given or []:
        if value.lstrip().startswith("{"):
            try:
                parsed = json.loads(value)
            except json.JSONDecodeError as exc:
                raise ValueError(f"--attributes {value[:40]!r} is not a JSON object: {exc}") from None
            if not isinstance(parsed, dict) or common is not None:
                raise ValueError("--attributes takes one JSON object and/or one .csv/.jsonl manifest")
            common = parsed
        elif manifest is None:
            manifest = Path(value)
        else:
            raise ValueError("--attributes takes one JSON object and/or one .csv/.jsonl manifest")
    return manifest, common


def add_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    ingest = sub.add_parser("ingest", help="import image files, folders (recursively), zip/tar archives or URLs into "
                                           "an album, in the background, with a progress bar")
    ingest.add_argument("paths", nargs="+", metavar="PATH|URL",
                        help="image files, folders (recursively), a zip/tar archive, or http(s) URLs of images")
    ingest.add_argument("--album", required=True, help="the album's name")
    ingest.add_argument("--attributes", action="append",
                        help="a JSON object given to every image, or a .csv/.jsonl manifest with a row per file (a "
                             "'file' column, then the attributes); both: give it twice (a row's value wins)")
    ingest.add_argument("--on-duplicate", choices=["keep", "skip", "replace"], default="keep",
                        help="an image within the near-duplicate distance of one in the album: keep it too, skip "
                             "it, or replace the old one")
    ingest.add_argument("--quiet", action="store_true", help="no progress bar")
    ingest.add_argument("--images-per-upload", type=int, default=UPLOAD_IMAGES, metavar="N",
                        help=f"send files and folders in parts of at most N images (and {UPLOAD_BYTES >> 20} MiB), an "
                             f"import each, the next sent while the one before is embedded (default {UPLOAD_IMAGES})")
    ingest.set_defaults(run=cmd_ingest)
