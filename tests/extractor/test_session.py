from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from services.extractor.pooling import embed_fmap
from services.extractor.preprocess import PreprocessConfig, ResizeMode, decode_image
from services.extractor.session import (
    ModelFileError,
    OnnxSession,
    available_providers,
    cpu_flags,
    network_name,
    resolve_precision,
    saturates_int8,
    session_options,
    threads_per_run,
    usable_cores,
    verified_model_file,
)
from services.extractor.settings import ExtractorSettings, Precision

MODEL = "efficientnet-lite0"


@pytest.fixture()
def model_copy(model_dir: Path, tmp_path: Path) -> Path:
    for suffix in (".onnx", ".json"):
        shutil.copy(model_dir / f"{MODEL}{suffix}", tmp_path / f"{MODEL}{suffix}")
    return tmp_path


def test_the_exported_model_matches_its_manifest(model_dir: Path) -> None:
    path, manifest = verified_model_file(model_dir, MODEL)
    assert path.name == f"{MODEL}.onnx" and manifest.channels == 1280


def test_a_missing_model_says_to_run_setup(tmp_path: Path) -> None:
    with pytest.raises(ModelFileError, match=r"run scripts/setup\.sh"):
        verified_model_file(tmp_path, MODEL)


def test_a_missing_onnx_file_next_to_its_manifest_says_to_run_setup(model_copy: Path) -> None:
    (model_copy / f"{MODEL}.onnx").unlink()
    with pytest.raises(ModelFileError, match=r"missing; run scripts/setup\.sh"):
        verified_model_file(model_copy, MODEL)


def test_a_model_file_that_is_not_the_exported_one_is_refused(model_copy: Path) -> None:
    manifest_path = model_copy / f"{MODEL}.json"
    manifest = json.loads(manifest_path.read_text())
    manifest["sha256"] = "0" * 64
    manifest_path.write_text(json.dumps(manifest))
    with pytest.raises(ModelFileError, match="sha256"):
        OnnxSession(model_copy, MODEL, ["CPUExecutionProvider"]).load()


def test_providers_keep_the_preferred_order_of_those_available() -> None:
    assert available_providers(["NoSuchExecutionProvider", "CPUExecutionProvider"]) == ["CPUExecutionProvider"]


def test_cpu_is_always_there_as_the_last_resort() -> None:
    assert available_providers(["NoSuchExecutionProvider"]) == ["CPUExecutionProvider"]


def test_int8_products_are_summed_without_saturating_on_every_cpu() -> None:
    """Without it a CPU lacking VNNI computes other vectors from the int8 file (0.90 to fp32's,
    against 0.97): test_the_int8_network_describes_images_as_the_fp32_one_does fails there."""
    assert saturates_int8("fpu sse4_1 avx avx2 fma") and saturates_int8(None)
    assert saturates_int8("avx2 avx_vnni")  # AVX-VNNI (256-bit) alone: the high-precision path, to be sure
    assert not saturates_int8("avx2 avx512f avx512bw avx512_vnni")
    options = session_options(0)
    if saturates_int8(cpu_flags()):
        assert options.get_session_config_entry("session.x64quantprecision") == "1"
    else:
        with pytest.raises(RuntimeError, match="does not have configuration"):
            options.get_session_config_entry("session.x64quantprecision")


def test_intra_op_threads_are_set_only_when_asked_for() -> None:
    assert session_options(2).intra_op_num_threads == 2
    assert session_options(0).intra_op_num_threads == 0


def test_each_run_gets_the_cores_shared_by_the_batches_in_flight_at_least_one() -> None:
    assert [threads_per_run(cores, 2) for cores in (1, 2, 3, 4, 16)] == [1, 1, 1, 2, 8]
    assert threads_per_run(8, 1) == 8 and threads_per_run(8, 0) == 8


def test_a_cpu_session_left_to_choose_shares_the_cores_and_one_asked_for_keeps_its_threads(model_dir: Path) -> None:
    chosen = OnnxSession.from_settings(ExtractorSettings(model_dir=model_dir, providers=["CPUExecutionProvider"],
                                                         batch_concurrency=2))
    assert chosen.intra_op_threads == threads_per_run(usable_cores(), 2) >= 1
    asked = OnnxSession.from_settings(ExtractorSettings(model_dir=model_dir, providers=["CPUExecutionProvider"],
                                                        intra_op_threads=3))
    assert asked.intra_op_threads == 3


def test_the_session_turns_a_uint8_nhwc_batch_into_the_last_feature_map(model_dir: Path) -> None:
    session = OnnxSession(model_dir, MODEL, ["CPUExecutionProvider"], intra_op_threads=1)
    images = np.random.default_rng(0).integers(0, 256, (2, 224, 224, 3), dtype=np.uint8)
    fmap = session.run(images)
    assert fmap.shape == (2, 1280, 7, 7) and fmap.dtype == np.float32
    assert session.provider == "CPUExecutionProvider" and session.channels == 1280
    # Lite ends in ReLU6.
    assert fmap.min() >= 0.0 and fmap.max() <= 6.0


GPU_FIRST = ["CUDAExecutionProvider", "CPUExecutionProvider"]


def test_auto_precision_is_int8_on_the_cpu_and_fp32_where_a_gpu_provider_comes_first() -> None:
    assert resolve_precision(Precision.AUTO, ["CPUExecutionProvider"]) is Precision.INT8
    assert resolve_precision(Precision.AUTO, GPU_FIRST) is Precision.FP32
    assert resolve_precision(Precision.FP32, ["CPUExecutionProvider"]) is Precision.FP32
    assert resolve_precision(Precision.INT8, GPU_FIRST) is Precision.INT8


def test_the_int8_network_is_its_own_file() -> None:
    assert network_name(MODEL, Precision.INT8) == f"{MODEL}-int8"
    assert network_name(MODEL, Precision.FP32) == MODEL


def test_the_int8_network_runs_on_the_cpu_provider_even_where_a_gpu_is_preferred(model_dir: Path) -> None:
    session = OnnxSession.from_settings(ExtractorSettings(model_dir=model_dir, precision=Precision.INT8,
                                                          providers=GPU_FIRST))
    assert session.name == f"{MODEL}-int8" and session.preferred_providers == ["CPUExecutionProvider"]
    fp32 = OnnxSession.from_settings(ExtractorSettings(model_dir=model_dir, precision=Precision.FP32,
                                                       providers=GPU_FIRST))
    assert fp32.name == MODEL and fp32.preferred_providers == GPU_FIRST


def test_the_int8_network_describes_images_as_the_fp32_one_does(model_dir: Path, photos: list[Path]) -> None:
    """Its GeM descriptors stay close to fp32's: cosine 0.97 on average over these photos, the grey
    textures (grass 0.84, gravel 0.91) furthest; the quality it keeps is measured by bench/quality.py."""
    config = PreprocessConfig(image_size=320, resize=ResizeMode.ASPECT)
    fp32, int8 = (OnnxSession(model_dir, name, ["CPUExecutionProvider"], intra_op_threads=1)
                  for name in (MODEL, f"{MODEL}-int8"))
    cosines = []
    for photo in photos:
        pixels = decode_image(photo.read_bytes(), config)[None]
        a, b = (embed_fmap(s.run(pixels), 3.0)[0] for s in (fp32, int8))
        cosines.append(float(a @ b))
    assert np.mean(cosines) > 0.95 and min(cosines) > 0.8, cosines
