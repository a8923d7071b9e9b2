"""Shared pieces of the benchmark scripts: a stack to measure, photos, percentiles, RSS, the JSON line."""

from __future__ import annotations

import contextlib
import csv
import io
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from services.devstack import Ports, Stack, child_pids

ROOT = Path(__file__).resolve().parent.parent


@contextlib.contextmanager
def running_stack(service_env: dict[str, str] | None = None) -> Iterator[Stack]:
    """A fresh stack on free loopback ports with its data in a temporary directory."""
    with tempfile.TemporaryDirectory(prefix="imagesearch-bench-") as tmp:
        stack = Stack(Path(tmp), Ports.free(), service_env=service_env)
        try:
            stack.start()
            yield stack
        finally:
            stack.stop()


def gallery_files(evalset: Path | None, limit: int) -> list[Path]:
    """Real photos: the evaluation set's gallery when built, else scikit-image's sample photos."""
    if evalset and (evalset / "manifest.csv").exists():
        with open(evalset / "manifest.csv") as fh:
            return [evalset / row["file"] for row in csv.DictReader(fh)][:limit]
    import skimage

    data = Path(skimage.__file__).parent / "data"
    return sorted(p for p in data.iterdir() if p.suffix in (".png", ".jpg") and p.stat().st_size > 15000)[:limit]


def edited_copy(content: bytes, seed: int) -> bytes:
    """A cropped, rescaled and recompressed copy of an image (a typical query)."""
    rng = np.random.default_rng(seed)
    image = Image.open(io.BytesIO(content)).convert("RGB")
    w, h = image.size
    dx, dy = (int(w * rng.uniform(0.03, 0.12)), int(h * rng.uniform(0.03, 0.12)))
    image = image.crop((dx, dy, w - dx, h - dy)).resize((max(32, int(w * 0.7)), max(32, int(h * 0.7))))
    out = io.BytesIO()
    image.save(out, "JPEG", quality=int(rng.integers(60, 85)))
    return out.getvalue()


def percentiles(samples_ms: list[float]) -> dict[str, float]:
    arr = np.asarray(samples_ms)
    return {"p50": round(float(np.percentile(arr, 50)), 2), "p95": round(float(np.percentile(arr, 95)), 2),
            "mean": round(float(arr.mean()), 2), "n": len(samples_ms)}


def rss_mb(pid: int) -> float:
    """Resident memory of a process and its children, in MB."""
    total = 0
    for p in [pid, *child_pids(pid)]:
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
    return round(total / 1024, 1)


def cpu_seconds(pid: int) -> float:
    """User + system CPU time a process and its direct children have used so far, in seconds."""
    ticks = 0
    for p in [pid, *child_pids(pid)]:
        with contextlib.suppress(OSError):
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
            ticks += int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15 of proc(5))
    return ticks / os.sysconf("SC_CLK_TCK")


def stack_cpu_seconds(stack: Stack) -> dict[str, float]:
    """`cpu_seconds` of each process of the stack."""
    return {name: cpu_seconds(proc.proc.pid) for name, proc in stack.processes.items() if proc.proc is not None}


def stack_rss(stack: Stack) -> dict[str, float]:
    return {name: rss_mb(proc.proc.pid) for name, proc in stack.processes.items() if proc.proc is not None}


def print_json_line(figures: dict[str, Any]) -> None:
    """Every bench script ends with one JSON line of its figures, so runs can be compared."""
    figures = {**figures, "cpus": os.cpu_count()}
    print(json.dumps(figures, sort_keys=True))
