"""Learns the extractor's PCA whitening from pictures that are not in any evaluation set.

    python -m services.extractor.fit_whitening [--work .cache/whiten-data]
    python -m services.extractor.fit_whitening --check     exit 1 unless the service's file is there

Run once by scripts/setup.sh (settings from EXTRACTOR_* variables, as the service reads them, so
the whitening is learned on exactly the vectors the service makes). Steps: `apt-get download` a few
Debian packages of wallpapers, clip art and photos (no install; unpacked with `dpkg-deb -x`), keep
real pictures (min side >= 96 px, the largest file of each wallpaper theme, byte duplicates
dropped), compute each one's raw descriptor rows (the global vector and 13 grid-region vectors:
regions add variety, 10k rows for 715 images) and fit the whitening (whitening.py). Writes
`<model_dir>/<model>-<pipeline>-whiten<dim>.npz` and its `.json` manifest (sha256; what it was
learned from: the network file's sha256, the packages' versions, the parameters; see
whitening.identity).
"""

from __future__ import annotations

import argparse
import dataclasses
import glob
import hashlib
import json
import logging
import re
import subprocess
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from numpy.typing import NDArray
from PIL import Image

from services.common.errors import InvalidArgument
from services.extractor import whitening
from services.extractor.descriptors import Purpose
from services.extractor.model import EmbedJob, ImageEmbedder, Scales
from services.extractor.session import INT8_SUFFIX, ModelFileError, verified_model_file
from services.extractor.settings import ExtractorSettings

log = logging.getLogger("fit_whitening")

# package -> globs of its pictures inside the unpacked tree (licences: bench/README.md).
PACKAGES: dict[str, tuple[str, ...]] = {
    "pysiogame": ("usr/share/games/pysiogame/res/images/art4apps/**/*.*",),
    "tuxpaint-data": ("usr/share/tuxpaint/templates/*.*", "usr/share/tuxpaint/starters/*.*"),
    "plasma-workspace-wallpapers": ("usr/share/wallpapers/*/contents/images/*.*",),
    "ukui-wallpapers": ("usr/share/backgrounds/*.*",),
    "lomiri-wallpapers-20.04": ("usr/share/backgrounds/*.*",),
    "palapeli-data": ("usr/share/palapeli/collection/*.jpg", "usr/share/palapeli/backgrounds/*.jpg"),
    "gnome-backgrounds": ("usr/share/backgrounds/gnome/*.*",),
}
PICTURE = re.compile(r"\.(jpe?g|png|webp)$", re.IGNORECASE)
MIN_SIDE = 96
# Training rows per image: the global vector plus the 4 + 9 windows of region grids 2 and 3.
TRAIN_REGION_LEVELS = (2, 3)
SHRINK = 0.5
POWER = 0.5
CHUNK = 32


def fetch_package(package: str, work: Path) -> tuple[Path, str]:
    """Downloads (once) and unpacks (once) a Debian package; returns the unpacked root and the .deb's
    file name (it names the version)."""
    debs = work / "debs"
    debs.mkdir(parents=True, exist_ok=True)
    if not list(debs.glob(f"{package}_*.deb")):
        subprocess.run(["apt-get", "download", package], cwd=debs, check=True)
    deb = sorted(debs.glob(f"{package}_*.deb"))[-1]
    root = work / "unpacked" / package
    if not root.is_dir():
        tmp = root.with_name(root.name + ".tmp")
        tmp.mkdir(parents=True, exist_ok=True)
        subprocess.run(["dpkg-deb", "-x", str(deb), str(tmp)], check=True)
        tmp.rename(root)
    return root, deb.name


def pictures_of(root: Path, patterns: tuple[str, ...]) -> list[Path]:
    """The package's pictures, keeping only the largest file of each wallpaper theme folder."""
    files = sorted({f for p in patterns for f in glob.glob(str(root / p), recursive=True) if PICTURE.search(f)})
    best: dict[str, str] = {}
    for f in files:
        key = str(Path(f).parent) if "/contents/images" in f else f
        if key not in best or Path(f).stat().st_size > Path(best[key]).stat().st_size:
            best[key] = f
    return [Path(f) for f in sorted(best.values())]


def select_images(work: Path) -> tuple[list[Path], dict[str, int], dict[str, str]]:
    """Every usable picture of every package (byte duplicates and small ones dropped), the count per
    package and the .deb file (version) each came from."""
    seen: set[str] = set()
    chosen: list[Path] = []
    counts: dict[str, int] = {}
    debs: dict[str, str] = {}
    for package, patterns in PACKAGES.items():
        before = len(chosen)
        root, debs[package] = fetch_package(package, work)
        for path in pictures_of(root, patterns):
            digest = hashlib.md5(path.read_bytes()).hexdigest()
            if digest not in seen and _big_enough(path):
                seen.add(digest)
                chosen.append(path)
        counts[package] = len(chosen) - before
        log.info("%s: %d pictures", package, counts[package])
    return chosen, counts, debs


def _big_enough(path: Path) -> bool:
    try:
        with Image.open(path) as image:
            return min(image.size) >= MIN_SIDE
    except (OSError, ValueError, SyntaxError):
        return False


def training_rows(embedder: ImageEmbedder, paths: list[Path], threads: int = 2) -> NDArray[np.float32]:
    """Raw (unwhitened) rows of every picture: its global vector and its grid-region vectors."""
    rows = [r for chunk in _decoded_chunks(embedder, paths, threads)
            for r in embedder.embed_jobs([EmbedJob(s, Purpose.INDEX) for s in chunk])]
    return np.concatenate(rows)


def _decoded_chunks(embedder: ImageEmbedder, paths: list[Path], threads: int) -> Iterator[list[Scales]]:
    def decode(path: Path) -> Scales | None:
        try:
            return embedder.decode(path.read_bytes())
        except InvalidArgument as exc:
            log.warning("skipped %s: %s", path, exc.message)
            return None

    started = time.perf_counter()
    with ThreadPoolExecutor(threads) as pool:
        for start in range(0, len(paths), CHUNK):
            decoded = [d for d in pool.map(decode, paths[start:start + CHUNK]) if d is not None]
            yield decoded
            log.info("%d/%d pictures, %.0f s", min(start + CHUNK, len(paths)), len(paths),
                     time.perf_counter() - started)


def training_embedder(settings: ExtractorSettings) -> ImageEmbedder:
    """The service's pipeline without whitening, making region rows instead of rotated ones."""
    embedder = ImageEmbedder.from_settings(settings, with_whitening=False)
    embedder.descriptor = dataclasses.replace(
        embedder.descriptor, index_variants=(), index_region_levels=TRAIN_REGION_LEVELS
    )
    return embedder


def fit(settings: ExtractorSettings, work: Path) -> Path:
    """Fetches the pictures, learns the whitening for the settings' pipeline, writes it; returns the npz."""
    if settings.whiten_dim <= 0:
        raise SystemExit("EXTRACTOR_WHITEN_DIM is 0: no whitening to learn")
    embedder = training_embedder(settings)
    paths, counts, debs = select_images(work)
    rows = training_rows(embedder, paths, settings.decode_threads)
    learned = whitening.Whitening.fit(rows, settings.whiten_dim, SHRINK, POWER)
    name = whitening.whitening_name(embedder.session.name, embedder.raw_pipeline, settings.whiten_dim)
    _, network = verified_model_file(settings.model_dir, embedder.session.name)
    # Everything the result depends on: its identity (whitening.identity) is a digest of these.
    manifest = {"pipeline": embedder.raw_pipeline, "model_sha256": network.sha256, "shrink": SHRINK,
                "images": len(paths), "rows": len(rows), "train_region_levels": list(TRAIN_REGION_LEVELS),
                "packages": counts, "debs": debs, whitening.EXACT_INT8_FIELD: True}
    return whitening.save(learned, settings.model_dir, name, manifest)


def check(settings: ExtractorSettings) -> int:
    """0 when the settings need no whitening or theirs loads and verifies, else 1 (with the reason)."""
    try:
        embedder = ImageEmbedder.from_settings(settings)
    except ModelFileError as exc:
        print(exc)
        return 1
    if embedder.whitening and embedder.session.name.endswith(INT8_SUFFIX):
        name = whitening.whitening_name(embedder.session.name, embedder.raw_pipeline, settings.whiten_dim)
        if not json.loads((settings.model_dir / f"{name}.json").read_text()).get(whitening.EXACT_INT8_FIELD):
            print(f"whitening {name} may have been learned from saturated int8 products (CPUs without VNNI); "
                  "learning it again")
            return 1
    return 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", type=Path, default=Path(".cache/whiten-data"),
                        help="where the .deb files and their unpacked trees are kept")
    parser.add_argument("--check", action="store_true",
                        help="only check that the whitening of the current settings is there and intact")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="[whitening] %(message)s")
    if args.check:
        raise SystemExit(check(ExtractorSettings()))
    path = fit(ExtractorSettings(), args.work)
    print(f"wrote {path} and its manifest")


if __name__ == "__main__":
    main()
