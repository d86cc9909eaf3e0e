"""Worker event hooks: active, completed, failed, retrying, dead, stalled, deferred.

Callbacks receive one ``WorkerEvent``; they may be sync or async. A callback that
raises is logged and ignored: a broken hook must not stop the worker. Hooks run on the
worker's loop, so keep them quick.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Literal

import structlog

from .cancellation import cancelled_from_outside
from .redact import redact_text

EventName = Literal["active", "completed", "failed", "retrying", "dead", "stalled", "deferred"]
EVENT_NAMES: tuple[str, ...] = ("active", "completed", "failed", "retrying", "dead", "stalled",
                                "deferred")

log = structlog.get_logger("streamq.worker")


@dataclass(frozen=True, slots=True)
class WorkerEvent:
    name: EventName
    queue: str
    job_id: str
    attempt: int = 0
    error: str | None = None
    """One-line, redacted error (failed, retrying, dead), or the reason (deferred)."""
    delay: float | None = None
    """Seconds until the retry (retrying) or the deferred run (deferred)."""
    result: Any = None
    """The handler's return value (completed)."""
    stalls: int = 0
    job_type: str | None = None
    """The payload's type tag (a msgspec tagged Struct) or class name; None for plain data."""
    wait_s: float | None = None
    """Seconds from becoming waiting (enqueue, promotion) to the handler's start."""
    run_s: float | None = None
    """Seconds the handler ran (completed, failed)."""


Callback = Callable[[WorkerEvent], Awaitable[None] | None]


class Hooks:
    def __init__(self) -> None:
        self._callbacks: dict[str, list[Callback]] = {n: [] for n in EVENT_NAMES}

    def on(self, name: EventName, callback: Callback) -> None:
        if name not in self._callbacks:
            raise ValueError(f"unknown event {name!r}: use one of {', '.join(EVENT_NAMES)}")
        self._callbacks[name].append(callback)

    def wants(self, name: str) -> bool:
        return bool(self._callbacks[name])

    async def emit(self, event: WorkerEvent) -> None:
        for cb in self._callbacks[event.name]:
            try:
                r = cb(event)
                if inspect.isawaitable(r):
                    await r
            except Exception as exc:  # a hook must never take the worker down
                log.warning("hook.failed", hook=event.name, queue=event.queue,
                            job_id=event.job_id,
                            error=redact_text(f"{type(exc).__name__}: {exc}"))
            except asyncio.CancelledError:
                if cancelled_from_outside():
                    raise
                # a stray CancelledError of the hook's own (not the worker being cancelled)
                log.warning("hook.failed", hook=event.name, queue=event.queue,
                            job_id=event.job_id, error="CancelledError raised by the hook")


@dataclass(frozen=True, slots=True)
class QueueEvent:
    """One entry of a queue's events stream (``Queue.read_events``): what monitors follow.

    ``name`` is added, active, completed, failed, retrying, dead, stalled, cancelled,
    replayed or deferred; ``progress`` (``fields["p"]``: the value as JSON) and, for a flow
    parent whose children all finished, ``children_done`` (docs/workflows.md); on SMS
    queues also ``breaker``, ``failover`` and ``delivery`` (docs/sms-providers.md). No payload data and
    no phone numbers: job id, type, attempt, error.
    """

    id: str
    name: str
    job_id: str
    job_type: str | None
    attempt: int
    error: str | None = None
    fields: dict[str, str] | None = None


def parse_events(reply: Any) -> list[QueueEvent]:
    """Expand stream entries into per-job events: the batch transitions (added, active,
    completed) write one entry per call with space-separated ids, types and attempts."""
    out: list[QueueEvent] = []
    for _stream, entries in reply or []:
        for entry_id, raw in entries:
            f = {k.decode(): v.decode("utf-8", "replace") for k, v in raw.items()}
            name = f.pop("ev", "")
            ids = f.pop("j", "").split(" ")
            types = f.pop("y", "").split(" ")
            attempts = f.pop("a", "").split(" ")
            error = f.pop("e", None)
            for i, job_id in enumerate(ids):
                out.append(QueueEvent(
                    id=entry_id.decode(),
                    name=name,
                    job_id=job_id,
                    job_type=(types[i] if i < len(types) else "") or None,
                    attempt=int(attempts[i]) if i < len(attempts) and attempts[i] else 0,
                    error=error,
                    fields=f or None,
                ))
    return out
