"""The gRPC Gateway API over the real stack: the same round trip as the HTTP API."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import grpc
import httpx
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from imagesearch.v1 import common_pb2, gateway_pb2, gateway_pb2_grpc

from services.common.filtering import Op, Predicate
from services.common.wire import attributes_from_wire, attributes_to_wire, filter_to_wire
from services.devstack import Stack
from tests.gateway.stack_helpers import given_attributes, unique_album

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
    # Attributes that cannot be read fail their image alone, as over HTTP (they failed the whole call).
    images.append(gateway_pb2.NewImage(content=photos[4].read_bytes(), name="list", attributes_json="[1]"))
    images.append(gateway_pb2.NewImage(content=photos[4].read_bytes(), name="both", attributes_json="{}",
                                       attributes=attributes_to_wire({"i": 4})))
    added = gateway.AddImages(gateway_pb2.AddImagesRequest(album=name, images=images), timeout=60)
    assert [r.status for r in added.results] == ["added"] * 4 + ["failed"] * 3
    assert [r.error.reason for r in added.results[4:]] == ["invalid_image", "invalid_attributes",
                                                          "invalid_attributes"]
    assert "not both" in added.results[6].error.message

    found = gateway.SearchImages(gateway_pb2.SearchImagesRequest(album=name, image=photos[2].read_bytes(), top_k=2),
                                 timeout=60)
    assert found.metric == "cosine" and len(found.hits) == 2
    assert found.hits[0].image.id == added.results[2].id and found.hits[0].distance < 0.01
    assert found.hits[0].HasField("matches") and found.hits[0].matches >= 100  # verified: the same photo
    assert given_attributes(json.loads(found.hits[0].image.attributes_json)) == {"i": 2}
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
    assert len(listed.images) == 4 and not listed.HasField("next_after")
    page = gateway.ListImages(gateway_pb2.ListImagesRequest(album=name, limit=3), timeout=30)
    assert page.next_after == page.images[-1].id  # paged on as over HTTP
    rest = gateway.ListImages(gateway_pb2.ListImagesRequest(album=name, limit=3, after=page.next_after), timeout=30)
    assert [i.id for i in [*page.images, *rest.images]] == [i.id for i in listed.images]
    assert not rest.HasField("next_after")
    exported = gateway.ExportImages(gateway_pb2.ExportImagesRequest(album=name), timeout=30)
    assert [i.id for i in exported] == [i.id for i in listed.images]  # streamed, by id
    chosen = gateway.ExportImages(gateway_pb2.ExportImagesRequest(album=name, where="i >= 2"), timeout=30)
    assert sorted(given_attributes(json.loads(i.attributes_json))["i"] for i in chosen) == [2, 3]

    assert gateway.DeleteImage(gateway_pb2.DeleteImageRequest(album=name, id=image.id), timeout=30).deleted
    assert gateway.GetAlbum(gateway_pb2.GetAlbumRequest(name=name), timeout=30).image_count == 3
    assert name in [a.name for a in gateway.ListAlbums(gateway_pb2.ListAlbumsRequest(), timeout=30).albums]
    assert gateway.DeleteAlbum(gateway_pb2.DeleteAlbumRequest(name=name), timeout=30).deleted


def test_health_watch_streams_the_serving_status(stack: Stack) -> None:
    """grpc's own Health.Watch, a streaming RPC that writes its answers itself, is left as it is by the interceptor
    that wraps ours."""
    with grpc.insecure_channel(f"127.0.0.1:{stack.ports.gateway}") as channel:
        watch = health_pb2_grpc.HealthStub(channel).Watch(health_pb2.HealthCheckRequest(service=""), timeout=30)
        assert next(watch).status == health_pb2.HealthCheckResponse.SERVING
        watch.cancel()


def test_grpc_errors_carry_status_and_reason(gateway: gateway_pb2_grpc.GatewayStub) -> None:
    with pytest.raises(grpc.RpcError) as missing:
        gateway.GetAlbum(gateway_pb2.GetAlbumRequest(name="no-such-album"), timeout=30)
    assert missing.value.code() == grpc.StatusCode.NOT_FOUND  # type: ignore[attr-defined]
    assert _reason(missing.value) == "album_not_found"
    with pytest.raises(grpc.RpcError) as invalid:
        gateway.CreateAlbum(gateway_pb2.CreateAlbumRequest(name="Bad Name"), timeout=30)
    assert invalid.value.code() == grpc.StatusCode.INVALID_ARGUMENT  # type: ignore[attr-defined]
    # A streamed answer fails the same way, before its first image.
    with pytest.raises(grpc.RpcError) as streamed:
        list(gateway.ExportImages(gateway_pb2.ExportImagesRequest(album="no-such-album"), timeout=30))
    assert streamed.value.code() == grpc.StatusCode.NOT_FOUND  # type: ignore[attr-defined]
    assert _reason(streamed.value) == "album_not_found"


def test_grpc_typed_album_filters_updates_deletes_and_sql_match_http(
    gateway: gateway_pb2_grpc.GatewayStub, stack: Stack, photos: list[Path]
) -> None:
    name = unique_album("typed")
    columns = [common_pb2.Column(name="price", type=common_pb2.COLUMN_TYPE_FLOAT),
               common_pb2.Column(name="colour", type=common_pb2.COLUMN_TYPE_STRING),
               common_pb2.Column(name="listed_at", type=common_pb2.COLUMN_TYPE_TIMESTAMP)]
    album = gateway.CreateAlbum(gateway_pb2.CreateAlbumRequest(name=name, columns=columns), timeout=30)
    assert [(c.name, c.type) for c in album.columns] == [(c.name, c.type) for c in columns]
    rows = [{"price": 30.0, "colour": "red", "listed_at": datetime(2024, 3, 1, tzinfo=UTC)},
            {"price": 45.5, "colour": "blue"}, {"price": 60.0, "colour": "red"}, {"colour": "red", "kind": "x"}]
    images = [gateway_pb2.NewImage(content=p.read_bytes(), name=p.stem, attributes=attributes_to_wire(r))
              for p, r in zip(photos, rows, strict=False)]
    images.append(gateway_pb2.NewImage(content=photos[5].read_bytes(), name="bad",
                                       attributes=attributes_to_wire({"price": "cheap"})))
    added = gateway.AddImages(gateway_pb2.AddImagesRequest(album=name, images=images), timeout=120)
    assert [r.status for r in added.results] == ["added"] * 4 + ["failed"]
    assert added.results[4].error.reason == "invalid_attributes" and "cheap" in added.results[4].error.message

    first = gateway.GetImage(gateway_pb2.GetImageRequest(album=name, id=added.results[0].id), timeout=30)
    assert given_attributes(attributes_from_wire(first.attributes)) == rows[0]
    assert json.loads(first.attributes_json)["listed_at"] == "2024-03-01T00:00:00Z"

    where = "price < 50 and colour in ('red', 'blue')"
    found = gateway.SearchImages(gateway_pb2.SearchImagesRequest(album=name, image=photos[1].read_bytes(), top_k=10,
                                                                 where=where), timeout=60)
    with httpx.Client(base_url=stack.http_url, timeout=60) as http:
        via_http = http.post(f"/v1/albums/{name}/search", params={"where": where, "top_k": 10},
                             files={"file": photos[1].read_bytes()}).json()
        statement = f"SELECT id, distance FROM \"{name}\" WHERE {where} ORDER BY feature <=> image('q.png') LIMIT 10"
        via_sql = http.post("/v1/sql", data={"statement": statement},
                            files=[("file", ("q.png", photos[1].read_bytes(), "image/png"))]).json()
    assert "rows" in via_sql, via_sql
    assert [h.image.id for h in found.hits] == [r["id"] for r in via_http["results"]] == \
        [r["values"][0] for r in via_sql["rows"]] == [added.results[1].id, added.results[0].id]
    tree = filter_to_wire(Predicate("colour", Op.EQ, ("red",)))
    counted = gateway.CountImages(gateway_pb2.CountImagesRequest(album=name, filter=tree), timeout=30)
    assert counted.count == 3
    groups = gateway.GroupImages(gateway_pb2.GroupImagesRequest(album=name, columns=["colour"]), timeout=30)
    assert [(attributes_from_wire({"k": g.key[0]})["k"], g.count) for g in groups.groups] == [("red", 3), ("blue", 1)]
    listed = gateway.ListImages(gateway_pb2.ListImagesRequest(album=name, order_by="price", descending=True,
                                                              where="colour = 'red'"), timeout=30)
    assert [i.name for i in listed.images] == [photos[3].stem, photos[2].stem, photos[0].stem]  # null first
    last = gateway.ListImages(gateway_pb2.ListImagesRequest(album=name, order_by="price", descending=True,
                                                            where="colour = 'red'", nulls_first=False), timeout=30)
    assert [i.name for i in last.images] == [photos[2].stem, photos[0].stem, photos[3].stem]

    updated = gateway.UpdateImages(gateway_pb2.UpdateImagesRequest(
        album=name, where="price > 40", set=attributes_to_wire({"colour": "sale"})), timeout=60)
    assert updated.updated == 2
    one = gateway.UpdateImage(gateway_pb2.UpdateImageRequest(album=name, id=added.results[0].id,
                                                             set=attributes_to_wire({"price": 39.5})), timeout=60)
    assert attributes_from_wire(one.attributes)["price"] == 39.5
    with pytest.raises(grpc.RpcError) as everything:
        gateway.DeleteImages(gateway_pb2.DeleteImagesRequest(album=name), timeout=30)
    assert everything.value.code() == grpc.StatusCode.INVALID_ARGUMENT  # type: ignore[attr-defined]
    deleted = gateway.DeleteImages(gateway_pb2.DeleteImagesRequest(album=name, filter_json='{"colour": "sale"}'),
                                   timeout=60)
    assert deleted.deleted == 2

    result = gateway.Sql(gateway_pb2.SqlRequest(statement=f'SELECT name, price FROM "{name}" ORDER BY name'),
                         timeout=60)
    assert result.statement == "select" and list(result.columns) == ["name", "price"]
    assert sorted(r.values[0].string_value for r in result.rows) == sorted([photos[0].stem, photos[3].stem])
    with pytest.raises(grpc.RpcError) as bad_sql:
        gateway.Sql(gateway_pb2.SqlRequest(statement=f'SELECT * FROM "{name}" WHERE price <'), timeout=30)
    assert bad_sql.value.code() == grpc.StatusCode.INVALID_ARGUMENT  # type: ignore[attr-defined]
    assert _reason(bad_sql.value) == "invalid_sql" and "position" in bad_sql.value.details()  # type: ignore[attr-defined]
    dropped = gateway.Sql(gateway_pb2.SqlRequest(statement=f'DROP TABLE "{name}"'), timeout=60)
    assert dropped.affected == 1
