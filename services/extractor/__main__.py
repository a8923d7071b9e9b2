"""Runs the extractor: `python -m services.extractor` (settings from EXTRACTOR_* variables)."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

import grpc
from grpc_health.v1 import health

from services.common.grpc_server import create_server, serve
from services.common.local_features import FeatureConfig
from services.common.logs import configure_logging
from services.common.metrics import start_metrics_server
from services.extractor import detector as detector_file
from services.extractor.detector import Detector
from services.extractor.faces import FaceConfig, FaceModel
from services.extractor.lanes import FaceTurns, Lane, Lanes
from services.extractor.model import ImageEmbedder
from services.extractor.servicer import SERVICE_NAMES, ExtractorServicer, registrar
from services.extractor.session import CPU_PROVIDER
from services.extractor.settings import ExtractorSettings, ProposalSource

log = logging.getLogger(__name__)


@dataclass
class Extractor:
    """The wired service: a gRPC server (not started) and what must be closed after it stops."""

    server: grpc.aio.Server
    health: health.aio.HealthServicer
    port: int
    embedder: ImageEmbedder
    lanes: Lanes

    async def close(self) -> None:
        await self.lanes.close()


def proposal_detector(settings: ExtractorSettings) -> Detector | None:
    """The COCO detector that proposes regions, as the settings say; None: the activations do."""
    if settings.proposals is ProposalSource.ACTIVATIONS:
        return None
    detector = detector_file.load_optional(settings.model_dir, settings.intra_op_threads)
    if detector is None and settings.proposals is ProposalSource.DETECTOR:
        raise FileNotFoundError(f"EXTRACTOR_PROPOSALS=detector, but there is no {detector_file.DETECTOR_FILE} in "
                                f"{settings.model_dir}: run scripts/export_detector.sh")
    return detector


def build(settings: ExtractorSettings, embedder: ImageEmbedder | None = None) -> Extractor:
    """Loads the model (so readiness means ready) and wires it into a server; call in the event loop."""
    embedder = embedder or ImageEmbedder.from_settings(settings)
    embedder.warm_up()
    max_wait_ms = settings.max_wait_ms
    if max_wait_ms is None:
        max_wait_ms = 0.0 if embedder.provider == CPU_PROVIDER else 5.0
    interactive, adds, bulk = (
        Lane.build(embedder, name, settings.decode_threads, settings.max_batch, max_wait_ms / 1000,
                   settings.batch_concurrency, nice)
        for name, nice in (("interactive", 0), ("adds", settings.adds_niceness), ("bulk", settings.bulk_niceness)))
    lanes = Lanes(interactive, adds, bulk, FaceTurns())
    local = FeatureConfig(side=settings.local_features_side, max_keypoints=settings.local_features_max)
    index = FeatureConfig(side=settings.local_features_index_side, max_keypoints=settings.local_features_index_max)
    faces = FaceModel(FaceConfig(side=settings.faces_side, upsample=settings.faces_upsample,
                                 min_face=settings.faces_min_size, max_faces=settings.faces_max),
                      settings.faces_model_dir)
    servicer = ExtractorServicer(embedder, lanes, local, faces, proposal_detector(settings),
                                 index_features=index)
    server, health_servicer, port = create_server(settings, "extractor", registrar(servicer), SERVICE_NAMES)
    return Extractor(server, health_servicer, port, embedder, lanes)


async def run(settings: ExtractorSettings) -> None:
    extractor = build(settings)
    log.info("extractor listening on %s:%d, model %s", settings.host, extractor.port, extractor.embedder.model_id)
    try:
        await serve(extractor.server, extractor.health, SERVICE_NAMES, settings.shutdown_grace_s)
    finally:
        await extractor.close()


def main() -> None:
    settings = ExtractorSettings()
    configure_logging("extractor", settings.log_level)
    start_metrics_server(settings.metrics_port)
    asyncio.run(run(settings))


if __name__ == "__main__":
    main()
