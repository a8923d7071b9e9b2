"""The query-embedding cache against a real Redis, and a Redis that is down."""

from __future__ import annotations

import uuid

import pytest
from redis.asyncio import Redis

from services.devstack import Stack, free_port
from services.gateway.cache import RedisEmbeddingCache, embedding_key

pytestmark = pytest.mark.anyio


async def test_a_vector_comes_back_as_float32_with_a_ttl(servers: Stack) -> None:
    redis = Redis(port=servers.ports.redis)
    cache = RedisEmbeddingCache(redis, ttl_s=60)
    digest = uuid.uuid4().hex
    assert await cache.get("m1", digest) is None
    await cache.put("m1", digest, [0.5, -0.25, 1.0])
    assert await cache.get("m1", digest) == [0.5, -0.25, 1.0]
    assert await cache.get("m2", digest) is None
    assert 0 < await redis.ttl(embedding_key("m1", digest)) <= 60
    await redis.aclose()


async def test_a_redis_that_is_down_means_no_cache_not_an_error() -> None:
    redis = Redis(port=free_port(), socket_connect_timeout=0.2, socket_timeout=0.2)
    cache = RedisEmbeddingCache(redis, ttl_s=60, backoff_s=30)
    await cache.put("m", "h", [1.0])
    assert await cache.get("m", "h") is None
    await redis.aclose()
