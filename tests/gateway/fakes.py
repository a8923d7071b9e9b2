"""In-memory stand-ins for the extractor, object store, cache and URL fetcher, and the real search service
(over the exact index) in process."""

from __future__ import annotations

import asyncio
import hashlib
import io
import tarfile
import threading
import time
import zipfile
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import grpc
import numpy as np
from PIL import Image

from services.common.errors import (
    FaceModelUnavailable,
    ImageNotFound,
    ImageSearchError,
    UrlFetchFailed,
)
from services.common.filtering import Expr
from services.common.grpc_server import create_server
from services.common.local_features import FeatureConfig
from services.extractor.keypoints import describe_image
from services.extractor.preprocess import PreprocessConfig
from services.extractor.settings import ExtractorSettings
from services.gateway.blobstore import Blob, BlobInfo, NewBlob
from services.gateway.clients import GrpcVectorSearch
from services.gateway.deps import Deps
from services.gateway.records import (
    EmbedBatch,
    Embedding,
    EmbedPurpose,
    FaceBatch,
    Hit,
    Item,
    ItemFailure,
    LabelInfo,
    LabelSet,
    ModelInfo,
    Proposal,
)
from services.gateway.settings import GatewaySettings
from services.search.index import ExactIndex
from services.search.servicer import SERVICE_NAMES, SearchServicer, registrar
from services.search.settings import SearchSettings

MODEL = "fake-model-v1"
DIM = 8


def png(seed: int, size: int = 32) -> bytes:
    """A small PNG whose pixels depend on the seed."""
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 255, (size, size, 3), dtype=np.uint8)
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, format="PNG")
    return out.getvalue()


def zipped(files: dict[str, bytes]) -> bytes:
    """A zip archive of these files (name -> content)."""
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as bundle:
        for name, content in files.items():
            bundle.writestr(name, content)
    return out.getvalue()


class NotedFile(io.BytesIO):
    """An archive's file that notes which threads read it, and when (a read may be made slow)."""

    def __init__(self, content: bytes, read_s: float = 0.0) -> None:
        super().__init__(content)
        self.read_s = read_s
        self.readers: set[int] = set()
        self.last_read = 0.0

    def read(self, size: int | None = -1, /) -> bytes:
        self.readers.add(threading.get_ident())
        if self.read_s:
            time.sleep(self.read_s)
        self.last_read = time.monotonic()
        return super().read(size)


def tar_gz(files: dict[str, bytes]) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w:gz") as tar:
        for name, content in files.items():
            member = tarfile.TarInfo(name)
            member.size = len(content)
            tar.addfile(member, io.BytesIO(content))
    return out.getvalue()


def vector_of(content: bytes) -> list[float]:
    seed = int.from_bytes(hashlib.sha256(content).digest()[:8], "little")
    v = np.random.default_rng(seed).normal(size=DIM)
    return list((v / np.linalg.norm(v)).astype(float))


QUERY_VARIANTS = ("rot90", "rot180", "rot270", "hflip")
# An indexed image's features for a keypoint index, as the extractor's defaults make them.
FINE_FEATURES = FeatureConfig(side=ExtractorSettings().local_features_index_side,
                              max_keypoints=ExtractorSettings().local_features_index_max)


class FakeExtractor:
    """Vectors from the content hash; anything Pillow cannot open fails as invalid_image. An INDEX
    request also gets `index_rows` rows per image (the first is the image's vector); a QUERY_VARIANTS
    request one vector per query variant, the first being the upright vector of the content the image
    is a turned copy of (`turned`), if any."""

    def __init__(self, model: str = MODEL, index_rows: int = 2) -> None:
        self.model = model
        self.index_rows = index_rows
        self.query_variants = QUERY_VARIANTS
        # Content -> the content it is a rotated copy of: turning it back gives that one's vector.
        self.turned: dict[bytes, bytes] = {}
        self.calls: list[int] = []
        self.purposes: list[EmbedPurpose] = []
        self.local_features: list[bool] = []
        # Whether each call asked for an indexed image's finer features (an album with a keypoint index).
        self.fine_local_features: list[bool] = []
        self.error: ImageSearchError | None = None
        # Content -> the content it is a near copy of: its vectors are that one's, nudged a little.
        self.near_copies: dict[bytes, bytes] = {}
        # The regions every image gets when a request asks for proposals (the first `proposals` of them).
        self.proposals: list[Proposal] = []

    def _vector(self, content: bytes, row: int) -> list[float]:
        original = self.near_copies.get(content)
        if original is None:
            return vector_of(content + self.model.encode() * row)
        nudged = np.asarray(vector_of(original + self.model.encode() * row)) + 0.01 * np.asarray(vector_of(content))
        return list((nudged / np.linalg.norm(nudged)).astype(float))

    async def model_info(self) -> ModelInfo:
        if self.error:
            raise self.error
        return ModelInfo(self.model, DIM, self.query_variants)

    async def labels(self) -> LabelSet:
        return LabelSet((LabelInfo("espresso", ("espresso",)), LabelInfo("tabby", ("tabby", "tabby cat"))), "fake")

    async def describe_faces(self, images: Sequence[bytes], to_store: bool = False) -> FaceBatch:
        """An extractor without face models (the real one's faces: tests/extractor/test_faces.py)."""
        raise FaceModelUnavailable("the face models are not installed (fake extractor)")

    async def embed(self, images: Sequence[bytes], purpose: EmbedPurpose = EmbedPurpose.QUERY,
                    local_features: bool = False, proposals: int = 0,
                    fine_local_features: bool = False) -> EmbedBatch:
        if self.error:
            raise self.error
        self.calls.append(len(images))
        self.purposes.append(purpose)
        self.local_features.append(local_features)
        self.fine_local_features.append(fine_local_features)
        fine = fine_local_features and purpose is EmbedPurpose.INDEX
        results = []
        for content in images:
            try:
                Image.open(io.BytesIO(content)).verify()
            except Exception:
                results.append(Embedding(error=ItemFailure("invalid_image", "cannot decode")))
                continue
            rows = [self._vector(content, r) for r in range(self.index_rows)]
            # Real keypoints (the verification code is not faked), a query's also mirrored.
            features = describe_image(content, PreprocessConfig(), FINE_FEATURES if fine else FeatureConfig(),
                                      purpose is not EmbedPurpose.INDEX) if local_features else []
            variants = [self._vector(self.turned[content], 0) if n == 0 and content in self.turned
                        else self._vector(content, 100 + n) for n in range(len(self.query_variants))]
            results.append(Embedding(vector=rows[0], rows=rows if purpose is EmbedPurpose.INDEX else [],
                                     local_features=[f.to_bytes() for f in features],
                                     variants=variants if purpose is EmbedPurpose.QUERY_VARIANTS else [],
                                     proposals=self.proposals[:proposals]))
        return EmbedBatch(self.model, DIM, results)


class LoopbackSearch:
    """The real search service in process: `SearchServicer` over the exact numpy index (`ExactIndex`,
    the reference the Milvus index is tested against), served by gRPC on a loopback port and reached
    through the gateway's real client. Not an engine of its own: the only additions are the last
    search's arguments, recorded, and a write failure to inject."""

    def __init__(self) -> None:
        self.index = ExactIndex(SearchSettings())
        self.insert_error: ImageSearchError | None = None
        # The insert is applied before insert_error is raised (Milvus wrote it, the answer was lost).
        self.insert_applied = False
        self.delete_error: ImageSearchError | None = None
        self.last_search: dict[str, Any] = {}
        self._server: grpc.aio.Server | None = None
        self._channel: grpc.aio.Channel | None = None
        self._client: GrpcVectorSearch | None = None

    async def client(self) -> GrpcVectorSearch:
        """The gateway's gRPC client of the service, started on first use in the running event loop."""
        if self._client is None:
            settings = SearchSettings(host="127.0.0.1", port=0)
            self._server, _, port = create_server(settings, "search", registrar(SearchServicer(self.index)),
                                                  SERVICE_NAMES)
            await self._server.start()
            self._channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
            self._client = GrpcVectorSearch(self._channel, timeout_s=10)
        return self._client

    async def aclose(self) -> None:
        if self._channel is not None:
            await self._channel.close()
        if self._server is not None:
            await self._server.stop(None)
        self._server = self._channel = self._client = None

    def __getattr__(self, name: str) -> Any:
        async def call(*args: Any, **kwargs: Any) -> Any:
            return await getattr(await self.client(), name)(*args, **kwargs)

        return call

    async def insert(self, collection: str, items: Sequence[Item], version: int = 0) -> list[str]:
        if self.insert_error and self.insert_applied:
            await (await self.client()).insert(collection, items, version)
        if self.insert_error:
            raise self.insert_error
        return await (await self.client()).insert(collection, items, version)

    async def delete(self, collection: str, ids: Sequence[str]) -> int:
        if self.delete_error:
            raise self.delete_error
        return await (await self.client()).delete(collection, ids)

    async def search(
        self,
        collection: str,
        vector: Sequence[float],
        top_k: int,
        filter: Expr | None = None,
        exclude_ids: Sequence[str] = (),
        primary_only: bool = False,
        expand_k: int = 0,
        max_distance: float | None = None,
    ) -> list[Hit]:
        self.last_search = {"top_k": top_k, "filter": filter, "exclude_ids": list(exclude_ids),
                            "primary_only": primary_only, "expand_k": expand_k, "max_distance": max_distance}
        return await (await self.client()).search(collection, vector, top_k, filter, exclude_ids,
                                                   primary_only=primary_only, expand_k=expand_k,
                                                   max_distance=max_distance)


class FakeBlobs:
    def __init__(self) -> None:
        self.objects: dict[str, tuple[bytes, str, str]] = {}
        self.put_error: ImageSearchError | None = None

    async def put(self, key: str, content: bytes, content_type: str, name: str = "") -> None:
        if self.put_error:
            raise self.put_error
        self.objects[key] = (content, content_type, name)

    async def put_all(self, blobs: Sequence[NewBlob]) -> None:
        for blob in blobs:
            await self.put(blob.key, blob.content, blob.content_type, blob.name)

    async def get(self, key: str) -> Blob:
        if key not in self.objects:
            raise ImageNotFound(key)
        content, content_type, _ = self.objects[key]
        return Blob(content, content_type)

    async def stat(self, key: str) -> BlobInfo:
        if key not in self.objects:
            raise ImageNotFound(key)
        content, content_type, name = self.objects[key]
        return BlobInfo(key, len(content), content_type, name)

    async def delete(self, *keys: str) -> None:
        for key in keys:
            self.objects.pop(key, None)

    async def delete_prefix(self, prefix: str) -> int:
        keys = [k for k in self.objects if k.startswith(prefix)]
        await self.delete(*keys)
        return len(keys)


class FakeCache:
    def __init__(self) -> None:
        self.vectors: dict[tuple[str, str], list[float]] = {}
        self.features: dict[str, bytes] = {}
        self.variants: dict[tuple[str, str], list[list[float]]] = {}

    async def get(self, model: str, content_hash: str) -> list[float] | None:
        return self.vectors.get((model, content_hash))

    async def put(self, model: str, content_hash: str, vector: list[float]) -> None:
        self.vectors[(model, content_hash)] = vector

    async def get_features(self, content_hash: str) -> bytes | None:
        return self.features.get(content_hash)

    async def put_features(self, content_hash: str, features: bytes) -> None:
        self.features[content_hash] = features

    async def get_variants(self, model: str, content_hash: str) -> list[list[float]] | None:
        return self.variants.get((model, content_hash))

    async def put_variants(self, model: str, content_hash: str, vectors: list[list[float]]) -> None:
        self.variants[(model, content_hash)] = vectors


class FakeFetcher:
    def __init__(self, pages: dict[str, bytes] | None = None) -> None:
        self.pages = pages or {}

    async def fetch(self, url: str) -> bytes:
        if url not in self.pages:
            raise UrlFetchFailed(f"{url} answered HTTP 404")
        return self.pages[url]


class SlowGet(LoopbackSearch):
    """A search service whose reads of images by id wait for `answer` (set: at once), and then raise `error` if
    one is set: an album that is slow to say which images it has (a new album, which Milvus is still loading)."""

    def __init__(self) -> None:
        super().__init__()
        self.answer = asyncio.Event()
        self.answer.set()
        self.error: ImageSearchError | None = None
        self.waiting = 0

    async def get(self, collection: str, ids: Sequence[str], **kwargs: Any) -> list[Item]:
        self.waiting += 1
        try:
            await self.answer.wait()
        finally:
            self.waiting -= 1
        if self.error:
            raise self.error
        return await (await self.client()).get(collection, ids, **kwargs)


SearchT = TypeVar("SearchT", bound=LoopbackSearch)


class Fakes:
    """The use cases' dependencies over fresh fakes, with the fakes at hand for the test to look into."""

    def __init__(self, **settings: Any) -> None:
        self.settings = GatewaySettings(**settings)
        self.extractor = FakeExtractor()
        self.search = LoopbackSearch()
        self.blobs = FakeBlobs()
        self.cache = FakeCache()
        self.fetcher = FakeFetcher()
        self.deps = Deps(self.settings, self.extractor, self.search, self.blobs, self.cache, self.fetcher)

    def use_search(self, search: SearchT) -> SearchT:
        """Another search service (a `LoopbackSearch` that fails or waits as a test asks) in place of the fresh
        one, the use cases' dependencies with it; returns it."""
        self.search = search
        self.deps = Deps(self.settings, self.extractor, search, self.blobs, self.cache, self.fetcher)
        return search

    async def aclose(self) -> None:
        await self.search.aclose()


async def until(condition: Callable[[], bool], what: str, seconds: float = 5.0) -> None:
    """Waits for the condition, failing with `what` after `seconds`."""
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, what
        await asyncio.sleep(0.01)
