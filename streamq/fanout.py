"""What spans a partitioned queue's partitions: one call per partition, answers merged.

Every Lua transition runs in one partition's slot; what is queue-wide is done here, in
Python, over N calls (counts, dead letters, events), or kept in the home partition (the
pause flag that ``is_paused`` reads, the token bucket, the stored count). For N = 1
each function is the one call of a queue without partitions.

Ordering across partitions: stream entry ids are ``<ms>-<seq>`` per stream, so two
partitions can hold the same id. Merged listings sort by (entry id, partition), and
their cursors say where each partition stands:

- dead letters: ``DeadLetter.ref`` is ``<entry id>`` in partition 0 and
  ``<entry id>@<p>`` in partition p; ``after="(" + ref`` pages exactly.
- events: the cursor of a queue with N > 1 partitions is the N entry ids joined by
  ``,`` (partition 0 first); every ``QueueEvent.id`` is the cursor just after it, so
  ``after=events[-1].id`` continues where the last read stopped. A plain id (``0-0``,
  ``$``, or a stream id) stands for that position in every partition.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

import anyio

from .errors import ConfigError
from .events import QueueEvent, parse_events
from .keys import QueueKeys

T = TypeVar("T")

COUNT_NAMES = ("waiting", "active", "delayed", "completed", "failed", "cancelled", "paused",
               "dead")
_REF_RE = re.compile(r"^(\d+-\d+|\d+)(?:@(\d+))?$")


async def each(calls: Sequence[Callable[[], Awaitable[T]]]) -> list[T]:
    """Run the calls concurrently (one per partition); results in order. The first
    error is raised as itself (``RedisUnavailable``...), not inside an exception group."""
    if len(calls) == 1:
        return [await calls[0]()]
    out: list[Any] = [None] * len(calls)

    async def one(i: int) -> None:
        out[i] = await calls[i]()

    try:
        async with anyio.create_task_group() as tg:
            for i in range(len(calls)):
                tg.start_soon(one, i)
    except BaseExceptionGroup as group:
        raise first_error(group) from None
    return out


def first_error(group: BaseExceptionGroup[BaseException]) -> BaseException:
    """The first error inside (nested) exception groups, preferring a real error to a
    cancellation."""
    leaves: list[BaseException] = []
    stack: list[BaseException] = [group]
    while stack:
        e = stack.pop(0)
        if isinstance(e, BaseExceptionGroup):
            stack[:0] = list(e.exceptions)
        else:
            leaves.append(e)
    cancelled = anyio.get_cancelled_exc_class()
    return next((e for e in leaves if not isinstance(e, cancelled)), leaves[0])


def sum_counts(per_partition: Sequence[Sequence[Any]]) -> dict[str, int]:
    """Add the counts script's answers; ``paused`` is the home's flag (``is_paused``)."""
    total = dict.fromkeys(COUNT_NAMES, 0)
    for i, r in enumerate(per_partition):
        for name, v in zip(COUNT_NAMES, r, strict=True):
            if name == "paused":
                if i == 0:
                    total[name] = int(v)
            else:
                total[name] += int(v)
    return total


# -- dead letters ---------------------------------------------------------------------------
def id_key(entry_id: str) -> tuple[int, int]:
    ms, _, seq = entry_id.partition("-")
    return int(ms), int(seq or 0)


def parse_ref(ref: str) -> tuple[str, int]:
    """``<entry id>[@<partition>]`` -> (entry id, partition)."""
    m = _REF_RE.match(ref)
    if m is None:
        raise ConfigError(f"{ref!r} is not a dead-letter reference (<entry id>[@<partition>])")
    return m.group(1), int(m.group(2) or 0)


def dead_bounds(after: str, partitions: int) -> list[str]:
    """The XRANGE start of each partition for listing dead letters after ``after``:
    ``-`` (from the start), ``(ref`` (after that letter) or ``ref`` (from it), in the
    order (entry id, partition)."""
    if after in ("-", ""):
        return ["-"] * partitions
    exclusive = after.startswith("(")
    entry_id, p = parse_ref(after[1:] if exclusive else after)
    out = []
    for q in range(partitions):
        # (id, q) comes after (id, p) when q > p; it is (id, p) itself when q == p
        inclusive = q > p or (q == p and not exclusive)
        out.append(entry_id if inclusive else "(" + entry_id)
    return out


def merge_sorted(pages: Sequence[Sequence[T]], key: Callable[[T], Any], limit: int) -> list[T]:
    merged = sorted((x for page in pages for x in page), key=key)
    return merged[:limit]


# -- events ---------------------------------------------------------------------------------
def event_positions(after: str, partitions: int) -> list[str]:
    """A cursor -> the position of each partition. A plain id stands for all of them;
    a cursor with fewer positions than partitions (read before the queue grew) starts
    the new partitions from their beginning."""
    parts = after.split(",")
    if len(parts) == 1:
        return parts * partitions
    if len(parts) > partitions:
        raise ConfigError(f"events cursor {after[:80]!r} has {len(parts)} positions; the queue "
                          f"has {partitions} partitions")
    return parts + ["0-0"] * (partitions - len(parts))


def merge_events(replies: Sequence[Any], positions: list[str], count: int) -> list[QueueEvent]:
    """Merge one XREAD reply per partition (``[(stream, entries)]`` or empty) into events
    ordered by (entry id, partition): the first ``count`` entries, each event's id the
    cursor just after its entry."""
    entries: list[tuple[tuple[int, int], int, Any]] = []
    for p, reply in enumerate(replies):
        for _stream, items in reply or []:
            for entry in items:
                eid = _decode(entry[0])
                entries.append((id_key(eid), p, entry))
    entries.sort(key=lambda e: (e[0], e[1]))
    pos = list(positions)
    out: list[QueueEvent] = []
    for _key, p, entry in entries[:count]:
        pos[p] = _decode(entry[0])
        cursor = ",".join(pos)
        for ev in parse_events([(b"", [entry])]):
            out.append(QueueEvent(cursor, ev.name, ev.job_id, ev.job_type, ev.attempt,
                                  ev.error, ev.fields))
    return out


async def read_events(redis: Any, parts: Sequence[QueueKeys], after: str, count: int,
                      block_ms: int | None) -> list[QueueEvent]:
    """The events of a partitioned queue after the cursor ``after``: one XREAD per
    partition (an XREAD may not span slots on a cluster), merged. When none has any and
    ``block_ms`` is given, one blocking XREAD per partition until the first answers."""
    positions = event_positions(after, len(parts))
    if "$" in positions:
        # "only new ones": start from each stream's newest entry now, so that the cursors
        # handed out name real positions
        newest = await each([functools.partial(redis.xrevrange, k.events, count=1)
                             for k in parts])
        positions = [(_decode(last[0][0]) if last else "0-0") if pos == "$" else pos
                     for pos, last in zip(positions, newest, strict=True)]
    replies = await each([functools.partial(redis.xread, {k.events: pos}, count=count)
                          for k, pos in zip(parts, positions, strict=True)])
    if any(replies) or block_ms is None:
        return merge_events(replies, positions, count)
    got: list[Any] = [None] * len(parts)
    try:
        async with anyio.create_task_group() as tg:
            async def wait(p: int) -> None:
                r = await redis.xread({parts[p].events: positions[p]}, count=count,
                                      block=block_ms)
                if r:
                    got[p] = r
                    tg.cancel_scope.cancel()  # the others are still blocked: stop waiting

            for p in range(len(parts)):
                tg.start_soon(wait, p)
    except BaseExceptionGroup as group:
        raise first_error(group) from None
    return merge_events(got, positions, count)


def _decode(v: Any) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)


__all__ = ["COUNT_NAMES", "dead_bounds", "each", "event_positions", "first_error", "id_key", "merge_events",
           "merge_sorted", "parse_ref", "read_events", "sum_counts"]
