"""Extractor settings, read from EXTRACTOR_* environment variables."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from services.common.settings import ServiceSettings
from services.extractor.descriptors import Variant
from services.extractor.preprocess import ResizeMode


class ProposalSource(StrEnum):
    """Where a query's proposed regions come from (EmbedRequest.proposals)."""

    # The detector when its file is installed (scripts/export_detector.sh), else the activations.
    AUTO = "auto"
    # The COCO detector (detector.py); the extractor does not start without its file.
    DETECTOR = "detector"
    # The network's own feature map (proposals.py): no second network run.
    ACTIVATIONS = "activations"


class Precision(StrEnum):
    """Which network file runs: the exported one, or its int8 quantisation (quantize.py)."""

    # int8 where the network runs on the CPU provider, fp32 where a GPU provider is first.
    AUTO = "auto"
    FP32 = "fp32"
    # Always on the CPU provider: onnxruntime's CUDA provider has no kernels for its operators.
    INT8 = "int8"


class ExtractorSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="EXTRACTOR_", env_nested_delimiter="__", extra="ignore")

    port: int = 50051
    metrics_port: int = 9101
    # Directory holding <model_name>.onnx and <model_name>.json (written by services/extractor/export.py).
    model_dir: Path = Path(".cache/models")
    model_name: str = "efficientnet-lite0"
    # The network's numbers. auto: int8 (<model_name>-int8.onnx, made at setup by quantize.py) where the
    # CPU provider runs it, fp32 on a GPU. The int8 network costs ~0.6x fp32's CPU per image (ingest's
    # extractor 0.8x) for copy R@1 0.993 vs 0.994 and category mAP 0.505 vs 0.511 (bench/README.md,
    # "int8 network"); it is another network,
    # so its own whitening and model id: albums made under the other are 409 model_mismatch until
    # re-embedded, and fp32 here shares albums with GPU extractors.
    precision: Precision = Precision.AUTO
    # Ordered preference; intersected with what onnxruntime reports available.
    providers: list[str] = Field(default_factory=lambda: ["CUDAExecutionProvider", "CPUExecutionProvider"])
    # onnxruntime's threads for each network run. 0: on the CPU, the cores shared by the batches in flight
    # (`batch_concurrency`), at least one each (1 on 2 cores: ingest's embedding 164-183 images/s against 149-153
    # with onnxruntime's choice, all cores a run, queries alike: session.threads_per_run); on a GPU onnxruntime's
    # choice. Set it when several processes share a machine.
    intra_op_threads: int = 0
    # onnxruntime's worker threads busy-wait between operators by default; that steals the cores the
    # decode threads and a second batch need (bench/extract_probe.py, 2 cores: one worker 48 -> 72
    # img/s with it off). Turn on for a machine given to the model alone.
    ort_spinning: bool = False
    # The defaults are the measured recipe of bench/README.md: aspect-kept 320 px, GeM 3, PCA-whitened
    # to 512 dimensions, one database row per image; rotated and mirrored copies are found from the
    # query side (query_variants).
    # Longer side of the network input ("squash": side of the square).
    image_size: int = 320
    # How the image becomes the input: "aspect" keeps its shape (sides multiples of 32), "squash"
    # stretches it to a square.
    resize: ResizeMode = ResizeMode.ASPECT
    # More input sizes whose vectors are added to the main one's (multi-scale), e.g. [224].
    extra_scales: list[int] = Field(default_factory=list)
    # GeM pooling exponent (1 = average pooling, large = max pooling).
    gem_p: float = 3.0
    # PCA whitening to this many dimensions, learned at setup (0: none, vectors keep the network's
    # channels). The file is <model_dir>/<model>-<pipeline>-whiten<dim>.npz, see fit_whitening.py.
    whiten_dim: int = 512
    # Query side: the transforms a copy search tries when the query's upright vector finds no verified
    # copy (EmbedRequest purpose QUERY_VARIANTS); they find rotated and mirrored copies at the cost of
    # one network run each, for those searches only. Not part of the model id: albums do not change.
    query_variants: list[Variant] = Field(
        default_factory=lambda: [Variant.ROT90, Variant.ROT180, Variant.ROT270, Variant.HFLIP]
    )
    # Database side: extra rows of each image added to an album, made by re-running it transformed
    # (e.g. the same four): rotated and mirrored copies are then found by the upright query alone, at
    # one network run per row at ingest (bench/e2e.py: ingest 5x slower with all four) and that many
    # rows in the album. Part of the model id ("db-...").
    index_variants: list[Variant] = Field(default_factory=list)
    # Database side only: region rows per variant, from grids of feature-map windows (2: the four
    # 2/3 x 2/3 corner windows); helps crops, costs rows (5 per level-2 variant).
    index_region_levels: list[int] = Field(default_factory=list)
    # Dynamic batching: a batch leaves when it holds max_batch images or after max_wait_ms
    # (unset: 5 ms on a GPU, 0 on CPU, where waiting only adds latency: see max_run).
    max_batch: int = 32
    max_wait_ms: float | None = None
    # Images per network run, at most; same-shape images of a batch run together. 0: max_batch on a
    # GPU, 1 on CPU, where a larger run is no faster and every new input shape (batch size included)
    # costs onnxruntime a memory plan that it keeps: bench/extract.py, 2 cores, 94 img/s at RSS 260 MB
    # vs 100 img/s at 1,030 MB with EXTRACTOR_MAX_RUN=32.
    max_run: int = 0
    # Where proposals come from: on real photos placed in scenes the detector finds the placed one among
    # its first 3 boxes in 0.70 of them against 0.33 for the activations, for a second network (~40-200
    # ms a query on 2 cores against ~1 ms; bench/README.md). Only searches that ask for proposals pay it.
    proposals: ProposalSource = ProposalSource.AUTO
    # Batches run through the model at once (see batcher.py): 2 keeps the cores (or the GPU) busy
    # while the other batch is in its Python steps.
    batch_concurrency: int = 2
    # How much lower the priority of the threads embedding images to be stored (imports, re-embeds) is
    # than the searches' (services/extractor/lanes.py; Linux' niceness, 0-19): while an import keeps the cores
    # busy, a search's image gets them first. bench/search_during_import.py, 2 cores: search p50 during an
    # import 146 ms at 0, 107 ms at 10 (77-84 ms idle; 2,450 ms before the lanes).
    bulk_niceness: int = Field(default=10, ge=0, le=19)
    # The same for the threads embedding an add's images (stored, but someone waits for the answer): between
    # the searches' and the imports' (lanes.py), so that a search made during an add of 256 images gets the
    # cores first, and an add during an import before the import's images.
    adds_niceness: int = Field(default=5, ge=0, le=19)
    # Local features for verifying copies (EmbedRequest.local_features): SIFT on the image brought to
    # this longer side, at most this many keypoints. bench/research/verify_experiment.py: 384 px / 500
    # keypoints reach copy R@1 0.991 re-ranking the 5 nearest (512 / 1000: 0.992 at 2.5x the time).
    local_features_side: int = 384
    local_features_max: int = 500
    # An indexed image's own features (its stored features and its keypoint rows, see the gateway's
    # keypoint_index.py) are made finer: a detail cut out of a photo shows its part at the photo's own
    # scale, and keypoints of a photo brought down to 384 px do not describe it. bench/research/
    # detail_keypoints.py on the evaluation set's detail crops: 680 px / 1,000 keypoints put the photo
    # among the 10 most voted for 0.95 of them and verify it first for 0.77 (384 / 500: 0.80, 0.35;
    # 680 / 500: 0.84, 0.54; 512 / 1,000: 0.93, 0.65), for ~3.7x the SIFT time of a photo of 680 px or
    # more (the same for one under 384 px). Queries stay at the side above.
    local_features_index_side: int = 680
    local_features_index_max: int = 1000
    # Tags of an indexed image: the network's own ImageNet classifier (<model>-head.npz beside the ONNX
    # file) gives its top_k classes of at least min_score probability (bench/tags.py measures the floor).
    tags_top_k: int = 5
    tags_min_score: float = 0.1
    # Faces (DescribeFaces, for albums that index faces; see faces.py): dlib's HOG detector on the
    # image brought to this longer side, upsampled this many times (800 / 1: faces down to ~40 px wide
    # at 800 px; bench/faces.py found the same faces as at 1024 px), faces narrower than min_size
    # pixels (of the original image) dropped, at most `max` per image, the largest first.
    faces_side: int = 800
    faces_upsample: int = 1
    faces_min_size: int = 20
    faces_max: int = 32
    # Where the face model files are (face_recognition_models' layout); unset: that package's own folder.
    faces_model_dir: Path | None = None
    # Threads decoding and resizing images (Pillow releases the GIL while decoding).
    decode_threads: int = 2
    # Bad-input limits: encoded size, and decoded pixels (decompression bombs).
    max_image_bytes: int = 20 * 1024 * 1024
    max_image_pixels: int = 50_000_000
