"""Faces in an image: where each is (box, five landmarks, detection score) and a descriptor of who it is.

dlib does the work (PyPI `dlib-bin`, with the model files of `face_recognition_models`):
- detection: dlib's HOG + linear SVM frontal face detector, run on the image brought to at most
  `FaceConfig.side` pixels on its longer side and upsampled `FaceConfig.upsample` times (a face
  must be ~40 px wide at upsample 1 to be found; `min_face` drops smaller ones);
- landmarks: the 5-point shape predictor (eye corners and nose), used to align the face chip. The
  68-point model in the same package is never loaded: its training data (iBUG 300-W) has terms
  that restrict use;
- descriptor: dlib's ResNet face descriptor (128-d, trained so that two photos of one person are at
  Euclidean distance < 0.6), L2-normalised here so that an album's cosine metric serves it.
  bench/faces.py measures the distance that separates people.

The three model files carry CC0 terms (face_recognition_models' LICENSE). Everything here is CPU
(the prebuilt wheel has no CUDA); one `FaceModel` is used from one thread at a time.
"""

from __future__ import annotations

import importlib.util
import logging
import sys
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numpy.typing import NDArray
from PIL import Image

from services.common.errors import FaceModelUnavailable
from services.extractor.preprocess import PreprocessConfig, decode_rgb

log = logging.getLogger(__name__)

# dlib's ResNet descriptor: 128 dimensions.
FACE_DIM = 128
FACE_MODEL_ID = "dlib-resnet-face-v1/hog-5pt/l2"
LANDMARK_MODEL = "shape_predictor_5_face_landmarks.dat"
DESCRIPTOR_MODEL = "dlib_face_recognition_resnet_model_v1.dat"


@dataclass(frozen=True)
class FaceConfig:
    """How faces are looked for."""

    # Longer side the image is brought to before detection (bigger finds smaller faces, slower).
    side: int = 800
    # Times the detector upsamples the image (1: faces down to ~40 px wide at `side`).
    upsample: int = 1
    # Faces narrower than this (in the original image's pixels) are dropped.
    min_face: int = 20
    # At most this many faces per image, the largest first.
    max_faces: int = 32
    # Jitters of the descriptor (1: none; dlib's 100 is slightly better and 100x slower).
    jitter: int = 1


@dataclass(frozen=True)
class Face:
    """One face: box (x, y, width, height) and landmarks in the original image's pixels."""

    box: tuple[int, int, int, int]
    landmarks: tuple[tuple[float, float], ...]
    score: float
    descriptor: NDArray[np.float32]


@dataclass(frozen=True)
class FacesOfImage:
    width: int
    height: int
    faces: tuple[Face, ...]


def models_dir() -> Path | None:
    """Where face_recognition_models keeps its files (found without importing it: it needs setuptools'
    pkg_resources), or None if it is not installed."""
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations))) / "models"


class FaceModel:
    """dlib's detector, 5-point landmarks and descriptor, loaded on first use."""

    def __init__(self, config: FaceConfig | None = None, directory: Path | None = None) -> None:
        self.config = config or FaceConfig()
        self._directory = directory
        self._lock = threading.Lock()
        self._loaded: tuple[object, object, object] | None = None

    @property
    def model_id(self) -> str:
        return FACE_MODEL_ID

    def installed(self) -> bool:
        """Whether dlib and the model files are there (without loading them)."""
        directory = self._directory or models_dir()
        return (importlib.util.find_spec("dlib") is not None and directory is not None
                and (directory / LANDMARK_MODEL).is_file() and (directory / DESCRIPTOR_MODEL).is_file())

    def load(self) -> None:
        """Loads the models now; `FaceModelUnavailable` if they are not installed."""
        self._load()

    def _load(self) -> tuple[object, object, object]:
        with self._lock:
            if self._loaded is None:
                self._loaded = _load_models(self._directory or models_dir())
            return self._loaded

    def find(self, image: Image.Image) -> FacesOfImage:
        """Every face of an (oriented, RGB) image, the largest first."""
        detector, landmarks, describer = self._load()
        width, height = image.size
        scale = min(1.0, self.config.side / max(width, height))
        small = image if scale == 1.0 else image.resize((max(1, round(width * scale)), max(1, round(height * scale))),
                                                       Image.Resampling.BILINEAR)
        pixels = np.asarray(small, dtype=np.uint8)
        boxes, scores, _ = detector.run(pixels, self.config.upsample, 0.0)  # type: ignore[attr-defined]
        found = []
        for rect, score in zip(boxes, scores, strict=True):
            shape = landmarks(pixels, rect)  # type: ignore[operator]
            descriptor = np.asarray(describer.compute_face_descriptor(pixels, shape, self.config.jitter),  # type: ignore[attr-defined]
                                    dtype=np.float32)
            descriptor /= max(float(np.linalg.norm(descriptor)), 1e-12)
            box = _box_in_original(rect, scale, width, height)
            if box[2] < self.config.min_face:
                continue
            points = tuple((round(p.x / scale, 1), round(p.y / scale, 1)) for p in shape.parts())
            found.append(Face(box, points, round(float(score), 4), descriptor))
        found.sort(key=lambda f: f.box[2] * f.box[3], reverse=True)
        return FacesOfImage(width, height, tuple(found[:self.config.max_faces]))


def decode_full(data: bytes, config: PreprocessConfig) -> Image.Image:
    """The image as the network's decoder reads it (its limits, EXIF orientation, RGB on white), never at a
    reduced JPEG scale: the faces' boxes are in the image's own pixels."""
    return decode_rgb(data, config, min_side=sys.maxsize)


def _box_in_original(rect: object, scale: float, width: int, height: int) -> tuple[int, int, int, int]:
    left = max(0, round(rect.left() / scale))  # type: ignore[attr-defined]
    top = max(0, round(rect.top() / scale))  # type: ignore[attr-defined]
    right = min(width, round((rect.right() + 1) / scale))  # type: ignore[attr-defined]
    bottom = min(height, round((rect.bottom() + 1) / scale))  # type: ignore[attr-defined]
    return left, top, max(0, right - left), max(0, bottom - top)


def _load_models(directory: Path | None) -> tuple[object, object, object]:
    try:
        import dlib
    except ImportError as exc:
        raise FaceModelUnavailable("the face models are not installed (dlib is missing: pip install "
                                   "dlib-bin face_recognition_models, or scripts/setup.sh)") from exc
    if directory is None or not (directory / DESCRIPTOR_MODEL).is_file() or not (directory / LANDMARK_MODEL).is_file():
        raise FaceModelUnavailable(f"the face models are not installed ({LANDMARK_MODEL} and {DESCRIPTOR_MODEL} "
                                   f"not found{' in ' + str(directory) if directory else ''}: pip install "
                                   "face_recognition_models, or scripts/setup.sh)")
    log.info("loading the face models from %s", directory)
    return (dlib.get_frontal_face_detector(), dlib.shape_predictor(str(directory / LANDMARK_MODEL)),
            dlib.face_recognition_model_v1(str(directory / DESCRIPTOR_MODEL)))
