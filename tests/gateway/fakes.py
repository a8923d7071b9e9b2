"""In-memory stand-ins for the extractor, search service, object store, cache and URL fetcher."""

from __future__ import annotations

import hashlib
import io
import json
import time
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import numpy as np
from PIL import Image

from services.common.errors import (
    AlreadyExists,
    ImageNotFound,
    ImageSearchError,
    NotFound,
    UrlFetchFailed,
)
from services.common.local_features import FeatureConfig
from services.extractor.keypoints import describe_image
from services.extractor.preprocess import PreprocessConfig
from services.gateway.blobstore import Blob, BlobInfo
from services.gateway.deps import Deps
from services.gateway.records import (
    Collection,
    EmbedBatch,
    Embedding,
    EmbedPurpose,
    Hit,
    Item,
    ItemFailure,
    ModelInfo,
)
from services.gateway.settings import GatewaySettings

MODEL = "fake-model-v1"
DIM = 8


def png(seed: int, size: int = 32) -> bytes:
    """A small PNG whose pixels depend on the seed."""
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 255, (size, size, 3), dtype=np.uint8)
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, format="PNG")
    return out.getvalue()


def vector_of(content: bytes) -> list[float]:
    seed = int.from_bytes(hashlib.sha256(content).digest()[:8], "little")
    v = np.random.default_rng(seed).normal(size=DIM)
    return list((v / np.linalg.norm(v)).astype(float))


class FakeExtractor:
    """Vectors from the content hash; anything Pillow cannot open fails as invalid_image. An INDEX
    request also gets `index_rows` rows per image (the first is the image's vector)."""

    def __init__(self, model: str = MODEL, index_rows: int = 2) -> None:
        self.model = model
        self.index_rows = index_rows
        self.calls: list[int] = []
        self.purposes: list[EmbedPurpose] = []
        self.local_features: list[bool] = []
        self.error: ImageSearchError | None = None

    async def model_info(self) -> ModelInfo:
        if self.error:
            raise self.error
        return ModelInfo(self.model, DIM)

    async def embed(self, images: Sequence[bytes], purpose: EmbedPurpose = EmbedPurpose.QUERY,
                    local_features: bool = False) -> EmbedBatch:
        if self.error:
            raise self.error
        self.calls.append(len(images))
        self.purposes.append(purpose)
        self.local_features.append(local_features)
        results = []
        for content in images:
            try:
                Image.open(io.BytesIO(content)).verify()
            except Exception:
                results.append(Embedding(error=ItemFailure("invalid_image", "cannot decode")))
                continue
            rows = [vector_of(content + self.model.encode() * r) for r in range(self.index_rows)]
            # Real keypoints (the verification code is not faked), a query's also mirrored.
            features = describe_image(content, PreprocessConfig(), FeatureConfig(),
                                      purpose is EmbedPurpose.QUERY) if local_features else []
            results.append(Embedding(vector=rows[0], rows=rows if purpose is EmbedPurpose.INDEX else [],
                                     local_features=[f.to_bytes() for f in features]))
        return EmbedBatch(self.model, DIM, results)


def _matches(attributes: dict[str, Any], flt: dict[str, Any]) -> bool:
    return all(attributes.get(k) == v for k, v in flt.items())


class FakeSearch:
    """Exact cosine search over dicts; equality-only filters."""

    def __init__(self) -> None:
        self.collections: dict[str, Collection] = {}
        self.items: dict[str, dict[str, Item]] = {}
        self.insert_error: ImageSearchError | None = None
        self.last_search: dict[str, Any] = {}

    def _items(self, name: str) -> dict[str, Item]:
        if name not in self.items:
            raise NotFound(f"no collection {name}")
        return self.items[name]

    async def create_collection(self, name: str, dim: int, model: str) -> Collection:
        if name in self.collections:
            raise AlreadyExists(f"collection {name} exists")
        self.collections[name] = Collection(name, dim, "cosine", model, int(time.time() * 1000), 0)
        self.items[name] = {}
        return self.collections[name]

    async def drop_collection(self, name: str) -> bool:
        self._items(name)
        del self.collections[name], self.items[name]
        return True

    async def list_collections(self) -> list[Collection]:
        return [await self.get_collection(n) for n in self.collections]

    async def get_collection(self, name: str) -> Collection:
        store = self._items(name)
        return replace(self.collections[name], count=len(store))

    async def insert(self, collection: str, items: Sequence[Item]) -> list[str]:
        store = self._items(collection)
        if self.insert_error:
            raise self.insert_error
        for item in items:
            store[item.id] = item
        return [i.id for i in items]

    async def search(
        self,
        collection: str,
        vector: Sequence[float],
        top_k: int,
        filter_json: str,
        exclude_ids: Sequence[str],
        primary_only: bool = False,
        expand_k: int = 0,
    ) -> list[Hit]:
        """Ranks by each item's first vector whatever `primary_only` says; `expand_k` is only recorded."""
        self.last_search = {"top_k": top_k, "filter_json": filter_json, "exclude_ids": list(exclude_ids),
                            "primary_only": primary_only, "expand_k": expand_k}
        flt = json.loads(filter_json) if filter_json else {}
        q = np.asarray(vector)
        hits = [
            Hit(i.id, i.name, float(1 - q @ np.asarray(i.vectors[0])), i.attributes_json, i.content_hash,
                i.created_at_ms)
            for i in self._items(collection).values()
            if i.id not in exclude_ids and _matches(json.loads(i.attributes_json or "{}"), flt)
        ]
        return sorted(hits, key=lambda h: h.distance)[:top_k]

    async def get(self, collection: str, ids: Sequence[str], with_vectors: bool = False) -> list[Item]:
        store = self._items(collection)
        found = [store[i] for i in ids if i in store]
        return found if with_vectors else [replace(i, vectors=[]) for i in found]

    async def list_items(self, collection: str, limit: int, offset: int) -> list[Item]:
        items = sorted(self._items(collection).values(), key=lambda i: i.id)
        return [replace(i, vectors=[]) for i in items[offset:offset + limit]]

    async def delete(self, collection: str, ids: Sequence[str]) -> int:
        store = self._items(collection)
        return sum(1 for i in ids if store.pop(i, None) is not None)

    async def count(self, collection: str) -> int:
        return len(self._items(collection))


class FakeBlobs:
    def __init__(self) -> None:
        self.objects: dict[str, tuple[bytes, str, str]] = {}
        self.put_error: ImageSearchError | None = None

    async def put(self, key: str, content: bytes, content_type: str, name: str = "") -> None:
        if self.put_error:
            raise self.put_error
        self.objects[key] = (content, content_type, name)

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

    async def get(self, model: str, content_hash: str) -> list[float] | None:
        return self.vectors.get((model, content_hash))

    async def put(self, model: str, content_hash: str, vector: list[float]) -> None:
        self.vectors[(model, content_hash)] = vector

    async def get_features(self, content_hash: str) -> bytes | None:
        return self.features.get(content_hash)

    async def put_features(self, content_hash: str, features: bytes) -> None:
        self.features[content_hash] = features


class FakeFetcher:
    def __init__(self, pages: dict[str, bytes] | None = None) -> None:
        self.pages = pages or {}

    async def fetch(self, url: str) -> bytes:
        if url not in self.pages:
            raise UrlFetchFailed(f"{url} answered HTTP 404")
        return self.pages[url]


class Fakes:
    """The use cases' dependencies over fresh fakes, with the fakes at hand for the test to look into."""

    def __init__(self, **settings: Any) -> None:
        self.settings = GatewaySettings(**settings)
        self.extractor = FakeExtractor()
        self.search = FakeSearch()
        self.blobs = FakeBlobs()
        self.cache = FakeCache()
        self.fetcher = FakeFetcher()
        self.deps = Deps(self.settings, self.extractor, self.search, self.blobs, self.cache, self.fetcher)
