"""Region proposals measured on real photos placed in real scenes, where the place of the object is known.

No package here ships photos with labelled boxes, so the scenes are made from the evaluation set's
real photos (../shared/eval built with --natural: tuxpaint-stamps, GCompris, Lomiri/MATE wallpapers,
scikit-image and OpenCV samples; licences in its manifest.csv): each scene is a landmark, scene or
wallpaper photo (640 px on its longer side) with one gallery image of an object or animal placed in
it at 30-55 % of the scene's shorter side, either cut out of its white background (a tuxpaint stamp:
an object standing in the scene) or as a framed photo (a GCompris photo). The object's box is known.

--boxes (in-process, no servers): for each saliency map and setting, the best proposal's overlap
with the object's box: box recall (a proposal at IoU >= 0.5) among the first 1, 3 and 5 proposals,
and the CPU milliseconds a proposal set costs over the feature map.

Through the system (default): a fresh stack, the gallery (691 images) added to an album, each scene
searched with `proposals=N`; reported: whether the placed image is the first hit of the whole photo,
of any proposed region, and of the proposal that overlaps it best; the same with the true box as a
`region` (the ceiling a perfect proposal reaches); and the search latency with and without proposals.

    nice -n 19 .venv/bin/python bench/proposals.py --set .cache/evalset-natural --boxes
    nice -n 19 .venv/bin/python bench/proposals.py --set .cache/evalset-natural --scenes 120
"""

from __future__ import annotations

import argparse
import csv
import io
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray
from PIL import Image, ImageDraw

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import percentiles, print_json_line, running_stack
from services.client import GatewayClient, Upload

SCENE_SIDE = 640
OBJECT_SOURCES = {("tuxpaint", "animal"), ("tuxpaint", "object"), ("tuxpaint", "food"), ("tuxpaint", "vehicle"),
                  ("gcompris", "animal"), ("gcompris", "object")}
SCENE_SOURCES = {("gcompris", "landmark"), ("gcompris", "scene"), ("lomiri-16.04", "scene"), ("mate", "scene")}


@dataclass(frozen=True)
class Scene:
    content: bytes
    box: tuple[int, int, int, int]  # x, y, w, h of the placed image in the scene
    size: tuple[int, int]
    item: str  # manifest id of the placed image
    background: str
    kind: str  # "cutout" or "framed"


def read_manifest(root: Path) -> list[dict[str, str]]:
    with open(root / "manifest.csv") as fh:
        return list(csv.DictReader(fh))


def scenes(root: Path, count: int, seed: int = 0) -> Iterator[Scene]:
    """`count` scenes, each a real photo with another real photo placed in it."""
    rng = np.random.default_rng(seed)
    rows = read_manifest(root)
    objects = [r for r in rows if (r["source"], r["coarse"]) in OBJECT_SOURCES]
    backgrounds = [r for r in rows if (r["source"], r["coarse"]) in SCENE_SOURCES]
    for _ in range(count):
        item = objects[int(rng.integers(len(objects)))]
        background = backgrounds[int(rng.integers(len(backgrounds)))]
        yield _place(root, item, background, rng)


def _place(root: Path, item: dict[str, str], background: dict[str, str], rng: np.random.Generator) -> Scene:
    scene = Image.open(root / background["file"]).convert("RGB")
    scene.thumbnail((SCENE_SIDE, SCENE_SIDE), Image.Resampling.LANCZOS)
    if max(scene.size) < SCENE_SIDE:
        factor = SCENE_SIDE / max(scene.size)
        scene = scene.resize((round(scene.width * factor), round(scene.height * factor)), Image.Resampling.BICUBIC)
    thing = Image.open(root / item["file"]).convert("RGB")
    side = rng.uniform(0.30, 0.55) * min(scene.size)
    factor = side / max(thing.size)
    thing = thing.resize((max(8, round(thing.width * factor)), max(8, round(thing.height * factor))),
                         Image.Resampling.LANCZOS)
    x = int(rng.integers(0, scene.width - thing.width + 1))
    y = int(rng.integers(0, scene.height - thing.height + 1))
    cutout = item["source"] == "tuxpaint"
    mask = _foreground(thing) if cutout else None
    scene.paste(thing, (x, y), mask)
    box = mask.getbbox() if mask is not None else None
    left, top, right, bottom = box or (0, 0, thing.width, thing.height)
    out = io.BytesIO()
    scene.save(out, "JPEG", quality=90)
    return Scene(out.getvalue(), (x + left, y + top, right - left, bottom - top), scene.size, item["id"],
                 background["id"], "cutout" if cutout else "framed")


def _foreground(image: Image.Image) -> Image.Image:
    """The stamp without its white background: near-white pixels joined to the border are dropped."""
    from scipy import ndimage

    rgb = np.asarray(image, dtype=np.int16)
    white = (rgb > 240).all(axis=2)
    labelled, _ = ndimage.label(white)
    border = set(np.unique(np.concatenate([labelled[0], labelled[-1], labelled[:, 0], labelled[:, -1]]))) - {0}
    background = np.isin(labelled, list(border))
    return Image.fromarray(np.where(background, 0, 255).astype(np.uint8), mode="L")


def iou(a: tuple[float, float, float, float], b: tuple[float, float, float, float]) -> float:
    left, top = max(a[0], b[0]), max(a[1], b[1])
    right, bottom = min(a[0] + a[2], b[0] + b[2]), min(a[1] + a[3], b[1] + b[3])
    inter = max(0.0, right - left) * max(0.0, bottom - top)
    union = a[2] * a[3] + b[2] * b[3] - inter
    return inter / union if union > 0 else 0.0


def box_recall(found: list[list[tuple[float, float, float, float]]], truth: list[tuple[float, float, float, float]],
               at: tuple[int, ...] = (1, 3, 5)) -> dict[str, float]:
    """Share of scenes with a proposal of IoU >= 0.5 among the first k, and the mean best IoU of the first 3."""
    figures = {f"recall@{k}": round(float(np.mean([any(iou(p, t) >= 0.5 for p in ps[:k])
                                                   for ps, t in zip(found, truth, strict=True)])), 3) for k in at}
    figures["mean_best_iou@3"] = round(float(np.mean([max([iou(p, t) for p in ps[:3]], default=0.0)
                                                      for ps, t in zip(found, truth, strict=True)])), 3)
    figures["mean_count"] = round(float(np.mean([len(ps) for ps in found])), 2)
    return figures


def measure_boxes(root: Path, count: int, centernet: Path | None = None) -> dict[str, Any]:
    """Box recall of the extractor's proposals from the activations and of other maps of the same
    activations, in-process; with `centernet`, also of the extractor's COCO detector (that ONNX file:
    scripts/export_detector.sh)."""
    from services.extractor.model import ImageEmbedder
    from services.extractor.proposals import ProposalConfig, propose
    from services.extractor.settings import ExtractorSettings

    embedder = ImageEmbedder.from_settings(ExtractorSettings())
    made = list(scenes(root, count))
    started = time.perf_counter()
    fmaps = [embedder.session.run(embedder.decode(scene.content)[0][None])[0] for scene in made]
    network_ms = (time.perf_counter() - started) * 1000 / len(made)
    truth = [(s.box[0] / s.size[0], s.box[1] / s.size[1], s.box[2] / s.size[0], s.box[3] / s.size[1]) for s in made]
    head = embedder.classifier
    methods: dict[str, Callable[[NDArray[np.float32]], list[Box]]] = {
        "peaks (shipped)": lambda f: [_as_box(p) for p in propose(f, 5)],
        "peaks 0.4-0.85": lambda f: [_as_box(p) for p in propose(f, 5, ProposalConfig(fractions=WIDER))],
        "components of the whole map at 0.25-0.85": lambda f: _ranked(_components([_unit(f.sum(0))], LEVELS)),
        "class activation maps, top 3 classes": lambda f: _ranked(_components(_class_maps(f, head), (0.25, 0.5))),
        "each cell's own class": lambda f: _ranked(_cell_classes(f, head)),
        "every window by contrast": lambda f: _ranked(_windows(_unit(f.sum(0)))),
    }
    results: dict[str, Any] = {"scenes": len(made), "network_ms_per_scene": round(network_ms, 2)}
    if centernet is not None:
        detected, detector_ms = _centernet_boxes(centernet, made)
        results["centernet (COCO detector, 512 px)"] = {**box_recall(detected, truth), "ms_per_scene": detector_ms}
        for kind in ("cutout", "framed"):
            mine = [n for n, s in enumerate(made) if s.kind == kind]
            results["centernet (COCO detector, 512 px)"][kind] = box_recall(
                [detected[n] for n in mine], [truth[n] for n in mine], at=(3,))
        print("centernet", results["centernet (COCO detector, 512 px)"], flush=True)
    for name, method in methods.items():
        started = time.perf_counter()
        found = [method(f)[:5] for f in fmaps]
        cost_ms = (time.perf_counter() - started) * 1000 / len(made)
        results[name] = {**box_recall(found, truth), "ms_per_scene": round(cost_ms, 3)}
        for kind in ("cutout", "framed"):
            mine = [n for n, s in enumerate(made) if s.kind == kind]
            results[name][kind] = box_recall([found[n] for n in mine], [truth[n] for n in mine], at=(3,))
        print(name, results[name], flush=True)
    return results


def _centernet_boxes(path: Path, made: list[Scene]) -> tuple[list[list[Box]], float]:
    """The extractor's detector's proposals for each scene (services.extractor.detector), and its
    milliseconds a scene (resize and network; its top-100 decoding is in the graph)."""
    from services.extractor.detector import Detector

    detector = Detector(path)
    images = [Image.open(io.BytesIO(scene.content)).convert("RGB") for scene in made]
    detector.propose(images[0], 5)
    started = time.perf_counter()
    found = [[_as_box(p) for p in detector.propose(image, 5)] for image in images]
    return found, round((time.perf_counter() - started) * 1000 / len(made), 2)


# Other maps of the same activations, measured against the shipped one (not used by the service).
Box = tuple[float, float, float, float]
WIDER = (0.4, 0.55, 0.7, 0.85)
LEVELS = (0.25, 0.4, 0.55, 0.7, 0.85)


def _as_box(p: Any) -> Box:
    return p.x, p.y, p.width, p.height


def _unit(saliency: NDArray[np.float32]) -> NDArray[np.float32]:
    return (np.maximum(saliency, 0) / max(float(saliency.max()), 1e-6)).astype(np.float32)


def _fits(box: Box) -> bool:
    return not (box[2] > 0.85 and box[3] > 0.85) and min(box[2], box[3]) >= 0.15


def _cells_box(region: NDArray[np.bool_]) -> Box:
    height, width = region.shape
    rows, cols = np.flatnonzero(region.any(axis=1)), np.flatnonzero(region.any(axis=0))
    return cols[0] / width, rows[0] / height, (cols[-1] + 1 - cols[0]) / width, (rows[-1] + 1 - rows[0]) / height


def _contrast(saliency: NDArray[np.float32], box: Box) -> float:
    height, width = saliency.shape
    inside = np.zeros(saliency.shape, bool)
    top, bottom = round(box[1] * height), round((box[1] + box[3]) * height)
    inside[top:bottom, round(box[0] * width):round((box[0] + box[2]) * width)] = True
    return float(saliency[inside].mean() - (saliency[~inside].mean() if (~inside).any() else 0.0))


def _components(maps: list[NDArray[np.float32]], thresholds: tuple[float, ...]) -> list[tuple[Box, float]]:
    from scipy import ndimage

    found = []
    for saliency in maps:
        saliency = _unit(saliency)
        for threshold in thresholds:
            labelled, n = ndimage.label(saliency >= threshold)
            for index in range(1, n + 1):
                box = _cells_box(labelled == index)
                if _fits(box):
                    found.append((box, _contrast(saliency, box)))
    return found


def _class_maps(fmap: NDArray[np.float32], head: Any) -> list[NDArray[np.float32]]:
    top = np.argsort(-(head.weight @ fmap.mean(axis=(1, 2)) + head.bias))[:3]
    return list(np.einsum("kc,chw->khw", head.weight[top], fmap))


def _cell_classes(fmap: NDArray[np.float32], head: Any) -> list[tuple[Box, float]]:
    from scipy import ndimage

    channels, height, width = fmap.shape
    classes = (fmap.reshape(channels, -1).T @ head.weight.T + head.bias).argmax(axis=1).reshape(height, width)
    saliency = _unit(fmap.sum(0))
    found = []
    for label in np.unique(classes):
        labelled, n = ndimage.label(classes == label)
        for index in range(1, n + 1):
            box = _cells_box(labelled == index)
            if _fits(box):
                found.append((box, _contrast(saliency, box)))
    return found


def _windows(saliency: NDArray[np.float32]) -> list[tuple[Box, float]]:
    height, width = saliency.shape
    return [(box, _contrast(saliency, box))
            for r0 in range(height) for r1 in range(r0 + 1, height + 1) for c0 in range(width)
            for c1 in range(c0 + 1, width + 1)
            if _fits(box := (c0 / width, r0 / height, (c1 - c0) / width, (r1 - r0) / height))]


def _ranked(found: list[tuple[Box, float]], max_iou: float = 0.5) -> list[Box]:
    kept: list[Box] = []
    for box, _ in sorted(found, key=lambda f: -f[1]):
        if all(iou(box, k) <= max_iou for k in kept):
            kept.append(box)
        if len(kept) == 5:
            break
    return kept


def ingest(client: GatewayClient, album: str, root: Path) -> dict[str, str]:
    """Adds the gallery; answers manifest id -> image id."""
    rows = read_manifest(root)
    client.create_album(album)
    ids: dict[str, str] = {}
    for start in range(0, len(rows), 32):
        chunk = rows[start:start + 32]
        answer = client.add_images(album, [Upload((root / r["file"]).read_bytes(), r["id"] + ".jpg") for r in chunk])
        for row, result in zip(chunk, answer["results"], strict=True):
            ids[row["id"]] = result.get("id", "")
    return ids


def measure_search(client: GatewayClient, root: Path, count: int, proposals: int) -> dict[str, Any]:
    album = f"proposals-{uuid.uuid4().hex[:8]}"
    ids = ingest(client, album, root)
    made = list(scenes(root, count))
    whole_first, any_first, best_first, truth_first, best_iou = [], [], [], [], []
    plain_ms, proposal_ms, counts = [], [], []
    for n, scene in enumerate(made):
        target = ids[scene.item]
        # A byte changed in a JPEG comment would do; a re-encode at another quality keeps both uncached.
        started = time.perf_counter()
        plain = client.search(album, image=_recoded(scene.content, 89), top_k=5)
        plain_ms.append((time.perf_counter() - started) * 1000)
        started = time.perf_counter()
        answer = client.search(album, image=_recoded(scene.content, 88), top_k=5, proposals=proposals)
        proposal_ms.append((time.perf_counter() - started) * 1000)
        regions = answer.get("regions", [])
        counts.append(len(regions))
        firsts = [r["results"][0]["id"] if r["results"] else "" for r in regions]
        x, y, w, h = scene.box
        truth = (float(x), float(y), float(w), float(h))
        overlaps = [iou(_box_of(r["region"]), truth) for r in regions]
        whole_first.append(bool(plain["results"]) and plain["results"][0]["id"] == target)
        any_first.append(target in firsts)
        best = int(np.argmax(overlaps)) if overlaps else -1
        best_iou.append(overlaps[best] if overlaps else 0.0)
        best_first.append(best >= 0 and firsts[best] == target)
        exact = client.search(album, image=scene.content, top_k=5, region=f"{x},{y},{w},{h}")
        truth_first.append(bool(exact["results"]) and exact["results"][0]["id"] == target)
        if n % 20 == 0:
            print(n, np.mean(whole_first), np.mean(any_first), np.mean(truth_first), flush=True)
    mean = lambda xs: round(float(np.mean(xs)), 3)  # noqa: E731
    return {"scenes": len(made), "proposals": proposals, "mean_regions": mean(counts),
            "item_first_whole_photo": mean(whole_first), "item_first_in_any_region": mean(any_first),
            "item_first_in_best_overlapping_region": mean(best_first), "item_first_true_box": mean(truth_first),
            "best_iou_mean": mean(best_iou), "box_recall_iou50": mean([v >= 0.5 for v in best_iou]),
            "plain_search_ms": percentiles(plain_ms), "proposals_search_ms": percentiles(proposal_ms),
            "ratio_p50": round(float(np.percentile(proposal_ms, 50) / np.percentile(plain_ms, 50)), 2)}


def _box_of(region: dict[str, int]) -> tuple[float, float, float, float]:
    return float(region["x"]), float(region["y"]), float(region["width"]), float(region["height"])


def _recoded(content: bytes, quality: int) -> bytes:
    out = io.BytesIO()
    Image.open(io.BytesIO(content)).save(out, "JPEG", quality=quality)
    return out.getvalue()


def save_examples(root: Path, folder: Path, count: int) -> None:
    """A few scenes with their true boxes drawn (to look at what is measured)."""
    folder.mkdir(parents=True, exist_ok=True)
    for n, scene in enumerate(scenes(root, count)):
        image = Image.open(io.BytesIO(scene.content))
        x, y, w, h = scene.box
        ImageDraw.Draw(image).rectangle((x, y, x + w, y + h), outline=(255, 0, 0), width=3)
        image.save(folder / f"scene_{n}.jpg")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--set", type=Path, required=True, help="evaluation set built with --natural")
    parser.add_argument("--scenes", type=int, default=120)
    parser.add_argument("--proposals", type=int, default=3, help="regions a search proposes")
    parser.add_argument("--boxes", action="store_true", help="box recall in-process only (no servers)")
    parser.add_argument("--centernet", type=Path, help="with --boxes: also this COCO detector (ONNX; bench/README)")
    parser.add_argument("--examples", type=Path, help="save a few scenes with their boxes here and stop")
    parser.add_argument("--url", help="a running gateway; default: start a fresh stack")
    args = parser.parse_args()
    if args.examples:
        save_examples(args.set, args.examples, 8)
        return
    if args.boxes:
        print_json_line({"bench": "proposals_boxes", **measure_boxes(args.set, args.scenes, args.centernet)})
        return
    if args.url:
        figures = measure_search(GatewayClient(args.url), args.set, args.scenes, args.proposals)
    else:
        with running_stack() as stack:
            figures = measure_search(GatewayClient(stack.http_url), args.set, args.scenes, args.proposals)
    print_json_line({"bench": "proposals", **figures})


if __name__ == "__main__":
    main()
