"""BlobStore against a real S3 server (SeaweedFS), and against none."""

from __future__ import annotations

import uuid

import pytest

from services.common.errors import ImageNotFound, StoreUnavailable
from services.devstack import S3_ACCESS_KEY, S3_SECRET_KEY, Stack, free_port
from services.gateway.blobstore import BlobStore, image_key, thumbnail_key

pytestmark = pytest.mark.anyio


@pytest.fixture()
def store(servers: Stack) -> BlobStore:
    bucket = f"test-{uuid.uuid4().hex[:10]}"
    return BlobStore.connect(f"127.0.0.1:{servers.ports.s3}", S3_ACCESS_KEY, S3_SECRET_KEY, bucket)


def test_keys_are_content_addressed_per_album() -> None:
    assert image_key("a", "ff" * 32) == f"albums/a/images/{'ff' * 32}"
    assert thumbnail_key("a", 256, "ab") == "albums/a/thumbs/256/ab.jpg"


async def test_put_get_stat_keep_bytes_type_and_name(store: BlobStore) -> None:
    await store.ensure_bucket()
    await store.put("albums/a/images/x", b"bytes", "image/png", name="Café photo.png")
    blob = await store.get("albums/a/images/x")
    assert (blob.content, blob.content_type) == (b"bytes", "image/png")
    info = await store.stat("albums/a/images/x")
    assert (info.size, info.content_type, info.name) == (5, "image/png", "Café photo.png")


async def test_a_missing_object_is_image_not_found(store: BlobStore) -> None:
    await store.ensure_bucket()
    with pytest.raises(ImageNotFound):
        await store.get("albums/a/images/missing")
    with pytest.raises(ImageNotFound):
        await store.stat("albums/a/images/missing")
    await store.delete("albums/a/images/missing")


async def test_delete_prefix_removes_only_that_album(store: BlobStore) -> None:
    for key in ("albums/a/images/1", "albums/a/thumbs/64/1.jpg", "albums/ab/images/2"):
        await store.put(key, b"x", "image/jpeg")
    assert await store.delete_prefix("albums/a/") == 2
    assert await store.list_keys("albums/") == ["albums/ab/images/2"]


async def test_an_unreachable_store_is_store_unavailable() -> None:
    store = BlobStore.connect(f"127.0.0.1:{free_port()}", "k", "s", "bucket", timeout_s=1)
    with pytest.raises(StoreUnavailable):
        await store.ensure_bucket()
    with pytest.raises(StoreUnavailable):
        await store.get("albums/a/images/x")
