"""Re-embedding an album from its stored bytes with the extractor's current model, beside the album.

A new version of the album is filled (services.search: `begin_version`) a page of images at a time, in
id order, while the album answers searches from its current vectors; images added meanwhile are caught
up at the end; then the new version becomes the album's at once (`commit_version`, a Milvus alias).
What has been done is saved after each page (`ReembedProgress`: in Redis for a job), so a process
killed at any point leaves the album as it was and a restart goes on from the last page saved (pages
done twice are written twice, under the same ids). Images whose bytes cannot be read or embedded are
left out of the new version and reported. Local features, which depend on the image alone, are
rewritten page by page, and so are the faces of an album that indexes them (`start` with `faces` makes
an album index faces first: its existing images get theirs as the walk reaches them) and the keypoint
rows made from the local features of an album with a keypoint index (`start` with `details` gives an
album one first).
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field, replace
from typing import Protocol

from services.common.errors import ImageNotFound, ImageSearchError
from services.gateway.blobstore import NewBlob, features_key, image_key
from services.gateway.companions import companions_of
from services.gateway.deps import Deps
from services.gateway.import_queue import ImportJob, ImportQueue, ImportStatus
from services.gateway.records import Collection, ImageFaces, Item, ItemFailure, ReembedReport
from services.gateway.tags import with_tags
from services.gateway.usecases import faces as face_usecases
from services.gateway.usecases.images import forget_faces
from services.gateway.usecases.shared import FEATURES_CONTENT_TYPE, embed_for_album

log = logging.getLogger(__name__)

# Images listed per page while walking the album (each page is embedded in ingest_batch_size calls).
PAGE = 64


class ReembedCancelled(Exception):
    """The re-embed was cancelled; its version of the album is dropped."""


@dataclass
class ReembedState:
    """How far a re-embed has come: its version of the album, the last image id done, the counts."""

    version: int = 0
    model: str = ""
    cursor: str = ""
    done: int = 0
    failed: int = 0
    caught_up: bool = False


class ReembedProgress(Protocol):
    """Where a re-embed keeps its state between pages (and across a restart)."""

    async def load(self) -> ReembedState: ...

    async def save(self, state: ReembedState) -> None: ...

    async def failure(self, position: int, image_id: str, failure: ItemFailure) -> None: ...

    async def failed_ids(self) -> set[str]: ...

    async def cancelled(self) -> bool: ...


@dataclass
class MemoryProgress:
    """Progress kept in the process (a re-embed that runs to its end in one call)."""

    state: ReembedState = field(default_factory=ReembedState)
    failures: list[tuple[str, ItemFailure]] = field(default_factory=list)

    async def load(self) -> ReembedState:
        return replace(self.state)

    async def save(self, state: ReembedState) -> None:
        self.state = replace(state)

    async def failure(self, position: int, image_id: str, failure: ItemFailure) -> None:
        self.failures.append((image_id, failure))

    async def failed_ids(self) -> set[str]:
        return {image_id for image_id, _ in self.failures}

    async def cancelled(self) -> bool:
        return False


async def reembed_album(deps: Deps, name: str, progress: ReembedProgress | None = None) -> ReembedReport:
    """Re-embeds the album into a new version and makes it the album's (see the module doc); returns what
    was done. With saved `progress`, goes on from where it stopped."""
    started = time.perf_counter()
    progress = progress or MemoryProgress()
    old = await deps.collection(name)
    info = await deps.model_info(fresh=True)
    state = await progress.load()
    if state.version and state.model != info.model:
        await deps.search.abort_version(name, state.version)  # the model changed again: start over
        state = ReembedState()
    if not state.version:
        state = ReembedState(version=await deps.search.begin_version(name, info.dim, info.model), model=info.model)
        await progress.save(state)
    target = Collection(name=name, dim=info.dim, metric=old.metric, model=info.model,
                        created_at_ms=old.created_at_ms, count=0, schema=old.schema)
    companions = await companions_of(deps.search, name)
    faces, keypoints = companions.faces, companions.keypoints is not None
    if not state.caught_up:
        while page := await deps.search.query(name, None, PAGE, after_id=state.cursor):
            if await progress.cancelled():
                await deps.search.abort_version(name, state.version)
                raise ReembedCancelled(f"re-embedding album {name} was cancelled")
            done, failed = await _reembed_page(deps, target, page, state.version, faces, keypoints)
            for offset, (image_id, failure) in enumerate(failed):
                await progress.failure(state.done + state.failed + offset, image_id, failure)
            state = replace(state, cursor=page[-1].id, done=state.done + done, failed=state.failed + len(failed))
            await progress.save(state)
        done, failed = await _catch_up(deps, target, state.version, await progress.failed_ids(), faces, keypoints)
        for offset, (image_id, failure) in enumerate(failed):
            await progress.failure(state.done + state.failed + offset, image_id, failure)
        state = replace(state, done=state.done + done, failed=state.failed + len(failed), caught_up=True)
        await progress.save(state)
    await deps.search.commit_version(name, state.version)
    log.info("re-embedded album %s: %d image(s) from %s to %s, %d failed", name, state.done, old.model, info.model,
             state.failed)
    failures = progress.failures if isinstance(progress, MemoryProgress) else []
    return ReembedReport(album=name, model=info.model, dim=info.dim, previous_model=old.model, images=state.done,
                         failed=failures, took_s=time.perf_counter() - started)


async def _catch_up(deps: Deps, target: Collection, version: int, failed_before: set[str],
                    faces: Collection | None = None, keypoints: bool = False
                    ) -> tuple[int, list[tuple[str, ItemFailure]]]:
    """Re-embeds the images added to the album since its walk passed them (not in the version yet, and
    not failed already)."""
    done, failed, after = 0, [], ""
    while page := await deps.search.query(target.name, None, PAGE * 4, after_id=after):
        after = page[-1].id
        present = {i.id for i in await deps.search.get(target.name, [i.id for i in page], version=version)}
        missing = [i for i in page if i.id not in present and i.id not in failed_before]
        if missing:
            added, failures = await _reembed_page(deps, target, missing, version, faces, keypoints)
            done += added
            failed.extend(failures)
    return done, failed


async def _reembed_page(deps: Deps, target: Collection, items: list[Item], version: int,
                        faces: Collection | None = None, keypoints: bool = False
                        ) -> tuple[int, list[tuple[str, ItemFailure]]]:
    """Writes the items with their new vectors into the version (and their faces, with `faces`, and keypoint
    rows, with `keypoints`), an embed call at a time; returns how many were done and those that failed."""
    done = 0
    failed: list[tuple[str, ItemFailure]] = []
    batch_size = deps.settings.ingest_batch_size  # one Embed call each, well inside the RPC timeout
    for start in range(0, len(items), batch_size):
        batch = items[start:start + batch_size]
        blobs = await asyncio.gather(*(deps.blobs.get(image_key(target.name, i.content_hash)) for i in batch),
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
        contents = [content for _, content in readable]
        if faces is None:
            rows = await embed_for_album(deps, target, target.model, contents, keypoints)
        else:
            rows, found = await asyncio.gather(embed_for_album(deps, target, target.model, contents, keypoints),
                                               face_usecases.describe(deps, faces, contents, to_store=True))
            await _write_faces(deps, target.name, [item for item, _ in readable], found)
        new: list[Item] = []
        features: dict[str, bytes] = {}
        for (item, _), embedding in zip(readable, rows, strict=True):
            if isinstance(embedding, ItemFailure):
                failed.append((item.id, embedding))
            else:
                attributes = with_tags(target.schema, item.attributes, embedding.tags, refresh=True)
                new.append(replace(item, attributes=attributes, vectors=embedding.stored_vectors))
                if embedding.local_features:
                    features[item.content_hash] = embedding.local_features[0]
        if new and keypoints:
            await deps.keypoints.write(target.name, deps.keypoints.items(
                [(item, features.get(item.content_hash, b"")) for item in new]))
        if new:
            await deps.search.insert(target.name, new, version)
            done += len(new)
        await _put_features(deps, target.name, features)
    return done, failed


async def _write_faces(deps: Deps, album: str, items: list[Item], found: list[ImageFaces]) -> None:
    """The images' faces as found now: rows written over theirs, and none left for an image without a face."""
    rows = [(item, face_usecases.face_item(item, f)) for item, f in zip(items, found, strict=True) if f.error is None]
    await face_usecases.write(deps, album, [row for _, row in rows if row is not None])
    await forget_faces(deps, album, [item.id for item, row in rows if row is None])


async def _put_features(deps: Deps, album: str, features: dict[str, bytes]) -> None:
    """Stores re-made local features, as an add does (`BlobStore.put_all`); features that cannot be written only
    leave their images verified by the features stored before (or unverified, where there were none)."""
    try:
        await deps.blobs.put_all([NewBlob(features_key(album, h), f, FEATURES_CONTENT_TYPE)
                                  for h, f in features.items()])
    except ImageSearchError as exc:  # any failure of the store's, as before put_all (a missing bucket too)
        log.warning("album %s: local features of up to %d re-embedded image(s) not written: %s", album,
                    len(features), exc.message)


# --- as a background job (the import queue's workers run it) ---------------------------------------------


class JobProgress:
    """A re-embed job's progress in its import-queue job (`added` and `failed` are its counts)."""

    def __init__(self, queue: ImportQueue, job_id: str) -> None:
        self.queue = queue
        self.job_id = job_id

    async def load(self) -> ReembedState:
        fields = await self.queue.fields(self.job_id)
        return ReembedState(version=int(fields.get("version") or 0), model=fields.get("model", ""),
                            cursor=fields.get("cursor", ""), done=int(fields.get("added") or 0),
                            failed=int(fields.get("failed") or 0), caught_up=fields.get("caught_up") == "1")

    async def save(self, state: ReembedState) -> None:
        await self.queue.save_fields(self.job_id, {"version": state.version, "model": state.model,
                                                   "cursor": state.cursor, "added": state.done,
                                                   "failed": state.failed, "caught_up": int(state.caught_up)})

    async def failure(self, position: int, image_id: str, failure: ItemFailure) -> None:
        await self.queue.note_result(self.job_id, position, {
            "index": position, "name": image_id, "status": "failed", "id": image_id, "url": "",
            "error": {"reason": failure.reason, "message": failure.message}, "near": None})

    async def failed_ids(self) -> set[str]:
        return {str(r["id"]) for r in (await self.queue.results(self.job_id)).values() if r.get("id")}

    async def cancelled(self) -> bool:
        return (await self.queue.get(self.job_id)).status is ImportStatus.CANCELLED


async def start(deps: Deps, queue: ImportQueue, album: str, faces: bool = False, details: bool = False) -> ImportJob:
    """Queues a re-embed of the album (or answers the one already under way). With `faces`, the album
    indexes faces from now on (images added from now have theirs at once), and the re-embed finds the
    faces of the images it holds; with `details`, likewise for a keypoint index of its images."""
    await deps.collection(album)
    if faces and await face_usecases.faces_of(deps, album) is None:
        await face_usecases.enable(deps, album)
    if details:
        await deps.keypoints.ensure(album)
    for job in await queue.list(100, album):
        if job.kind == KIND and not job.status.finished:
            return job
    total = await deps.search.count(album)
    job_id = await queue.create(album, KIND)
    await queue.start_whole(job_id, total)
    return await queue.get(job_id)


async def run_job(deps: Deps, queue: ImportQueue, job: ImportJob) -> None:
    """Runs (or goes on with) a re-embed job to its end."""
    await queue.mark_running(job.id)
    try:
        await reembed_album(deps, job.album, JobProgress(queue, job.id))
    except ReembedCancelled:
        log.info("re-embed %s of album %s cancelled", job.id, job.album)
        return
    await queue.set_status(job.id, ImportStatus.DONE)


KIND = "reembed"
