"""The COCO detector that proposes regions when it is installed (scripts/export_detector.sh makes its file)."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from PIL import Image

from services.extractor.detector import DETECTOR_FILE, Detector, load_optional
from services.extractor.proposals import Proposal
from tests.extractor.test_proposals import photo_in_a_plain_scene


@pytest.fixture(scope="module")
def detector(model_dir: Path) -> Detector:
    if not (model_dir / DETECTOR_FILE).exists():
        pytest.skip(f"no {DETECTOR_FILE}: scripts/export_detector.sh converts it")
    return Detector(model_dir / DETECTOR_FILE)


def test_the_detector_proposes_the_photo_placed_in_a_plain_scene(detector: Detector, photos: list[Path]) -> None:
    content, (x, y, w, h) = photo_in_a_plain_scene(photos[1])  # chelsea, a cat
    found = detector.propose(Image.open(io.BytesIO(content)).convert("RGB"), 3)
    assert 1 <= len(found) <= 3
    assert found[0].iou(Proposal(x, y, w, h, 0.0)) >= 0.5, found
    assert all(min(p.x, p.y) >= 0 and max(p.x + p.width, p.y + p.height) <= 1 for p in found)
    assert detector.propose(Image.open(io.BytesIO(content)).convert("RGB"), 0) == []


def test_a_plain_image_has_no_object(detector: Detector) -> None:
    assert detector.propose(Image.new("RGB", (600, 400), (128, 128, 128)), 3) == []


def test_without_its_file_there_is_no_detector(tmp_path: Path) -> None:
    assert load_optional(tmp_path) is None
