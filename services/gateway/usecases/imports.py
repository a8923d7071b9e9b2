"""Imports: many images added to an album in the background, surviving a killed process.

An import names its images by URL, by an uploaded zip or tar archive (a folder is sent as one), or by
a CSV/JSONL manifest (a row per file or URL, with typed attributes). Creating it stages an archive's
images in the blob store and queues the items in batches (services.gateway.import_queue); workers
(services.gateway.import_worker) add each batch through `ingest.add_images` and record each item's
result once.

Staging goes a batch at a time (`_Stager`): the batch's images uploaded as one object, then its items
written and the batch queued, so workers embed the first batches while the rest of the archive is read.

Exactly once: an item's image id is the hash of its bytes, and before anything of a batch is written
each item's id and whether the album had it already are recorded ("claims"). A batch taken over after a
crash is processed again from the start: blobs are written again under the same keys, vectors are
upserted by id, and an image found in the album that its claim says was not there before was added by
this import: "added", not "duplicate", and what an earlier try may have left it without (its bytes,
features, faces, keypoint rows) is written again, its row left as that try wrote it. An item whose URL
answers other bytes on a retry makes another image: those its earlier tries made are deleted (and so
when it fails on the retry: a failed item makes no image). So a killed gateway, extractor, Milvus or
object store leaves every image added once, with all its parts, and no blob without its vector once the
import has finished.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
from collections.abc import AsyncIterator, Mapping, Sequence, Set
from dataclasses import dataclass, field, replace
from pathlib import PurePosixPath
from typing import IO, Any

from services.common.errors import (
    ERRORS_BY_REASON,
    ImageNotFound,
    ImageSearchError,
    InvalidArgument,
    InvalidImage,
    NotFound,
    StoreUnavailable,
    Unavailable,
    UrlFetchFailed,
)
from services.common.manifest import ManifestFiles, parse_manifest
from services.gateway.archives import check_archive, read_archive_images
from services.gateway.blobstore import staging_key, staging_prefix
from services.gateway.deps import Deps, check_album_name
from services.gateway.import_queue import (
    Batch,
    Claim,
    ClaimsRaced,
    ImportJob,
    ImportQueue,
    ImportStatus,
    ItemSource,
)
from services.gateway.records import AddResult, AddStatus, JsonObject, NewImage, OnDuplicate
from services.gateway.urlfetch import name_from_url
from services.gateway.usecases import ingest, reembed
from services.gateway.usecases.images import delete_stored
from services.gateway.usecases.shared import failure, image_id_of, meanwhile_if_slow

log = logging.getLogger(__name__)

# Batches staged at once (their packs uploaded, their items written and queued).
STAGING_CONCURRENCY = 4
# Claims refused because another batch was deleting one of their images (`_claim`): tries in place, and the pause
# before the next (times the try's number), before the batch is left to be tried again.
CLAIM_TRIES = 5
CLAIM_PAUSE_S = 0.2
# The counter of each add status in the job's counts.
COUNTER_OF = {AddStatus.ADDED: "added", AddStatus.DUPLICATE: "duplicates", AddStatus.SKIPPED: "skipped",
              AddStatus.REPLACED: "replaced", AddStatus.FAILED: "failed"}


@dataclass
class ImportSpec:
    """What an import adds: URLs, an archive (a readable, seekable file), a manifest's text (its name's
    suffix says .csv or .jsonl), attributes for every image, and what to do with near-duplicates."""

    urls: Sequence[str] = ()
    archive: IO[bytes] | None = None
    manifest: str = ""
    manifest_name: str = ""
    # The archive's file name as the client sent it (a folder the CLI or the page sends: "holiday.tar").
    archive_name: str = ""
    attributes: JsonObject = field(default_factory=dict)
    on_duplicate: OnDuplicate = OnDuplicate.KEEP
    # The client's name for this import, the same on every try of it (see `create`).
    idempotency_key: str = ""

    @property
    def kind(self) -> str:
        return "archive" if self.archive is not None else "manifest" if self.manifest else "urls"

    @property
    def source(self) -> str:
        """What is imported, in words, as listings name the job: the archive's and the manifest's file names, the
        URL (or how many)."""
        def file_name(name: str) -> str:  # a client's path of it: its last part
            return PurePosixPath(name[-SOURCE_CHARS:].replace("\\", "/")).name

        parts = [file_name(self.archive_name) or "an archive"] if self.archive is not None else []
        if self.manifest:
            parts.append(file_name(self.manifest_name) or "a manifest")
        urls = list(dict.fromkeys(self.urls))
        if urls:
            parts.append(urls[0][:SOURCE_CHARS] if len(urls) == 1 else f"{len(urls)} URLs")
        text = " + ".join(parts)[:SOURCE_CHARS]
        return "".join(c if c.isprintable() else "?" for c in text)


# --- creating -------------------------------------------------------------------------------------------


# The longest a job's source is kept (a file name, a URL).
SOURCE_CHARS = 200
# What an idempotency key may be: a UUID, a hash, any token of printable ASCII.
MAX_IDEMPOTENCY_KEY = 200
# The statuses of an import whose upload was all staged: a request with its key is answered with it.
_TAKEN = {ImportStatus.QUEUED, ImportStatus.RUNNING, ImportStatus.DONE, ImportStatus.CANCELLED}


async def create(deps: Deps, queue: ImportQueue, album: str, spec: ImportSpec) -> ImportJob:
    """Stages the images and queues the import; answers once it is queued (or failed to stage).

    A request with the idempotency key of an import into the album that was all staged (the client sent it again
    because it never had the answer: the gateway stopped right after queueing it) is answered with that import,
    nothing staged again. One whose staging failed or stopped, or is still under way, does not count: the upload is
    staged as a new import (the key then names it)."""
    key = spec.idempotency_key
    _check_key(key)
    collection = await deps.collection(album)
    if key and (earlier := await queue.job_of_key(album, key)) is not None and earlier.status in _TAKEN:
        log.info("import %s asked for again (idempotency key): answered as it is", earlier.id)
        return earlier
    await deps.check_model(collection)
    if not isinstance(spec.attributes, dict):
        raise InvalidArgument("attributes must be a JSON object")
    columns = {c.name: c.type.value for c in collection.schema.columns}
    rows = parse_manifest(spec.manifest, PurePosixPath(spec.manifest_name or "m.csv").suffix, columns) \
        if spec.manifest else {}
    urls = list(dict.fromkeys([*spec.urls, *(key for key in rows if _is_url(key))]))
    for url in urls:
        if not _is_url(url):
            raise InvalidArgument(f"{url[:80]!r} is not an http(s) URL")
    if spec.archive is None and not urls:
        raise InvalidArgument("an import needs URLs, an archive, or a manifest with a url column")
    if spec.archive is not None:  # a wrong file is refused before an import is made of it
        await asyncio.to_thread(check_archive, spec.archive)
    job_id = await queue.create(album, spec.kind, spec.on_duplicate.value, key=key, source=spec.source)
    if key and await queue.key_cancelled(album, key):  # its client stopped the upload, and cancelled it by its key
        await queue.set_status(job_id, ImportStatus.CANCELLED)
        log.info("import %s cancelled by its idempotency key before it was staged", job_id)
        return await queue.get(job_id)
    try:
        async with _staging_said(queue, job_id, deps.settings.import_staging_stale_s):
            total = await _stage(deps, queue, job_id, spec, rows, urls)
        if (await queue.start(job_id, total)).finished:
            await _forget_staged(deps, job_id)  # cancelled while staging: packs may have gone up since
    except _Stopped:
        await _forget_staged(deps, job_id)
    except ImageSearchError as exc:
        if await queue.forget_unqueued(job_id):  # refused before a batch was queued: no import is left of it
            await _forget_staged(deps, job_id)
            raise
        # Batches staged before the error are queued and may be added: the error says so.
        if (await queue.get(job_id)).total:
            exc = type(exc)(f"{exc.message} (some of its images were queued before it and may be added: the same "
                            "files imported again count those as duplicates)")
        await queue.fail_staging(job_id, f"{exc.reason}: {exc.message}")
        await _forget_staged(deps, job_id)
        raise exc from None
    except asyncio.CancelledError:  # the request was cancelled (a gRPC deadline, the gateway stopping)
        await queue.fail_staging(job_id, STAGING_CANCELLED)
        await _forget_staged(deps, job_id)
        raise
    return await queue.get(job_id)


@contextlib.asynccontextmanager
async def _staging_said(queue: ImportQueue, job_id: str, stale_s: float) -> AsyncIterator[None]:
    """Touches the staging job four times in `stale_s` while its staging runs: a job a living gateway stages is
    never taken for stopped, however long a batch takes, and one whose gateway stopped is failed within
    `stale_s` of its last touch (plus a worker's sweep), not after a long wait meant for slow batches."""
    async def touch() -> None:
        while True:
            await asyncio.sleep(max(stale_s / 4, 0.05))
            with contextlib.suppress(StoreUnavailable):  # Redis away a moment: the next touch says it
                await queue.touch_staging(job_id)

    toucher = asyncio.create_task(touch())
    try:
        yield
    finally:
        toucher.cancel()
        await asyncio.gather(toucher, return_exceptions=True)  # its end, not a cancel of the caller, swallowed


def _is_url(text: str) -> bool:
    return text.startswith(("http://", "https://"))


async def _stage(deps: Deps, queue: ImportQueue, job_id: str, spec: ImportSpec, rows: Mapping[str, JsonObject],
                 urls: list[str]) -> int:
    """Stores and queues the items, a batch at a time (an archive's images uploaded to the blob store
    first); returns how many."""
    stager = _Stager(deps, queue, job_id, deps.settings.ingest_batch_size)
    try:
        for url in urls:
            name, attributes = _named(rows.get(url, {}), name_from_url(url))
            await stager.add(ItemSource(name, url=url, attributes={**spec.attributes, **attributes}))
        files = ManifestFiles(key for key in rows if not _is_url(key))
        if spec.archive is not None:
            async with contextlib.aclosing(read_archive_images(spec.archive, deps.settings.max_image_bytes)) as read:
                async for path, content in read:
                    row = files.key_of(path)
                    name, attributes = _named(rows[row] if row is not None else {}, path)
                    if isinstance(content, ImageSearchError):
                        await stager.add(ItemSource(name, error=f"{content.reason}: {content.message}", file=path))
                    else:
                        await stager.add(ItemSource(name, attributes={**spec.attributes, **attributes}, file=path),
                                         content)
        for key in rows:
            if not _is_url(key) and key not in files.matched:
                await stager.add(ItemSource(_named(rows[key], key)[0], file=key,
                                            error="file_not_found: the manifest names it, but the import has no such "
                                                  "file"))
        return await stager.finish()
    finally:
        await stager.settle()


def _named(row: JsonObject, default: str) -> tuple[str, JsonObject]:
    """An item's name and attributes from its manifest row: the row's `name` beside its `file` or `url` names the
    image (the built-in column; an attribute so called would be hidden by it), else the file's path or the URL's
    last part does."""
    attributes = dict(row)
    name = attributes.pop("name", None)
    return (str(name) if name not in (None, "") else default), attributes


class _Stopped(Exception):
    """The job was cancelled (or failed) while it staged."""


class _Stager:
    """Stages an import's items a batch at a time, up to STAGING_CONCURRENCY batches at once: the batch's
    archive images go up as one object (a pack: their bytes one after the other, so a worker reads its
    batch's images in one get and deletes them in one delete), then its items are written and the batch
    queued (`ImportQueue.add_batch`). Items are numbered in the order added; batch b holds items
    b * batch_size up to the next batch's first."""

    def __init__(self, deps: Deps, queue: ImportQueue, job_id: str, batch_size: int) -> None:
        self.deps = deps
        self.queue = queue
        self.job_id = job_id
        self.batch_size = batch_size
        self.count = 0  # items handed to batches so far
        self.items: list[ItemSource] = []
        self.contents: list[bytes] = []
        self.packed = 0  # bytes in the pack being filled
        self.running: set[asyncio.Task[None]] = set()

    async def add(self, source: ItemSource, content: bytes | None = None) -> None:
        """The next item (with its bytes, for an archive's image)."""
        if content is not None:
            source = replace(source, staged=staging_key(self.job_id, self.count // self.batch_size),
                             offset=self.packed, length=len(content))
            self.contents.append(content)
            self.packed += len(content)
        self.items.append(source)
        if len(self.items) >= self.batch_size:
            await self._send()

    async def finish(self) -> int:
        """Stages the last batch, waits for every batch; returns how many items."""
        if self.items:
            await self._send()
        while self.running:
            await self._wait_one()
        return self.count

    async def settle(self) -> None:
        """Waits for the batches still being staged (after an error), whatever they end with: a pack's upload
        runs in a thread that cancelling would not stop, so a pack could land after its import has deleted
        what it staged, for good."""
        await asyncio.gather(*self.running, return_exceptions=True)
        self.running.clear()

    async def _send(self) -> None:
        first, items, contents = self.count, self.items, self.contents
        self.count += len(items)
        self.items, self.contents, self.packed = [], [], 0
        while len(self.running) >= STAGING_CONCURRENCY:
            await self._wait_one()
        self.running.add(asyncio.create_task(self._stage(first, items, contents)))

    async def _wait_one(self) -> None:
        done, _ = await asyncio.wait(self.running, return_when=asyncio.FIRST_COMPLETED)
        self.running -= done
        errors = [error for task in done if (error := task.exception()) is not None]  # each one read
        if errors:
            raise errors[0]

    async def _stage(self, first: int, items: list[ItemSource], contents: list[bytes]) -> None:
        if contents:
            await self.deps.blobs.put(staging_key(self.job_id, first // self.batch_size), b"".join(contents),
                                      "application/octet-stream")
        if (await self.queue.add_batch(self.job_id, first, items)).finished:
            raise _Stopped


# --- reading and cancelling -------------------------------------------------------------------------


async def get(queue: ImportQueue, job_id: str) -> ImportJob:
    return await queue.get(job_id)


async def list_all(queue: ImportQueue, album: str = "", limit: int = 50) -> list[ImportJob]:
    if not 1 <= limit <= 500:
        raise InvalidArgument("limit must be between 1 and 500")
    return await queue.list(limit, album)


RESULTS_PAGE = 1000
RESULTS_PAGE_MAX = 10_000


@dataclass(frozen=True)
class ResultsPage:
    """Processed items' results in item order, and the item index to page on from (None: the last page)."""

    results: list[dict[str, Any]]
    next_after: int | None = None


async def results(queue: ImportQueue, job_id: str, failed_only: bool = False, after: int | None = None,
                  limit: int = RESULTS_PAGE) -> ResultsPage:
    """A page of the processed items' results in item order, those after item `after` (None: from the first):
    at most `limit` of them, only the failures with `failed_only` (a re-embed records only its failures). Any
    size of import pages so, each page read alone."""
    if not 1 <= limit <= RESULTS_PAGE_MAX:
        raise InvalidArgument(f"limit must be between 1 and {RESULTS_PAGE_MAX}, not {limit}")
    if after is not None and after < 0:
        raise InvalidArgument(f"after must be an item index (0 or more), not {after}")
    job = await queue.get(job_id)
    read = queue.failures_after if failed_only or job.kind == reembed.KIND else queue.results_after
    found, next_after = await read(job, -1 if after is None else after, limit)
    return ResultsPage(found, next_after)


async def cancel(deps: Deps, queue: ImportQueue, job_id: str) -> ImportJob:
    """Stops an import: its batches not yet processed are dropped (what was added stays)."""
    job = await queue.get(job_id)
    if not job.status.finished:
        if not await queue.set_status(job_id, ImportStatus.CANCELLED, unless_finished=True):  # forgotten or ended
            return await queue.get(job_id)  # as it ended (not found: its request refused meanwhile)
        await _forget_staged(deps, job_id)
        log.info("import %s cancelled after %d of %d image(s)", job_id, job.processed, job.total)
    return await queue.get(job_id)


async def cancel_by_key(deps: Deps, queue: ImportQueue, album: str, key: str) -> ImportJob | None:
    """Cancels the import that a request into the album with this idempotency key made, or makes later: a client
    that stopped an upload cannot tell whether the gateway had read it all (and so made an import it never heard
    of), or will. Every import the key made is cancelled (a resend while the try before still staged makes
    another) and the latest answered (as it ended, if it had); None if none was made yet, in which case one made
    with this key (for as long as imports are kept) is cancelled as it starts, nothing of it staged."""
    if not key:
        raise InvalidArgument("an idempotency key is needed")
    _check_key(key)
    check_album_name(album)
    made = await queue.cancel_key(album, key)  # Redis alone: the search service need not answer for a cancel
    ended: list[ImportJob] = []
    for job in made:  # each: a resend while the try before still staged made another
        with contextlib.suppress(NotFound):  # forgotten meanwhile (its request refused): not made after all
            ended.append(await cancel(deps, queue, job.id))
    if ended:
        return ended[-1]  # the latest
    try:
        await deps.collection(album)  # an album that does not exist is said so (its mark expires unused)
    except Unavailable:
        log.warning("album %s not checked for a cancel by key: the search service does not answer", album)
    return None


def _check_key(key: str) -> None:
    if len(key) > MAX_IDEMPOTENCY_KEY or not key.isprintable() or not key.isascii():
        raise InvalidArgument(f"an idempotency key is at most {MAX_IDEMPOTENCY_KEY} printable ASCII characters")


# Why an import whose staging stopped midway failed, and what to do (both: `upload_interrupted`).
_AFTER_INTERRUPTION = ("the images added meanwhile stay: import the same files again for the rest (those added "
                       "count as duplicates)")
STAGING_STOPPED = ("upload_interrupted: its upload stopped before it was all staged (the gateway reading it "
                   f"stopped); {_AFTER_INTERRUPTION}")
STAGING_CANCELLED = ("upload_interrupted: the request that uploaded it was cancelled before it was all staged; "
                     f"{_AFTER_INTERRUPTION}")


async def fail_stopped_staging(deps: Deps, queue: ImportQueue) -> list[str]:
    """Fails the imports whose staging stopped midway (the gateway that read their upload stopped: nobody will
    queue the rest) once they have staged nothing for `import_staging_stale_s`, and deletes what they staged;
    returns their ids."""
    failed = await queue.fail_stale_staging(deps.settings.import_staging_stale_s, STAGING_STOPPED)
    for job_id in failed:
        log.warning("import %s failed: its staging stopped midway", job_id)
        await _forget_staged(deps, job_id)
    return failed


async def _forget_staged(deps: Deps, job_id: str) -> None:
    try:
        await deps.blobs.delete_prefix(staging_prefix(job_id))
    except ImageSearchError as exc:
        log.warning("staged images of import %s not deleted: %s", job_id, exc.message)


# --- processing a batch --------------------------------------------------------------------------------


async def process_batch(deps: Deps, queue: ImportQueue, batch: Batch) -> None:
    """Adds a batch's items not yet done and records their results. Raises an `Unavailable` while a
    dependency is down (the batch is then tried again: everything here may run twice)."""
    job = await queue.get(batch.job_id)
    if job.status.finished:
        if job.kind != reembed.KIND and batch.deliveries > 1:  # taken again: its worker died after the job
            await _forget_staged(deps, job.id)  # finished, maybe before it deleted what the job staged
        return
    if job.kind == reembed.KIND:
        await reembed.run_job(deps, queue, job)
        return
    await queue.mark_running(job.id)
    done = await queue.results(job.id, list(batch.indexes))
    todo = [i for i in batch.indexes if i not in done]
    sources = await queue.items(job.id, todo)
    staged = await _staged_objects(deps, [sources[i] for i in todo if i in sources])
    fetched = await asyncio.gather(*(_bytes_of(deps, sources[i], staged) for i in todo if i in sources))
    contents = dict(zip([i for i in todo if i in sources], fetched, strict=True))
    outcome: dict[int, tuple[str, dict[str, Any]]] = {}
    ready: dict[int, bytes] = {}
    for index in todo:
        source = sources.get(index)
        content = contents.get(index)
        if source is None or isinstance(content, ImageSearchError) or content is None:
            error = content if isinstance(content, ImageSearchError) else ImageNotFound("the item was lost")
            outcome[index] = _result(index, source, AddResult(index, source.name if source else "",
                                                              AddStatus.FAILED, error=failure(error)))
        else:
            ready[index] = content
    outcome.update(await _add(deps, queue, job, sources, ready, failed=list(outcome), owner=str(batch.first)))
    await queue.record(job.id, outcome)
    done_staged = sorted({sources[i].staged for i in outcome if i in sources and sources[i].staged})
    if done_staged:
        try:
            await deps.blobs.delete(*done_staged)
        except ImageSearchError as exc:
            log.debug("staged images of import %s left for the end: %s", job.id, exc.message)
    if (await queue.get(job.id)).status is ImportStatus.DONE:
        await _forget_staged(deps, job.id)
        log.info("import %s into %s done", job.id, job.album)


async def _staged_objects(deps: Deps, sources: Sequence[ItemSource]) -> dict[str, bytes | None]:
    """The staged objects these items are in, each read once (None: gone)."""
    keys = sorted({s.staged for s in sources if s.staged and not s.error})

    async def read(key: str) -> bytes | None:
        try:
            return (await deps.blobs.get(key)).content
        except ImageNotFound:
            return None

    return dict(zip(keys, await asyncio.gather(*(read(k) for k in keys)), strict=True))


async def _bytes_of(deps: Deps, source: ItemSource, staged: Mapping[str, bytes | None]) -> bytes | ImageSearchError:
    """The item's bytes, or the error that fails it for good (a dependency down raises instead)."""
    if source.error:
        reason, _, message = source.error.partition(": ")
        return ERRORS_BY_REASON.get(reason, InvalidImage)(message or reason)
    if source.staged:
        content = staged.get(source.staged)
        if content is None:
            return ImageNotFound("its staged copy is gone (the import was cancelled or expired)")
        return source.cut(content)
    try:
        return await deps.fetch_url(source.url)
    except UrlFetchFailed as exc:
        return exc


async def _add(deps: Deps, queue: ImportQueue, job: ImportJob, sources: Mapping[int, ItemSource],
               ready: dict[int, bytes], failed: Sequence[int] = (), owner: str = ""
               ) -> dict[int, tuple[str, dict[str, Any]]]:
    """Adds the fetched images; each item's result as this import sees it (see the module doc). The `failed`
    items (no bytes this try: a URL that fails now) make no image: one an earlier try of theirs made goes. `owner`
    names the batch (the same on each of its tries)."""
    if not ready and not failed:
        return {}
    order = list(ready)
    ids = {i: image_id_of(hashlib.sha256(ready[i]).hexdigest()) for i in order}
    present, claims, described = await _claim_describing(deps, queue, job, ids, failed, [ready[i] for i in order])
    # An image this job found absent and finds present now was added by an earlier try of this batch, which
    # may have stopped anywhere after its row was written: even its bytes undone (the vectors' insert raised,
    # yet Milvus had applied it). What it may lack is written again, its row (the attributes it took over
    # from an image it replaced, its time) left as it is; it is counted added, not a duplicate.
    again = [i for i in order if ids[i] in present and not claims[i].existed]
    rest = [i for i in order if i not in again]
    await _forget_earlier_images(deps, queue, job, {image for i in claims for image in claims[i].earlier_new}, owner)
    if not order:
        return {}

    def images(indexes: list[int]) -> list[NewImage]:
        return [NewImage(content=ready[i], name=sources[i].name, attributes=dict(sources[i].attributes))
                for i in indexes]

    results = dict(zip(again, await ingest.restore_images(deps, job.album, images(again),
                                                          OnDuplicate(job.on_duplicate), described), strict=True))
    if rest:
        added = await ingest.add_images(deps, job.album, images(rest), on_duplicate=OnDuplicate(job.on_duplicate),
                                        present=present, described=described)
        results.update(zip(rest, added, strict=True))
    # So an image this job found absent is counted added once, for the first of the batch's items with its
    # bytes (add_images and restore_images answer "duplicate" for the others).
    return {index: _result(index, sources[index], results[index]) for index in order}


async def _claim_describing(deps: Deps, queue: ImportQueue, job: ImportJob, ids: Mapping[int, str],
                            failed: Sequence[int], contents: Sequence[bytes]
                            ) -> tuple[set[str], dict[int, Claim], ingest.Described | None]:
    """`_claim`, and the images embedded meanwhile (`ingest.describe`) if it has not answered within
    `ingest.DESCRIBE_AFTER_S` (None otherwise: they are embedded after it, those the album lacks)."""
    if not contents:
        return *await _claim(deps, queue, job, ids, failed), None
    (present, claims), described = await meanwhile_if_slow(
        _claim(deps, queue, job, ids, failed), lambda: ingest.describe(deps, job.album, contents),
        ingest.DESCRIBE_AFTER_S)
    return present, claims, described


async def _claim(deps: Deps, queue: ImportQueue, job: ImportJob, ids: Mapping[int, str], failed: Sequence[int]
                 ) -> tuple[set[str], dict[int, Claim]]:
    """Which of the images the album has, and each item's claims (see `ImportQueue.claim_images`), the two
    consistent: a claim made while another batch deletes one of the images, or after it did so since the album
    was read, is refused, and the album read again (a while later, then by a retry of the batch)."""
    for attempt in range(CLAIM_TRIES):
        seen = await queue.forgets(job.id)
        present = {item.id for item in await deps.search.get(job.album, list(set(ids.values())))} if ids else set()
        try:
            return present, await queue.claim_images(job.id, {**{i: (ids[i], ids[i] in present) for i in ids},
                                                              **dict.fromkeys(failed, ("", False))}, seen)
        except ClaimsRaced:
            await asyncio.sleep(CLAIM_PAUSE_S * (attempt + 1))
    raise Unavailable("another batch of the import is deleting an image this one makes; the batch is tried again")


async def _forget_earlier_images(deps: Deps, queue: ImportQueue, job: ImportJob, earlier: Set[str], owner: str
                                 ) -> None:
    """Images that earlier tries of the batch's items made from other bytes (a URL that answers differently
    now), which the album did not have then: if a try wrote one, even without its bytes (an insert raised yet
    applied, then undone up to its blobs), it is deleted, so that the item makes one image, whole. Not an image
    any item of the job made on its latest try (this batch's current tries are claimed before: they count); the
    check marks the images it lets go, so that no batch claims one of them while it is deleted. A deletion that
    raised may still land: its marks stay, for the batch's retry to mark and delete again (or to lapse)."""
    alone = await queue.begin_forget(job.id, sorted(earlier), owner)
    if not alone:
        return
    if deleted := await delete_stored(deps, job.album, alone):
        log.info("import %s: %d image(s) an earlier try made from other bytes deleted", job.id, deleted)
    await queue.end_forget(job.id, alone, owner)


def _result(index: int, source: ItemSource | None, result: AddResult) -> tuple[str, dict[str, Any]]:
    error = {"reason": result.error.reason, "message": result.error.message} if result.error else None
    body = {"index": index, "name": result.name, "status": result.status.value, "id": result.id or None,
            "url": source.url if source else "", "file": source.file if source else "", "error": error,
            "near": result.near or None}
    return COUNTER_OF[result.status], body
