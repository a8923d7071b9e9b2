"""Search latency while an import (or a re-embed) runs, against the same searches with the system idle, in the
same run; or that of adds or of the album list (`--timed add|list`).

    .venv/bin/python bench/search_during_import.py [--album 200] [--queries 30] [--during import|reembed|add]
                                                   [--parts | --faces] [--timed search|add|list [--gap 1.0]]
                                                   [--set .cache/evalset]

Starts a fresh stack (real Milvus, S3, Redis, the three services) on free ports, imports the first `--album`
gallery photos into one album, then searches it with new photos (edited copies, so that no answer comes from
the gateway's cache), one at a time:
  idle     `--queries` searches before the import and as many after it (the baseline)
  during   searches one after another for as long as an import of the rest of the gallery into a second
           album runs (`imagesearch ingest` of a folder: a tar archive, the gateway's import workers), or with
           `--during reembed` a re-embed of the album searched (`imagesearch reembed`: its images embedded
           again into a new collection, which takes the album's place when done), or with `--during add`
           adds of the rest of the gallery into the second album by HTTP requests of `--add-batch` images
           (256, the most a request may hold), one after the other, as a script or the web page adds a folder
The figure is the ratio of the p50s (`during_ratio`); the job's rate is printed beside it. With --parts each
search meanwhile is measured in turn with its parts alone (`bench/e2e.py`'s `measure_search_and_parts`: the
query's Embed, the search service's Search, the verification of the nearest images), which says where the
time goes (`during_parts_ms`). With --faces both albums index faces, the album searched also holds photos of
two people (scripts/setup.sh --dev: .cache/faces/people), and the searches are face searches with edited
copies of a third photo of one of them: the extractor finds faces one image at a time, the job's images
too. With `--timed add` what is timed is not a search but the add of one new photo (an edited copy) to the
album searched, as a user adds one and waits for the answer; with `--timed list`, the album list
(`GET /v1/albums`, every album counted); each `--gap` seconds after the previous answer (0: back to back, as a
script adds photos one by one). The keys are then `add_idle_ms` and `add_during_ms` (or `list_...`). The last
line is a JSON object of the figures.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import edited_copy, gallery_files, percentiles, print_json_line, running_stack
from bench.e2e import SearchSamples, measure_import, measure_search, measure_search_and_parts
from services.cli import pack_images
from services.client import GatewayClient, Upload
from services.devstack import ROOT
from services.gateway.settings import GatewaySettings

FINISHED = ("done", "failed", "cancelled")
PEOPLE = ROOT / ".cache" / "faces" / "people"


def measure_adds(client: GatewayClient, album: str, photos: list[bytes], gap_s: float) -> list[float]:
    """Latency (ms) of adding each photo alone (`POST /v1/albums/A/images`), one after the other, `gap_s`
    seconds apart (not timed)."""
    samples = []
    for content in photos:
        time.sleep(gap_s)
        t = time.perf_counter()
        answer = client.add_images(album, [Upload(content, f"added-{time.time_ns()}.jpg")])
        samples.append((time.perf_counter() - t) * 1000)
        if answer["results"][0]["status"] != "added":
            raise RuntimeError(f"a photo to add was not added: {answer['results'][0]}")
    return samples


class BackgroundAdds(threading.Thread):
    """Adds the photos to an album by HTTP requests of `batch` images each, one after the other; a job-like
    status for the loop that searches meanwhile."""

    def __init__(self, client: GatewayClient, album: str, files: list[Path], batch: int) -> None:
        super().__init__(daemon=True)
        self.client, self.album, self.files, self.batch = client, album, files, batch
        self.added = 0
        self.finished_at_ms: float | None = None
        self.error = ""

    def run(self) -> None:
        try:
            for start in range(0, len(self.files), self.batch):
                answer = self.client.add_images(self.album, [Upload.from_path(p)
                                                             for p in self.files[start:start + self.batch]])
                self.added += sum(r["status"] == "added" for r in answer["results"])
        except Exception as exc:  # reported as the job's status
            self.error = f"{type(exc).__name__}: {exc}"
        self.finished_at_ms = time.time() * 1000

    def status(self) -> dict[str, Any]:
        state = "running" if self.finished_at_ms is None else "failed" if self.error else "done"
        return {"status": state, "counts": {"added": self.added}, "finished_at_ms": self.finished_at_ms,
                "error": self.error}


def measure_listings(client: GatewayClient, count: int, gap_s: float) -> list[float]:
    """Latency (ms) of listing the albums with their counts (`GET /v1/albums`), `gap_s` seconds apart."""
    samples = []
    for _ in range(count):
        time.sleep(gap_s)
        t = time.perf_counter()
        client.list_albums()
        samples.append((time.perf_counter() - t) * 1000)
    return samples


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--album", type=int, default=200, help="photos in the album searched")
    parser.add_argument("--queries", type=int, default=30, help="idle searches before the import, and after it")
    parser.add_argument("--top-k", type=int, default=10)
    parser.add_argument("--set", type=Path, default=Path(".cache/evalset"), help="evaluation set (gallery photos)")
    parser.add_argument("--add-batch", type=int, default=GatewaySettings().max_images_per_request,
                        help="with --during add: images per add request")
    parser.add_argument("--during", choices=("import", "reembed", "add"), default="import",
                        help="what runs meanwhile: an import into another album, or a re-embed of the one searched")
    parser.add_argument("--parts", action="store_true", help="each search meanwhile measured in turn with its parts")
    parser.add_argument("--faces", action="store_true", help="face searches, both albums indexing faces")
    parser.add_argument("--timed", choices=["search", "add", "list"], default="search",
                        help="what is timed: a search, the add of one photo, or the album list")
    parser.add_argument("--gap", type=float, default=1.0, help="with --timed add|list: seconds between two")
    args = parser.parse_args()
    if args.parts and (args.faces or args.timed != "search"):
        parser.error("--parts measures the parts of an image search, not of a face search, an add or a list")

    files = gallery_files(args.set, 100_000)
    if len(files) <= args.album:
        raise SystemExit(f"{len(files)} photos: the import needs more than the album's {args.album}")
    searched, imported = files[:args.album], files[args.album:]
    contents = [p.read_bytes() for p in searched]
    if args.faces:
        if not (PEOPLE / "obama3.jpg").is_file():
            raise SystemExit(f"no photos of people in {PEOPLE}: run scripts/setup.sh --dev")
        searched += [PEOPLE / f"{name}.jpg" for name in ("obama", "obama2", "biden")]
        contents = [(PEOPLE / "obama3.jpg").read_bytes()]
    queries = iter(edited_copy(contents[i % len(contents)], seed=i) for i in range(1_000_000))
    with running_stack() as stack, tempfile.TemporaryDirectory(prefix="bench-during-") as tmp:
        client = GatewayClient(stack.http_url)
        client.create_album("searched", faces=args.faces)
        client.create_album("imported", faces=args.faces)
        measure_import(client, "searched", searched)

        def timed(count: int) -> list[float]:
            if args.timed == "list":
                return measure_listings(client, count, args.gap)
            photos = [next(queries) for _ in range(count)]
            if args.timed == "add":
                return measure_adds(client, "searched", photos, args.gap)
            return measure_search(client, "searched", photos, args.top_k, args.faces)

        timed(1)  # warm up
        idle = timed(args.queries)

        if args.during == "import":
            archive = Path(tmp) / "imported.tar"
            with open(archive, "wb") as out:
                pack_images(imported, out)
        started = time.time()
        if args.during == "add":
            adds = BackgroundAdds(GatewayClient(stack.http_url), "imported", imported, args.add_batch)
            adds.start()
            poll = adds.status
        else:
            job_id = (client.start_import("imported", archive=archive) if args.during == "import" else
                      client.reembed("searched"))["id"]
            poll = functools.partial(client.get_import, job_id)
        job = poll()
        during = SearchSamples()
        while job["status"] not in FINISHED:
            if args.parts:
                samples = asyncio.run(measure_search_and_parts(stack, client, "searched", [next(queries)], args.top_k))
                for name in ("e2e", "embed", "search", "verify"):
                    getattr(during, name).extend(getattr(samples, name))
            else:
                during.e2e += timed(1)
            job = poll()
        if job.get("error"):
            print(f"  the adds stopped: {job['error']}", file=sys.stderr)
        done = job["counts"]["added"] if args.during in ("import", "add") else len(searched)
        rate = done / ((job["finished_at_ms"] or time.time() * 1000) / 1000 - started)
        idle += timed(args.queries)

    calm, busy = percentiles(idle), percentiles(during.e2e)
    parts = {name: percentiles(getattr(during, name))["p50"] for name in ("embed", "search", "verify")} \
        if args.parts else {}
    what = {"import": f"import of {len(imported)} photos into another album",
            "add": f"adds of {len(imported)} photos into another album, {args.add_batch} a request",
            "reembed": "re-embed of the album searched"}[args.during]
    op = args.timed
    kind = "face search" if args.faces and op == "search" else f"{op} (faces)" if args.faces else op
    print(f"album searched: {len(searched)} photos; {what}: {job['status']}, {rate:.1f} img/s")
    before, after = (percentiles(half)["p50"] for half in (idle[:args.queries], idle[args.queries:]))
    print(f"{kind}, idle:           p50 {calm['p50']:8.2f} ms  p95 {calm['p95']:8.2f} ms  ({calm['n']})   "
          f"p50 before {before:.2f} ms, after {after:.2f} ms")
    print(f"{kind}, during {args.during:8s} p50 {busy['p50']:8.2f} ms  p95 {busy['p95']:8.2f} ms  ({busy['n']})"
          f"   during / idle p50 = {busy['p50'] / calm['p50']:.2f}")
    if parts:
        print(f"  its parts meanwhile, p50: Embed {parts['embed']:.2f} ms, search {parts['search']:.2f} ms, "
              f"verification {parts['verify']:.2f} ms")
    print_json_line({"bench": "search_during_import", "during": args.during, "faces": args.faces, "timed": op,
                     **({"gap_s": args.gap} if op != "search" else {}),
                     "album_images": len(searched),
                     "imported": len(imported) if args.during in ("import", "add") else 0,
                     **({"add_batch": args.add_batch} if args.during == "add" else {}), "job_status": job["status"],
                     "job_img_s": round(rate, 1), f"{op}_idle_ms": calm, f"{op}_during_ms": busy,
                     "during_ratio": round(busy["p50"] / calm["p50"], 2),
                     **({"during_parts_ms": {f"{k}_p50": v for k, v in parts.items()}} if parts else {})})


if __name__ == "__main__":
    main()
