"""Faces in the extractor: dlib's detector, landmarks and descriptor on real photos of people, and the
DescribeFaces RPC's answers for many faces, no face, a bad image and missing models, and a face search's
image described before the images of an add waiting.

The photos are the face_recognition 1.3.0 sdist's (scripts/setup.sh --dev: .cache/faces/people): three
of one person, one of another.
"""

from __future__ import annotations

import io
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import numpy as np
import pytest
from imagesearch.v1 import extractor_pb2, extractor_pb2_grpc
from PIL import Image

from services.common.errors import FaceModelUnavailable
from services.common.grpc_server import ERROR_REASON_KEY
from services.devstack import ROOT
from services.extractor.faces import FACE_DIM, FaceModel, decode_full
from services.extractor.preprocess import PreprocessConfig
from services.extractor.servicer import FACE_IMAGES
from services.extractor.settings import ExtractorSettings
from tests.extractor.test_servicer import ServerThread

PEOPLE = ROOT / ".cache" / "faces" / "people"


@pytest.fixture(scope="module")
def people() -> dict[str, bytes]:
    found = {p.stem: p.read_bytes() for p in sorted(PEOPLE.glob("*.jpg"))}
    assert {"obama", "obama2", "obama3", "biden"} <= set(found), "run scripts/setup.sh --dev (photos of people)"
    return found


@pytest.fixture(scope="module")
def model() -> FaceModel:
    return FaceModel()


def side_by_side(*photos: bytes, height: int = 600) -> bytes:
    """One picture of several photos next to each other (each scaled to `height`)."""
    images = [Image.open(io.BytesIO(p)).convert("RGB") for p in photos]
    images = [i.resize((round(i.width * height / i.height), height)) for i in images]
    canvas = Image.new("RGB", (sum(i.width for i in images), height), "white")
    x = 0
    for image in images:
        canvas.paste(image, (x, 0))
        x += image.width
    out = io.BytesIO()
    canvas.save(out, "JPEG", quality=90)
    return out.getvalue()


def distance(a: np.ndarray, b: np.ndarray) -> float:
    return float(1 - a @ b)


def test_each_photo_of_a_person_shows_one_face_with_a_box_landmarks_and_a_unit_descriptor(
        model: FaceModel, people: dict[str, bytes]) -> None:
    found = model.find(decode_full(people["obama"], PreprocessConfig()))
    assert (found.width, found.height) == (910, 1137)
    [face] = found.faces
    x, y, w, h = face.box
    assert 0 <= x < x + w <= found.width and 0 <= y < y + h <= found.height and w > 150
    assert len(face.landmarks) == 5 and all(x <= px <= x + w and y <= py <= y + h for px, py in face.landmarks)
    assert face.descriptor.shape == (FACE_DIM,) and np.linalg.norm(face.descriptor) == pytest.approx(1, abs=1e-5)
    assert face.score > 0


def test_two_photos_of_one_person_are_nearer_than_two_people(model: FaceModel, people: dict[str, bytes]) -> None:
    faces = {k: model.find(decode_full(v, PreprocessConfig())).faces[0].descriptor for k, v in people.items()}
    same = [distance(faces["obama"], faces[k]) for k in ("obama2", "obama3")]
    assert max(same) < 0.07  # the gateway's match distance
    assert distance(faces["obama"], faces["biden"]) > 0.07


def test_many_faces_in_one_picture_come_largest_first_each_where_it_is(model: FaceModel,
                                                                       people: dict[str, bytes]) -> None:
    picture = decode_full(side_by_side(people["obama"], people["biden"]), PreprocessConfig())
    found = model.find(picture)
    assert len(found.faces) == 2
    areas = [f.box[2] * f.box[3] for f in found.faces]
    assert areas == sorted(areas, reverse=True)
    obama_width = round(910 * 600 / 1137)
    sides = sorted(("left" if f.box[0] + f.box[2] / 2 < obama_width else "right") for f in found.faces)
    assert sides == ["left", "right"]


def test_a_photo_without_a_face_shows_none(model: FaceModel, photos: list[Path]) -> None:
    coffee = next(p for p in photos if p.stem == "coffee")
    assert model.find(decode_full(coffee.read_bytes(), PreprocessConfig())).faces == ()


def test_missing_models_are_a_clear_unavailable_error(tmp_path: Path) -> None:
    missing = FaceModel(directory=tmp_path)
    assert not missing.installed()
    with pytest.raises(FaceModelUnavailable, match="not installed"):
        missing.load()


@pytest.fixture(scope="module")
def stub(model_dir: Path) -> Iterator[extractor_pb2_grpc.ExtractorStub]:
    server = ServerThread(ExtractorSettings(host="127.0.0.1", port=0, model_dir=model_dir))
    port = server.start()
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        yield extractor_pb2_grpc.ExtractorStub(channel)
    server.stop()


def test_describe_faces_answers_each_image_alone(stub: extractor_pb2_grpc.ExtractorStub, people: dict[str, bytes],
                                                 photos: list[Path]) -> None:
    info = stub.GetModelInfo(extractor_pb2.GetModelInfoRequest(), timeout=30)
    assert info.face_model and info.face_dim == FACE_DIM
    coffee = next(p for p in photos if p.stem == "coffee").read_bytes()
    group = side_by_side(people["obama"], people["biden"])
    reply = stub.DescribeFaces(extractor_pb2.DescribeFacesRequest(images=[people["obama2"], coffee, b"junk", group]),
                               timeout=120)
    assert reply.model == info.face_model and reply.dim == FACE_DIM
    one, none, bad, two = reply.results
    assert len(one.faces.faces) == 1 and len(one.faces.faces[0].descriptor) == FACE_DIM
    assert len(one.faces.faces[0].landmarks) == 5 and (one.width, one.height) == (626, 1200)
    assert none.WhichOneof("result") == "faces" and len(none.faces.faces) == 0
    assert bad.WhichOneof("result") == "error" and bad.error.reason == "invalid_image"
    assert len(two.faces.faces) == 2


@pytest.mark.parametrize(("interactive", "lane"), [(False, "bulk"), (True, "adds")])  # an import's, an add's
def test_a_face_search_is_not_queued_behind_images_being_stored(stub: extractor_pb2_grpc.ExtractorStub,
                                                               people: dict[str, bytes], interactive: bool,
                                                               lane: str) -> None:
    """An add's or import's faces take seconds (one image at a time); a face search's query sent meanwhile is
    described next, instead of after every image queued before it."""
    def described(lane: str) -> float:
        return next(s.value for m in FACE_IMAGES.collect() for s in m.samples
                    if s.name.endswith("_total") and s.labels["lane"] == lane)

    stub.DescribeFaces(extractor_pb2.DescribeFacesRequest(images=[people["obama"]], interactive=True), timeout=60)
    bulk = (list(people.values()) * 8)[:24]
    before = described(lane)
    request = extractor_pb2.DescribeFacesRequest(images=bulk, interactive=interactive, to_store=True)
    with ThreadPoolExecutor(1) as pool:
        storing = pool.submit(lambda: stub.DescribeFaces(request, timeout=300))
        while described(lane) == before and not storing.done():  # the batch is under way
            time.sleep(0.01)
        query = stub.DescribeFaces(extractor_pb2.DescribeFacesRequest(images=[people["obama2"]], interactive=True),
                                   timeout=60)
        described_meanwhile = described(lane) - before
        assert all(r.WhichOneof("result") == "faces" for r in storing.result().results)
    assert len(query.results[0].faces.faces) == 1
    assert described_meanwhile < len(bulk) / 2, f"the query was answered after {described_meanwhile:g} of {len(bulk)}"


def test_describe_faces_without_images_is_an_invalid_argument(stub: extractor_pb2_grpc.ExtractorStub) -> None:
    with pytest.raises(grpc.RpcError) as caught:
        stub.DescribeFaces(extractor_pb2.DescribeFacesRequest(), timeout=30)
    assert isinstance(caught.value, grpc.Call) and caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert (ERROR_REASON_KEY, "invalid_argument") in tuple(caught.value.trailing_metadata() or ())


def test_an_extractor_without_face_models_says_so_and_still_embeds(model_dir: Path, tmp_path: Path,
                                                                  people: dict[str, bytes]) -> None:
    server = ServerThread(ExtractorSettings(host="127.0.0.1", port=0, model_dir=model_dir, faces_model_dir=tmp_path))
    port = server.start()
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = extractor_pb2_grpc.ExtractorStub(channel)
            info = stub.GetModelInfo(extractor_pb2.GetModelInfoRequest(), timeout=30)
            assert info.face_model == "" and info.face_dim == 0
            with pytest.raises(grpc.RpcError) as caught:
                stub.DescribeFaces(extractor_pb2.DescribeFacesRequest(images=[people["obama"]]), timeout=30)
            assert isinstance(caught.value, grpc.Call) and caught.value.code() == grpc.StatusCode.UNAVAILABLE
            assert (ERROR_REASON_KEY, "face_model_unavailable") in tuple(caught.value.trailing_metadata() or ())
            assert "not installed" in (caught.value.details() or "")
            embedded = stub.Embed(extractor_pb2.EmbedRequest(images=[people["obama"]]), timeout=60)
            assert embedded.results[0].WhichOneof("result") == "vector"
    finally:
        server.stop()
