"""The extractor end to end: the real exported model behind a real gRPC server on a loopback port."""

from __future__ import annotations

import asyncio
import io
import itertools
import re
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from imagesearch.v1 import extractor_pb2, extractor_pb2_grpc
from numpy.typing import NDArray
from PIL import Image

from services.common.grpc_server import ERROR_REASON_KEY, set_serving
from services.common.local_features import LocalFeatures, match
from services.extractor.__main__ import Extractor, build
from services.extractor.batcher import BATCH_SIZE, IMAGES_EMBEDDED
from services.extractor.servicer import SERVICE_NAMES
from services.extractor.settings import ExtractorSettings


class ServerThread:
    """Runs the extractor's asyncio server in its own thread, so tests can call it synchronously."""

    def __init__(self, settings: ExtractorSettings) -> None:
        self.settings = settings
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.extractor: Extractor | None = None

    def start(self) -> int:
        self.thread.start()
        self.extractor = asyncio.run_coroutine_threadsafe(self._start(), self.loop).result(60)
        return self.extractor.port

    async def _start(self) -> Extractor:
        extractor = build(self.settings)
        await extractor.server.start()
        await set_serving(extractor.health, SERVICE_NAMES, True)
        return extractor

    def stop(self) -> None:
        assert self.extractor is not None
        asyncio.run_coroutine_threadsafe(self._stop(self.extractor), self.loop).result(30)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)

    @staticmethod
    async def _stop(extractor: Extractor) -> None:
        await extractor.server.stop(1)
        await extractor.close()


@pytest.fixture(scope="module")
def channel(model_dir: Path) -> Iterator[grpc.Channel]:
    settings = ExtractorSettings(host="127.0.0.1", port=0, model_dir=model_dir, max_wait_ms=20, max_batch=16)
    server = ServerThread(settings)
    port = server.start()
    with grpc.insecure_channel(f"127.0.0.1:{port}") as ch:
        yield ch
    server.stop()


@pytest.fixture()
def stub(channel: grpc.Channel) -> extractor_pb2_grpc.ExtractorStub:
    return extractor_pb2_grpc.ExtractorStub(channel)


def embed(stub: extractor_pb2_grpc.ExtractorStub, images: list[bytes]) -> extractor_pb2.EmbedResponse:
    return stub.Embed(extractor_pb2.EmbedRequest(images=images), timeout=60)


def vector(result: extractor_pb2.EmbedResult) -> NDArray[np.float32]:
    assert result.WhichOneof("result") == "vector", result
    return np.array(result.vector.values, dtype=np.float32)


def edited_copy(path: Path) -> bytes:
    """Cropped by 10% on each side and recompressed as a mediocre JPEG."""
    image = Image.open(path).convert("RGB")
    w, h = image.size
    out = io.BytesIO()
    image.crop((w // 10, h // 10, w - w // 10, h - h // 10)).save(out, "JPEG", quality=60)
    return out.getvalue()


def test_health_check_says_serving(channel: grpc.Channel) -> None:
    reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=10)
    assert reply.status == health_pb2.HealthCheckResponse.SERVING
    named = health_pb2.HealthCheckRequest(service=SERVICE_NAMES[0])
    assert health_pb2_grpc.HealthStub(channel).Check(named, timeout=10).status == reply.status


# The default pipeline on the CPU: the int8 network, aspect-kept 320 px, GeM 3, whitened to 512, one
# database row per image.
MODEL_ID = re.compile(r"^efficientnet-lite0-int8/gem3/320/aspect/w512-[0-9a-f]{8}/v1$")


def test_model_info_describes_the_pipeline(stub: extractor_pb2_grpc.ExtractorStub) -> None:
    info = stub.GetModelInfo(extractor_pb2.GetModelInfoRequest(), timeout=10)
    assert MODEL_ID.match(info.model), info.model
    assert (info.dim, info.image_size, info.max_batch, info.index_rows) == (512, 320, 16, 1)
    assert list(info.query_variants) == ["rot90", "rot180", "rot270", "hflip"]
    assert info.provider == "CPUExecutionProvider"


def test_vectors_are_unit_length_and_labelled_with_the_model(
    stub: extractor_pb2_grpc.ExtractorStub, photos: list[Path]
) -> None:
    reply = embed(stub, [photos[0].read_bytes()])
    assert MODEL_ID.match(reply.model) and reply.dim == 512
    assert np.linalg.norm(vector(reply.results[0])) == pytest.approx(1.0, abs=1e-5)


def test_the_same_photo_gives_the_same_vector(stub: extractor_pb2_grpc.ExtractorStub, photos: list[Path]) -> None:
    data = photos[1].read_bytes()
    first, second = (vector(r) for r in embed(stub, [data, data]).results)
    again = vector(embed(stub, [data]).results[0])
    assert float(first @ second) == pytest.approx(1.0, abs=1e-5)
    assert float(first @ again) == pytest.approx(1.0, abs=1e-5)


def test_an_edited_copy_is_nearer_than_a_different_photo(
    stub: extractor_pb2_grpc.ExtractorStub, photos: list[Path]
) -> None:
    for original, other in itertools.pairwise(photos[:6]):
        trio = [original.read_bytes(), edited_copy(original), other.read_bytes()]
        a, edited, b = (vector(r) for r in embed(stub, trio).results)
        assert float(a @ edited) > float(a @ b) + 0.1, f"{original.name} vs {other.name}"


def test_a_corrupt_image_fails_alone_and_the_rest_are_embedded(
    stub: extractor_pb2_grpc.ExtractorStub, photos: list[Path]
) -> None:
    good = photos[0].read_bytes()
    reply = embed(stub, [good, good[: len(good) // 3], b"not an image", photos[2].read_bytes()])
    kinds = [r.WhichOneof("result") for r in reply.results]
    assert kinds == ["vector", "error", "error", "vector"]
    assert reply.results[1].error.reason == "invalid_image" and reply.results[1].error.message
    assert reply.results[2].error.reason == "invalid_image"
    assert len(reply.results[3].vector.values) == 512


def test_a_query_gets_one_vector_and_an_indexed_image_all_its_rows(
    stub: extractor_pb2_grpc.ExtractorStub, photos: list[Path]
) -> None:
    data = photos[3].read_bytes()
    query = embed(stub, [data]).results[0]
    request = extractor_pb2.EmbedRequest(images=[data, b"junk"], purpose=extractor_pb2.EmbedRequest.INDEX)
    indexed, junk = stub.Embed(request, timeout=60).results
    rows = np.array([v.values for v in indexed.index_vectors], dtype=np.float32)
    assert len(query.index_vectors) == 0 and rows.shape == (1, 512)
    np.testing.assert_allclose(rows[0], vector(indexed), atol=1e-6)
    np.testing.assert_allclose(rows[0], vector(query), atol=1e-5)
    assert junk.error.reason == "invalid_image" and not junk.index_vectors


def test_query_variants_turned_back_meet_the_upright_photo(
    stub: extractor_pb2_grpc.ExtractorStub, photos: list[Path]
) -> None:
    """A photo saved a quarter turned: its rot90 variant turns it upright again, to the photo's own
    vector; its mirror image's hflip variant likewise (pixel-exact, PNG)."""
    with Image.open(photos[2]) as image:
        rgb = image.convert("RGB")
    upright = vector(embed(stub, [photos[2].read_bytes()]).results[0])
    for edit, variant in ((Image.Transpose.ROTATE_270, 0), (Image.Transpose.FLIP_LEFT_RIGHT, 3)):
        out = io.BytesIO()
        rgb.transpose(edit).save(out, "PNG")
        request = extractor_pb2.EmbedRequest(images=[out.getvalue(), b"junk"],
                                             purpose=extractor_pb2.EmbedRequest.QUERY_VARIANTS)
        result, junk = stub.Embed(request, timeout=60).results
        variants = np.array([v.values for v in result.variant_vectors], dtype=np.float32)
        assert variants.shape == (4, 512) and not result.index_vectors
        similarity = variants @ upright
        assert int(np.argmax(similarity)) == variant and similarity[variant] > 0.99, similarity
        assert similarity[variant] > float(vector(result) @ upright)
        assert junk.error.reason == "invalid_image" and not junk.variant_vectors


def test_local_features_come_when_asked_for_a_query_also_mirrored(
    stub: extractor_pb2_grpc.ExtractorStub, photos: list[Path]
) -> None:
    data = photos[0].read_bytes()
    assert not embed(stub, [data]).results[0].local_features
    query = stub.Embed(extractor_pb2.EmbedRequest(images=[data], local_features=True), timeout=60).results[0]
    upright, mirrored = (LocalFeatures.from_bytes(f) for f in query.local_features)
    assert len(upright) >= 100 and len(mirrored) >= 100
    assert match(upright, upright).inliers == len(upright)
    request = extractor_pb2.EmbedRequest(images=[data, b"junk"], purpose=extractor_pb2.EmbedRequest.INDEX,
                                         local_features=True)
    indexed, junk = stub.Embed(request, timeout=60).results
    # An album's image is described as a query is (upright only), unless the album keeps a keypoint index:
    # then finer (EXTRACTOR_LOCAL_FEATURES_INDEX_SIDE / _MAX), still matching the query's keypoints.
    assert len(indexed.local_features) == 1
    assert LocalFeatures.from_bytes(indexed.local_features[0]).to_bytes() == upright.to_bytes()
    request.fine_local_features = True
    fine, fine_junk = stub.Embed(request, timeout=60).results
    index_features = LocalFeatures.from_bytes(fine.local_features[0])
    assert len(index_features) > len(upright)
    assert match(upright, index_features).inliers >= 30
    assert junk.error.reason == "invalid_image" and not junk.local_features and not fine_junk.local_features
    # The vectors do not change for being asked for features too.
    np.testing.assert_allclose(vector(query), vector(embed(stub, [data]).results[0]), atol=1e-6)


def test_an_oversized_image_is_reported_as_too_large(stub: extractor_pb2_grpc.ExtractorStub) -> None:
    reply = embed(stub, [b"\0" * (ExtractorSettings().max_image_bytes + 1)])
    assert reply.results[0].error.reason == "image_too_large"


def test_an_empty_request_is_an_invalid_argument(stub: extractor_pb2_grpc.ExtractorStub) -> None:
    with pytest.raises(grpc.RpcError) as caught:
        embed(stub, [])
    error = caught.value
    assert isinstance(error, grpc.Call)
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert (ERROR_REASON_KEY, "invalid_argument") in tuple(error.trailing_metadata() or ())


def test_concurrent_requests_share_batches(stub: extractor_pb2_grpc.ExtractorStub, photos: list[Path]) -> None:
    def batches_so_far() -> float:
        return next(s.value for m in BATCH_SIZE.collect() for s in m.samples if s.name.endswith("_count"))

    before = batches_so_far()
    requests = 12
    with ThreadPoolExecutor(requests) as pool:
        replies = list(pool.map(lambda p: embed(stub, [p.read_bytes()]), (photos * 2)[:requests]))
    assert all(r.results[0].WhichOneof("result") == "vector" for r in replies)
    assert batches_so_far() - before < requests


def test_a_search_is_not_queued_behind_images_being_indexed(stub: extractor_pb2_grpc.ExtractorStub,
                                                            photos: list[Path]) -> None:
    """An import's batch (purpose INDEX, local features) takes seconds; a query sent while it runs is answered
    long before it ends, from the interactive lane, instead of after every image queued before it."""
    def embedded_so_far() -> float:
        return next(s.value for m in IMAGES_EMBEDDED.collect() for s in m.samples if s.name.endswith("_total"))

    bulk = [p.read_bytes() for p in (photos * 8)[:48]]
    before = embedded_so_far()
    with ThreadPoolExecutor(1) as pool:
        indexing = pool.submit(lambda: stub.Embed(extractor_pb2.EmbedRequest(
            images=bulk, purpose=extractor_pb2.EmbedRequest.INDEX, local_features=True), timeout=300))
        while embedded_so_far() == before and not indexing.done():  # the batch is under way
            time.sleep(0.01)
        query = stub.Embed(extractor_pb2.EmbedRequest(images=[edited_copy(photos[0])], local_features=True),
                           timeout=60)
        indexed_meanwhile = embedded_so_far() - before - 1  # less the query's own image
        assert all(r.WhichOneof("result") == "vector" for r in indexing.result().results)
    assert vector(query.results[0]).shape and query.results[0].local_features
    assert indexed_meanwhile < len(bulk) / 2, f"the query was answered after {indexed_meanwhile:g} of {len(bulk)}"


def jpeg_of(pixels: NDArray[np.uint8]) -> bytes:
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, "JPEG", quality=90)
    return out.getvalue()


def test_an_indexed_photo_gets_the_networks_imagenet_labels_and_a_query_none(
    stub: extractor_pb2_grpc.ExtractorStub,
) -> None:
    from skimage import data

    images = [jpeg_of(data.coffee()), jpeg_of(data.chelsea())]
    indexed = stub.Embed(extractor_pb2.EmbedRequest(images=images, purpose=extractor_pb2.EmbedRequest.INDEX),
                         timeout=60).results
    assert indexed[0].labels[0].name == "espresso" and indexed[0].labels[0].score > 0.5
    assert {"Egyptian cat", "tiger cat", "tabby"} & {label.name for label in indexed[1].labels}
    assert all(a.score >= b.score >= 0.1 for a, b in zip(indexed[1].labels, indexed[1].labels[1:], strict=False))
    assert not embed(stub, images[:1]).results[0].labels


def test_list_labels_gives_every_class_with_its_wordnet_lemmas(stub: extractor_pb2_grpc.ExtractorStub) -> None:
    label_set = stub.ListLabels(extractor_pb2.ListLabelsRequest(), timeout=10)
    assert len(label_set.labels) == 1000 and "timm" in label_set.source
    tabby = next(label for label in label_set.labels if label.synset == "n02123045")
    assert tabby.name == "tabby" and list(tabby.lemmas) == ["tabby", "tabby cat"]
