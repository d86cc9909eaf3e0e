"""The public value types of a job: options, references, states and the handler's view."""

from __future__ import annotations

import enum
import math
import random
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Protocol

from .priority import Priority, level_of
from .validate import MAX_DELAY_S, int_value, seconds_value

if TYPE_CHECKING:
    from .flows.link import FlowLink

class JobState(enum.StrEnum):
    WAITING = "waiting"
    ACTIVE = "active"
    DELAYED = "delayed"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"
    WAITING_CHILDREN = "waiting_children"
    """A flow parent waiting for its children to finish (``Queue.add_flow``)."""


@dataclass(frozen=True, slots=True)
class Backoff:
    """Exponential backoff: retry r (1-based) waits ``base * 2**(r-1)`` seconds.

    ``cap`` bounds one delay at any retry count; ``jitter`` draws the delay uniformly
    from [delay/2, delay]. Both are off by default, which gives exactly 2 s, 4 s, 8 s ...
    for base 2 s. Without a cap a delay never exceeds ``MAX_DELAY_S`` (10 years; the
    worker's ``max_retry_delay``, 1 h by default, bounds it first).
    """

    base: float = 2.0
    cap: float | None = None
    jitter: bool = False

    def __post_init__(self) -> None:
        seconds_value("backoff base", self.base)
        if self.cap is not None:
            seconds_value("backoff cap", self.cap)

    def delay(self, retry: int, rng: random.Random | None = None) -> float:
        limit = MAX_DELAY_S if self.cap is None else min(self.cap, MAX_DELAY_S)
        exponent = max(0, retry - 1)
        # base * 2**exponent > limit  <=>  exponent > log2(limit / base): decide before
        # computing 2**exponent, which overflows a float after retry 1024
        if self.base <= 0:
            d = 0.0
        elif limit <= 0 or exponent > math.log2(limit / self.base):
            d = limit
        else:
            d = min(self.base * 2.0 ** exponent, limit)
        if self.jitter:
            d = float((rng or random).uniform(d / 2, d))
        return d

    def encode(self) -> str:
        """Compact form stored with the job: ``base_ms[:cap_ms[:j]]``."""
        s = str(round(self.base * 1000))
        if self.cap is not None or self.jitter:
            s += ":" + ("" if self.cap is None else str(round(self.cap * 1000)))
            if self.jitter:
                s += ":j"
        return s

    @classmethod
    def decode(cls, text: str) -> Backoff:
        parts = text.split(":")
        base = int(parts[0]) / 1000 if parts and parts[0] else 2.0
        cap = int(parts[1]) / 1000 if len(parts) > 1 and parts[1] else None
        return cls(base=base, cap=cap, jitter=len(parts) > 2 and parts[2] == "j")


def run_spec(backoff: str, timeout: float | None) -> str:
    """The entry's ``b`` field: the backoff spec, then the job's own timeout (ms) as a
    4th ``:``-part when it has one (``2000:::5000``). Lua carries ``b`` unchanged through
    every transition (retry, release, reclaim, dead letter, replay); a worker that
    predates timeouts reads the backoff and ignores the 4th part."""
    if timeout is None:
        return backoff
    parts = backoff.split(":")
    parts += [""] * (3 - len(parts))
    return ":".join([*parts[:3], str(max(1, round(timeout * 1000)))])


def parse_run_spec(text: str) -> tuple[Backoff, float | None]:
    """``run_spec`` read back: (backoff, timeout in seconds or None)."""
    parts = text.split(":")
    timeout = int(parts[3]) / 1000 if len(parts) > 3 and parts[3] else None
    return Backoff.decode(text), timeout


@dataclass(frozen=True, slots=True, kw_only=True)
class JobOptions:
    """Options of one job. ``None`` means: the queue's default (for ``timeout``: the
    worker's ``job_timeout``). Checked when built: a bad value is a ``ConfigError``.

    ``priority`` is an int from 1 (most urgent) to 10, or one of the names "high",
    "normal", "low" (levels 2, 5, 8); within a partition a waiting job is never passed
    over for a less urgent one. ``delay`` and ``timeout`` are seconds (or a
    ``timedelta``), at most ``MAX_DELAY_S`` (10 years). ``timeout`` bounds one attempt:
    when it runs out, the handler is cancelled and the attempt fails with "timed out
    after N s" (retried like any failure).
    """

    priority: Priority = "normal"
    delay: float | timedelta | None = None
    job_id: str | None = None
    attempts: int | None = None
    backoff: float | Backoff | None = None
    timeout: float | timedelta | None = None

    def __post_init__(self) -> None:
        level_of(self.priority)
        if self.delay is not None:
            seconds_value("delay", self.delay)
        if self.attempts is not None:
            int_value("attempts", self.attempts, minimum=1)
        if self.backoff is not None and not isinstance(self.backoff, Backoff):
            seconds_value("backoff", self.backoff)
        if self.timeout is not None:
            seconds_value("timeout", self.timeout, positive=True)


@dataclass(frozen=True, slots=True)
class JobRef:
    """What ``add`` returns: where the job went."""

    job_id: str
    queue_name: str


@dataclass(frozen=True, slots=True)
class JobInfo:
    """A job's state as ``Queue.get_job`` reads it."""

    id: str
    state: JobState
    attempts: int
    """Attempts that ran and failed so far (a completed job: the attempt that succeeded)."""
    max_attempts: int
    error: str | None = None
    created_at: datetime | None = None
    finished_at: datetime | None = None
    due_at: datetime | None = None
    priority: Priority | None = None
    """The name for levels 2, 5, 8 ("high", "normal", "low"), else the level (1-10)."""
    stalls: int = 0
    job_type: str | None = None
    result: Any = None
    """A completed job's stored result (its handler's return value), or None."""
    result_error: str | None = None
    """Why a completed job's result was not kept (over the size cap, not encodable)."""
    progress: Any = None
    """The last progress the current (or, finished, the last) attempt reported: a float
    in [0, 1] or a small dict; None if it reported none."""
    pending_children: int | None = None
    """A flow parent waiting for its children: how many have not finished yet."""


@dataclass(slots=True, eq=False)
class Job:
    """A job as a handler sees it. ``attempt`` is 1-based."""

    id: str
    data: Any
    attempt: int
    max_attempts: int
    queue_name: str
    priority: Priority
    created_ms: int
    enqueued_ms: int
    backoff: Backoff = field(default_factory=Backoff)
    # where the entry lives, for the fenced transitions
    lane: int = 1
    entry_id: str = ""
    stalls: int = 0
    type_name: str | None = None
    """The payload's type tag as added (a tagged msgspec Struct's tag), or None."""
    wait_s: float = 0.0
    """Seconds from becoming waiting to the handler's start (wall clocks of Redis and worker)."""
    run_s: float = 0.0
    """Seconds the handler ran (set when it returns or raises)."""
    partition: int = 0
    """The queue partition holding the entry (its transitions go there)."""
    timeout: float | None = None
    """Seconds this attempt may run before it is cut: the job's own ``JobOptions.timeout``,
    else the worker's ``job_timeout``; None: no limit."""
    flow: FlowLink | None = None
    """Set for a job of a flow: its parent, and whether it has children (flows/link.py)."""
    runtime: JobRuntime | None = None
    """The worker running the job (progress, children's results); None outside a worker."""

    @property
    def created_at(self) -> datetime:
        return datetime.fromtimestamp(self.created_ms / 1000, UTC)

    async def progress(self, value: float | dict[str, Any]) -> None:
        """Report progress: a float in [0, 1] or a small dict (JSON, capped at
        ``QueueDefaults.max_progress_bytes``). Throttled to one Redis write per
        ``progress_interval_s``; a value that waits is written at the next interval or
        when the job ends, never dropped. Raises ``LeaseLost`` once another worker has
        taken the job over (this run's outcome will not count)."""
        if self.runtime is None:
            raise RuntimeError("Job.progress() works inside a worker's handler")
        await self.runtime.progress(self, value)

    async def children_results(self) -> dict[str, Any]:
        """A flow parent's children's outcomes, by child job id in the order they were
        given: each child's result, or for a failed or cancelled child (policy
        "continue") a ``ChildFailed`` with its error. Empty for a job without children."""
        if self.runtime is None:
            raise RuntimeError("Job.children_results() works inside a worker's handler")
        return await self.runtime.children_results(self)


class JobRuntime(Protocol):
    """What a running job asks of its worker (implemented in worker/runtime.py)."""

    async def progress(self, job: Job, value: Any) -> None: ...

    async def children_results(self, job: Job) -> dict[str, Any]: ...


def ms_to_dt(value: Any) -> datetime | None:
    try:
        ms = int(value)
    except (TypeError, ValueError):
        return None
    return datetime.fromtimestamp(ms / 1000, UTC) if ms > 0 else None
