"""The gRPC Gateway API over the real stack: the same round trip as the HTTP API."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from imagesearch.v1 import gateway_pb2, gateway_pb2_grpc

from services.devstack import Stack
from tests.gateway.stack_helpers import unique_album

pytestmark = pytest.mark.stack


@pytest.fixture()
def gateway(stack: Stack) -> Iterator[gateway_pb2_grpc.GatewayStub]:
    with grpc.insecure_channel(f"127.0.0.1:{stack.ports.gateway}") as channel:
        yield gateway_pb2_grpc.GatewayStub(channel)


def _reason(exc: grpc.RpcError) -> str:
    return dict(exc.trailing_metadata() or ()).get("x-error-reason", "")  # type: ignore[attr-defined]


def test_grpc_round_trip_create_add_search_get_delete(gateway: gateway_pb2_grpc.GatewayStub,
                                                      photos: list[Path]) -> None:
    name = unique_album("grpc")
    album = gateway.CreateAlbum(gateway_pb2.CreateAlbumRequest(name=name), timeout=30)
    assert album.name == name and album.metric == "cosine" and album.dim > 0
    images = [gateway_pb2.NewImage(content=p.read_bytes(), name=p.stem, attributes_json=json.dumps({"i": i}))
              for i, p in enumerate(photos[:4])]
    images.append(gateway_pb2.NewImage(content=b"not an image", name="junk"))
    added = gateway.AddImages(gateway_pb2.AddImagesRequest(album=name, images=images), timeout=60)
    assert [r.status for r in added.results] == ["added"] * 4 + ["failed"]
    assert added.results[4].error.reason == "invalid_image"

    found = gateway.SearchImages(gateway_pb2.SearchImagesRequest(album=name, image=photos[2].read_bytes(), top_k=2),
                                 timeout=60)
    assert found.metric == "cosine" and len(found.hits) == 2
    assert found.hits[0].image.id == added.results[2].id and found.hits[0].distance < 0.01
    assert found.hits[0].HasField("matches") and found.hits[0].matches >= 100  # verified: the same photo
    assert json.loads(found.hits[0].image.attributes_json) == {"i": 2}
    by_id = gateway.SearchImages(gateway_pb2.SearchImagesRequest(album=name, image_id=added.results[2].id, top_k=10),
                                 timeout=30)
    assert added.results[2].id not in [h.image.id for h in by_id.hits]
    similar = gateway.SearchImages(gateway_pb2.SearchImagesRequest(album=name, image_id=added.results[2].id, top_k=10,
                                                                   mode="similar"), timeout=30)
    assert sorted(h.image.id for h in similar.hits) == sorted(h.image.id for h in by_id.hits)
    assert not any(h.HasField("matches") for h in similar.hits)
    with pytest.raises(grpc.RpcError) as bad_mode:
        gateway.SearchImages(gateway_pb2.SearchImagesRequest(album=name, image_id=added.results[2].id, mode="nope"),
                             timeout=30)
    assert bad_mode.value.code() == grpc.StatusCode.INVALID_ARGUMENT  # type: ignore[attr-defined]
    assert _reason(bad_mode.value) == "invalid_argument"

    image = gateway.GetImage(gateway_pb2.GetImageRequest(album=name, id=added.results[0].id), timeout=30)
    assert image.name == photos[0].stem and image.size_bytes == photos[0].stat().st_size
    content = gateway.GetImageContent(gateway_pb2.GetImageContentRequest(album=name, id=image.id), timeout=30)
    assert content.content == photos[0].read_bytes()
    thumb = gateway.GetThumbnail(gateway_pb2.GetThumbnailRequest(album=name, id=image.id, size=64), timeout=30)
    assert thumb.content_type == "image/jpeg"
    listed = gateway.ListImages(gateway_pb2.ListImagesRequest(album=name), timeout=30)
    assert len(listed.images) == 4

    assert gateway.DeleteImage(gateway_pb2.DeleteImageRequest(album=name, id=image.id), timeout=30).deleted
    assert gateway.GetAlbum(gateway_pb2.GetAlbumRequest(name=name), timeout=30).image_count == 3
    assert name in [a.name for a in gateway.ListAlbums(gateway_pb2.ListAlbumsRequest(), timeout=30).albums]
    assert gateway.DeleteAlbum(gateway_pb2.DeleteAlbumRequest(name=name), timeout=30).deleted


def test_grpc_errors_carry_status_and_reason(gateway: gateway_pb2_grpc.GatewayStub) -> None:
    with pytest.raises(grpc.RpcError) as missing:
        gateway.GetAlbum(gateway_pb2.GetAlbumRequest(name="no-such-album"), timeout=30)
    assert missing.value.code() == grpc.StatusCode.NOT_FOUND  # type: ignore[attr-defined]
    assert _reason(missing.value) == "album_not_found"
    with pytest.raises(grpc.RpcError) as invalid:
        gateway.CreateAlbum(gateway_pb2.CreateAlbumRequest(name="Bad Name"), timeout=30)
    assert invalid.value.code() == grpc.StatusCode.INVALID_ARGUMENT  # type: ignore[attr-defined]
