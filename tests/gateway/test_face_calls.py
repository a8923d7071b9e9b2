"""How the gateway asks the extractor for faces: an add's images a bounded number a call (each call has its
deadline, and the extractor takes an add's images in turns with face searches), a face search's in one."""

from __future__ import annotations

from collections.abc import Sequence
from types import SimpleNamespace
from typing import Any

import pytest

from services.gateway.records import Collection, FaceBatch, ImageFaces
from services.gateway.usecases import faces

pytestmark = pytest.mark.anyio


class RecordingExtractor:
    """Answers each image with its first byte as its width, and records each call's size and kind."""

    def __init__(self) -> None:
        self.calls: list[tuple[int, bool]] = []

    async def describe_faces(self, images: Sequence[bytes], to_store: bool = False) -> FaceBatch:
        self.calls.append((len(images), to_store))
        return FaceBatch("face-model", 128, [ImageFaces(width=image[0]) for image in images])


ALBUM_FACES = Collection(name="people.faces", dim=128, metric="euclidean", model="face-model", created_at_ms=0,
                         count=0)


async def test_an_add_s_images_are_described_faces_per_call_in_order() -> None:
    extractor = RecordingExtractor()
    deps: Any = SimpleNamespace(extractor=extractor)
    contents = [bytes([i]) for i in range(2 * faces.FACES_PER_CALL + 5)]
    found = await faces.describe(deps, ALBUM_FACES, contents, to_store=True)
    assert [f.width for f in found] == list(range(len(contents)))
    assert extractor.calls == [(faces.FACES_PER_CALL, True), (faces.FACES_PER_CALL, True), (5, True)]


async def test_a_face_search_s_images_go_in_one_call() -> None:
    extractor = RecordingExtractor()
    deps: Any = SimpleNamespace(extractor=extractor)
    found = await faces.describe(deps, ALBUM_FACES, [bytes([i]) for i in range(faces.FACES_PER_CALL + 1)])
    assert len(found) == faces.FACES_PER_CALL + 1 and extractor.calls == [(faces.FACES_PER_CALL + 1, False)]
