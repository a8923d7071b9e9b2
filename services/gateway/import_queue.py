"""Import jobs in Redis: each job's items and results, and a stream of batches that workers take with
acknowledgement, so that a worker killed mid-batch leaves it to another (exactly-once in effect, with
idempotent processing: see services.gateway.usecases.imports).

    imports:jobs               ZSET  job id -> creation time (the listing)
    import:<id>                HASH  album, kind, status, total, added, duplicates, skipped, failed, times, ...
    import:<id>:items          HASH  item index -> JSON {"url" | "staged" (+ "offset", "length"), "name",
                                     "attributes"}
    import:<id>:claims         HASH  item index -> JSON [[image id, existed], ...]: each image the item's
                                     tries made (its bytes' hash: a URL may answer other bytes on a
                                     retry), the latest try's last, with whether the album had it when it
                                     was first claimed, before anything of it was written (so a retry
                                     tells "added by this job" from "there before")
    import:<id>:latest         HASH  image id -> how many items made it on their latest try ("" marks it built)
    import:<id>:forgetting     HASH  image id -> "<ms> <batch>": when a batch began deleting it (an image an
                                     earlier try made), and which
    import:<id>:forgets        STRING how many such deletions began or ended (claims made across one are refused)
    import:<id>:results        HASH  item index -> JSON result, written once
    import:<id>:failed         ZSET  item index -> itself: the failed items (listed without reading the rest)
    imports:staging            ZSET  job id -> when it last staged a batch (the jobs staging now)
    imports:key:<album>:<hash> STRING  the job an import request's idempotency key made (the hash of the key)
    imports:key-jobs:<album>:<hash>  SET  every job requests with that key made (a resend while the try before
                                     still staged makes another)
    imports:cancelled-key:<album>:<hash>  STRING  set when the import of that key was cancelled by its key (its
                                     request may be still to come: an upload the client stopped after the
                                     gateway read it); an import that key makes then is cancelled as it starts
    imports:tasks              STREAM of batches {"job", "first", "last"}; consumer group "workers"

A job's batches are queued while it stages, each in one transaction with its items, so that workers start on
the first ones while the rest of an archive is read; when staging ends the job gets its total and is marked
queued (or done, if its batches are all processed by then); one whose staging stopped midway (its gateway died
while it read the upload) is failed by a worker once it has staged nothing for a while. A batch is read with
XREADGROUP and removed with XACK + XDEL only once its results are written; one whose worker died is taken
over: at once when Redis has not heard from its consumer for the takeover time (a living worker touches its
batch more often), else once it has stayed pending longer than the visibility timeout. Results are recorded by
a Lua script that writes each result at most once and counts it then, and marks the job done when every item
has one. Redis errors become `StoreUnavailable`.
"""

from __future__ import annotations

import contextlib
import enum
import hashlib
import json
import logging
import time
import uuid
from collections.abc import Awaitable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from redis.asyncio import Redis
from redis.exceptions import RedisError, ResponseError

from services.common.errors import InvalidArgument, NotFound, StoreUnavailable
from services.common.logs import request_id_var

log = logging.getLogger(__name__)
T = TypeVar("T")

JOBS_KEY = "imports:jobs"
STAGING_KEY = "imports:staging"
TASKS_KEY = "imports:tasks"
GROUP = "workers"
JOB_TTL_S = 14 * 24 * 3600
MAX_ITEMS = 1_000_000
# How long a mark of an image being deleted (`ImportQueue.begin_forget`) holds back claims of it if its worker stops
# before `end_forget`: longer than any deletion takes (the worker's retry of its batch looks again, and marks again).
FORGET_MARK_S = 600
# How long a consumer holding batches may go unheard of (no read, no touch of its batch) before its batches are
# taken over (`ImportQueue.take`; the gateway's `import_takeover_s`): a living worker touches its batch more often.
TAKEOVER_S = 10
# Results counted per status (the job hash's counters).
COUNTERS = ("added", "duplicates", "skipped", "replaced", "failed")

# mark_running, atomically: the start time set once (a job's first batches may run while it still stages),
# and queued -> running only if the job is still queued. ARGV: queued, running, now_ms, staging.
_MARK_RUNNING = """
local status = redis.call('HGET', KEYS[1], 'status')
if status ~= ARGV[1] and status ~= ARGV[4] then return 0 end
local started = redis.call('HGET', KEYS[1], 'started_at_ms')
if (not started) or started == '0' then redis.call('HSET', KEYS[1], 'started_at_ms', ARGV[3]) end
if status == ARGV[1] then redis.call('HSET', KEYS[1], 'status', ARGV[2]) end
return 1
"""

# Fails a job left staging: KEYS = job hash, staging set; ARGV = job id, staging, failed, stale_before_ms,
# now_ms, error. Only if it still stages and staged nothing since stale_before_ms; returns 1 if it failed it.
_FAIL_STALE = """
local touched = redis.call('ZSCORE', KEYS[2], ARGV[1])
if touched and tonumber(touched) > tonumber(ARGV[4]) then return 0 end
redis.call('ZREM', KEYS[2], ARGV[1])
if redis.call('HGET', KEYS[1], 'status') ~= ARGV[2] then return 0 end
redis.call('HSET', KEYS[1], 'status', ARGV[3], 'error', ARGV[6], 'finished_at_ms', ARGV[5], 'updated_at_ms', ARGV[5])
return 1
"""

# A job refused while it staged with no batch queued, forgotten: it leaves nothing to list. KEYS = job hash, jobs
# set, staging set; ARGV = job id, staging.
_FORGET_UNQUEUED = """
if redis.call('HGET', KEYS[1], 'status') ~= ARGV[2] or tonumber(redis.call('HGET', KEYS[1], 'total') or '0') > 0 then
  return 0
end
redis.call('DEL', KEYS[1])
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('ZREM', KEYS[3], ARGV[1])
return 1
"""

# A job's status set, if the job is kept (and not one of the statuses given: a cancel never writes over the end an
# import reached meanwhile). KEYS = job hash, staging set; ARGV = job id, 1 if finished, n, the n statuses not to
# write over, then the fields and their values.
_SET_STATUS = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
local n = tonumber(ARGV[3])
if n > 0 then
  local status = redis.call('HGET', KEYS[1], 'status')
  for i = 4, 3 + n do if status == ARGV[i] then return 0 end end
end
redis.call('HSET', KEYS[1], unpack(ARGV, 4 + n))
if ARGV[2] == '1' then redis.call('ZREM', KEYS[2], ARGV[1]) end
return 1
"""

# A staging job's total so far: the end of its furthest batch staged (batches are staged a few at once).
_RAISE_TOTAL = """
if tonumber(ARGV[1]) > tonumber(redis.call('HGET', KEYS[1], 'total') or '0') then
  redis.call('HSET', KEYS[1], 'total', ARGV[1])
end
return 0
"""

# start, atomically: a job still staging gets its total and is queued, or done at once if its batches (queued
# while it staged) have all been processed; a job cancelled or failed meanwhile is left so. Returns the status.
# KEYS = job hash, results hash, staging set; ARGV = staging, queued, done, total, now_ms, job id.
_START = """
redis.call('ZREM', KEYS[3], ARGV[6])
local status = redis.call('HGET', KEYS[1], 'status')
if status ~= ARGV[1] then return status end
redis.call('HSET', KEYS[1], 'status', ARGV[2], 'total', ARGV[4], 'updated_at_ms', ARGV[5])
if redis.call('HLEN', KEYS[2]) >= tonumber(ARGV[4]) then
  redis.call('HSET', KEYS[1], 'status', ARGV[3], 'finished_at_ms', ARGV[5])
  return ARGV[3]
end
return ARGV[2]
"""


# Queues a job one worker runs whole (a re-embed), once: only a job still staging (as created) is queued, so that the
# script made again (the gateway's Redis client makes a command again on a new connection when the first was cut,
# maybe after Redis ran it) adds no second task, which a second worker would run at once.
# KEYS = job hash, tasks stream, staging set; ARGV = job id, staging, queued, total, now_ms. Returns 1 if it queued it.
_START_WHOLE = """
if redis.call('HGET', KEYS[1], 'status') ~= ARGV[2] then return 0 end
redis.call('XADD', KEYS[2], '*', 'job', ARGV[1], 'first', 0, 'last', 0)
redis.call('HSET', KEYS[1], 'status', ARGV[3], 'total', ARGV[4], 'updated_at_ms', ARGV[5])
redis.call('ZREM', KEYS[3], ARGV[1])
return 1
"""


class ImportStatus(enum.StrEnum):
    STAGING = "staging"
    QUEUED = "queued"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def finished(self) -> bool:
        return self in (ImportStatus.DONE, ImportStatus.FAILED, ImportStatus.CANCELLED)


@dataclass(frozen=True)
class ImportJob:
    """A job as GET /v1/imports/{id} shows it."""

    id: str
    album: str
    kind: str
    status: ImportStatus
    total: int
    counts: dict[str, int]
    created_at_ms: int
    updated_at_ms: int
    started_at_ms: int = 0
    finished_at_ms: int = 0
    error: str = ""
    on_duplicate: str = "skip"
    # What is imported, in words ("holiday.zip", "shoes.csv", "3 URLs"); empty for a re-embed.
    source: str = ""

    @property
    def processed(self) -> int:
        return sum(self.counts.values())

    def rate(self, now_ms: int | None = None) -> float:
        """Items per second since the job started."""
        if not self.started_at_ms:
            return 0.0
        end = self.finished_at_ms or (now_ms if now_ms is not None else _now_ms())
        seconds = max(end - self.started_at_ms, 1) / 1000
        return self.processed / seconds

    def eta_s(self, now_ms: int | None = None) -> float | None:
        """Seconds left at the rate so far (None before a rate is known, while the total is not (staging),
        or once finished)."""
        rate = self.rate(now_ms)
        if self.status.finished or self.status is ImportStatus.STAGING or rate <= 0:
            return None
        return (self.total - self.processed) / rate


@dataclass(frozen=True)
class Batch:
    """A stream entry: items first..last (inclusive) of a job, and how often it was delivered."""

    entry_id: str
    job_id: str
    first: int
    last: int
    deliveries: int = 1

    @property
    def indexes(self) -> range:
        return range(self.first, self.last + 1)


@dataclass(frozen=True)
class ItemSource:
    """Where an item's bytes come from: a URL, or an object staged in the blob store (the whole object,
    or `length` bytes at `offset` of a pack of several); or why it has none ("reason: message", e.g. a
    file over the size limit), which fails it."""

    name: str
    url: str = ""
    staged: str = ""
    attributes: dict[str, Any] = field(default_factory=dict)
    error: str = ""
    offset: int = -1
    length: int = 0
    # Its file's path in the archive imported (or as a manifest named it): a manifest's `name` may name it otherwise.
    file: str = ""

    def to_json(self) -> str:
        return json.dumps({"name": self.name, "url": self.url, "staged": self.staged, "attributes": self.attributes,
                           "error": self.error, "offset": self.offset, "length": self.length, "file": self.file},
                          separators=(",", ":"), default=str)

    @classmethod
    def from_json(cls, text: str | bytes) -> ItemSource:
        raw = json.loads(text)
        return cls(name=raw["name"], url=raw.get("url", ""), staged=raw.get("staged", ""),
                   attributes=raw.get("attributes") or {}, error=raw.get("error", ""),
                   offset=int(raw.get("offset", -1)), length=int(raw.get("length", 0)), file=raw.get("file", ""))

    def cut(self, staged: bytes) -> bytes:
        """The item's bytes out of its staged object."""
        return staged if self.offset < 0 else staged[self.offset:self.offset + self.length]


def _job_key(job_id: str) -> str:
    return f"import:{job_id}"


def _claim_keys(job_id: str) -> list[str]:
    """The keys the claim and deletion-check scripts work on: claims, latest-try index, marks, forgets counter."""
    key = _job_key(job_id)
    return [f"{key}:claims", f"{key}:latest", f"{key}:forgetting", f"{key}:forgets"]


def _of_key(kind: str, album: str, key: str) -> str:
    """The Redis key of an import request's idempotency key's `kind` record (the key itself stored by its hash)."""
    return f"imports:{kind}:{album}:{hashlib.sha256(key.encode()).hexdigest()[:32]}"


def _idempotency_key(album: str, key: str) -> str:
    return _of_key("key", album, key)


def _key_jobs(album: str, key: str) -> str:
    return _of_key("key-jobs", album, key)


def _cancelled_key(album: str, key: str) -> str:
    return _of_key("cancelled-key", album, key)


def _now_ms() -> int:
    return int(time.time() * 1000)


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


# Records results: KEYS = job hash, results hash, failed items; ARGV = now_ms, ttl_s, then (index, status counter,
# result JSON) triples. Writes each result once, counts the new ones, marks the job done when every item has one.
_RECORD = """
local added = 0
for i = 3, #ARGV, 3 do
  if redis.call('HSETNX', KEYS[2], ARGV[i], ARGV[i + 2]) == 1 then
    redis.call('HINCRBY', KEYS[1], ARGV[i + 1], 1)
    if ARGV[i + 1] == 'failed' then redis.call('ZADD', KEYS[3], ARGV[i], ARGV[i]) end
    added = added + 1
  end
end
redis.call('EXPIRE', KEYS[2], ARGV[2])
redis.call('EXPIRE', KEYS[3], ARGV[2])
redis.call('HSET', KEYS[1], 'updated_at_ms', ARGV[1])
local total = tonumber(redis.call('HGET', KEYS[1], 'total') or '0')
local status = redis.call('HGET', KEYS[1], 'status')
if redis.call('HLEN', KEYS[2]) >= total and (status == 'queued' or status == 'running') then
  redis.call('HSET', KEYS[1], 'status', 'done', 'finished_at_ms', ARGV[1])
end
return added
"""


# The latest-try index (KEYS[2]: image id -> how many items made it on their latest try; the field "" marks it
# built), built from the claims hash (KEYS[1]) for a job whose claims a gateway of the release before recorded.
_LATEST_INDEX = """
local function latest_of(raw)
  local tries = cjson.decode(raw)
  if tries['id'] then return tries['id'] end
  local last = tries[#tries]
  return last and last[1] or ''
end
local function build_index(claims, index)
  if redis.call('HEXISTS', index, '') == 1 then return end
  local all = redis.call('HVALS', claims)
  for _, raw in ipairs(all) do
    local id = latest_of(raw)
    if id ~= '' then redis.call('HINCRBY', index, id, 1) end
  end
  redis.call('HSET', index, '', 1)
end
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
"""

# A deletion mark (the forgetting hash `marks`: image id -> "<ms> <batch>"), read by the claim and deletion scripts.
_MARKS = """
-- When the image was marked and by which batch; nil if it is not.
local function mark_of(marks, id)
  local mark = redis.call('HGET', marks, id)
  if not mark then return nil end
  local at, owner = string.match(mark, '^(%d+) (.*)$')
  return tonumber(at), owner
end
-- The batch whose mark on the image was set after `since`; nil if none.
local function live_mark(marks, id, since)
  local at, owner = mark_of(marks, id)
  if at and at > since then return owner end
  return nil
end
"""

# Records each item's claim: KEYS = claims hash, latest-try index, forgetting hash, forgets counter; ARGV = ttl_s,
# the forgets counter the caller read before it looked which images the album has, the marks' lifetime (ms), then
# (index, image id, existed 0/1) triples. An image the item claimed before keeps the `existed` it was first claimed
# with and moves last (the latest try's). The image id "" (the try made none: it failed) is recorded only after
# earlier claims. Returns {"ok", each item's claims as JSON}; or {"stale"}, recording nothing, when an image is being
# deleted (`begin_forget`) or was since the caller read the counter. A claim of the earlier form {"id", "existed"}
# is read as a list of one.
_CLAIM = _LATEST_INDEX + _MARKS + """
if tonumber(redis.call('GET', KEYS[4]) or '0') ~= tonumber(ARGV[2]) then return {'stale'} end
local since = now_ms() - tonumber(ARGV[3])
for i = 4, #ARGV, 3 do
  if ARGV[i + 1] ~= '' and live_mark(KEYS[3], ARGV[i + 1], since) then return {'stale'} end
end
build_index(KEYS[1], KEYS[2])
local out = {'ok'}
for i = 4, #ARGV, 3 do
  local tries = {}
  local raw = redis.call('HGET', KEYS[1], ARGV[i])
  local existed = ARGV[i + 2] == '1'
  local before = raw and latest_of(raw) or ''
  if not raw and ARGV[i + 1] == '' then
    table.insert(out, '[]')
  elseif raw then
    local old = cjson.decode(raw)
    if old['id'] then old = {{old['id'], old['existed']}} end
    for _, try in ipairs(old) do
      if try[1] == ARGV[i + 1] then existed = try[2] else table.insert(tries, try) end
    end
  end
  if raw or ARGV[i + 1] ~= '' then
    table.insert(tries, {ARGV[i + 1], existed})
    local text = cjson.encode(tries)
    redis.call('HSET', KEYS[1], ARGV[i], text)
    table.insert(out, text)
    if before ~= ARGV[i + 1] then
      if before ~= '' then redis.call('HINCRBY', KEYS[2], before, -1) end
      if ARGV[i + 1] ~= '' then redis.call('HINCRBY', KEYS[2], ARGV[i + 1], 1) end
    end
  end
end
redis.call('EXPIRE', KEYS[1], ARGV[1])
redis.call('EXPIRE', KEYS[2], ARGV[1])
return out
"""

# Marks for deletion the images (ARGV[4..]) that no item of the job made on its latest try: KEYS = claims hash,
# latest-try index, forgetting hash, forgets counter; ARGV = ttl_s, the marks' lifetime (ms), the owner (the batch).
# Each is marked with the time and its owner, and the counter counts one, in the same step as the check, so that a
# claim of one of them, or by a caller that looked at the album before, is refused until `_END_FORGET`. An image
# another owner's live mark holds is left to that owner (one batch deletes an image at a time); the owner's own mark
# (a retry of its batch) is renewed. Returns the images marked.
_BEGIN_FORGET = _LATEST_INDEX + _MARKS + """
build_index(KEYS[1], KEYS[2])
local marked = {}
local now = now_ms()
for i = 4, #ARGV do
  if tonumber(redis.call('HGET', KEYS[2], ARGV[i]) or '0') <= 0 then
    local holder = live_mark(KEYS[3], ARGV[i], now - tonumber(ARGV[2]))
    if holder == nil or holder == ARGV[3] then
      redis.call('HSET', KEYS[3], ARGV[i], now .. ' ' .. ARGV[3])
      table.insert(marked, ARGV[i])
    end
  end
end
if #marked > 0 then
  redis.call('INCR', KEYS[4])
  for _, key in ipairs({KEYS[2], KEYS[3], KEYS[4]}) do redis.call('EXPIRE', key, ARGV[1]) end
end
return marked
"""

# Ends a deletion `_BEGIN_FORGET` began: KEYS = forgetting hash, forgets counter; ARGV = ttl_s, the owner, then the
# images (their marks are removed where this owner holds them). The counter counts one more, so that a claim by a
# caller that looked at the album during the deletion is refused.
_END_FORGET = _MARKS + """
for i = 3, #ARGV do
  local _, owner = mark_of(KEYS[1], ARGV[i])
  if owner == ARGV[2] then redis.call('HDEL', KEYS[1], ARGV[i]) end
end
redis.call('INCR', KEYS[2])
redis.call('EXPIRE', KEYS[2], ARGV[1])
return #ARGV - 2
"""

# The next batch to take over for consumer ARGV[2] of group ARGV[1] of the stream KEYS[1]: the first batch held
# by a consumer Redis has not heard from (a read or a touch) for ARGV[3] ms (its worker died: a living one touches
# its batch more often), else the first batch pending longer than the visibility timeout ARGV[4] ms; false if
# none. A consumer unheard of that long and holding nothing is dropped from the group (a living one that was
# only waiting for work joins it again with its next batch). A batch deleted meanwhile is dropped by XCLAIM.
_TAKE_OVER = """
for _, consumer in ipairs(redis.call('XINFO', 'CONSUMERS', KEYS[1], ARGV[1])) do
  local info = {}
  for i = 1, #consumer, 2 do info[consumer[i]] = consumer[i + 1] end
  if info['name'] ~= ARGV[2] and tonumber(info['idle']) >= tonumber(ARGV[3]) then
    if tonumber(info['pending']) == 0 then
      redis.call('XGROUP', 'DELCONSUMER', KEYS[1], ARGV[1], info['name'])
    else
      for _, held in ipairs(redis.call('XPENDING', KEYS[1], ARGV[1], '-', '+', info['pending'], info['name'])) do
        local taken = redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[2], 0, held[1])
        if #taken > 0 then return taken[1] end
      end
    end
  end
end
local stale = redis.call('XAUTOCLAIM', KEYS[1], ARGV[1], ARGV[2], ARGV[4], '0-0', 'COUNT', 1)
return stale[2][1] or false
"""


class ClaimsRaced(Exception):
    """A claim refused: an image it names is being deleted, or was deleted since its caller looked at the album
    (`ImportQueue.claim_images`). The caller looks again and claims again."""


@dataclass(frozen=True)
class Claim:
    """The images an item's tries made (see `ImportQueue.claim_images`): the latest try's, whether the album
    had it when the item first claimed it, and the images of earlier tries that the album did not have then."""

    id: str
    existed: bool
    earlier_new: tuple[str, ...] = ()


def _claims_of(raw: str | bytes) -> list[tuple[str, bool]]:
    value = json.loads(raw)
    if isinstance(value, dict):  # the form before an item's tries were all kept
        return [(str(value["id"]), bool(value["existed"]))]
    return [(str(image_id), bool(existed)) for image_id, existed in value]


# Items' results, in item order.
ResultRows = list[dict[str, Any]]


class ImportQueue:
    """Import jobs and their batches in Redis."""

    def __init__(self, redis: Redis, ttl_s: int = JOB_TTL_S) -> None:
        self.redis = redis
        self.ttl_s = ttl_s
        self._record = redis.register_script(_RECORD)
        self._start = redis.register_script(_START)
        self._start_whole = redis.register_script(_START_WHOLE)
        self._fail_stale = redis.register_script(_FAIL_STALE)
        self._forget_unqueued = redis.register_script(_FORGET_UNQUEUED)
        self._set_status = redis.register_script(_SET_STATUS)
        self._claim = redis.register_script(_CLAIM)
        self._begin_forget = redis.register_script(_BEGIN_FORGET)
        self._end_forget = redis.register_script(_END_FORGET)
        self._take_over = redis.register_script(_TAKE_OVER)
        self._group_ready = False

    async def _run(self, operation: Awaitable[T]) -> T:
        try:
            return await operation
        except (RedisError, OSError) as exc:
            raise StoreUnavailable(f"the job store (Redis) is unavailable: {exc}") from exc

    async def ping(self) -> None:
        """Raises StoreUnavailable unless Redis answers."""
        await self._run(self.redis.ping())

    async def _ensure_group(self) -> None:
        if self._group_ready:
            return
        try:
            await self._run(self.redis.xgroup_create(TASKS_KEY, GROUP, id="0", mkstream=True))
        except StoreUnavailable as exc:
            if not isinstance(exc.__cause__, ResponseError) or "BUSYGROUP" not in str(exc.__cause__):
                raise
        self._group_ready = True

    # --- jobs -------------------------------------------------------------------------------------
    async def create(self, album: str, kind: str, on_duplicate: str = "skip", status: ImportStatus =
                     ImportStatus.STAGING, key: str = "", source: str = "") -> str:
        """Records a new job (no items yet); returns its id. With an idempotency `key`, the job is the key's
        (`job_of_key`) from now on."""
        job_id = uuid.uuid4().hex
        now = _now_ms()
        fields: dict[Any, Any] = {"album": album, "kind": kind, "status": status.value, "total": 0,
                                  "on_duplicate": on_duplicate, "created_at_ms": now, "updated_at_ms": now,
                                  "started_at_ms": 0, "finished_at_ms": 0, "error": "", "source": source,
                                  "request_id": request_id_var.get(), **dict.fromkeys(COUNTERS, 0)}
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hset(_job_key(job_id), mapping=fields)
            pipe.expire(_job_key(job_id), self.ttl_s)
            pipe.zadd(JOBS_KEY, {job_id: now})
            if status is ImportStatus.STAGING:
                pipe.zadd(STAGING_KEY, {job_id: now})
            if key:
                pipe.set(_idempotency_key(album, key), job_id, ex=self.ttl_s)
                pipe.sadd(_key_jobs(album, key), job_id)
                pipe.expire(_key_jobs(album, key), self.ttl_s)
            await self._run(pipe.execute())
        return job_id

    async def job_of_key(self, album: str, key: str) -> ImportJob | None:
        """The job the latest import request into the album with this idempotency key made, if it is kept."""
        job_id = await self._run(self.redis.get(_idempotency_key(album, key)))
        if job_id is None:
            return None
        try:
            return await self.get(_text(job_id))
        except NotFound:  # expired
            return None

    async def cancel_key(self, album: str, key: str) -> list[ImportJob]:
        """Marks the idempotency key cancelled (for as long as a job is kept: `key_cancelled`), then answers the jobs
        its requests made (kept ones, oldest first, the key's latest (`job_of_key`) last even when two were made in
        the same millisecond; a resend while the try before still staged makes another). In this order, against
        `create` then `key_cancelled` in an import's request: one of the two sees the other's write."""
        await self._run(self.redis.set(_cancelled_key(album, key), "1", ex=self.ttl_s))
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.smembers(_key_jobs(album, key))
            pipe.get(_idempotency_key(album, key))
            made, latest = await self._run(pipe.execute())
        jobs = []
        for job_id in made:
            with contextlib.suppress(NotFound):  # expired, or forgotten (its request refused)
                jobs.append(await self.get(_text(job_id)))
        latest_id = _text(latest) if latest is not None else ""
        return sorted(jobs, key=lambda job: (job.id == latest_id, job.created_at_ms, job.id))

    async def key_cancelled(self, album: str, key: str) -> bool:
        """Whether the import of this idempotency key into the album was cancelled by its key."""
        return bool(await self._run(self.redis.exists(_cancelled_key(album, key))))

    async def add_batch(self, job_id: str, first: int, items: Sequence[ItemSource]) -> ImportStatus:
        """Stores items first, first+1, ... of a staging job and queues them as one batch, in one transaction
        (so the workers start on an import while the rest of it is staged), its total so far raised to them;
        returns the job's status (a job cancelled or failed meanwhile is finished: the workers skip its
        batches)."""
        if not items:
            raise InvalidArgument("a batch holds at least one item")
        if first + len(items) > MAX_ITEMS:
            raise InvalidArgument(f"an import holds at most {MAX_ITEMS} images")
        await self._ensure_group()
        key = f"{_job_key(job_id)}:items"
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hset(key, mapping={str(first + i): item.to_json() for i, item in enumerate(items)})
            pipe.expire(key, self.ttl_s)
            pipe.xadd(TASKS_KEY, {"job": job_id, "first": first, "last": first + len(items) - 1})
            pipe.zadd(STAGING_KEY, {job_id: _now_ms()}, xx=True)
            pipe.eval(_RAISE_TOTAL, 1, _job_key(job_id), first + len(items))
            pipe.hget(_job_key(job_id), "status")
            replies = await self._run(pipe.execute())
        return ImportStatus(_text(replies[-1])) if replies[-1] else ImportStatus.FAILED

    async def touch_staging(self, job_id: str) -> None:
        """Says the job's staging goes on (its stager lives, however long a batch takes), so that no sweep takes it
        for stopped (`fail_stale_staging`); a job no longer staging is left alone."""
        await self._run(self.redis.zadd(STAGING_KEY, {job_id: _now_ms()}, xx=True))

    async def start(self, job_id: str, total: int) -> ImportStatus:
        """Ends a job's staging: its `total` items are all stored and queued (`add_batch`). Marks it queued,
        or done if its batches have all been processed already; returns its status (a job cancelled or
        failed while it staged stays so)."""
        if total < 1:
            raise InvalidArgument("the import holds no images")
        status = await self._run(self._start(
            keys=[_job_key(job_id), f"{_job_key(job_id)}:results", STAGING_KEY],
            args=[ImportStatus.STAGING.value, ImportStatus.QUEUED.value, ImportStatus.DONE.value, total, _now_ms(),
                  job_id]))
        log.info("import %s staged: %d image(s)", job_id, total)
        return ImportStatus(_text(status)) if status else ImportStatus.FAILED

    async def fail_staging(self, job_id: str, error: str) -> bool:
        """Fails the job if it is still staging (not if it was cancelled, failed or queued meanwhile)."""
        return await self._fail_if_staging(job_id, error, staged_before_ms=None)

    async def forget_unqueued(self, job_id: str) -> bool:
        """Deletes a job still staging that queued no batch (its request was refused: nothing of it is left to
        list); False, and nothing done, for any other."""
        return bool(await self._run(self._forget_unqueued(keys=[_job_key(job_id), JOBS_KEY, STAGING_KEY],
                                                           args=[job_id, ImportStatus.STAGING.value])))

    async def fail_stale_staging(self, stale_s: float, error: str) -> list[str]:
        """Fails the jobs still staging that staged no batch, and were not touched, for `stale_s` (the process
        staging them stopped);
        returns their ids. Their batches already queued are then skipped, what they added stays."""
        before = _now_ms() - int(stale_s * 1000)
        stale = await self._run(self.redis.zrangebyscore(STAGING_KEY, "-inf", before, start=0, num=100))
        return [job_id for job_id in map(_text, stale)
                if await self._fail_if_staging(job_id, error, staged_before_ms=before)]

    async def _fail_if_staging(self, job_id: str, error: str, staged_before_ms: int | None) -> bool:
        """Fails the job if it still stages and (given `staged_before_ms`) staged no batch since then."""
        now = _now_ms()
        before = now + 10**12 if staged_before_ms is None else staged_before_ms  # None: whenever it staged
        return bool(await self._run(self._fail_stale(keys=[_job_key(job_id), STAGING_KEY], args=[
            job_id, ImportStatus.STAGING.value, ImportStatus.FAILED.value, before, now, error])))

    async def start_whole(self, job_id: str, total: int) -> bool:
        """Queues a job that one worker runs whole (a re-embed), and marks it queued; once only (False for a job
        queued already, or cancelled meanwhile): the job is created staging and never staged."""
        await self._ensure_group()
        return bool(await self._run(self._start_whole(
            keys=[_job_key(job_id), TASKS_KEY, STAGING_KEY],
            args=[job_id, ImportStatus.STAGING.value, ImportStatus.QUEUED.value, total, _now_ms()])))

    async def fields(self, job_id: str) -> dict[str, str]:
        """Every field of the job's record (a job keeps its own state there, e.g. a re-embed's cursor)."""
        return await self._fields(job_id)

    async def save_fields(self, job_id: str, fields: Mapping[str, str | int]) -> None:
        mapping: dict[Any, Any] = {**fields, "updated_at_ms": _now_ms()}
        await self._run(self.redis.hset(_job_key(job_id), mapping=mapping))

    async def note_result(self, job_id: str, index: int, result: Mapping[str, Any]) -> None:
        """Writes one item's result without counting it (a job that keeps its counts itself)."""
        key, failed = f"{_job_key(job_id)}:results", f"{_job_key(job_id)}:failed"
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hset(key, str(index), json.dumps(result, separators=(",", ":")))
            if result.get("status") == "failed":
                pipe.zadd(failed, {str(index): index})
            for name in (key, failed):
                pipe.expire(name, self.ttl_s)
            await self._run(pipe.execute())

    async def get(self, job_id: str) -> ImportJob:
        fields = await self._fields(job_id)
        return ImportJob(
            id=job_id, album=fields.get("album", ""), kind=fields.get("kind", ""),
            status=ImportStatus(fields.get("status", "queued")), total=int(fields.get("total", 0)),
            counts={c: int(fields.get(c, 0)) for c in COUNTERS}, created_at_ms=int(fields.get("created_at_ms", 0)),
            updated_at_ms=int(fields.get("updated_at_ms", 0)), started_at_ms=int(fields.get("started_at_ms", 0)),
            finished_at_ms=int(fields.get("finished_at_ms", 0)), error=fields.get("error", ""),
            on_duplicate=fields.get("on_duplicate", "skip"), source=fields.get("source", ""),
        )

    async def _fields(self, job_id: str) -> dict[str, str]:
        raw = await self._run(self.redis.hgetall(_job_key(job_id))) if job_id.isalnum() and len(job_id) <= 64 else {}
        if not raw:
            raise NotFound(f"no import {job_id[:80]!r}")
        return {_text(k): _text(v) for k, v in raw.items()}

    async def list(self, limit: int = 50, album: str = "") -> list[ImportJob]:
        """The newest jobs first (of one album if given)."""
        ids = [_text(i) for i in await self._run(self.redis.zrevrange(JOBS_KEY, 0, max(limit * 4, 200)))]
        jobs = []
        for job_id in ids:
            try:
                job = await self.get(job_id)
            except NotFound:
                await self._run(self.redis.zrem(JOBS_KEY, job_id))  # expired
                continue
            if not album or job.album == album:
                jobs.append(job)
            if len(jobs) >= limit:
                break
        return jobs

    async def set_status(self, job_id: str, status: ImportStatus, error: str = "", unless_finished: bool = False
                         ) -> bool:
        """Sets a job's status (False, and nothing written, for a job no longer kept: forgotten or expired, so that
        no status alone makes it again; or, `unless_finished`, one done, failed or cancelled already)."""
        now = _now_ms()
        fields: dict[Any, Any] = {"status": status.value, "updated_at_ms": now}
        if error:
            fields["error"] = error
        if status.finished:
            fields["finished_at_ms"] = now
        flat = [str(v) for pair in fields.items() for v in pair]
        kept = [ended.value for ended in ImportStatus if ended.finished] if unless_finished else []
        return bool(await self._run(self._set_status(keys=[_job_key(job_id), STAGING_KEY],
                                                     args=[job_id, int(status.finished), len(kept), *kept, *flat])))

    async def mark_running(self, job_id: str) -> None:
        """Queued -> running, with its start time (once; set while staging too). One script in Redis: a cancel
        between reading the status and writing it would otherwise be written over with "running"."""
        await self._run(self.redis.eval(_MARK_RUNNING, 1, _job_key(job_id), ImportStatus.QUEUED.value,
                                        ImportStatus.RUNNING.value, str(_now_ms()), ImportStatus.STAGING.value))

    # --- items ------------------------------------------------------------------------------------
    async def items(self, job_id: str, indexes: Sequence[int]) -> dict[int, ItemSource]:
        if not indexes:  # (HMGET with no field is an error)
            return {}
        raw = await self._run(self.redis.hmget(f"{_job_key(job_id)}:items", [str(i) for i in indexes]))
        return {i: ItemSource.from_json(r) for i, r in zip(indexes, raw, strict=True) if r is not None}

    async def results(self, job_id: str, indexes: Sequence[int] | None = None) -> dict[int, dict[str, Any]]:
        key = f"{_job_key(job_id)}:results"
        if indexes is None:
            raw = await self._run(self.redis.hgetall(key))
            return {int(_text(k)): json.loads(v) for k, v in raw.items()}
        if not indexes:
            return {}
        values = await self._run(self.redis.hmget(key, [str(i) for i in indexes]))
        return {i: json.loads(v) for i, v in zip(indexes, values, strict=True) if v is not None}

    async def results_after(self, job: ImportJob, after: int, limit: int) -> tuple[ResultRows, int | None]:
        """The results of the job's items after index `after`, in item order: at most `limit` of them, read by
        index (an import's items are numbered 0 .. total - 1), and the index to page on from (None: no more)."""
        end = min(after + 1 + limit, job.total)
        found = await self.results(job.id, range(after + 1, end))
        return [found[i] for i in sorted(found)], (end - 1 if end < job.total else None)

    async def failures_after(self, job: ImportJob, after: int, limit: int) -> tuple[ResultRows, int | None]:
        """The results of the job's failed items after index `after`, in item order: at most `limit` of them,
        and the index to page on from (None: no more)."""
        key = f"{_job_key(job.id)}:failed"
        if await self._run(self.redis.zcard(key)) < job.counts.get("failed", 0):
            # Some failures were recorded by a gateway of the release before, which kept no index of them (the job
            # ran across the upgrade): read whole.
            found = await self.results(job.id)
            indexes = [i for i in sorted(found) if i > after and found[i].get("status") == "failed"][:limit + 1]
        else:
            indexes = [int(_text(i)) for i in await self._run(self.redis.zrangebyscore(
                key, f"({after}", "+inf", start=0, num=limit + 1))]
            found = await self.results(job.id, indexes[:limit])
        return [found[i] for i in indexes[:limit] if i in found], (indexes[limit - 1] if len(indexes) > limit else None)

    async def forgets(self, job_id: str) -> int:
        """How many deletions of the job's images have begun or ended: read before looking which images the album
        has, and given to `claim_images`, which refuses the claims if a deletion happened in between."""
        return int(await self._run(self.redis.get(f"{_job_key(job_id)}:forgets")) or 0)

    async def claim_images(self, job_id: str, claims: Mapping[int, tuple[str, bool]], seen_forgets: int
                           ) -> dict[int, Claim]:
        """Records each item's image id on this try and whether the album has it now ("": the try made none, it
        failed); returns each item's claims: this try's image with whether the album had it when the item first
        made it (on a retry, the first try's answer), and the images earlier tries made that the album did not
        have then. Raises `ClaimsRaced`, recording nothing, if one of the images is being deleted (`begin_forget`)
        or a deletion began or ended since the caller read `seen_forgets` (`forgets`): what it saw of the album
        may be gone."""
        if not claims:
            return {}
        args: list[Any] = [self.ttl_s, seen_forgets, FORGET_MARK_S * 1000]
        for index, (image_id, existed) in claims.items():
            args += [str(index), image_id, int(existed)]
        replies = await self._run(self._claim(keys=_claim_keys(job_id), args=args))
        status, *replies = [_text(r) for r in replies]
        if status != "ok":
            raise ClaimsRaced(f"an image of import {job_id} is being deleted, or was since the album was read")
        out = {}
        for index, raw in zip(claims, replies, strict=True):
            *before, (image_id, existed) = _claims_of(raw) or [("", False)]
            out[index] = Claim(image_id, existed, tuple(i for i, had in before if not had and i))
        return out

    async def begin_forget(self, job_id: str, images: Sequence[str], owner: str) -> tuple[str, ...]:
        """Of these images, those no item of the job made on its latest try, marked as being deleted by `owner` (the
        batch): until `end_forget` (or for FORGET_MARK_S, if the owner stops), a claim naming one is refused. An
        image another owner is deleting is left to it."""
        if not images:
            return ()
        marked = await self._run(self._begin_forget(keys=_claim_keys(job_id),
                                                    args=[self.ttl_s, FORGET_MARK_S * 1000, owner, *images]))
        return tuple(_text(m) for m in marked)

    async def end_forget(self, job_id: str, images: Sequence[str], owner: str) -> None:
        """The images `owner` marked (`begin_forget`) are deleted: claims of them go ahead."""
        if images:
            await self._run(self._end_forget(keys=_claim_keys(job_id)[2:],  # the marks and the forgets counter
                                            args=[self.ttl_s, owner, *images]))

    async def record(self, job_id: str, results: Mapping[int, tuple[str, dict[str, Any]]]) -> int:
        """Writes results (index -> (counter, result)) not written before; returns how many were new."""
        if not results:
            return 0
        args: list[Any] = [_now_ms(), self.ttl_s]
        for index, (counter, result) in results.items():
            args.extend([str(index), counter, json.dumps(result, separators=(",", ":"))])
        keys = [_job_key(job_id), f"{_job_key(job_id)}:results", f"{_job_key(job_id)}:failed"]
        return int(await self._run(self._record(keys=keys, args=args)))

    # --- the stream -------------------------------------------------------------------------------
    async def take(self, consumer: str, block_ms: int, visibility_ms: int,
                   takeover_ms: int = TAKEOVER_S * 1000) -> Batch | None:
        """The next batch for this consumer: one whose worker died (its consumer unheard of for `takeover_ms`,
        or the batch pending longer than the visibility timeout), else a new one (waiting up to block_ms); None
        if there is none."""
        await self._ensure_group()
        taken: Any = await self._run(self._take_over(keys=[TASKS_KEY], args=[GROUP, consumer, takeover_ms,
                                                                             visibility_ms]))
        if taken:
            entry_id, flat = taken
            fields: Any = dict(zip(flat[::2], flat[1::2], strict=True)) if flat else {}
        else:
            read: Any = await self._run(self.redis.xreadgroup(GROUP, consumer, {TASKS_KEY: ">"}, count=1,
                                                              block=block_ms))
            if not read or not read[0][1]:
                return None
            entry_id, fields = read[0][1][0]
        if not fields:  # deleted meanwhile
            await self.done(_text(entry_id))
            return None
        values = {_text(k): _text(v) for k, v in fields.items()}
        deliveries = await self._deliveries(_text(entry_id))
        return Batch(_text(entry_id), values["job"], int(values["first"]), int(values["last"]), deliveries)

    async def _deliveries(self, entry_id: str) -> int:
        pending = await self._run(self.redis.xpending_range(TASKS_KEY, GROUP, min=entry_id, max=entry_id, count=1))
        return int(pending[0]["times_delivered"]) if pending else 1

    async def touch(self, consumer: str, entry_id: str) -> None:
        """Tells that the batch is still being worked on (resets its idle time)."""
        await self._run(self.redis.xclaim(TASKS_KEY, GROUP, consumer, min_idle_time=0, message_ids=[entry_id],
                                          justid=True))

    async def done(self, entry_id: str) -> None:
        """Acknowledges and removes a batch whose results are written."""
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.xack(TASKS_KEY, GROUP, entry_id)
            pipe.xdel(TASKS_KEY, entry_id)
            await self._run(pipe.execute())
