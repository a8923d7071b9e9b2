"""Quantises the exported network to int8 for CPUs: `<model>-int8.onnx` and its JSON manifest.

Runs once at setup, in the export environment (onnx and onnxruntime's quantiser; see
scripts/setup.sh); like export.py it imports nothing of `services`.

    python services/extractor/quantize.py --model efficientnet-lite0 --dir .cache/models \
        --calibration .cache/whiten-data/calibration.npz

Static quantisation by onnxruntime: weights int8 per output channel, activations uint8 with ranges
from MinMax calibration over the calibration file (the network's inputs for pictures of the
whitening set, made by `python -m services.extractor.calibration`; never an evaluation set), in the
QOperator format (QLinearConv and friends), which onnxruntime's CPU provider runs as integer
kernels. bench/README.md ("int8 network") measured it at ~0.56x the fp32 network's CPU per image
with descriptors at cosine 0.987 to fp32's. The CUDA provider has no kernels for these operators, so
the extractor keeps the fp32 file on a GPU (settings.py, `precision`).

The int8 network is another network: its file's hash, its whitening and the model id of the vectors
it makes are its own.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.metadata
import json
import logging
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnxruntime.quantization import (
    CalibrationDataReader,
    CalibrationMethod,
    QuantFormat,
    QuantType,
    quantize_static,
)

log = logging.getLogger("quantize")

SUFFIX = "-int8"
INPUT_NAME = "images"


class CalibrationInputs(CalibrationDataReader):
    """The calibration file's inputs, one image per run (their shapes differ)."""

    def __init__(self, path: Path) -> None:
        with np.load(path) as data:
            self.images = [data[f"arr_{i}"] for i in range(len(data.files))]
        self._next: Iterator[dict[str, np.ndarray]] = ({INPUT_NAME: x[None]} for x in self.images)

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._next, None)


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def quantize(source: Path, target: Path, calibration: CalibrationInputs) -> None:
    """Writes the int8 network to `target` (through a temporary file: a file there is always whole)."""
    fd, tmp_name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.stem}.", suffix=".onnx.tmp")
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        quantize_static(
            str(source), str(tmp), calibration,
            quant_format=QuantFormat.QOperator, per_channel=True,
            activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
            calibrate_method=CalibrationMethod.MinMax,
        )
        model = onnx.load(str(tmp))
        drop_unused_constants(model.graph)
        onnx.checker.check_model(model)
        onnx.save(model, str(tmp))
        tmp.chmod(0o644)
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def drop_unused_constants(graph: onnx.GraphProto) -> None:
    """Removes the constants no node reads any more (ReLU6's bounds, folded into the integer
    convolutions' output ranges): onnxruntime warns about each one every time it loads the file."""
    used = {name for node in graph.node for name in node.input} | {o.name for o in graph.output}
    nodes = [n for n in graph.node if n.op_type != "Constant" or any(o in used for o in n.output)]
    initializers = [i for i in graph.initializer if i.name in used]
    del graph.node[:], graph.initializer[:]
    graph.node.extend(nodes)
    graph.initializer.extend(initializers)


def manifest(source_manifest: dict[str, Any], target: Path, calibration: Path, images: int) -> dict[str, Any]:
    """The fp32 manifest's description, this file's name and hash, and how it was made."""
    return {
        **source_manifest,
        "name": target.stem,
        "sha256": sha256_of(target),
        "quantisation": {
            "from_sha256": source_manifest["sha256"],
            "format": "QOperator", "weights": "int8 per channel", "activations": "uint8",
            "calibration": "MinMax", "calibration_file": calibration.name,
            "calibration_sha256": sha256_of(calibration), "calibration_inputs": images,
            "onnxruntime": importlib.metadata.version("onnxruntime"),
        },
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="efficientnet-lite0")
    parser.add_argument("--dir", type=Path, default=Path(".cache/models"),
                        help="where <model>.onnx and its manifest are, and the int8 files go")
    parser.add_argument("--calibration", type=Path, required=True)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="[quantize] %(message)s")
    source = args.dir / f"{args.model}.onnx"
    source_manifest = json.loads((args.dir / f"{args.model}.json").read_text())
    if sha256_of(source) != source_manifest["sha256"]:
        raise SystemExit(f"{source} is not the file its manifest describes; export it again")
    target = args.dir / f"{args.model}{SUFFIX}.onnx"
    calibration = CalibrationInputs(args.calibration)
    quantize(source, target, calibration)
    # The manifest is written after the model, so a manifest always describes a complete file.
    write_json_atomically(manifest(source_manifest, target, args.calibration, len(calibration.images)),
                          target.with_suffix(".json"))
    print(f"wrote {target} and {target.with_suffix('.json')}")


if __name__ == "__main__":
    main()
