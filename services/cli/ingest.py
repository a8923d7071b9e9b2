"""`imagesearch ingest`: files, folders (packed as a tar), archives, URLs and a manifest sent as an import job."""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from services.cli.jobs import follow_import, import_summary, make_album, start_import
from services.cli.packing import ARCHIVE_SUFFIXES, IMAGE_SUFFIXES, pack_images
from services.client import GatewayClient, shown_name
from services.common.manifest import guess_column_types, json_column_types
from services.common.schema import MAX_COLUMNS


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
        # A CSV manifest's cells are text: a new album declares its columns (and those of the attributes given to
        # all), so that filters compare numbers as numbers. (JSON values keep their types undeclared.)
        guessed = _guessed_columns(manifest, common) if manifest is not None and manifest.suffix.lower() == ".csv" \
            else {}
        if make_album(client, args.album, guessed):
            print(f"created album {args.album}" + (f" with columns {_columns_text(guessed)} (the types the cells of "
                  f"{manifest.name if manifest else ''} read as; `create-album` first to choose others)" if guessed
                  else ""), file=sys.stderr)
        elif undeclared := {n: k for n, k in guessed.items()
                            if n not in {c["name"] for c in client.album(args.album).get("columns", [])}}:
            print(f"note: album {args.album} declares no column {', '.join(undeclared)}: those cells are stored as "
                  f"text, which filters compare as text (a new album declares them: {_columns_text(undeclared)})",
                  file=sys.stderr)
        job = start_import(client, args.album, archive=archive, urls=urls, manifest=manifest, attributes=common,
                           on_duplicate=args.on_duplicate, archive_name=_listed_as(local, archive))
    job = follow_import(client, job, progress=not args.quiet)
    for failure in client.import_results(job["id"], failed_only=True):
        error = failure.get("error") or {}
        file = failure.get("file") or ""
        shown = failure["name"] + (f" ({file})" if file and file != failure["name"] else "")  # named by its manifest
        print(f"failed {shown}: {error.get('reason')}: {error.get('message')}")
    for problem in unreadable:
        print(f"failed {problem}")
    counts = {**job["counts"], "failed": job["counts"]["failed"] + len(unreadable)}
    print(import_summary(args.album, job, counts))
    return 1 if counts["failed"] or job["status"] != "done" else 0


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
            parsed = json.loads(value)
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
    ingest.add_argument("paths", nargs="+")
    ingest.add_argument("--album", required=True)
    ingest.add_argument("--attributes", action="append",
                        help="a JSON object given to every image, or a .csv/.jsonl manifest with a row per file (a "
                             "'file' column, then the attributes); both: give it twice (a row's value wins)")
    ingest.add_argument("--on-duplicate", choices=["keep", "skip", "replace"], default="keep",
                        help="an image within the near-duplicate distance of one in the album: keep it too, skip "
                             "it, or replace the old one")
    ingest.add_argument("--quiet", action="store_true", help="no progress bar")
    ingest.set_defaults(run=cmd_ingest)
