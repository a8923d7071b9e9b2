"""TF.js graph model -> ONNX with tf2onnx, for export_detector.sh (runs in the TensorFlow environment).

TF.js drops attributes that TensorFlow's own graph needs back: the fused convolutions' `TArgs` (one
DT_FLOAT per extra input) and TopKV2's index types; they are put back in a copy of model.json before
tf2onnx reads it. tf2onnx 1.17 still calls numpy's removed `np.product`.
"""

from __future__ import annotations

import json
import runpy
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np

FUSED = ("_FusedConv2D", "FusedDepthwiseConv2dNative", "_FusedMatMul")


def patched(model_json: Path, folder: Path) -> Path:
    """A copy of the model (graph and weights) with the attributes TensorFlow needs."""
    graph = json.loads(model_json.read_text())
    for node in graph["modelTopology"]["node"]:
        attrs = node.setdefault("attr", {})
        if node["op"] in FUSED:
            extra = len([i for i in node["input"] if not i.startswith("^")]) - 2
            attrs["TArgs"] = {"list": {"type": ["DT_FLOAT"] * extra}}
            attrs.setdefault("num_args", {"i": str(extra)})
        if node["op"] == "TopKV2":
            attrs["index_type"] = {"type": "DT_INT32"}
            attrs["Tk"] = {"type": "DT_INT32"}
    for group in graph["weightsManifest"]:
        for path in group["paths"]:
            shutil.copy(model_json.parent / path, folder / path)
    out = folder / model_json.name
    out.write_text(json.dumps(graph))
    return out


def main() -> None:
    model_json, onnx_out = Path(sys.argv[1]), Path(sys.argv[2])
    np.product = np.prod  # type: ignore[attr-defined]
    with tempfile.TemporaryDirectory() as folder:
        source = patched(model_json, Path(folder))
        sys.argv = ["tf2onnx.convert", "--tfjs", str(source), "--output", str(onnx_out), "--opset", "17"]
        runpy.run_module("tf2onnx.convert", run_name="__main__")


if __name__ == "__main__":
    main()
