"""What the model does: image bytes -> pixels (preprocess) -> feature map (session) -> unit vector (pooling).

`ImageEmbedder.model_id` names the whole pipeline, not just the network: albums record it, and
vectors made under different ids must never be compared.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Protocol

import numpy as np
from numpy.typing import NDArray

from services.extractor.pooling import embed_fmap
from services.extractor.preprocess import PreprocessConfig, decode_image
from services.extractor.session import OnnxSession
from services.extractor.settings import ExtractorSettings

log = logging.getLogger(__name__)

# Bump when the pipeline changes in a way the other parts of the id do not name.
PIPELINE_VERSION = "v1"


class FeatureMapModel(Protocol):
    """What the embedder needs of a session (a fake in tests, `OnnxSession` in the service)."""

    @property
    def name(self) -> str: ...

    @property
    def provider(self) -> str: ...

    @property
    def channels(self) -> int: ...

    def run(self, images: NDArray[np.uint8]) -> NDArray[np.float32]: ...


class ImageEmbedder:
    """Turns encoded images into L2-normalised GeM vectors of one fixed pipeline."""

    def __init__(self, session: FeatureMapModel, preprocess: PreprocessConfig, gem_p: float) -> None:
        self.session = session
        self.preprocess = preprocess
        self.gem_p = gem_p

    @classmethod
    def from_settings(cls, settings: ExtractorSettings) -> ImageEmbedder:
        preprocess = PreprocessConfig(
            image_size=settings.image_size,
            resize=settings.resize,
            max_image_bytes=settings.max_image_bytes,
            max_image_pixels=settings.max_image_pixels,
        )
        return cls(OnnxSession.from_settings(settings), preprocess, settings.gem_p)

    @property
    def model_id(self) -> str:
        """e.g. "efficientnet-lite0/gem3/224/squash/v1": network, pooling, input size, resize, version."""
        size, resize = self.preprocess.image_size, self.preprocess.resize.value
        return f"{self.session.name}/gem{self.gem_p:g}/{size}/{resize}/{PIPELINE_VERSION}"

    @property
    def dim(self) -> int:
        return self.session.channels

    @property
    def provider(self) -> str:
        return self.session.provider

    def decode(self, data: bytes) -> NDArray[np.uint8]:
        """Bytes -> the network's uint8 HWC input; raises InvalidImage / ImageTooLarge."""
        return decode_image(data, self.preprocess)

    def embed(self, images: Sequence[NDArray[np.uint8]]) -> NDArray[np.float32]:
        """Decoded images (all image_size square) -> [N, dim] unit vectors, one batch through the net."""
        if not images:
            return np.zeros((0, self.dim), dtype=np.float32)
        return embed_fmap(self.session.run(np.stack(images)), self.gem_p)

    def warm_up(self) -> None:
        """Loads the model and runs one batch, so the first request pays neither cost."""
        size = self.preprocess.image_size
        self.embed([np.full((size, size, 3), 127, dtype=np.uint8)])
        log.info("model %s ready: dim %d on %s", self.model_id, self.dim, self.provider)
