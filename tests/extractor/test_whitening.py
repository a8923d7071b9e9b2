from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from numpy.typing import NDArray

from services.extractor import whitening
from services.extractor.model import ImageEmbedder
from services.extractor.session import ModelFileError
from services.extractor.settings import ExtractorSettings, Precision
from services.extractor.whitening import Whitening


def raw_vectors(model_dir: Path, photos: list[Path]) -> NDArray[np.float32]:
    """The service's vectors of real photos before whitening (1280-d)."""
    e = ImageEmbedder.from_settings(ExtractorSettings(model_dir=model_dir, intra_op_threads=1), with_whitening=False)
    return e.embed([e.decode(p.read_bytes()) for p in photos])


def correlated_rows(n: int = 400, dim: int = 32, seed: int = 0) -> NDArray[np.float32]:
    rng = np.random.default_rng(seed)
    mixing = rng.normal(size=(dim, dim)) * np.linspace(3, 0.1, dim)
    return np.abs(rng.normal(size=(n, dim)) @ mixing).astype(np.float32)


def test_the_learned_whitening_gives_512_unit_vectors_of_real_photos(model_dir: Path, photos: list[Path]) -> None:
    e = ImageEmbedder.from_settings(ExtractorSettings(model_dir=model_dir, intra_op_threads=1))
    assert e.whitening is not None and e.whitening.input_dim == 1280
    vectors = e.whitening.apply(raw_vectors(model_dir, photos))
    assert vectors.shape == (len(photos), 512) and vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, rtol=1e-5)


def test_whitening_keeps_a_photo_nearest_itself_and_spreads_the_others(model_dir: Path, photos: list[Path]) -> None:
    raw = raw_vectors(model_dir, photos)
    white = ImageEmbedder.from_settings(ExtractorSettings(model_dir=model_dir)).whitening
    assert white is not None
    sims_raw, sims_white = raw @ raw.T, white.apply(raw) @ white.apply(raw).T
    off = ~np.eye(len(photos), dtype=bool)
    # Raw GeM vectors are all positive, so unrelated photos look alike; whitening centres them.
    assert sims_white[off].mean() < sims_raw[off].mean() / 2
    assert np.all(np.argmax(sims_white, axis=1) == np.arange(len(photos)))


def test_full_whitening_decorrelates_its_training_rows() -> None:
    rows = correlated_rows()
    learned = Whitening.fit(rows, dim=8, shrink=0.0, power=1.0)
    x = rows / np.linalg.norm(rows, axis=1, keepdims=True)
    projected = (x - learned.mean) @ learned.projection
    np.testing.assert_allclose(np.cov(projected.T), np.eye(8), atol=0.02)


def test_shrinkage_keeps_more_of_the_leading_directions() -> None:
    rows = correlated_rows()
    full, shrunk = (Whitening.fit(rows, dim=8, shrink=s) for s in (0.0, 0.5))
    ratio = lambda w: np.linalg.norm(w.projection[:, -1]) / np.linalg.norm(w.projection[:, 0])  # noqa: E731
    assert ratio(shrunk) < ratio(full)


def test_fitting_needs_more_rows_than_dimensions() -> None:
    with pytest.raises(ValueError, match="cannot learn"):
        Whitening.fit(correlated_rows(n=16), dim=16)


def test_a_saved_whitening_loads_back_verified(tmp_path: Path) -> None:
    learned = Whitening.fit(correlated_rows(), dim=8)
    whitening.save(learned, tmp_path, "w", {"pipeline": "net/gem3/320/aspect"})
    loaded, identity = whitening.load_verified(tmp_path, "w", "net/gem3/320/aspect")
    np.testing.assert_array_equal(loaded.projection, learned.projection)
    # an older manifest, without the network file's sha256: the file's own sha256 names it
    assert identity == json.loads((tmp_path / "w.json").read_text())["sha256"]


def test_refits_from_the_same_inputs_share_an_identity_though_their_bytes_differ(tmp_path: Path) -> None:
    rows = correlated_rows()
    noise = np.random.default_rng(3).normal(scale=1e-7, size=rows.shape).astype(np.float32)
    recipe = {"pipeline": "p", "model_sha256": "ab" * 32, "debs": {"pkg": "pkg_1.0_all.deb"}}
    whitening.save(Whitening.fit(rows, dim=8), tmp_path / "a", "w", recipe)
    whitening.save(Whitening.fit(rows + noise, dim=8), tmp_path / "b", "w", recipe)
    whitening.save(Whitening.fit(rows, dim=8), tmp_path / "c", "w", {**recipe, "debs": {"pkg": "pkg_1.1_all.deb"}})
    (_, a), (_, b), (_, c) = (whitening.load_verified(tmp_path / d, "w", "p") for d in "abc")
    assert (tmp_path / "a" / "w.npz").read_bytes() != (tmp_path / "b" / "w.npz").read_bytes()
    assert a == b
    assert c != a  # learned from another version of the pictures


def test_a_changed_whitening_file_is_refused(tmp_path: Path) -> None:
    whitening.save(Whitening.fit(correlated_rows(), dim=8), tmp_path, "w", {"pipeline": "p"})
    whitening.save(Whitening.fit(correlated_rows(seed=1), dim=8), tmp_path / "other", "w", {"pipeline": "p"})
    (tmp_path / "w.npz").write_bytes((tmp_path / "other" / "w.npz").read_bytes())
    with pytest.raises(ModelFileError, match="sha256"):
        whitening.load_verified(tmp_path, "w", "p")


def test_a_whitening_learned_for_another_pipeline_is_refused(tmp_path: Path) -> None:
    whitening.save(Whitening.fit(correlated_rows(), dim=8), tmp_path, "w", {"pipeline": "net/gem3/224/squash"})
    with pytest.raises(ModelFileError, match="learned for"):
        whitening.load_verified(tmp_path, "w", "net/gem3/320/aspect")


def test_a_missing_whitening_says_how_to_make_it(tmp_path: Path) -> None:
    with pytest.raises(ModelFileError, match=r"setup\.sh"):
        ImageEmbedder.from_settings(ExtractorSettings(model_dir=tmp_path, whiten_dim=512))


def test_the_file_name_names_the_pipeline() -> None:
    name = whitening.whitening_name("efficientnet-lite0", "efficientnet-lite0/gem3/320+224/aspect", 512)
    assert name == "efficientnet-lite0-gem3-320+224-aspect-whiten512"


def test_a_whitening_learned_with_another_network_file_is_refused(tmp_path: Path) -> None:
    """A network made again (the int8 file by another recipe) keeps its name: its old whitening
    would keep the model id while the vectors changed, so setup must learn it again."""
    recipe = {"pipeline": "p", "model_sha256": "ab" * 32}
    whitening.save(Whitening.fit(correlated_rows(), dim=8), tmp_path, "w", recipe)
    assert whitening.load_verified(tmp_path, "w", "p", "ab" * 32)[1] == whitening.load_verified(tmp_path, "w", "p")[1]
    with pytest.raises(ModelFileError, match="learned with the network file abababababab"):
        whitening.load_verified(tmp_path, "w", "p", "cd" * 32)


@pytest.mark.parametrize(("marked", "expected"), [(True, 0), (False, 1)])
def test_setup_learns_the_int8_whitening_again_unless_it_was_learned_from_exact_products(
    model_dir: Path, tmp_path: Path, marked: bool, expected: int
) -> None:
    """One learned without the flag may have seen saturated products (a CPU without VNNI, before
    session.EXACT_INT8): `fit_whitening --check` fails, so setup learns it again, same identity."""
    from services.extractor import fit_whitening

    settings = ExtractorSettings(model_dir=tmp_path, precision=Precision.INT8)
    name = "efficientnet-lite0-int8-gem3-320-aspect-whiten512"
    for file in ("efficientnet-lite0-int8.onnx", "efficientnet-lite0-int8.json", f"{name}.npz"):
        (tmp_path / file).write_bytes((model_dir / file).read_bytes())
    manifest = json.loads((model_dir / f"{name}.json").read_text())
    manifest.pop(whitening.EXACT_INT8_FIELD, None)
    if marked:
        manifest[whitening.EXACT_INT8_FIELD] = True
    (tmp_path / f"{name}.json").write_text(json.dumps(manifest))
    assert fit_whitening.check(settings) == expected
    assert whitening.identity(manifest) == whitening.identity({**manifest, whitening.EXACT_INT8_FIELD: not marked})
