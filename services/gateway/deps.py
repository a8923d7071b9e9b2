"""What every gateway use case works over: the services, stores and settings, and the lookups they share.

The use cases (`services.gateway.usecases`) are plain functions taking a `Deps` first; the HTTP routes,
the gRPC servicer and the ingest worker build one `Deps` and call them. Nothing here knows HTTP or gRPC.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field

from services.common.errors import AlbumNotFound, InvalidArgument, InvalidFilter, ModelMismatch, NotFound
from services.common.filtering import Expr, bind, from_json_text
from services.gateway.blobstore import Blobs
from services.gateway.cache import EmbeddingCache
from services.gateway.clients import Extractor, VectorSearch
from services.gateway.keypoint_index import KeypointIndex
from services.gateway.recognition import CalibrationCache
from services.gateway.records import Collection, ImageFilter, ModelInfo
from services.gateway.settings import GatewaySettings
from services.gateway.sql.dialect import SqlError
from services.gateway.sql.where import parse_where
from services.gateway.tags import Lexicon
from services.gateway.urlfetch import Fetcher
from services.gateway.verification import CopyVerifier

ALBUM_NAME = re.compile(r"[a-z0-9][a-z0-9_-]{0,62}")
# How long the extractor's model id is trusted before it is asked again.
MODEL_INFO_TTL_S = 10.0


def check_album_name(name: str) -> str:
    """The album name, or `InvalidArgument` saying what a name may be."""
    if not isinstance(name, str) or not ALBUM_NAME.fullmatch(name):
        raise InvalidArgument(
            f"invalid album name {str(name)[:80]!r}: use 1-63 of a-z, 0-9, '_' and '-', starting with a letter or digit"
        )
    return name


def reembed_hint(album: str) -> str:
    """What to do about an album of another model."""
    return f"re-embed it: `imagesearch reembed --album {album}` (POST /v1/albums/{album}/reembed)"


@dataclass
class Deps:
    """The gateway's collaborators, and the extractor's model id cached for a few seconds."""

    settings: GatewaySettings
    extractor: Extractor
    search: VectorSearch
    blobs: Blobs
    cache: EmbeddingCache
    fetcher: Fetcher
    verifier: CopyVerifier = field(init=False)
    keypoints: KeypointIndex = field(init=False)
    # Recognition's calibrations per album and label attribute (usecases/recognize.py).
    calibrations: CalibrationCache = field(default_factory=CalibrationCache, init=False)
    _model: tuple[float, ModelInfo] | None = field(default=None, init=False, repr=False)
    _lexicon: tuple[str, Lexicon] | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        self.verifier = CopyVerifier(self.blobs, self.settings.verify_top, self.settings.verify_min_matches,
                                     small_top=self.settings.verify_small_top,
                                     small_side=self.settings.verify_small_side)
        self.keypoints = KeypointIndex(self.search, self.settings.keypoint_votes, self.settings.keypoint_candidates,
                                       self.settings.keypoint_rows)

    async def model_info(self, fresh: bool = False) -> ModelInfo:
        """The extractor's model, asked again after a few seconds (it may have been redeployed)."""
        now = time.monotonic()
        if fresh or self._model is None or now - self._model[0] > MODEL_INFO_TTL_S:
            self._model = (now, await self.extractor.model_info())
        return self._model[1]

    async def lexicon(self) -> Lexicon:
        """The words of the extractor's labels, asked for again when its model changes."""
        model = (await self.model_info()).model
        if self._lexicon is None or self._lexicon[0] != model:
            labels = await self.extractor.labels()
            self._lexicon = (model, Lexicon(labels.labels, labels.source))
        return self._lexicon[1]

    async def collection(self, album: str, with_count: bool = False) -> Collection:
        """The album as the search service holds it, its image count 0 unless `with_count` (a query to
        Milvus, which a search or an add need not wait for); `AlbumNotFound` if there is none."""
        check_album_name(album)
        try:
            return await self.search.get_collection(album, with_count)
        except NotFound as exc:
            raise AlbumNotFound(f"album {album!r} does not exist") from exc

    async def check_model(self, collection: Collection) -> str:
        """The extractor's model id, which must be the album's (`ModelMismatch` otherwise)."""
        info = await self.model_info()
        if info.model != collection.model:
            info = await self.model_info(fresh=True)
        if info.model != collection.model:
            raise ModelMismatch(
                f"album {collection.name!r} holds vectors of model {collection.model!r} but the extractor runs "
                f"{info.model!r}; {reembed_hint(collection.name)} or run the old model"
            )
        return info.model

    def filter_of(self, collection: Collection, given: ImageFilter) -> Expr | None:
        """The filter given in one of its forms, checked against the album's columns (None: no filter)."""
        forms = [f for f in (given.json.strip(), given.where.strip(), given.tree) if f]
        if len(forms) > 1:
            raise InvalidArgument("give the filter in one form: filter (JSON), where (text) or the tree")
        if given.tree is not None:
            expr: Expr | None = given.tree
        elif given.where.strip():
            try:
                expr = parse_where(given.where, collection.name)
            except SqlError as exc:
                raise InvalidFilter(f"where: {exc.message}") from None
        else:
            expr = from_json_text(given.json, collection.schema)
        return bind(expr, collection.schema) if expr is not None else None

    async def fetch_url(self, url: str) -> bytes:
        """An image named by URL (only from hosts the address policy allows)."""
        return await self.fetcher.fetch(url)
