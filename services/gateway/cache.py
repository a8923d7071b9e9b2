"""Query-embedding cache in Redis: vectors keyed by model and content hash, and the query's local
features (which depend on the image alone) keyed by content hash.

The cache is an optimisation only: when Redis is down a search goes on uncached, and after a failure
the cache stays off for a few seconds so a dead Redis does not add a timeout to every request.
"""

from __future__ import annotations

import logging
import time
from typing import Protocol

import numpy as np
from redis.asyncio import Redis
from redis.exceptions import RedisError

log = logging.getLogger(__name__)


class EmbeddingCache(Protocol):
    """What the use cases need of a cache of query vectors."""

    async def get(self, model: str, content_hash: str) -> list[float] | None: ...

    async def put(self, model: str, content_hash: str, vector: list[float]) -> None: ...

    async def get_features(self, content_hash: str) -> bytes | None: ...

    async def put_features(self, content_hash: str, features: bytes) -> None: ...

    async def get_variants(self, model: str, content_hash: str) -> list[list[float]] | None: ...

    async def put_variants(self, model: str, content_hash: str, vectors: list[list[float]]) -> None: ...


def embedding_key(model: str, content_hash: str) -> str:
    return f"emb:{model}:{content_hash}"


def variants_key(model: str, content_hash: str) -> str:
    return f"embv:{model}:{content_hash}"


def query_features_key(content_hash: str) -> str:
    return f"lf:{content_hash}"


class RedisEmbeddingCache:
    """Vectors stored as little-endian float32 bytes with a TTL."""

    def __init__(self, redis: Redis, ttl_s: int, backoff_s: float = 5.0) -> None:
        self.redis = redis
        self.ttl_s = ttl_s
        self.backoff_s = backoff_s
        self._off_until = 0.0

    def _available(self) -> bool:
        return time.monotonic() >= self._off_until

    def _failed(self, action: str, exc: Exception) -> None:
        log.warning("embedding cache %s failed, going on uncached for %.0fs: %s", action, self.backoff_s, exc)
        self._off_until = time.monotonic() + self.backoff_s

    async def get(self, model: str, content_hash: str) -> list[float] | None:
        raw = await self._get(embedding_key(model, content_hash))
        return None if raw is None else list(np.frombuffer(raw, dtype="<f4").astype(float).tolist())

    async def put(self, model: str, content_hash: str, vector: list[float]) -> None:
        await self._set(embedding_key(model, content_hash), np.asarray(vector, dtype="<f4").tobytes())

    async def get_features(self, content_hash: str) -> bytes | None:
        return await self._get(query_features_key(content_hash))

    async def put_features(self, content_hash: str, features: bytes) -> None:
        await self._set(query_features_key(content_hash), features)

    async def get_variants(self, model: str, content_hash: str) -> list[list[float]] | None:
        """A query's variant vectors: a row count (uint32), then the rows as float32."""
        raw = await self._get(variants_key(model, content_hash))
        if raw is None or len(raw) < 4:
            return None
        rows = int(np.frombuffer(raw[:4], dtype="<u4")[0])
        values = np.frombuffer(raw[4:], dtype="<f4")
        if rows == 0 or len(values) % rows:
            return None
        return values.reshape(rows, -1).astype(float).tolist()

    async def put_variants(self, model: str, content_hash: str, vectors: list[list[float]]) -> None:
        if vectors:
            raw = np.asarray([len(vectors)], dtype="<u4").tobytes() + np.asarray(vectors, dtype="<f4").tobytes()
            await self._set(variants_key(model, content_hash), raw)

    async def _get(self, key: str) -> bytes | None:
        if not self._available():
            return None
        try:
            raw = await self.redis.get(key)
        except (RedisError, OSError) as exc:
            self._failed("read", exc)
            return None
        return raw if isinstance(raw, bytes) and raw else None

    async def _set(self, key: str, raw: bytes) -> None:
        if not self._available():
            return
        try:
            await self.redis.set(key, raw, ex=self.ttl_s)
        except (RedisError, OSError) as exc:
            self._failed("write", exc)


class NoCache:
    """A cache that never holds anything (tests, or Redis turned off)."""

    async def get(self, model: str, content_hash: str) -> list[float] | None:
        return None

    async def put(self, model: str, content_hash: str, vector: list[float]) -> None:
        return None

    async def get_features(self, content_hash: str) -> bytes | None:
        return None

    async def put_features(self, content_hash: str, features: bytes) -> None:
        return None

    async def get_variants(self, model: str, content_hash: str) -> list[list[float]] | None:
        return None

    async def put_variants(self, model: str, content_hash: str, vectors: list[list[float]]) -> None:
        return None
