"""What the model does: image bytes -> pixels (preprocess) -> feature maps (session) -> vectors
(pooling, whitening), one vector per query and several rows per indexed image (descriptors).

`ImageEmbedder.model_id` names the whole pipeline, not just the network: albums record it, and
vectors made under different ids must never be compared.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
from numpy.typing import NDArray

from services.extractor import classifier as classifier_file
from services.extractor import whitening as whitening_file
from services.extractor.classifier import Classifier, Label, average_pool
from services.extractor.descriptors import DescriptorConfig, Pixels, Purpose, apply_variant
from services.extractor.pooling import embed_fmap, l2_normalise, region_vectors
from services.extractor.preprocess import Decoded, PreprocessConfig, decode_oriented, network_inputs
from services.extractor.proposals import Proposal, propose
from services.extractor.session import CPU_PROVIDER, ModelManifest, OnnxSession
from services.extractor.settings import ExtractorSettings
from services.extractor.whitening import Whitening

log = logging.getLogger(__name__)

# Bump when the pipeline changes in a way the other parts of the id do not name.
PIPELINE_VERSION = "v1"
# Network inputs run together at most (bounds the activations' memory).
DEFAULT_MAX_RUN = 32

Scales = tuple[Pixels, ...]  # one decoded image at each input size, the main size first


class FeatureMapModel(Protocol):
    """What the embedder needs of a session (a fake in tests, `OnnxSession` in the service)."""

    @property
    def name(self) -> str: ...

    @property
    def provider(self) -> str: ...

    @property
    def channels(self) -> int: ...

    def run(self, images: NDArray[np.uint8]) -> NDArray[np.float32]: ...


@dataclass(frozen=True)
class EmbedJob:
    """One decoded image and why it is embedded: the unit the dynamic batcher queues."""

    scales: Scales
    purpose: Purpose = Purpose.QUERY
    # Regions worth searching on their own to propose from the upright main-scale feature map (0: none).
    proposals: int = 0


@dataclass(frozen=True)
class Embedded:
    """One job's rows [rows_per_image(purpose), dim], for an indexed image its ImageNet labels, and the
    regions proposed when the job asked for them."""

    rows: NDArray[np.float32]
    labels: list[Label]
    proposals: list[Proposal] = field(default_factory=list)


@dataclass(frozen=True)
class _Input:
    job: int
    variant: int
    scale: int
    pixels: Pixels


class ImageEmbedder:
    """Turns encoded images into L2-normalised (optionally whitened) GeM vectors of one fixed pipeline."""

    def __init__(
        self,
        session: FeatureMapModel,
        preprocess: PreprocessConfig,
        descriptor: DescriptorConfig | None = None,
        whitening: Whitening | None = None,
        whitening_tag: str = "",
        max_run: int = DEFAULT_MAX_RUN,
        classifier: Classifier | None = None,
    ) -> None:
        self.session = session
        self.preprocess = preprocess
        self.descriptor = descriptor or DescriptorConfig()
        self.whitening = whitening
        self.whitening_tag = whitening_tag
        self.max_run = max_run
        self.classifier = classifier

    @classmethod
    def from_settings(cls, settings: ExtractorSettings, with_whitening: bool = True) -> ImageEmbedder:
        """The service's pipeline; the whitening file is loaded (and verified) here, so a missing or
        wrong one fails at start. `with_whitening=False` gives the raw vectors it is learned from."""
        preprocess = PreprocessConfig(
            image_size=settings.image_size,
            resize=settings.resize,
            max_image_bytes=settings.max_image_bytes,
            max_image_pixels=settings.max_image_pixels,
        )
        descriptor = DescriptorConfig(
            gem_p=settings.gem_p,
            extra_scales=tuple(settings.extra_scales),
            index_variants=tuple(settings.index_variants),
            index_region_levels=tuple(settings.index_region_levels),
            query_variants=tuple(settings.query_variants),
        )
        session = OnnxSession.from_settings(settings)
        max_run = settings.max_run or (1 if session.provider == CPU_PROVIDER else settings.max_batch)
        classifier = classifier_file.load_optional(
            classifier_file.head_path(settings.model_dir, settings.model_name), settings.tags_top_k,
            settings.tags_min_score)
        embedder = cls(session, preprocess, descriptor, max_run=max_run, classifier=classifier)
        if with_whitening and settings.whiten_dim > 0:
            name = whitening_file.whitening_name(session.name, embedder.raw_pipeline, settings.whiten_dim)
            network = ModelManifest.read(settings.model_dir / f"{session.name}.json")
            learned, identity = whitening_file.load_verified(settings.model_dir, name, embedder.raw_pipeline,
                                                             network.sha256)
            embedder.whitening, embedder.whitening_tag = learned, f"w{learned.dim}-{identity[:8]}"
        return embedder

    @property
    def sizes(self) -> tuple[int, ...]:
        return (self.preprocess.image_size, *self.descriptor.extra_scales)

    @property
    def raw_pipeline(self) -> str:
        """Network, pooling, input size(s) and resize: what whitening is learned on."""
        sizes = "+".join(str(s) for s in self.sizes)
        return f"{self.session.name}/gem{self.descriptor.gem_p:g}/{sizes}/{self.preprocess.resize.value}"

    @property
    def model_id(self) -> str:
        """e.g. "efficientnet-lite0/gem3/320/aspect/w512-1a2b3c4d/v1", or with database rows
        ".../w512-1a2b3c4d/db-rot90.rot180.rot270.hflip/v1": network, pooling, input size(s), resize,
        whitening (with its file's hash), database rows, version. Query variants are not part of it:
        they change no stored vector."""
        parts = [self.raw_pipeline, self.whitening_tag if self.whitening else "", self.descriptor.index_tag]
        return "/".join([p for p in parts if p] + [PIPELINE_VERSION])

    @property
    def dim(self) -> int:
        return self.whitening.dim if self.whitening else self.session.channels

    @property
    def provider(self) -> str:
        return self.session.provider

    def rows_per_image(self, purpose: Purpose) -> int:
        """How many vectors `embed_jobs` gives an image of this purpose."""
        variants = len(self.descriptor.variants(purpose))
        regions = sum(n * n for n in self.descriptor.regions(purpose))
        return variants * (1 + regions)

    def decode(self, data: bytes) -> Scales:
        """Bytes -> the network's uint8 HWC input at each size; raises InvalidImage / ImageTooLarge."""
        return self.decode_keeping_image(data)[0]

    def decode_keeping_image(self, data: bytes) -> tuple[Scales, Decoded]:
        """`decode`, and the decoded image it was made from (for local features: one decode serves both)."""
        decoded = decode_oriented(data, self.preprocess, max(self.sizes))
        return tuple(network_inputs(decoded.image, self.preprocess, self.sizes)), decoded

    def embed(self, images: Sequence[Scales]) -> NDArray[np.float32]:
        """Decoded images -> [N, dim] query vectors (one per image)."""
        if not images:
            return np.zeros((0, self.dim), dtype=np.float32)
        return np.stack([rows[0] for rows in self.embed_jobs([EmbedJob(s) for s in images])])

    def embed_jobs(self, jobs: Sequence[EmbedJob]) -> list[NDArray[np.float32]]:
        """Each job's rows, [rows_per_image(purpose), dim]: every variant's global vector (upright first),
        then each variant's region vectors. Same-shape inputs run through the network together."""
        return [e.rows for e in self.embed_and_label(jobs)]

    def embed_and_label(self, jobs: Sequence[EmbedJob]) -> list[Embedded]:
        """`embed_jobs`' rows, and each indexed image's ImageNet labels from its upright main-scale
        feature map (none without a classifier, or for a query)."""
        inputs = [
            _Input(j, v, s, apply_variant(pixels, variant))
            for j, job in enumerate(jobs)
            for v, variant in enumerate(self.descriptor.variants(job.purpose))
            for s, pixels in enumerate(job.scales)
        ]
        wants_regions = [i.scale == 0 and bool(self.descriptor.regions(jobs[i.job].purpose)) for i in inputs]
        proposals = [jobs[i.job].proposals if i.variant == 0 and i.scale == 0 else 0 for i in inputs]
        pooled, regions, averaged, proposed = self._pool(inputs, wants_regions, self._wants_labels(jobs, inputs),
                                                         proposals)
        raw = [self._rows(j, job, inputs, pooled, regions) for j, job in enumerate(jobs)]
        labels = self._labels(len(jobs), inputs, averaged)
        if self.whitening and raw:
            # One projection for the whole batch rather than one small product per image.
            whitened = self.whitening.apply(np.concatenate(raw))
            raw = np.split(whitened, np.cumsum([len(r) for r in raw])[:-1])
        boxes: list[list[Proposal]] = [[] for _ in jobs]
        for k, found_boxes in proposed.items():
            boxes[inputs[k].job] = found_boxes
        return [Embedded(rows, found, mine) for rows, found, mine in zip(raw, labels, boxes, strict=True)]

    def _wants_labels(self, jobs: Sequence[EmbedJob], inputs: list[_Input]) -> list[bool]:
        """The inputs the classifier reads: each indexed image upright at its main scale."""
        if self.classifier is None:
            return [False] * len(inputs)
        return [i.variant == 0 and i.scale == 0 and jobs[i.job].purpose is Purpose.INDEX for i in inputs]

    def _labels(self, n_jobs: int, inputs: list[_Input], averaged: dict[int, NDArray[np.float32]]) -> list[list[Label]]:
        found: list[list[Label]] = [[] for _ in range(n_jobs)]
        if self.classifier is None or not averaged:
            return found
        keys = sorted(averaged)
        for k, labels in zip(keys, self.classifier.labels(np.stack([averaged[k] for k in keys])), strict=True):
            found[inputs[k].job] = labels
        return found

    def _pool(
        self, inputs: list[_Input], wants_regions: list[bool], wants_average: list[bool], proposals: list[int]
    ) -> tuple[list[NDArray[np.float32]], dict[int, NDArray[np.float32]], dict[int, NDArray[np.float32]],
               dict[int, list[Proposal]]]:
        """Global GeM unit vector of every input, region vectors [R, C] of those that want them, the
        average-pooled map [C] of those the classifier reads, and the proposed regions of those that
        ask for `proposals[k]` of them."""
        groups: dict[tuple[int, ...], list[int]] = defaultdict(list)
        for k, item in enumerate(inputs):
            groups[item.pixels.shape].append(k)
        pooled: list[NDArray[np.float32]] = [np.empty(0, np.float32)] * len(inputs)
        regions: dict[int, NDArray[np.float32]] = {}
        averaged: dict[int, NDArray[np.float32]] = {}
        proposed: dict[int, list[Proposal]] = {}
        levels = self.descriptor.index_region_levels
        for members in groups.values():
            for start in range(0, len(members), self.max_run):
                chunk = members[start:start + self.max_run]
                fmap = self.session.run(np.stack([inputs[k].pixels for k in chunk]))
                for k, vector in zip(chunk, embed_fmap(fmap, self.descriptor.gem_p), strict=True):
                    pooled[k] = vector
                regional = [n for n, k in enumerate(chunk) if wants_regions[k]]
                if regional:
                    found = region_vectors(fmap[regional], self.descriptor.gem_p, levels)
                    regions.update({chunk[n]: found[m] for m, n in enumerate(regional)})
                if any(wants_average[k] for k in chunk):
                    averaged.update({k: vector for k, vector in zip(chunk, average_pool(fmap), strict=True)
                                     if wants_average[k]})
                proposed.update({k: propose(fmap[n], proposals[k]) for n, k in enumerate(chunk) if proposals[k]})
        return pooled, regions, averaged, proposed

    def _rows(
        self, j: int, job: EmbedJob, inputs: list[_Input], pooled: list[NDArray[np.float32]],
        regions: dict[int, NDArray[np.float32]],
    ) -> NDArray[np.float32]:
        """One job's rows, not yet whitened: per variant, the sum of its scales' vectors; then its region rows."""
        mine = [k for k, item in enumerate(inputs) if item.job == j]
        n_variants = len(self.descriptor.variants(job.purpose))
        globals_ = [sum((pooled[k] for k in mine if inputs[k].variant == v), np.zeros_like(pooled[mine[0]]))
                    for v in range(n_variants)]
        rows = [l2_normalise(np.stack(globals_))]
        rows += [regions[k] for k in mine if k in regions]
        return np.concatenate(rows)

    def warm_up(self) -> None:
        """Loads the model and runs one batch, so the first request pays neither cost."""
        self.embed([tuple(np.full((s, s, 3), 127, dtype=np.uint8) for s in self.sizes)])
        log.info("model %s ready: dim %d on %s", self.model_id, self.dim, self.provider)
