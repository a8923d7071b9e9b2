#!/usr/bin/env python3
"""Fetch an image set that is NOT in the evaluation set, for learning PCA whitening.

Downloads a few Debian packages (apt-get download, no install), unpacks them with dpkg-deb -x,
keeps real pictures (photos, wallpapers, clip art; min side >= 96 px, icons/UI/doc screenshots
dropped, one file per wallpaper theme, byte-identical duplicates dropped) and writes their paths:

    /tmp/exportvenv/bin/python bench/research/whiten_data.py --out .cache/research/whiten
    -> .cache/research/whiten/list.txt, .cache/research/whiten/sources.csv

The evaluation set uses tuxpaint-stamps-default, gcompris-qt-data, lomiri-wallpapers-16.04,
mate-backgrounds, opencv-doc and scikit-image's data: none of those is used here.
"""
from __future__ import annotations

import argparse
import csv
import glob
import hashlib
import os
import re
import subprocess

from PIL import Image

# package -> (glob patterns inside the unpacked tree, licence as stated in its debian/copyright)
PACKAGES = {
    "pysiogame": (["usr/share/games/pysiogame/res/images/art4apps/**/*.*"],
                  "GPL-3+ (debian/copyright, Files: *)"),
    "tuxpaint-data": (["usr/share/tuxpaint/templates/*.*", "usr/share/tuxpaint/starters/*.*"],
                      "GPL-2+ (Tux Paint)"),
    "plasma-workspace-wallpapers": (["usr/share/wallpapers/*/contents/images/*.*"],
                                    "GPL-2+ / LGPL-3 (debian/copyright)"),
    "ukui-wallpapers": (["usr/share/backgrounds/*.*"], "CC-BY-SA-3.0 (debian/copyright)"),
    "lomiri-wallpapers-20.04": (["usr/share/backgrounds/*.*"], "CC-BY-4.0 / CC-BY-SA-3.0/4.0 / CC0 per file (debian/copyright)"),
    "palapeli-data": (["usr/share/palapeli/collection/*.jpg", "usr/share/palapeli/backgrounds/*.jpg"],
                      "GPL-2+ / CC0 per file (debian/copyright)"),
    "gnome-backgrounds": (["usr/share/backgrounds/gnome/*.*"], "CC-BY-SA-3.0 (debian/copyright)"),
}
EXT = re.compile(r"\.(jpe?g|png|webp)$", re.I)


def fetch(pkg: str, work: str) -> str:
    """apt-get download + dpkg-deb -x; returns the unpacked root (reused when already there)."""
    root = os.path.join(work, "unpacked", pkg)
    if not os.path.isdir(root):
        debs = os.path.join(work, "debs")
        os.makedirs(debs, exist_ok=True)
        if not glob.glob(os.path.join(debs, f"{pkg}_*.deb")):
            subprocess.run(["apt-get", "download", pkg], cwd=debs, check=True)
        os.makedirs(root)
        subprocess.run(["dpkg-deb", "-x", glob.glob(os.path.join(debs, f"{pkg}_*.deb"))[0], root], check=True)
    return root


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", default=".cache/research", help="where debs/ and unpacked/ go")
    ap.add_argument("--out", default=".cache/research/whiten")
    ap.add_argument("--min-side", type=int, default=96)
    a = ap.parse_args()
    os.makedirs(a.out, exist_ok=True)
    seen, rows = set(), []
    for pkg, (patterns, lic) in PACKAGES.items():
        root = fetch(pkg, a.work)
        files = sorted({f for p in patterns for f in glob.glob(os.path.join(root, p), recursive=True) if EXT.search(f)})
        best = {}  # wallpaper themes ship one picture at many resolutions: keep the largest file per folder
        for f in files:
            key = os.path.dirname(f) if "/contents/images" in f else f
            if key not in best or os.path.getsize(f) > os.path.getsize(best[key]):
                best[key] = f
        n = 0
        for f in sorted(best.values()):
            h = hashlib.md5(open(f, "rb").read()).hexdigest()
            if h in seen:
                continue
            try:
                with Image.open(f) as im:
                    if min(im.size) < a.min_side:
                        continue
            except Exception:
                continue
            seen.add(h)
            rows.append((f, pkg, lic))
            n += 1
        print(f"{pkg}: {n} images")
    with open(os.path.join(a.out, "list.txt"), "w") as fh:
        fh.writelines(r[0] + "\n" for r in rows)
    with open(os.path.join(a.out, "sources.csv"), "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["file", "package", "licence"])
        w.writerows(rows)
    print(f"{len(rows)} images -> {a.out}/list.txt")


if __name__ == "__main__":
    main()
