"""Region proposals: from made-up feature maps, and from the real model over a real photo placed in a plain scene."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from numpy.typing import NDArray
from PIL import Image

from services.extractor.descriptors import Purpose
from services.extractor.model import EmbedJob, ImageEmbedder
from services.extractor.proposals import Proposal, propose
from services.extractor.settings import ExtractorSettings


def fmap_with(*blobs: tuple[int, int, int, int, float], shape: tuple[int, int] = (10, 10)) -> NDArray[np.float32]:
    """A [4, h, w] map, faint everywhere, with each blob (top, left, bottom, right, strength) bright."""
    fmap = np.full((4, *shape), 0.05, dtype=np.float32)
    for top, left, bottom, right, strength in blobs:
        fmap[:, top:bottom, left:right] = strength
    return fmap


def test_each_salient_blob_is_proposed_where_it_is_the_brightest_first() -> None:
    found = propose(fmap_with((1, 1, 4, 4, 6.0), (6, 5, 9, 9, 3.0)), 5)
    assert len(found) == 2
    strong, weak = found
    assert (strong.x, strong.y, strong.width, strong.height) == (0.1, 0.1, 0.3, 0.3)
    assert (weak.x, weak.y, weak.width, weak.height) == (0.5, 0.6, 0.4, 0.3)
    assert strong.score > weak.score > 0


def test_a_map_with_nothing_standing_out_proposes_nothing() -> None:
    assert propose(np.ones((4, 10, 10), np.float32), 5) == []
    assert propose(np.zeros((4, 10, 10), np.float32), 5) == []


def test_boxes_too_small_or_beyond_the_count_are_left_out() -> None:
    assert propose(fmap_with((4, 4, 5, 5, 9.0)), 5) == []  # one cell of ten: under 0.15 of a side
    blobs = fmap_with((0, 0, 3, 3, 5.0), (0, 6, 3, 9, 4.0), (6, 0, 9, 3, 3.0))
    assert len(propose(blobs, 2)) == 2 and propose(blobs, 0) == []


def test_overlapping_boxes_keep_the_best() -> None:
    a, b = Proposal(0.0, 0.0, 0.5, 0.5, 1.0), Proposal(0.05, 0.0, 0.5, 0.5, 0.5)
    assert a.iou(b) > 0.8 and a.iou(Proposal(0.5, 0.5, 0.5, 0.5, 0.1)) == 0.0


def photo_in_a_plain_scene(photo: Path) -> tuple[bytes, tuple[float, float, float, float]]:
    """The photo at a third of a 600x400 grey scene's width, near its right edge; its box as fractions."""
    scene = Image.new("RGB", (600, 400), (128, 128, 128))
    thing = Image.open(photo).convert("RGB")
    thing.thumbnail((200, 200))
    scene.paste(thing, (360, 150))
    out = io.BytesIO()
    scene.save(out, "JPEG", quality=90)
    return out.getvalue(), (360 / 600, 150 / 400, thing.width / 600, thing.height / 400)


def test_the_real_model_proposes_the_photo_placed_in_a_plain_scene(model_dir: Path, photos: list[Path]) -> None:
    embedder = ImageEmbedder.from_settings(ExtractorSettings(model_dir=model_dir))
    content, (x, y, w, h) = photo_in_a_plain_scene(photos[0])
    scales = embedder.decode(content)
    asked, plain = embedder.embed_and_label([EmbedJob(scales, Purpose.QUERY, 3), EmbedJob(scales)])
    assert asked.proposals and not plain.proposals
    best = max(asked.proposals, key=lambda p: p.iou(Proposal(x, y, w, h, 0.0)))
    assert best.iou(Proposal(x, y, w, h, 0.0)) >= 0.5, asked.proposals
    np.testing.assert_allclose(asked.rows, plain.rows, atol=1e-6)  # the vector does not change
