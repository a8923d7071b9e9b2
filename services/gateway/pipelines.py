"""The gateway's operations on albums and images, shared by the HTTP routes and the gRPC servicer.

Nothing here knows HTTP or gRPC: the pipelines take and return `records` and raise the project's
errors. Writes are ordered so that no half state remains: an image's blob is written before its
vector (a blob without a vector is deleted again), and deleted after it.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace

from services.common.errors import (
    ERRORS_BY_REASON,
    AlbumNotFound,
    ImageNotFound,
    ImageSearchError,
    ImageTooLarge,
    InvalidArgument,
    InvalidAttributes,
    InvalidFilter,
    InvalidImage,
    ModelMismatch,
    NotFound,
    StoreUnavailable,
)
from services.common.json_text import json_object
from services.common.local_features import LocalFeatures
from services.gateway import imaging
from services.gateway.blobstore import Blob, Blobs, album_prefix, features_key, image_key, thumbnail_key
from services.gateway.cache import EmbeddingCache
from services.gateway.clients import Extractor, VectorSearch
from services.gateway.records import (
    AddResult,
    AddStatus,
    Album,
    Collection,
    Embedding,
    EmbedPurpose,
    ImageRecord,
    Item,
    ItemFailure,
    JsonObject,
    ModelInfo,
    NewImage,
    Query,
    ReembedReport,
    ScoredImage,
    SearchMode,
    SearchOutcome,
)
from services.gateway.settings import GatewaySettings
from services.gateway.urlfetch import Fetcher
from services.gateway.verification import CopyVerifier, parse_features

log = logging.getLogger(__name__)

ALBUM_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")
IMAGE_ID = re.compile(r"^[0-9a-f]{32}$")
MAX_NAME_CHARS = 512
MAX_LIST_LIMIT = 1000
# How long the extractor's model id is trusted before it is asked again.
MODEL_INFO_TTL_S = 10.0
FEATURES_CONTENT_TYPE = "application/octet-stream"


def image_id_of(content_hash: str) -> str:
    """An image's id: the first 32 hex digits (128 bits) of the SHA-256 of its bytes."""
    return content_hash[:32]


def check_album_name(name: str) -> str:
    if not ALBUM_NAME.match(name or ""):
        raise InvalidArgument(
            f"invalid album name {name[:80]!r}: use 1-63 of a-z, 0-9, '_' and '-', starting with a letter or digit"
        )
    return name


def check_search_mode(mode: str) -> SearchMode:
    try:
        return SearchMode(mode)
    except ValueError:
        allowed = ", ".join(repr(m.value) for m in SearchMode)
        raise InvalidArgument(f"search mode {mode[:80]!r} is not one of {allowed}") from None


def parse_attributes(text: str) -> JsonObject:
    """A JSON object of attributes; empty text means {}."""
    return json_object(text, "attributes", InvalidAttributes)


def normalise_filter(text: str) -> str:
    """The filter as compact JSON text, '' for none; it must be a JSON object."""
    value = json_object(text, "filter", InvalidFilter)
    return json.dumps(value, separators=(",", ":")) if value else ""


def reembed_hint(album: str) -> str:
    """What to do about an album of another model."""
    return f"re-embed it: `imagesearch reembed --album {album}` (POST /v1/albums/{album}/reembed)"


def _loads_object(text: str) -> JsonObject:
    try:
        value = json.loads(text) if text else {}
    except json.JSONDecodeError:
        return {}
    return value if isinstance(value, dict) else {}


def _now_ms() -> int:
    return int(time.time() * 1000)


def _failure(exc: ImageSearchError) -> ItemFailure:
    return ItemFailure(exc.reason, exc.message)


def _item_error(failure: ItemFailure) -> ImageSearchError:
    return ERRORS_BY_REASON.get(failure.reason, InvalidImage)(failure.message)


@dataclass(frozen=True)
class _Accepted:
    """An image that passed the gateway's checks and awaits its vector."""

    index: int
    name: str
    content_hash: str
    attributes_json: str
    content: bytes
    content_type: str

    @property
    def id(self) -> str:
        return image_id_of(self.content_hash)


class Pipelines:
    """Albums, adding images and searching them, over the extractor, search service, blobs and cache."""

    def __init__(
        self,
        settings: GatewaySettings,
        extractor: Extractor,
        search: VectorSearch,
        blobs: Blobs,
        cache: EmbeddingCache,
        fetcher: Fetcher,
    ) -> None:
        self.settings = settings
        self.extractor = extractor
        self.search_service = search
        self.blobs = blobs
        self.cache = cache
        self.fetcher = fetcher
        self.verifier = CopyVerifier(blobs, settings.verify_top, settings.verify_min_matches)
        self._model: tuple[float, ModelInfo] | None = None

    # --- albums -------------------------------------------------------------------------------------
    async def create_album(self, name: str) -> Album:
        """Creates an empty album recording the extractor's model; AlreadyExists if the name is taken."""
        check_album_name(name)
        info = await self.model_info(fresh=True)
        collection = await self.search_service.create_collection(name, info.dim, info.model)
        log.info("created album %s (model %s, dim %d)", name, info.model, info.dim)
        return self._album(collection)

    async def list_albums(self) -> list[Album]:
        return sorted((self._album(c) for c in await self.search_service.list_collections()), key=lambda a: a.name)

    async def get_album(self, name: str) -> Album:
        return self._album(await self._collection(name))

    async def delete_album(self, name: str) -> bool:
        """Drops the album's vectors, then its blobs (left over blobs are only logged)."""
        await self._collection(name)
        await self.search_service.drop_collection(name)
        try:
            removed = await self.blobs.delete_prefix(album_prefix(name))
        except StoreUnavailable as exc:
            log.warning("album %s dropped but its blobs were not deleted: %s", name, exc.message)
        else:
            log.info("deleted album %s and %d blob(s)", name, removed)
        return True

    async def _collection(self, name: str) -> Collection:
        check_album_name(name)
        try:
            return await self.search_service.get_collection(name)
        except NotFound as exc:
            raise AlbumNotFound(f"album {name!r} does not exist") from exc

    @staticmethod
    def _album(c: Collection) -> Album:
        return Album(name=c.name, image_count=c.count, model=c.model, dim=c.dim, metric=c.metric,
                     created_at_ms=c.created_at_ms)

    # --- the model ----------------------------------------------------------------------------------
    async def model_info(self, fresh: bool = False) -> ModelInfo:
        """The extractor's model, asked again after a few seconds (it may have been redeployed)."""
        now = time.monotonic()
        if fresh or self._model is None or now - self._model[0] > MODEL_INFO_TTL_S:
            self._model = (now, await self.extractor.model_info())
        return self._model[1]

    async def _check_model(self, collection: Collection) -> str:
        info = await self.model_info()
        if info.model != collection.model:
            info = await self.model_info(fresh=True)
        if info.model != collection.model:
            raise ModelMismatch(
                f"album {collection.name!r} holds vectors of model {collection.model!r} but the extractor runs "
                f"{info.model!r}; {reembed_hint(collection.name)} or run the old model"
            )
        return info.model

    # --- adding images ------------------------------------------------------------------------------
    async def add_images(self, album: str, images: Sequence[NewImage]) -> list[AddResult]:
        """Adds each image or reports why not; the batch is embedded in one call to the extractor."""
        if not images:
            raise InvalidArgument("no images given")
        if len(images) > self.settings.max_images_per_request:
            raise InvalidArgument(f"{len(images)} images in one request; the limit is "
                                  f"{self.settings.max_images_per_request}")
        collection = await self._collection(album)
        model = await self._check_model(collection)
        results: dict[int, AddResult] = {}
        accepted: list[_Accepted] = []
        seen: set[str] = set()
        for index, image in enumerate(images):
            try:
                item = self._accept(index, image)
            except ImageSearchError as exc:
                results[index] = AddResult(index, image.name, AddStatus.FAILED, error=_failure(exc))
                continue
            if item.id in seen:
                results[index] = AddResult(index, item.name, AddStatus.DUPLICATE, item.id)
            else:
                seen.add(item.id)
                accepted.append(item)
        stored = {i.id for i in await self.search_service.get(album, [a.id for a in accepted])} if accepted else set()
        fresh = []
        for item in accepted:
            if item.id in stored:
                results[item.index] = AddResult(item.index, item.name, AddStatus.DUPLICATE, item.id)
            else:
                fresh.append(item)
        for result in await self._store(collection, model, fresh):
            results[result.index] = result
        return [results[i] for i in range(len(images))]

    def _accept(self, index: int, image: NewImage) -> _Accepted:
        if not image.content:
            raise InvalidImage("the file is empty")
        if len(image.content) > self.settings.max_image_bytes:
            raise ImageTooLarge(f"{len(image.content)} bytes; the limit is {self.settings.max_image_bytes}")
        if len(image.name) > MAX_NAME_CHARS:
            raise InvalidArgument(f"name is longer than {MAX_NAME_CHARS} characters")
        attributes = parse_attributes(image.attributes_json)
        content_hash = hashlib.sha256(image.content).hexdigest()
        return _Accepted(
            index=index,
            name=image.name or content_hash,
            content_hash=content_hash,
            attributes_json=json.dumps(attributes, separators=(",", ":"), ensure_ascii=False),
            content=image.content,
            content_type=imaging.sniff_content_type(image.content, image.content_type),
        )

    async def _store(self, collection: Collection, model: str, images: list[_Accepted]) -> list[AddResult]:
        """Embeds, then writes blobs, then vectors; on a failed write, what was written is undone."""
        if not images:
            return []
        embeddings = await self._embed_for_album(collection, model, [i.content for i in images])
        results: list[AddResult] = []
        items: list[tuple[_Accepted, Item, bytes]] = []
        now = _now_ms()
        for image, embedding in zip(images, embeddings, strict=True):
            if isinstance(embedding, ItemFailure):
                results.append(AddResult(image.index, image.name, AddStatus.FAILED, image.id, embedding))
            else:
                item = Item(id=image.id, name=image.name, content_hash=image.content_hash,
                            attributes_json=image.attributes_json, created_at_ms=now,
                            vectors=embedding.stored_vectors)
                items.append((image, item, embedding.local_features[0] if embedding.local_features else b""))
        if items:
            await self._write(collection.name, items)
            results.extend(AddResult(i.index, i.name, AddStatus.ADDED, i.id) for i, _, _ in items)
        return results

    async def _embed_for_album(
        self, collection: Collection, model: str, contents: list[bytes]
    ) -> list[Embedding | ItemFailure]:
        """Each image's rows to store (upright global vector first) and local features, or why it has none."""
        batch = await self.extractor.embed(contents, EmbedPurpose.INDEX, local_features=True)
        if batch.model != model:
            raise ModelMismatch(f"the extractor embedded with {batch.model!r}, album {collection.name!r} "
                                f"holds {model!r}; {reembed_hint(collection.name)}")
        out: list[Embedding | ItemFailure] = []
        for embedding in batch.results:
            rows = embedding.stored_vectors
            if not rows:
                out.append(embedding.error or ItemFailure("invalid_image", "the extractor gave no vector"))
            elif any(len(row) != collection.dim for row in rows):
                raise ModelMismatch(f"the extractor gave {len(rows[0])} dimensions, album "
                                    f"{collection.name!r} holds {collection.dim}; {reembed_hint(collection.name)}")
            else:
                out.append(embedding)
        return out

    async def _write(self, album: str, items: list[tuple[_Accepted, Item, bytes]]) -> None:
        """Blobs (the image and its local features) first, then the vectors; undone on a failure."""
        keys = [image_key(album, image.content_hash) for image, _, _ in items]
        puts = [self.blobs.put(key, image.content, image.content_type, image.name)
                for key, (image, _, _) in zip(keys, items, strict=True)]
        for image, _, features in items:
            if features:
                keys.append(features_key(album, image.content_hash))
                puts.append(self.blobs.put(keys[-1], features, FEATURES_CONTENT_TYPE))
        outcomes = await asyncio.gather(*puts, return_exceptions=True)
        failed = next((o for o in outcomes if isinstance(o, BaseException)), None)
        try:
            if failed is not None:
                raise failed
            await self.search_service.insert(album, [item for _, item, _ in items])
        except Exception:
            await self._forget_blobs(keys)
            raise
        log.info("added %d image(s) to album %s", len(items), album)

    async def _forget_blobs(self, keys: list[str]) -> None:
        try:
            await self.blobs.delete(*keys)
        except ImageSearchError as exc:
            log.warning("could not delete %d blob(s) of a failed add: %s", len(keys), exc.message)

    # --- re-embedding -------------------------------------------------------------------------------
    async def reembed_album(self, name: str) -> ReembedReport:
        """Re-embeds every image of the album from its stored bytes with the extractor's current model,
        then recreates the album's vectors under that model (names, attributes and times kept).

        No vector is changed until every image is embedded, so a failure (extractor down, model changed
        under us) leaves the album searchable as it was (local features, which depend on the image
        alone, are rewritten batch by batch). Images whose bytes cannot be read or embedded are left
        out of the new album and reported. While the old model's album is refused by add_images, no
        image can be added meanwhile; re-embedding an album already of the current model is allowed
        but should not run alongside adds to it.
        """
        started = time.perf_counter()
        old = await self._collection(name)
        info = await self.model_info(fresh=True)
        target = Collection(name=name, dim=info.dim, metric=old.metric, model=info.model,
                            created_at_ms=old.created_at_ms, count=0)
        items, failed = await self._reembedded_items(target, await self._all_items(name))
        await self.search_service.drop_collection(name)
        await self.search_service.create_collection(name, info.dim, info.model)
        for start in range(0, len(items), self.settings.max_images_per_request):
            await self.search_service.insert(name, items[start:start + self.settings.max_images_per_request])
        log.info("re-embedded album %s: %d image(s) from %s to %s, %d failed", name, len(items), old.model,
                 info.model, len(failed))
        return ReembedReport(album=name, model=info.model, dim=info.dim, previous_model=old.model,
                             images=len(items), failed=failed, took_s=time.perf_counter() - started)

    async def _all_items(self, album: str) -> list[Item]:
        """Every item's metadata, a page at a time."""
        items: dict[str, Item] = {}
        while True:
            page = await self.search_service.list_items(album, MAX_LIST_LIMIT, len(items))
            items.update((i.id, i) for i in page)
            if len(page) < MAX_LIST_LIMIT:
                return list(items.values())

    async def _reembedded_items(
        self, target: Collection, items: list[Item]
    ) -> tuple[list[Item], list[tuple[str, ItemFailure]]]:
        """The items with their new vectors (a batch of blobs at a time), and those that failed. Each
        batch's local features are stored as it is embedded: they depend on the image alone, so the
        album as it is keeps working with them, and only a batch of them is held at a time."""
        done: list[Item] = []
        failed: list[tuple[str, ItemFailure]] = []
        batch_size = self.settings.ingest_batch_size  # one Embed call each, well inside the RPC timeout
        for start in range(0, len(items), batch_size):
            batch = items[start:start + batch_size]
            blobs = await asyncio.gather(*(self.blobs.get(image_key(target.name, i.content_hash)) for i in batch),
                                         return_exceptions=True)
            readable: list[tuple[Item, bytes]] = []
            for item, blob in zip(batch, blobs, strict=True):
                if isinstance(blob, ImageNotFound):
                    failed.append((item.id, ItemFailure(blob.reason, blob.message)))
                elif isinstance(blob, BaseException):
                    raise blob
                else:
                    readable.append((item, blob.content))
            if not readable:
                continue
            rows = await self._embed_for_album(target, target.model, [content for _, content in readable])
            features: dict[str, bytes] = {}
            for (item, _), embedding in zip(readable, rows, strict=True):
                if isinstance(embedding, ItemFailure):
                    failed.append((item.id, embedding))
                else:
                    done.append(replace(item, vectors=embedding.stored_vectors))
                    if embedding.local_features:
                        features[item.content_hash] = embedding.local_features[0]
            await self._put_features(target.name, features)
        return done, failed

    async def _put_features(self, album: str, features: dict[str, bytes]) -> None:
        """Stores re-made local features; one that cannot be written only leaves its image unverified."""
        puts = [self.blobs.put(features_key(album, h), f, FEATURES_CONTENT_TYPE) for h, f in features.items()]
        failed = [o for o in await asyncio.gather(*puts, return_exceptions=True) if isinstance(o, BaseException)]
        if failed:
            log.warning("album %s: %d image(s) re-embedded without stored local features: %s", album, len(failed),
                        failed[0])

    # --- searching ----------------------------------------------------------------------------------
    async def search(
        self, album: str, query: Query, top_k: int | None = None, filter_json: str = "", mode: str = "copy"
    ) -> SearchOutcome:
        """The album's images nearest to the query image, nearest first: copies of it ("copy") or images
        like it ("similar"; see `SearchMode`)."""
        started = time.perf_counter()
        top_k = self._check_top_k(top_k)
        filter_text = normalise_filter(filter_json)
        search_mode = check_search_mode(mode)
        primary_only, expand_k = self._search_options(search_mode)
        given = [v for v in (query.image, query.url, query.image_id) if v is not None]
        if len(given) != 1:
            raise InvalidArgument("give exactly one of: an image file, a url, an image_id")
        verify = search_mode is SearchMode.COPY and self.verifier.enabled
        collection = await self._collection(album)
        exclude: list[str] = []
        features: list[LocalFeatures] = []
        if query.image_id is not None:
            # The album's own vector: right whatever model the extractor runs now.
            item = await self._stored_item(album, query.image_id)
            vector, model = item.vectors[0], collection.model
            exclude.append(query.image_id)
            stored = await self.verifier.stored(album, item.content_hash) if verify else None
            features = [stored] if stored is not None else []
        else:
            model = await self._check_model(collection)
            content = query.image if query.image is not None else await self.fetch_url(query.url or "")
            vector, features = await self.describe_query(content, model, album, with_features=verify)
        fetch_k = max(top_k, self.verifier.top) if verify else top_k
        hits = await self.search_service.search(album, vector, fetch_k, filter_text, exclude,
                                                primary_only=primary_only, expand_k=expand_k)
        scored = [ScoredImage(self._record(album, h.id, h.name, h.content_hash, h.attributes_json, h.created_at_ms),
                              h.distance) for h in hits]
        if verify:
            scored = await self.verifier.rerank(album, features, scored)
        scored = scored[:top_k]
        took_ms = (time.perf_counter() - started) * 1000
        return SearchOutcome(album=album, metric=collection.metric, model=model, took_ms=took_ms, hits=scored)

    def _search_options(self, mode: SearchMode) -> tuple[bool, int]:
        """(primary_only, expand_k) of the search service for a mode."""
        if mode is SearchMode.SIMILAR:
            return True, self.settings.similar_expand_k
        return False, 0

    def _check_top_k(self, top_k: int | None) -> int:
        value = self.settings.default_top_k if top_k is None else top_k
        if not 1 <= value <= self.settings.max_top_k:
            raise InvalidArgument(f"top_k must be between 1 and {self.settings.max_top_k}, not {value}")
        return value

    async def fetch_url(self, url: str) -> bytes:
        return await self.fetcher.fetch(url)

    async def describe_query(self, content: bytes, model: str, album: str = "",
                             with_features: bool = False) -> tuple[list[float], list[LocalFeatures]]:
        """The query image's vector (and, when asked, its local features), from the cache when the same
        bytes were asked for before."""
        if not content:
            raise InvalidImage("the query image is empty")
        if len(content) > self.settings.max_image_bytes:
            raise ImageTooLarge(f"{len(content)} bytes; the limit is {self.settings.max_image_bytes}")
        content_hash = hashlib.sha256(content).hexdigest()
        cached = await self.cache.get(model, content_hash)
        if cached is not None:
            cached_features = await self.cache.get_features(content_hash) if with_features else b""
            if cached_features is not None:
                return cached, parse_features(cached_features)
        batch = await self.extractor.embed([content], local_features=with_features)
        if batch.model != model:
            raise ModelMismatch(f"the extractor embedded with {batch.model!r}, the album holds {model!r}; "
                                f"{reembed_hint(album or 'A')}")
        result = batch.results[0]
        if result.vector is None:
            raise _item_error(result.error or ItemFailure("invalid_image", "the extractor gave no vector"))
        await self.cache.put(model, content_hash, result.vector)
        features = b"".join(result.local_features)  # upright, mirrored: each serialisation knows its length
        if with_features and features:
            await self.cache.put_features(content_hash, features)
        return result.vector, parse_features(features)

    async def embed_query(self, content: bytes, model: str, album: str = "") -> list[float]:
        """The query image's vector, from the cache when the same bytes were asked for before."""
        return (await self.describe_query(content, model, album))[0]

    async def _stored_item(self, album: str, image_id: str) -> Item:
        items = await self._items(album, image_id, with_vectors=True)
        if not items[0].vectors:
            raise ImageNotFound(f"image {image_id} of album {album!r} has no stored vector")
        return items[0]

    # --- single images ------------------------------------------------------------------------------
    async def _items(self, album: str, image_id: str, with_vectors: bool = False) -> list[Item]:
        if not IMAGE_ID.match(image_id or ""):
            raise ImageNotFound(f"no image {image_id[:80]!r} in album {album!r} (ids are 32 hex digits)")
        await self._collection(album)
        items = await self.search_service.get(album, [image_id], with_vectors=with_vectors)
        if not items:
            raise ImageNotFound(f"no image {image_id} in album {album!r}")
        return items

    async def get_image(self, album: str, image_id: str) -> ImageRecord:
        """The image's metadata, with the type and size of its stored bytes."""
        item = (await self._items(album, image_id))[0]
        info = await self.blobs.stat(image_key(album, item.content_hash))
        record = self._record(album, item.id, item.name, item.content_hash, item.attributes_json, item.created_at_ms)
        return replace(record, content_type=info.content_type, size_bytes=info.size)

    async def get_content(self, album: str, image_id: str) -> Blob:
        item = (await self._items(album, image_id))[0]
        return await self.blobs.get(image_key(album, item.content_hash))

    async def get_thumbnail(self, album: str, image_id: str, size: int | None = None) -> Blob:
        """A JPEG thumbnail, made on first request and kept in the store."""
        requested = size or self.settings.thumbnail_size
        if not 1 <= requested <= imaging.THUMBNAIL_SIZES[-1]:
            raise InvalidArgument(f"thumbnail size must be between 1 and {imaging.THUMBNAIL_SIZES[-1]}")
        side = imaging.thumbnail_size(requested)
        item = (await self._items(album, image_id))[0]
        key = thumbnail_key(album, side, item.content_hash)
        try:
            return await self.blobs.get(key)
        except ImageNotFound:
            pass
        original = await self.blobs.get(image_key(album, item.content_hash))
        content = await asyncio.to_thread(imaging.make_thumbnail, original.content, side)
        try:
            await self.blobs.put(key, content, "image/jpeg")
        except StoreUnavailable as exc:
            log.warning("thumbnail of %s not cached: %s", image_id, exc.message)
        return Blob(content, "image/jpeg")

    async def list_images(self, album: str, limit: int = 50, offset: int = 0) -> list[ImageRecord]:
        """A page of the album's images (content type and size are given by `get_image` only)."""
        if not 1 <= limit <= MAX_LIST_LIMIT or offset < 0:
            raise InvalidArgument(f"limit must be between 1 and {MAX_LIST_LIMIT} and offset at least 0")
        await self._collection(album)
        items = await self.search_service.list_items(album, limit, offset)
        return [self._record(album, i.id, i.name, i.content_hash, i.attributes_json, i.created_at_ms) for i in items]

    async def delete_image(self, album: str, image_id: str) -> bool:
        """Deletes the vector, then the blobs (a blob left over is only logged: the image is gone)."""
        item = (await self._items(album, image_id))[0]
        await self.search_service.delete(album, [image_id])
        keys = [image_key(album, item.content_hash), features_key(album, item.content_hash),
                *(thumbnail_key(album, s, item.content_hash) for s in imaging.THUMBNAIL_SIZES)]
        try:
            await self.blobs.delete(*keys)
        except StoreUnavailable as exc:
            log.warning("image %s deleted but its blobs were not: %s", image_id, exc.message)
        return True

    async def count(self, album: str) -> int:
        await self._collection(album)
        return await self.search_service.count(album)

    @staticmethod
    def _record(album: str, image_id: str, name: str, content_hash: str, attributes_json: str,
                created_at_ms: int) -> ImageRecord:
        base = f"/v1/albums/{album}/images/{image_id}"
        return ImageRecord(album=album, id=image_id, name=name, content_hash=content_hash,
                     attributes=_loads_object(attributes_json), created_at_ms=created_at_ms,
                     url=f"{base}/content", thumbnail_url=f"{base}/thumbnail")

