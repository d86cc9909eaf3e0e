"""Jobs listed by state, a page at a time, for operators (the dashboard, the CLI).

Every listing is keyset-paginated: a page ends with an opaque cursor naming the last job
shown, and the next page starts right after it with one ranged read per lane, so a page
costs the same at the first job as at the 100,000th (no offsets, no scans):

    waiting    lane entries after the consumer group's last-delivered id (XRANGE), the
               most urgent level first, oldest first: the order workers take them
    active     the group's pending entries (XPENDING ranges), oldest claim first, with the
               worker holding each
    delayed    the delayed set by due time (ZRANGE), soonest first; scheduled retries too
    completed  the capped index of recently completed jobs (``QueueKeys.completed_index``),
               newest first; the newest ``QueueDefaults.completed_index_max`` only
    failed     the dead-letter stream, newest first

Cancelled jobs keep a record but no index: they are counted, not listed.

A queue is listed as a sequence of partitions (``QueueKeys``); a queue without
partitions is one. Pages of several partitions are merged in (sort key, partition)
order, and a cursor carries its partition, so paging stays exact across them.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import msgspec
from redis.exceptions import ResponseError

from .codec import Codec
from .connection import translate_redis_errors
from .crypto import envelope_kid
from .errors import ConfigError, PayloadError
from .events import QueueEvent, parse_events
from .job import JobInfo, JobState, ms_to_dt
from .keys import GROUP, QueueKeys, check_job_id
from .priority import LANE_OF_LEVEL, LEVELS, Priority, priority_of_lane, rank_of_lane
from .results import split_record

if TYPE_CHECKING:
    from .queue import Queue

LISTABLE: tuple[JobState, ...] = (JobState.WAITING, JobState.ACTIVE, JobState.DELAYED,
                                  JobState.COMPLETED, JobState.FAILED)
MAX_PAGE = 500
_LETTER = {JobState.WAITING: "w", JobState.ACTIVE: "a", JobState.DELAYED: "d",
           JobState.COMPLETED: "c", JobState.FAILED: "f"}

SortKey = tuple[Any, ...]


@dataclass(frozen=True, slots=True)
class ListedJob:
    """One job of a listing: its facts, and for an active job the worker holding it."""

    info: JobInfo
    worker: str | None = None
    """Active: the consumer (worker) that holds the job."""
    idle_s: float | None = None
    """Active: seconds since the holder last claimed or extended the job (its heartbeat)."""
    deliveries: int | None = None
    """Active: times this entry was delivered (takeovers after a crash add one)."""
    note: str | None = None
    """A caveat, e.g. that a completed job's record has expired (only its id is left)."""


@dataclass(frozen=True, slots=True)
class JobPage:
    state: JobState
    jobs: list[ListedJob]
    next_cursor: str | None
    """Pass as ``cursor`` for the next page; None on the last page."""


@dataclass(frozen=True, slots=True)
class Payload:
    """A job's stored payload: decoded, or the raw bytes when it does not decode."""

    where: str
    """lane, delayed or dead: the structure that holds it."""
    data: Any
    size: int
    decoded: bool
    sealed_with: str | None = None
    """The key id of an encrypted payload (None: stored in clear). Opened when ``decoded``."""
    reason: str = ""
    """Why it is not decoded, e.g. ``payload is encrypted and no key is configured (set
    STREAMQ_ENCRYPTION_KEYS)``; never payload data."""


@dataclass(frozen=True, slots=True)
class WorkerInfo:
    """A consumer of the queue's group: a worker that has taken jobs."""

    name: str
    pending: int
    """Jobs it holds now (claimed, not yet completed or failed)."""
    idle_s: float
    """Seconds since it last read from the queue (any lane)."""
    active_s: float | None
    """Seconds since it last took a job (Redis 7.2+; None before, or never)."""


# -- cursors ----------------------------------------------------------------------------------
def _cursor(state: JobState, part: int, rest: str) -> str:
    return f"{_LETTER[state]}{part}.{rest}"


def _parse_cursor(state: JobState, cursor: str) -> tuple[int, str]:
    head, dot, rest = cursor.partition(".")
    if not dot or head[:1] != _LETTER[state] or not head[1:].isdigit() or not rest:
        raise ConfigError(f"cursor {cursor[:60]!r} is not a cursor of the {state.value} listing")
    return int(head[1:]), rest


def _id_key(entry_id: str) -> tuple[int, int]:
    ms, _, seq = entry_id.partition("-")
    try:
        return int(ms), int(seq or 0)
    except ValueError:
        raise ConfigError(f"{entry_id[:40]!r} is not a stream entry id") from None


def _lane_pos(rest: str) -> tuple[int, str]:
    lane, _, entry_id = rest.partition(":")
    if len(lane) != 1 or not lane.isdigit() or int(lane) >= LEVELS:
        raise ConfigError(f"cursor position {rest[:40]!r} names no lane")
    _id_key(entry_id)
    return int(lane), entry_id


def _score_pos(rest: str) -> tuple[int, str]:
    score, _, member = rest.partition(":")
    if not score.lstrip("-").isdigit() or not member:
        raise ConfigError(f"cursor position {rest[:40]!r} is not a score and a job id")
    return int(score), member


def _desc(text: str) -> tuple[int, ...]:
    """A sort key that orders strings in reverse (the 0 ends a shorter string after a
    longer one sharing its start, as Redis's reverse lexical order does)."""
    return (*(-ord(c) for c in text), 0)


# -- entries and records -------------------------------------------------------------------------
def _r(q: Queue) -> Any:
    """The queue's client, untyped: redis-py's reply types are unions we parse anyway."""
    return q.redis


def _s(v: Any) -> str:
    return v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v)


def _int(v: Any, default: int = 0) -> int:
    try:
        return int(v)
    except (TypeError, ValueError):
        return default


def _priority(lane: int) -> Priority | None:
    return priority_of_lane(lane)


def entry_info(state: JobState, lane: int, entry_id: str, raw: dict[Any, Any]) -> JobInfo:
    """A lane entry's facts (fields j, d, m 'max|failed|stalls|ms since creation|backoff|
    type' and e; entries written with separate a/n/s/t/y fields are read too)."""
    f = {_s(k): v for k, v in raw.items()}
    meta = _s(f.get("m", b"")).split("|") if "m" in f else []
    if len(meta) >= 6:
        max_a, failed, stalls, offset, jtype = meta[0], meta[1], meta[2], meta[3], "|".join(meta[5:])
    else:
        max_a, failed, stalls = _s(f.get("a", "1")), _s(f.get("n", "0")), _s(f.get("s", "0"))
        offset, jtype = _s(f.get("t", "0")), _s(f.get("y", ""))
    created = _id_key(entry_id)[0] - _int(offset)
    return JobInfo(
        id=_s(f.get("j", b"")), state=state, attempts=_int(failed), max_attempts=_int(max_a, 1),
        error=_s(f["e"]) if f.get("e") else None, created_at=ms_to_dt(created),
        priority=_priority(lane), stalls=_int(stalls), job_type=jtype or None,
    )


_RAW_LIST = msgspec.msgpack.Decoder(list[msgspec.Raw])


def delayed_info(job_id: str, packed: bytes | None, due_ms: int) -> JobInfo:
    """A delayed job's facts from its packed entry {id, payload, max attempts, failed,
    stalls, created ms, backoff, lane, error, type}; the payload is not decoded."""
    values: list[Any] = []
    if packed:
        try:
            raws = _RAW_LIST.decode(packed)
        except msgspec.DecodeError:
            raws = []
        for i, r in enumerate(raws):
            if i == 1:
                values.append(None)
                continue
            try:
                values.append(msgspec.msgpack.decode(r))
            except (msgspec.DecodeError, UnicodeDecodeError):
                values.append(None)
    values += [None] * (10 - len(values))
    lane = _int(values[7], 1)
    return JobInfo(
        id=job_id, state=JobState.DELAYED, attempts=_int(values[3]),
        max_attempts=_int(values[2], 1), error=_s(values[8]) if values[8] else None,
        created_at=ms_to_dt(values[5]), due_at=ms_to_dt(due_ms), priority=_priority(lane),
        stalls=_int(values[4]), job_type=_s(values[9]) if values[9] else None,
    )


def record_info(job_id: str, record: bytes | None, finished_ms: int) -> tuple[JobInfo, str | None]:
    """A finished job's facts from its record 'state|attempts|max|created|finished|type|
    dead id|error' (a completed one's last field holds its result instead: results.py),
    or from the index alone (with a note) once the record has expired."""
    head, rest = split_record(record) if record else ([], b"")
    parts = [*head, "" if head[:1] == ["completed"] else _s(rest)]
    if len(parts) < 8:
        return (JobInfo(id=job_id, state=JobState.COMPLETED, attempts=0, max_attempts=0,
                        finished_at=ms_to_dt(finished_ms)),
                "record expired or purged: only the id is left")
    try:
        state = JobState(parts[0])
    except ValueError:
        state = JobState.COMPLETED
    return (JobInfo(id=job_id, state=state, attempts=_int(parts[1]), max_attempts=_int(parts[2]),
                    error=parts[7] or None, created_at=ms_to_dt(parts[3]),
                    finished_at=ms_to_dt(parts[4]), job_type=parts[5] or None), None)


def dead_info(raw: dict[Any, Any]) -> JobInfo:
    f = {_s(k): v for k, v in raw.items()}
    return JobInfo(
        id=_s(f.get("j", b"")), state=JobState.FAILED, attempts=_int(_s(f.get("n", b"0"))),
        max_attempts=_int(_s(f.get("a", b"0"))), error=_s(f.get("e", b"")) or None,
        created_at=ms_to_dt(_s(f.get("t", b""))), finished_at=ms_to_dt(_s(f.get("f", b""))),
        priority=_priority(_int(_s(f.get("l", b"1")), 1)), stalls=_int(_s(f.get("s", b"0"))),
        job_type=_s(f.get("y", b"")) or None,
    )


# -- per partition fetchers ---------------------------------------------------------------------
# Each returns up to ``limit`` (sort key, cursor position, job) triples in listing order,
# starting after the position ``after`` (or at it when ``inclusive``). Positions are what
# a cursor names: (level, ms, seq) of an entry (its text names the lane number), (score,
# member) of a sorted set, (ms, seq) of a dead letter; sort keys order the merge of several partitions.
Row = tuple[SortKey, str, ListedJob]
Fetch = Callable[["Queue", QueueKeys, "SortKey | None", bool, int], Awaitable[list[Row]]]


async def _last_delivered(q: Queue, lane: str) -> str | None:
    """The group's last-delivered id of a lane ("0-0" without a group); None: no stream."""
    try:
        groups: Any = await q.redis.xinfo_groups(lane)
    except ResponseError:
        return None
    for g in groups:
        if _s(g.get("name", b"")) == GROUP:
            return _s(g.get("last-delivered-id", b"0-0"))
    return "0-0"


async def _fetch_waiting(q: Queue, k: QueueKeys, after: SortKey | None, inclusive: bool,
                         limit: int) -> list[Row]:
    rows: list[Row] = []
    first_level = after[0] if after else 1
    for level in range(first_level, LEVELS + 1):
        if len(rows) >= limit:
            break
        lane = LANE_OF_LEVEL[level]
        last = await _last_delivered(q, k.lanes[lane])
        if last is None:
            continue
        start = "(" + last
        if after is not None and level == first_level and (after[1], after[2]) > _id_key(last):
            start = ("" if inclusive else "(") + f"{after[1]}-{after[2]}"
        entries = await _r(q).xrange(k.lanes[lane], min=start, max="+", count=limit - len(rows))
        for eid, raw in entries or []:
            entry_id = _s(eid)
            ms, seq = _id_key(entry_id)
            rows.append(((level, ms, seq), f"{lane}:{entry_id}",
                         ListedJob(entry_info(JobState.WAITING, lane, entry_id, raw))))
    return rows


async def _fetch_active(q: Queue, k: QueueKeys, after: SortKey | None, inclusive: bool,
                        limit: int) -> list[Row]:
    rows: list[Row] = []
    first_level = after[0] if after else 1
    for level in range(first_level, LEVELS + 1):
        if len(rows) >= limit:
            break
        lane = LANE_OF_LEVEL[level]
        start = "-"
        if after is not None and level == first_level:
            start = ("" if inclusive else "(") + f"{after[1]}-{after[2]}"
        try:
            pending: Any = await q.redis.xpending_range(k.lanes[lane], GROUP, min=start, max="+",
                                                        count=limit - len(rows))
        except ResponseError:  # no stream or no group: nothing is active in this lane
            continue
        if not pending:
            continue
        pipe = q.redis.pipeline(transaction=False)
        for p in pending:
            pipe.xrange(k.lanes[lane], min=p["message_id"], max=p["message_id"])
        found: Any = await pipe.execute()
        for p, entry in zip(pending, found, strict=True):
            entry_id = _s(p["message_id"])
            ms, seq = _id_key(entry_id)
            raw = entry[0][1] if entry else {}
            info = entry_info(JobState.ACTIVE, lane, entry_id, raw)
            rows.append(((level, ms, seq), f"{lane}:{entry_id}", ListedJob(
                info, worker=_s(p["consumer"]), idle_s=_int(p["time_since_delivered"]) / 1000,
                deliveries=_int(p["times_delivered"]),
                note=None if entry else "entry deleted: the next sweep drops it")))
    return rows


async def _zset_page(q: Queue, key: str, after: SortKey | None, inclusive: bool, limit: int,
                     *, desc: bool) -> list[tuple[bytes, float]]:
    """Up to ``limit`` (member, score) of a sorted set after the cursor (score, member)
    in (score, member) order (reversed when ``desc``). A cursor member still in the set
    with its score is found by rank (O(log n)); one that left it is passed by score,
    skipping equal scores up to the member."""
    r: Any = q.redis
    if after is None:
        if desc:
            return list(await r.zrevrange(key, 0, limit - 1, withscores=True))
        return list(await r.zrange(key, 0, limit - 1, withscores=True))
    score, member = after[0], after[1]
    if not inclusive:
        rank = await (r.zrevrank(key, member) if desc else r.zrank(key, member))
        if rank is not None and await r.zscore(key, member) == score:
            if desc:
                return list(await r.zrevrange(key, rank + 1, rank + limit, withscores=True))
            return list(await r.zrange(key, rank + 1, rank + limit, withscores=True))
    out: list[tuple[bytes, float]] = []
    offset = 0
    batch = limit + 16
    while len(out) < limit:
        if desc:
            got = await r.zrevrangebyscore(key, score, "-inf", start=offset, num=batch,
                                           withscores=True)
        else:
            got = await r.zrangebyscore(key, score, "+inf", start=offset, num=batch,
                                        withscores=True)
        for m, s in got:
            if s == score:
                ms = _s(m)
                if ms == member:
                    if not inclusive:
                        continue
                elif (ms < member) != desc:  # before the cursor in this order
                    continue
            out.append((m, s))
            if len(out) >= limit:
                break
        if len(got) < batch:
            break
        offset += batch
    return out


async def _fetch_delayed(q: Queue, k: QueueKeys, after: SortKey | None, inclusive: bool,
                         limit: int) -> list[Row]:
    got = await _zset_page(q, k.delayed, after, inclusive, limit, desc=False)
    if not got:
        return []
    packed = await _r(q).hmget(k.delayed_data, [m for m, _ in got])
    rows: list[Row] = []
    for (m, s), p in zip(got, packed, strict=True):
        job_id, due = _s(m), int(s)
        rows.append(((due, job_id), f"{due}:{job_id}", ListedJob(delayed_info(job_id, p, due))))
    return rows


async def _fetch_completed(q: Queue, k: QueueKeys, after: SortKey | None, inclusive: bool,
                           limit: int) -> list[Row]:
    got = await _zset_page(q, k.completed_index, after, inclusive, limit, desc=True)
    if not got:
        return []
    records = await _r(q).mget([k.job(_s(m)) for m, _ in got])
    rows: list[Row] = []
    for (m, s), rec in zip(got, records, strict=True):
        job_id, finished = _s(m), int(s)
        info, note = record_info(job_id, rec, finished)
        rows.append(((-finished, _desc(job_id)), f"{finished}:{job_id}", ListedJob(info, note=note)))
    return rows


async def _fetch_failed(q: Queue, k: QueueKeys, after: SortKey | None, inclusive: bool,
                        limit: int) -> list[Row]:
    top = "+" if after is None else ("" if inclusive else "(") + f"{after[0]}-{after[1]}"
    entries = await _r(q).xrevrange(k.dead, max=top, min="-", count=limit)
    rows: list[Row] = []
    for eid, raw in entries or []:
        entry_id = _s(eid)
        ms, seq = _id_key(entry_id)
        rows.append(((-ms, -seq), entry_id, ListedJob(dead_info(raw))))
    return rows


def _position(state: JobState, rest: str) -> SortKey:
    if state in (JobState.WAITING, JobState.ACTIVE):
        lane, entry_id = _lane_pos(rest)
        return (rank_of_lane(lane), *_id_key(entry_id))
    if state in (JobState.DELAYED, JobState.COMPLETED):
        return _score_pos(rest)
    return _id_key(rest)


_FETCH: dict[JobState, Fetch] = {
    JobState.WAITING: _fetch_waiting,
    JobState.ACTIVE: _fetch_active,
    JobState.DELAYED: _fetch_delayed,
    JobState.COMPLETED: _fetch_completed,
    JobState.FAILED: _fetch_failed,
}


async def list_jobs(q: Queue, parts: Sequence[QueueKeys], state: JobState | str,
                    cursor: str | None = None, limit: int = 50) -> JobPage:
    """One page of the jobs in ``state`` (see the module's doc for the order of each)."""
    try:
        st = JobState(state)
    except ValueError:
        raise ConfigError(f"state {state!r} is unknown: use one of "
                          f"{', '.join(s.value for s in LISTABLE)}") from None
    if st is JobState.WAITING_CHILDREN:
        raise ConfigError("jobs waiting for their children are not listed: find them by id "
                          "(get_job), e.g. the root id add_flow returned")
    if st not in _FETCH:
        raise ConfigError(f"{st.value} jobs are counted, not listed: no index keeps them")
    if not isinstance(limit, int) or not 1 <= limit <= MAX_PAGE:
        raise ConfigError(f"limit must be an integer from 1 to {MAX_PAGE}, got {limit!r}")
    after: tuple[SortKey, int] | None = None
    if cursor:
        part, rest = _parse_cursor(st, cursor)
        if part >= len(parts):
            raise ConfigError(f"cursor {cursor[:60]!r} names partition {part}; the queue has "
                              f"{len(parts)}")
        after = (_position(st, rest), part)
    fetch = _FETCH[st]
    merged: list[tuple[SortKey, int, str, ListedJob]] = []
    with translate_redis_errors(q.redis_url):
        for p, k in enumerate(parts):
            # a later partition's job with the cursor's own key comes after it
            pos, inclusive = (None, False) if after is None else (after[0], p > after[1])
            for key, rest, job in await fetch(q, k, pos, inclusive, limit + 1):
                merged.append((key, p, rest, job))
    merged.sort(key=lambda r: (r[0], r[1]))
    page = merged[:limit]
    next_cursor = None
    if len(merged) > limit and page:
        last = page[-1]
        next_cursor = _cursor(st, last[1], last[2])
    return JobPage(st, [r[3] for r in page], next_cursor)


# -- one job ------------------------------------------------------------------------------------
def decode_payload(codec: Codec, raw: bytes, job_id: str) -> tuple[Any, bool, str]:
    """A stored payload decoded through the queue's codec (an encrypted one is opened
    there, bound to its job id): (the value, True, ""), or (the raw bytes, False, the
    reason) when it does not decode, e.g. an encrypted payload and no key for it here."""
    try:
        return codec.decode(raw, job_id), True, ""
    except PayloadError as exc:
        return raw, False, str(exc)


async def read_payload(q: Queue, k: QueueKeys, job_id: str) -> Payload | None:
    """The payload a job holds now (waiting, active, delayed, failed); None when none is
    kept (unknown, expired, completed or cancelled)."""
    check_job_id(job_id)
    reply = await q._run(  # the engine's own script runner
        "get_payload",
        [*k.lane_keys, k.moves, k.delayed_data, k.bucket(job_id), k.job(job_id), k.dead],
        [job_id],
    )
    if not reply:
        return None
    if len(reply) == 1:  # 'flow': a parent waiting for its children keeps it in its flow hash
        held = await _r(q).hget(k.flow(job_id), "d")
        if held is None:
            return None
        reply = [b"flow", held]
    raw = reply[1] if isinstance(reply[1], bytes) else _s(reply[1]).encode()
    data, ok, reason = decode_payload(q.codec, raw, job_id)
    return Payload(where=_s(reply[0]), data=data, size=len(raw), decoded=ok,
                   sealed_with=envelope_kid(raw), reason=reason)


async def job_events(q: Queue, parts: Sequence[QueueKeys], job_id: str,
                     scan: int = 1000) -> list[QueueEvent]:
    """The events of one job still in the events stream (the newest ``scan`` entries of
    each partition are searched), oldest first. An entry of a batch transition names up
    to 100 jobs: only entries whose id list holds the job's id are expanded."""
    found: list[QueueEvent] = []
    needle = job_id.encode()
    with translate_redis_errors(q.redis_url):
        for k in parts:
            entries = await _r(q).xrevrange(k.events, count=scan)
            hits = [e for e in reversed(entries or []) if needle in e[1].get(b"j", b"")]
            found.extend(e for e in parse_events([(k.events, hits)]) if e.job_id == job_id)
    if len(parts) > 1:
        found.sort(key=lambda e: _id_key(e.id))
    return found


# -- workers ------------------------------------------------------------------------------------
async def lane_consumers(q: Queue, lanes: Sequence[str]) -> list[dict[str, Any]]:
    """The consumer group's consumers of every lane given (one pipelined XINFO CONSUMERS
    per lane), each row with str keys; a lane without stream or group has none."""
    pipe = q.redis.pipeline(transaction=False)
    for lane in lanes:
        pipe.xinfo_consumers(lane, GROUP)
    replies: Any = await pipe.execute(raise_on_error=False)
    out: list[dict[str, Any]] = []
    for rows in replies:
        if isinstance(rows, ResponseError):  # no stream or group yet: no worker read it
            continue
        if isinstance(rows, Exception):
            raise rows
        out += [{_s(key): v for key, v in row.items()} for row in rows]
    return out


async def list_workers(q: Queue, parts: Sequence[QueueKeys]) -> list[WorkerInfo]:
    """The consumers of the queue's group over every lane (and partition): jobs held, and
    how long since each last read and last took a job. Workers remove consumers idle for
    longer than their ``consumer_prune_after`` (1 h by default)."""
    seen: dict[str, list[Any]] = {}
    with translate_redis_errors(q.redis_url):
        rows = await lane_consumers(q, [lane for k in parts for lane in k.lanes])
    for r in rows:
        acc = seen.setdefault(_s(r["name"]), [0, float("inf"), None])
        acc[0] += _int(r.get("pending"))
        acc[1] = min(acc[1], _int(r.get("idle")) / 1000)
        inactive = r.get("inactive")
        if inactive is not None and _int(inactive, -1) >= 0:
            a = _int(inactive) / 1000
            acc[2] = a if acc[2] is None else min(acc[2], a)
    out = [WorkerInfo(name, int(p), idle, act) for name, (p, idle, act) in seen.items()]
    return sorted(out, key=lambda w: (w.idle_s, w.name))


__all__ = ["LISTABLE", "MAX_PAGE", "JobPage", "ListedJob", "Payload", "WorkerInfo",
           "decode_payload", "job_events", "lane_consumers", "list_jobs", "list_workers",
           "read_payload"]
