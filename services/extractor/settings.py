"""Extractor settings, read from EXTRACTOR_* environment variables."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from services.common.settings import ServiceSettings
from services.extractor.preprocess import ResizeMode


class ExtractorSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="EXTRACTOR_", env_nested_delimiter="__", extra="ignore")

    port: int = 50051
    metrics_port: int = 9101
    # Directory holding <model_name>.onnx and <model_name>.json (written by services/extractor/export.py).
    model_dir: Path = Path(".cache/models")
    model_name: str = "efficientnet-lite0"
    # Ordered preference; intersected with what onnxruntime reports available.
    providers: list[str] = Field(default_factory=lambda: ["CUDAExecutionProvider", "CPUExecutionProvider"])
    # 0 lets onnxruntime choose (all cores); set it when several processes share a machine.
    intra_op_threads: int = 0
    # Side of the square the image is resized to before the network.
    image_size: int = 224
    # How the image becomes that square ("squash": stretch to it, aspect ratio not kept).
    resize: ResizeMode = ResizeMode.SQUASH
    # GeM pooling exponent (1 = average pooling, large = max pooling).
    gem_p: float = 3.0
    # Dynamic batching: a batch leaves when it holds max_batch images or after max_wait_ms.
    max_batch: int = 32
    max_wait_ms: float = 5.0
    # Threads decoding and resizing images (Pillow releases the GIL while decoding).
    decode_threads: int = 2
    # Bad-input limits: encoded size, and decoded pixels (decompression bombs).
    max_image_bytes: int = 20 * 1024 * 1024
    max_image_pixels: int = 50_000_000
