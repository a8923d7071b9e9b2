"""The recognise use case over the real search service in process: a label and its evidence, unknown, the
calibration kept and learned again, its SQL form, and bad input refused with typed errors."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from services.common.errors import AlbumNotFound, InvalidArgument, NoLabels, UnknownLabel
from services.common.schema import AlbumSchema, Column, ColumnType
from services.gateway.recognition import calibrate
from services.gateway.records import NewImage, Query
from services.gateway.sql.dialect import SqlError
from services.gateway.usecases import albums, images, ingest, recognize, sql
from tests.gateway.conftest import MakeFakes
from tests.gateway.fakes import Fakes, png

pytestmark = pytest.mark.anyio

KINDS = ["cat", "dog", "bird"]


async def labelled(fakes: Fakes, album: str = "pets", per_kind: int = 4, schema: AlbumSchema | None = None,
                   attributes: Any = None) -> list[str]:
    """An album of images labelled by `kind` (and two unlabelled ones); returns the labelled images' ids."""
    await albums.create(fakes.deps, album, schema or AlbumSchema())
    new = [NewImage(png(10 * k + i), name=f"{kind}{i}.png",
                    attributes=attributes(kind) if attributes else {"kind": kind})
           for k, kind in enumerate(KINDS) for i in range(per_kind)]
    new += [NewImage(png(900 + i), name=f"plain{i}.png") for i in range(2)]
    results = await ingest.add_images(fakes.deps, album, new)
    return [r.id for r in results[:len(KINDS) * per_kind]]


@pytest.fixture()
async def fakes(make_fakes: MakeFakes) -> Fakes:
    return make_fakes(recognize_state_check_s=0)


async def test_a_near_copy_of_a_labelled_image_gets_its_label_with_evidence(fakes: Fakes) -> None:
    await labelled(fakes)
    query = png(5000)
    fakes.extractor.near_copies[query] = png(10 + 2)  # a dog
    outcome = await recognize.recognize(fakes.deps, "pets", Query(image=query), "kind", evidence=3,
                                        threshold=0.0)
    assert outcome.candidates[0].label == "dog" and outcome.label == "dog" and not outcome.unknown
    assert outcome.evidence[0].image.name == "dog2.png" and outcome.evidence[0].labels == ("dog",)
    assert len(outcome.evidence) == 3
    assert [e.distance for e in outcome.evidence] == sorted(e.distance for e in outcome.evidence)
    assert 0.0 <= outcome.confidence <= 1.0 and outcome.calibration.images == 12
    assert outcome.calibration.labels == 3 and outcome.calibration.calibrated


async def test_an_album_image_is_not_its_own_evidence(fakes: Fakes) -> None:
    ids = await labelled(fakes)
    outcome = await recognize.recognize(fakes.deps, "pets", Query(image_id=ids[0]), "kind", evidence=20)
    assert ids[0] not in {e.image.id for e in outcome.evidence}
    assert len(outcome.evidence) == 11  # the other labelled images; unlabelled ones never vote


async def test_a_threshold_of_one_answers_unknown(fakes: Fakes) -> None:
    ids = await labelled(fakes)
    outcome = await recognize.recognize(fakes.deps, "pets", Query(image_id=ids[0]), "kind", threshold=1.0)
    assert outcome.unknown and outcome.label is None and outcome.candidates


async def test_a_declared_list_column_labels_too(fakes: Fakes) -> None:
    schema = AlbumSchema.of([Column("tags", ColumnType.STRING_LIST)])
    ids = await labelled(fakes, schema=schema, attributes=lambda kind: {"tags": [kind, "pet"]})
    outcome = await recognize.recognize(fakes.deps, "pets", Query(image_id=ids[0]), "tags", threshold=0.0)
    assert outcome.label == "pet"


async def test_the_calibration_is_kept_until_the_album_changes(fakes: Fakes) -> None:
    ids = await labelled(fakes)
    await recognize.recognize(fakes.deps, "pets", Query(image_id=ids[0]), "kind")
    (kept,) = fakes.deps.calibrations._kept.values()
    await recognize.recognize(fakes.deps, "pets", Query(image_id=ids[1]), "kind")
    assert next(iter(fakes.deps.calibrations._kept.values())) is kept
    await images.update_images(fakes.deps, "pets", {"kind": None}, all=True)
    with pytest.raises(UnknownLabel):
        await recognize.recognize(fakes.deps, "pets", Query(image_id=ids[1]), "kind")


async def test_concurrent_first_answers_learn_the_calibration_once(fakes: Fakes,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    ids = await labelled(fakes)
    learned: list[int] = []

    def counted(*args: Any) -> Any:
        learned.append(len(args[1]))
        return calibrate(*args)

    monkeypatch.setattr(recognize, "calibrate", counted)
    answers = await asyncio.gather(*(recognize.recognize(fakes.deps, "pets", Query(image_id=i), "kind")
                                     for i in ids[:4]))
    assert learned == [12] and len({a.calibration for a in answers}) == 1


async def test_new_images_are_learned_from_once_the_album_is_checked_again(fakes: Fakes) -> None:
    ids = await labelled(fakes)
    before = await recognize.recognize(fakes.deps, "pets", Query(image_id=ids[0]), "kind")
    await ingest.add_images(fakes.deps, "pets", [NewImage(png(777), name="fish.png", attributes={"kind": "fish"})])
    after = await recognize.recognize(fakes.deps, "pets", Query(image_id=ids[0]), "kind")
    assert (before.calibration.images, after.calibration.images) == (12, 13)
    assert after.calibration.labels == 4


@pytest.mark.parametrize(("label", "error"), [("colour", UnknownLabel), ("", InvalidArgument),
                                              ("bad key!", InvalidArgument)])
async def test_an_attribute_no_image_has_is_refused(fakes: Fakes, label: str, error: type[Exception]) -> None:
    ids = await labelled(fakes)
    with pytest.raises(error):
        await recognize.recognize(fakes.deps, "pets", Query(image_id=ids[0]), label)


async def test_a_declared_column_without_values_is_no_labels(fakes: Fakes) -> None:
    schema = AlbumSchema.of([Column("breed", ColumnType.STRING), Column("weight", ColumnType.FLOAT)])
    ids = await labelled(fakes, schema=schema)
    with pytest.raises(NoLabels, match="breed"):
        await recognize.recognize(fakes.deps, "pets", Query(image_id=ids[0]), "breed")
    with pytest.raises(InvalidArgument, match="float"):
        await recognize.recognize(fakes.deps, "pets", Query(image_id=ids[0]), "weight")


async def test_an_empty_album_is_refused(fakes: Fakes) -> None:
    await albums.create(fakes.deps, "empty", AlbumSchema())
    with pytest.raises(UnknownLabel):
        await recognize.recognize(fakes.deps, "empty", Query(image=png(1)), "kind")
    with pytest.raises(AlbumNotFound):
        await recognize.recognize(fakes.deps, "nope", Query(image=png(1)), "kind")


@pytest.mark.parametrize("query", [Query(), Query(image=png(1), url="http://x/y.png")])
async def test_exactly_one_image_is_needed(fakes: Fakes, query: Query) -> None:
    await labelled(fakes)
    with pytest.raises(InvalidArgument, match="exactly one"):
        await recognize.recognize(fakes.deps, "pets", query, "kind")


@pytest.mark.parametrize(("evidence", "threshold"), [(-1, None), (51, None), (5, 1.5), (5, float("nan"))])
async def test_out_of_range_options_are_refused(fakes: Fakes, evidence: int, threshold: float | None) -> None:
    ids = await labelled(fakes)
    with pytest.raises(InvalidArgument):
        await recognize.recognize(fakes.deps, "pets", Query(image_id=ids[0]), "kind", evidence, threshold)


async def test_select_recognize_is_the_recognize_call(fakes: Fakes) -> None:
    await labelled(fakes)
    query = png(5000)
    fakes.extractor.near_copies[query] = png(20 + 1)  # a bird
    result = await sql.execute(fakes.deps, "SELECT recognize(image('q.png'), 'kind', threshold => 0) FROM pets",
                               {"q.png": query})
    outcome = await recognize.recognize(fakes.deps, "pets", Query(image=query), "kind", threshold=0.0)
    assert result.columns == ("label", "confidence", "unknown", "known")
    assert result.rows[0].values == ("bird", round(outcome.confidence, 4), False, round(outcome.known, 4))
    assert result.rows[0].image is not None and result.rows[0].image.id == outcome.evidence[0].image.id


@pytest.mark.parametrize("statement", [
    "SELECT recognize(image('q.png'), 'kind'), name FROM pets",
    "SELECT recognize(image('q.png'), 'kind') FROM pets WHERE name = 'x'",
    "SELECT recognize(image('q.png')) FROM pets",
    "SELECT recognize(image('q.png'), 3) FROM pets",
    "SELECT recognize(image('q.png'), 'kind', top => 3) FROM pets",
    "SELECT recognize('q.png', 'kind') FROM pets",
])
async def test_a_malformed_recognize_is_refused(fakes: Fakes, statement: str) -> None:
    await labelled(fakes)
    with pytest.raises(SqlError):
        await sql.execute(fakes.deps, statement, {"q.png": png(1)})
