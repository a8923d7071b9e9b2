"""How the model runs: an onnxruntime session over the exported file, checked against its manifest.

What the model does with its output (pooling) lives in `model.py`; this module only turns a uint8
NHWC batch into the last feature map, on the best execution provider available.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
from numpy.typing import NDArray

from services.extractor.settings import ExtractorSettings, Precision

log = logging.getLogger(__name__)

INPUT_NAME = "images"
OUTPUT_NAME = "fmap"
CPU_PROVIDER = "CPUExecutionProvider"
# The int8 network's file is `<model>-int8.onnx` (services/extractor/quantize.py).
INT8_SUFFIX = "-int8"


class ModelFileError(RuntimeError):
    """The exported model is missing, incomplete or not the file its manifest describes."""


@dataclass(frozen=True)
class ModelManifest:
    """The `<model>.json` written next to `<model>.onnx` by export.py."""

    name: str
    sha256: str
    channels: int

    @classmethod
    def read(cls, path: Path) -> ModelManifest:
        try:
            data = json.loads(path.read_text())
            return cls(name=str(data["name"]), sha256=str(data["sha256"]), channels=int(data["channels"]))
        except FileNotFoundError as exc:
            raise ModelFileError(f"model manifest {path} is missing; run scripts/setup.sh") from exc
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise ModelFileError(f"model manifest {path} is unreadable ({exc}); run scripts/setup.sh") from exc


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def verified_model_file(model_dir: Path, name: str) -> tuple[Path, ModelManifest]:
    """The onnx file and its manifest, after checking the file is the one that was exported."""
    onnx_path = model_dir / f"{name}.onnx"
    manifest = ModelManifest.read(model_dir / f"{name}.json")
    if not onnx_path.exists():
        raise ModelFileError(f"model file {onnx_path} is missing; run scripts/setup.sh")
    actual = sha256_of(onnx_path)
    if actual != manifest.sha256:
        raise ModelFileError(
            f"model file {onnx_path} has sha256 {actual[:12]}..., its manifest says {manifest.sha256[:12]}...; "
            "the file is corrupt or from another export: run scripts/setup.sh again"
        )
    return onnx_path, manifest


def available_providers(preferred: Sequence[str]) -> list[str]:
    """The preferred providers this onnxruntime build has, in preference order.

    CPU is always appended last as a fallback: a GPU provider can still refuse a node.
    """
    have = set(ort.get_available_providers())
    chosen = [p for p in preferred if p in have]
    if CPU_PROVIDER not in chosen:
        chosen.append(CPU_PROVIDER)
    return chosen


def resolve_precision(precision: Precision, providers: Sequence[str]) -> Precision:
    """AUTO is int8 when the CPU provider comes first of the available `providers` (no GPU), else
    fp32: the int8 file's QLinearConv and QLinearAdd have no CUDA kernels, so on a GPU they would run
    on the CPU with copies in between."""
    if precision is Precision.AUTO:
        return Precision.INT8 if providers[0] == CPU_PROVIDER else Precision.FP32
    return precision


def network_name(model: str, precision: Precision) -> str:
    """The network file's stem (and the name in the model id) for a resolved precision."""
    return model + INT8_SUFFIX if precision is Precision.INT8 else model


def provider_options(provider: str) -> dict[str, str]:
    """Per-provider tuning. CUDA: inputs come in few shapes (one square, or with aspect-kept resizing
    about ten per scale and orientation), so an exhaustive cuDNN algorithm search, paid once per shape,
    pays off; NHWC kernels avoid transposes."""
    if provider == "CUDAExecutionProvider":
        return {"cudnn_conv_algo_search": "EXHAUSTIVE", "prefer_nhwc": "1"}
    return {}


# onnxruntime multiplies the int8 network's uint8 activations by its int8 weights with VPMADDUBSW on
# an x86-64 CPU without VNNI (AVX2 only: AMD before Zen 4, Intel before Cascade Lake), whose pairwise
# sums saturate at 16 bits (255 x 127 x 2 > 32767). There the file's descriptors came out at cosine
# 0.92 to the exact arithmetic's (the same file as QDQ, graph optimisations off), which a CPU with
# VNNI computes: one model id stood for two sets of vectors, 0.90 to fp32's instead of 0.97. The
# high-precision path (onnxruntime turns the weights to uint8 and multiplies U8U8, "only effective
# with AVX2 or AVX512") is exact: as slow as fp32 on such a CPU (bench/int8_paths.py: 1.04-1.05x fp32's
# time, the saturating path 0.74x). A CPU with AVX-512 VNNI keeps its own exact kernel (the one every
# figure before 2026-12-01 was measured on), as onnxruntime may take the U8U8 path there too, at a speed
# not measured here; every other CPU (or one whose flags cannot be read) takes the high-precision path.
EXACT_INT8 = ("session.x64quantprecision", "1")


def saturates_int8(cpu_flags: str | None) -> bool:
    """Whether onnxruntime's default U8S8 products may saturate on a CPU of these /proc/cpuinfo
    flags (None: unknown, so assumed to)."""
    return cpu_flags is None or "avx512_vnni" not in cpu_flags.split()


def cpu_flags() -> str | None:
    """The first processor's flags in /proc/cpuinfo (Linux), or None."""
    try:
        with open("/proc/cpuinfo") as f:
            return next((line.split(":", 1)[1] for line in f if line.startswith("flags")), None)
    except OSError:
        return None


def sum_int8_exactly(options: ort.SessionOptions) -> None:
    """Asks for the high-precision int8 path where this CPU's default one may saturate (`EXACT_INT8`)."""
    if saturates_int8(cpu_flags()):
        options.add_session_config_entry(*EXACT_INT8)


def session_options(intra_op_threads: int, spinning: bool = False) -> ort.SessionOptions:
    """Full graph optimisation; one inter-op thread (the graph is a chain, parallelism is inside
    ops); intra-op threads from settings, because onnxruntime's default (all cores) oversubscribes a
    machine shared with other processes or with our decode threads; no busy-waiting between
    operators unless asked (it takes the cores from decoding and from a concurrent batch); integer
    products that never saturate (`EXACT_INT8` where they could), so that every CPU computes the same
    vectors."""
    options = ort.SessionOptions()
    options.add_session_config_entry("session.intra_op.allow_spinning", "1" if spinning else "0")
    sum_int8_exactly(options)
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.inter_op_num_threads = 1
    if intra_op_threads > 0:
        options.intra_op_num_threads = intra_op_threads
    return options


def threads_per_run(cores: int, batches_in_flight: int) -> int:
    """onnxruntime's threads for each network run on the CPU when the settings leave them to us: the cores shared
    by the batches in flight (`ExtractorSettings.batch_concurrency`), one each at least. Two batches of two threads
    each on two cores made the threads wait on each other: ingest's embedding ran at 149-153 images/s against
    164-183 with one thread a run, queries alike (bench/extract.py, in turn; bench/README.md)."""
    return max(1, cores // max(1, batches_in_flight))


def usable_cores() -> int:
    """The cores this process may run on (its affinity, which a container's cpuset narrows)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


class OnnxSession:
    """The feature-map network; loads on first use (or `load()`), once, thread-safely."""

    def __init__(
        self, model_dir: Path, name: str, providers: Sequence[str], intra_op_threads: int = 0, spinning: bool = False
    ) -> None:
        self.model_dir = model_dir
        self.name = name
        self.preferred_providers = list(providers)
        self.intra_op_threads = intra_op_threads
        self.spinning = spinning
        self._session: ort.InferenceSession | None = None
        self._manifest: ModelManifest | None = None
        self._lock = threading.Lock()

    @classmethod
    def from_settings(cls, settings: ExtractorSettings) -> OnnxSession:
        """The network file the settings' precision resolves to here; int8 on the CPU provider only."""
        precision = resolve_precision(settings.precision, available_providers(settings.providers))
        providers = [CPU_PROVIDER] if precision is Precision.INT8 else settings.providers
        threads = settings.intra_op_threads
        if threads == 0 and available_providers(providers)[:1] == [CPU_PROVIDER]:
            threads = threads_per_run(usable_cores(), settings.batch_concurrency)
        return cls(settings.model_dir, network_name(settings.model_name, precision), providers, threads,
                   settings.ort_spinning)

    def load(self) -> None:
        """Verifies the file and builds the session; later calls do nothing."""
        with self._lock:
            if self._session is None:
                self._session, self._manifest = self._build()

    def _build(self) -> tuple[ort.InferenceSession, ModelManifest]:
        path, manifest = verified_model_file(self.model_dir, self.name)
        providers = available_providers(self.preferred_providers)
        options: list[dict[str, Any]] = [provider_options(p) for p in providers]
        settings = session_options(self.intra_op_threads, self.spinning)
        session = ort.InferenceSession(str(path), settings, providers, options)
        log.info("loaded %s (sha256 %s...) on %s; providers available: %s", path, manifest.sha256[:12],
                 session.get_providers()[0], ", ".join(ort.get_available_providers()))
        return session, manifest

    def _loaded(self) -> tuple[ort.InferenceSession, ModelManifest]:
        if self._session is None or self._manifest is None:
            self.load()
        assert self._session is not None and self._manifest is not None
        return self._session, self._manifest

    @property
    def provider(self) -> str:
        """The execution provider actually in use (the first one the session accepted)."""
        return str(self._loaded()[0].get_providers()[0])

    @property
    def channels(self) -> int:
        return self._loaded()[1].channels

    def run(self, images: NDArray[np.uint8]) -> NDArray[np.float32]:
        """uint8 NHWC RGB [N, H, W, 3] -> float32 feature map [N, C, h, w]."""
        session, _ = self._loaded()
        (fmap,) = session.run([OUTPUT_NAME], {INPUT_NAME: np.ascontiguousarray(images, dtype=np.uint8)})
        return np.asarray(fmap, dtype=np.float32)
