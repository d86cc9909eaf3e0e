"""Live updates: one reader per watched queue, fanned out to every live client.

A ``Feed`` follows one queue's events stream (``Queue.read_events``, a bounded blocking
read) and re-reads its counts after events (at most every ``COUNTS_EVERY_S``, and at
least that often when quiet), for as long as a client watches the queue. Each client
is a ``Subscriber`` with a bounded buffer of ready-to-send SSE messages: a client that
reads slower than the queue changes fills its buffer, and then the buffer is dropped
and replaced by one ``resync`` message (the page re-reads what it shows), so a slow
client costs a bounded amount of memory and never slows the feed or other clients.
Counts are state, not history: a client keeps only the newest counts of each queue.
"""

from __future__ import annotations

import json
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import anyio
import anyio.abc
import structlog

from ..connection import translate_redis_errors
from ..errors import StreamqError
from ..events import QueueEvent
from ..queue import Queue
from ..redact import redact_text
from .rates import RateMeter

log = structlog.get_logger("streamq.dashboard")

EVENTS_PER_READ = 200
READ_BLOCK_S = 1.0
COUNTS_EVERY_S = 1.0
COUNTS_MIN_GAP_S = 0.2
ERROR_CHARS = 200
RETRY_MAX_S = 5.0


def sse(event: str, data: Any) -> str:
    """One server-sent event (the JSON has no newlines)."""
    return f"event: {event}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n"


RESYNC = sse("resync", {"reason": "this page fell behind; re-reading"})


def event_json(e: QueueEvent) -> dict[str, Any]:
    out: dict[str, Any] = {"id": e.id, "ev": e.name, "job": redact_text(e.job_id),
                           "type": e.job_type, "attempt": e.attempt}
    if e.error:
        out["error"] = redact_text(e.error)[:ERROR_CHARS]
    if e.fields:
        for k in ("act", "actor", "n"):
            if k in e.fields:
                out[k] = e.fields[k]
        detail = " ".join(f"{k}={v}" for k, v in e.fields.items() if k not in out)
        if detail:  # e.g. a provider breaker's provider and state
            out["detail"] = redact_text(detail)[:ERROR_CHARS]
    return out


class Subscriber:
    """One live client: a bounded queue of messages plus the newest counts per queue."""

    def __init__(self, queues: Iterable[str], capacity: int) -> None:
        self.queues = frozenset(queues)
        self.capacity = capacity
        self._buffer: deque[str] = deque()
        self._counts: dict[str, str] = {}
        self._wake = anyio.Event()
        self.resyncs = 0
        self.high_water = 0

    def offer(self, message: str) -> None:
        if len(self._buffer) >= self.capacity:
            self._buffer.clear()
            self._buffer.append(RESYNC)
            self.resyncs += 1
        else:
            self._buffer.append(message)
        self.high_water = max(self.high_water, len(self._buffer))
        self._wake.set()

    def offer_counts(self, queue: str, message: str) -> None:
        self._counts[queue] = message
        self._wake.set()

    @property
    def buffered(self) -> int:
        return len(self._buffer) + len(self._counts)

    async def next_batch(self, wait_s: float) -> list[str]:
        """What is ready (waiting up to ``wait_s`` for something); [] if nothing came."""
        if not self._buffer and not self._counts:
            with anyio.move_on_after(wait_s):
                await self._wake.wait()
            self._wake = anyio.Event()
        out = list(self._buffer) + list(self._counts.values())
        self._buffer.clear()
        self._counts.clear()
        return out


@dataclass
class Feed:
    queue: Queue
    meter: RateMeter
    subscribers: set[Subscriber] = field(default_factory=set)
    scope: anyio.CancelScope = field(default_factory=anyio.CancelScope)
    reads: int = 0

    def broadcast(self, message: str) -> None:
        for s in list(self.subscribers):
            s.offer(message)

    async def publish_counts(self) -> None:
        counts = await self.queue.counts()
        now = time.monotonic()
        self.meter.observe(counts, now)
        message = sse("counts", {"queue": self.queue.name, "counts": counts,
                                 "rates": self.meter.rates()})
        for s in list(self.subscribers):
            s.offer_counts(self.queue.name, message)

    async def run(self, start_after: str) -> None:
        """Follow the queue until cancelled; Redis outages are reported to the clients and
        retried with a growing pause."""
        after = start_after
        last_counts = 0.0
        delay = 0.5
        with self.scope:
            while True:
                try:
                    events = await self.queue.read_events(after=after, count=EVENTS_PER_READ,
                                                          block=READ_BLOCK_S)
                    self.reads += 1
                    if events:
                        after = events[-1].id
                        self.broadcast(sse("events", {"queue": self.queue.name,
                                                      "events": [event_json(e) for e in events]}))
                    now = time.monotonic()
                    due = now - last_counts >= (COUNTS_MIN_GAP_S if events else COUNTS_EVERY_S)
                    if due:
                        await self.publish_counts()
                        last_counts = now
                    delay = 0.5
                except Exception as exc:  # a feed logs, backs off and goes on (never dies)
                    text = str(exc) if isinstance(exc, StreamqError) else f"{type(exc).__name__}: {exc}"
                    exc_text = redact_text(text)
                    log.warning("dashboard.feed_error", queue=self.queue.name, error=exc_text,
                                retry_in=delay)
                    self.broadcast(sse("problem", {"queue": self.queue.name,
                                                   "error": exc_text[:ERROR_CHARS]}))
                    await anyio.sleep(delay)
                    delay = min(delay * 2, RETRY_MAX_S)


class Hub:
    """The feeds of the watched queues, run in one task group until ``stop``."""

    def __init__(self, meter_of: Callable[[str], RateMeter]) -> None:
        self._feeds: dict[str, Feed] = {}
        self._meter_of = meter_of
        self._tg: anyio.abc.TaskGroup | None = None
        self._stopped = anyio.Event()
        self._ready = anyio.Event()
        self.subscribers: set[Subscriber] = set()

    async def run(self) -> None:
        async with anyio.create_task_group() as tg:
            self._tg = tg
            self._ready.set()
            await self._stopped.wait()
            tg.cancel_scope.cancel()
        self._tg = None

    def stop(self) -> None:
        self._stopped.set()

    async def subscribe(self, queues: list[Queue], capacity: int) -> Subscriber:
        """A new client of these queues' feeds (started as needed). Raises (Redis down)
        before anything is registered."""
        await self._ready.wait()
        starts = {q.name: await _now_position(q) for q in queues if q.name not in self._feeds}
        sub = Subscriber((q.name for q in queues), capacity)
        self.subscribers.add(sub)
        for q in queues:
            feed = self._feeds.get(q.name)
            if feed is None:
                feed = self._feeds[q.name] = Feed(q, self._meter_of(q.name))
                assert self._tg is not None
                self._tg.start_soon(feed.run, starts.get(q.name, "$"))
            feed.subscribers.add(sub)
        return sub

    def unsubscribe(self, sub: Subscriber) -> None:
        self.subscribers.discard(sub)
        for name in sub.queues:
            feed = self._feeds.get(name)
            if feed is None:
                continue
            feed.subscribers.discard(sub)
            if not feed.subscribers:
                feed.scope.cancel()
                del self._feeds[name]

    @property
    def feeds(self) -> dict[str, Feed]:
        return self._feeds


async def _now_position(q: Queue) -> str:
    """A position in the events stream meaning 'from now on': the Redis clock's current
    millisecond (a plain id stands for the same moment in every partition)."""
    with translate_redis_errors(q.redis_url):
        with_time: Any = await q.redis.time()
    ms = int(with_time[0]) * 1000 + int(with_time[1]) // 1000
    return f"{ms - 1}-0"


__all__ = ["RESYNC", "Feed", "Hub", "Subscriber", "event_json", "sse"]
