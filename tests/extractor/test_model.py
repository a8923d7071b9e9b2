from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from numpy.typing import NDArray
from PIL import Image

from services.extractor.descriptors import DescriptorConfig, Purpose, Variant
from services.extractor.model import EmbedJob, ImageEmbedder
from services.extractor.preprocess import PreprocessConfig, ResizeMode
from services.extractor.session import OnnxSession
from services.extractor.settings import ExtractorSettings, Precision


class FakeSession:
    """A feature-map model whose maps are the mean pixel value per channel-group (no network)."""

    name = "fake-net"
    provider = "FakeExecutionProvider"
    channels = 6

    def run(self, images: NDArray[np.uint8]) -> NDArray[np.float32]:
        x = images.astype(np.float32).transpose(0, 3, 1, 2)[:, :, :7, :7] + 1.0
        return np.concatenate([x, x * 2], axis=1)


ROTATIONS = (Variant.ROT90, Variant.ROT180, Variant.ROT270, Variant.HFLIP)


def embedder(p: float = 3.0, size: int = 224, extra_scales: tuple[int, ...] = (),
             index_variants: tuple[Variant, ...] = (), index_region_levels: tuple[int, ...] = ()) -> ImageEmbedder:
    descriptor = DescriptorConfig(p, extra_scales, index_variants, index_region_levels)
    return ImageEmbedder(FakeSession(), PreprocessConfig(image_size=size), descriptor)


def test_model_id_names_network_pooling_size_and_resize() -> None:
    assert embedder().model_id == "fake-net/gem3/224/squash/v1"


def test_model_id_names_extra_scales_and_database_rows() -> None:
    e = embedder(extra_scales=(160,), index_variants=ROTATIONS, index_region_levels=(2,))
    assert e.model_id == "fake-net/gem3/224+160/squash/db-rot90.rot180.rot270.hflip-reg2/v1"


@pytest.mark.parametrize(("other", "why"), [
    (embedder(p=1.0), "pooling"), (embedder(size=256), "input size"), (embedder(extra_scales=(160,)), "scales"),
    (embedder(index_variants=(Variant.HFLIP,)), "database rows"),
])
def test_a_pipeline_change_changes_the_model_id(other: ImageEmbedder, why: str) -> None:
    assert other.model_id != embedder().model_id, why


def test_embed_returns_one_unit_vector_per_image(photos: list[Path]) -> None:
    e = embedder()
    vectors = e.embed([e.decode(p.read_bytes()) for p in photos[:3]])
    assert vectors.shape == (3, 6) and vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, rtol=1e-5)


def test_embedding_nothing_gives_an_empty_matrix() -> None:
    assert embedder().embed([]).shape == (0, 6)


def test_an_indexed_image_gets_a_row_per_variant_and_region_upright_first(photos: list[Path]) -> None:
    e = embedder(index_variants=ROTATIONS, index_region_levels=(2,))
    job = e.decode(photos[0].read_bytes())
    query, indexed = e.embed_jobs([EmbedJob(job), EmbedJob(job, Purpose.INDEX)])
    assert query.shape == (1, 6) and indexed.shape == (e.rows_per_image(Purpose.INDEX), 6) == (25, 6)
    np.testing.assert_allclose(indexed[0], query[0], atol=1e-6)


def test_settings_build_the_real_pipeline(model_dir: Path) -> None:
    e = ImageEmbedder.from_settings(ExtractorSettings(model_dir=model_dir, precision=Precision.FP32))
    assert isinstance(e.session, OnnxSession)
    assert e.model_id.startswith("efficientnet-lite0/gem3/320/aspect/w512-")
    assert e.dim == 512 and e.rows_per_image(Purpose.INDEX) == 1 and e.rows_per_image(Purpose.QUERY) == 1
    assert e.rows_per_image(Purpose.QUERY_VARIANTS) == 5 and "/db-" not in e.model_id


def test_the_old_pipeline_keeps_its_model_id(model_dir: Path) -> None:
    old = ExtractorSettings(model_dir=model_dir, image_size=224, resize=ResizeMode.SQUASH, whiten_dim=0,
                            index_variants=[], precision=Precision.FP32)
    assert ImageEmbedder.from_settings(old).model_id == "efficientnet-lite0/gem3/224/squash/v1"


def test_the_int8_network_has_its_own_model_id_and_whitening(model_dir: Path) -> None:
    """On the CPU, precision auto is the int8 network, whitened by a projection learned for its own
    vectors; the fp32 pipeline's vectors are another space. Both tag with the fp32 network's head."""
    int8 = ImageEmbedder.from_settings(ExtractorSettings(model_dir=model_dir, precision=Precision.AUTO,
                                                         providers=["CPUExecutionProvider"]))
    fp32 = ImageEmbedder.from_settings(ExtractorSettings(model_dir=model_dir, precision=Precision.FP32))
    assert int8.model_id.startswith("efficientnet-lite0-int8/gem3/320/aspect/w512-")
    assert int8.whitening_tag != fp32.whitening_tag and int8.dim == fp32.dim == 512
    assert int8.classifier is not None


def test_runs_are_one_image_on_cpu_unless_set(model_dir: Path) -> None:
    assert ImageEmbedder.from_settings(ExtractorSettings(model_dir=model_dir)).max_run == 1
    assert ImageEmbedder.from_settings(ExtractorSettings(model_dir=model_dir, max_run=8)).max_run == 8


def test_a_batch_gives_the_same_vectors_as_one_image_at_a_time(model_dir: Path, photos: list[Path]) -> None:
    e = ImageEmbedder.from_settings(ExtractorSettings(model_dir=model_dir, intra_op_threads=1, max_run=8))
    pixels = [e.decode(p.read_bytes()) for p in photos[:4]]
    together = e.embed(pixels)
    alone = np.concatenate([e.embed([p]) for p in pixels])
    np.testing.assert_allclose(together, alone, atol=1e-5)


def test_images_of_different_shapes_embed_as_when_alone(model_dir: Path, photos: list[Path]) -> None:
    e = ImageEmbedder.from_settings(ExtractorSettings(model_dir=model_dir, intra_op_threads=1, max_run=8))
    pixels = [e.decode(p.read_bytes()) for p in photos[:5]]
    assert len({p[0].shape for p in pixels}) > 1
    together = e.embed_jobs([EmbedJob(p, Purpose.INDEX) for p in pixels])
    for p, rows in zip(pixels, together, strict=True):
        np.testing.assert_allclose(rows, e.embed_jobs([EmbedJob(p, Purpose.INDEX)])[0], atol=1e-5)


def test_a_rotated_or_mirrored_photo_is_nearest_its_own_row(model_dir: Path, photos: list[Path]) -> None:
    """The database-side recipe: each image stores its rotated and mirrored rows."""
    e = ImageEmbedder.from_settings(ExtractorSettings(model_dir=model_dir, intra_op_threads=1,
                                                      index_variants=list(ROTATIONS)))
    rows = e.embed_jobs([EmbedJob(e.decode(p.read_bytes()), Purpose.INDEX) for p in photos])
    for column, transpose in enumerate((Image.Transpose.ROTATE_90, Image.Transpose.ROTATE_180,
                                        Image.Transpose.ROTATE_270, Image.Transpose.FLIP_LEFT_RIGHT), start=1):
        for i, photo in enumerate(photos):
            query = e.embed([e.decode(jpeg(Image.open(photo).convert("RGB").transpose(transpose)))])[0]
            best = [float(np.max(r @ query)) for r in rows]
            assert int(np.argmax(best)) == i, f"{photo.name} {transpose.name}"
            assert float(rows[i][column] @ query) == pytest.approx(max(best), abs=1e-6)


def test_a_rotated_or_mirrored_photo_turned_back_by_its_query_variant_is_nearest_the_photo(
        model_dir: Path, photos: list[Path]) -> None:
    """The default recipe: one row per image; the query's variant that undoes the edit finds it."""
    e = ImageEmbedder.from_settings(ExtractorSettings(model_dir=model_dir, intra_op_threads=1))
    stored = np.stack([e.embed_jobs([EmbedJob(e.decode(p.read_bytes()), Purpose.INDEX)])[0][0] for p in photos])
    undo = {Image.Transpose.ROTATE_90: Variant.ROT270, Image.Transpose.ROTATE_180: Variant.ROT180,
            Image.Transpose.ROTATE_270: Variant.ROT90, Image.Transpose.FLIP_LEFT_RIGHT: Variant.HFLIP}
    for transpose, variant in undo.items():
        for i, photo in enumerate(photos):
            scales = e.decode(jpeg(Image.open(photo).convert("RGB").transpose(transpose)))
            rows = e.embed_jobs([EmbedJob(scales, Purpose.QUERY_VARIANTS)])[0]
            similarity = rows @ stored.T  # [upright + variants, photos]
            best = np.unravel_index(np.argmax(similarity), similarity.shape)
            assert best == (1 + e.descriptor.query_variants.index(variant), i), f"{photo.name} {transpose.name}"


def test_a_corner_region_row_matches_a_crop_of_that_corner(model_dir: Path, photos: list[Path]) -> None:
    settings = ExtractorSettings(model_dir=model_dir, intra_op_threads=1, index_variants=[], index_region_levels=[2])
    e = ImageEmbedder.from_settings(settings)
    for photo in photos[:4]:
        image = Image.open(photo).convert("RGB")
        w, h = image.size
        rows = e.embed_jobs([EmbedJob(e.decode(jpeg(image)), Purpose.INDEX)])[0]
        crop = e.embed([e.decode(jpeg(image.crop((0, 0, w * 2 // 3, h * 2 // 3))))])[0]
        regions = rows[1:] @ crop
        assert rows.shape == (5, 512) and int(np.argmax(regions)) == 0, f"{photo.name}: {regions}"


def jpeg(image: Image.Image) -> bytes:
    out = io.BytesIO()
    image.save(out, "JPEG", quality=90)
    return out.getvalue()
