"""Job progress: ``await job.progress(value)`` in a handler, ``JobInfo.progress`` outside.

A value is a float in [0, 1] or a small dict (JSON-encodable, at most
``QueueDefaults.max_progress_bytes`` once encoded). Writes are:

- **fenced**: ``lua/progress.lua`` writes only while this worker still owns the job's
  entry; once another worker has taken the job over, ``progress()`` raises ``LeaseLost``
  (a heartbeat that finds the claim gone marks the job too, so the next call raises at
  once, without a round trip);
- **throttled**: at most one Redis write per job per ``progress_interval_s``. A value
  reported sooner waits in memory; the board writes the newest waiting value when the
  interval has passed, and before the job's outcome is recorded, so the last value is
  never lost. A Redis error keeps the value waiting for the next interval;
- **per attempt**: the stored value is tagged with the attempt that reported it, and a
  later attempt does not show an earlier one's progress (a run taken over after a crash
  is the same attempt: it shows the crashed run's value until it reports its own).

Each write also appends a ``progress`` event (field ``p``: the value as JSON) to the
queue's events stream. The stored value expires ``completed_ttl_s`` (at least an
hour) after its last write.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import anyio
import msgspec
import structlog
from redis.exceptions import RedisError

from .errors import LeaseLost, PayloadError
from .job import Job
from .keys import GROUP

if TYPE_CHECKING:
    from .worker.core import Worker

log = structlog.get_logger("streamq.worker")

_JSON = msgspec.json.Encoder()
MIN_TTL_MS = 3600 * 1000
"""A stored progress value lives at least this long after its last write (also when
completed records are not kept, ``completed_ttl_s`` 0): long enough to see it while the
job runs."""
RETRY_S = 1.0
"""After a failed write, the next try waits at least this long (or the interval)."""


def encode_progress(value: Any, max_bytes: int) -> bytes:
    """A progress value as the JSON that is stored; PayloadError for anything else."""
    if isinstance(value, bool):
        raise PayloadError("progress must be a number from 0 to 1 or a dict, got a bool")
    if isinstance(value, int | float):
        number = float(value)
        if not 0.0 <= number <= 1.0:  # NaN fails both comparisons
            raise PayloadError(f"progress must be from 0 to 1, got {value!r}")
        return _JSON.encode(number)
    if not isinstance(value, dict):
        raise PayloadError(f"progress must be a number from 0 to 1 or a dict, got "
                           f"{type(value).__name__}")
    if not all(isinstance(k, str) for k in value):
        raise PayloadError("progress dict keys must be strings")
    try:
        raw = _JSON.encode(value)
    except (TypeError, ValueError, OverflowError) as exc:
        raise PayloadError(f"progress cannot be encoded as JSON: {exc}") from None
    if len(raw) > max_bytes:
        raise PayloadError(f"progress {len(raw)} B exceeds limit {max_bytes} B")
    return raw


def decode_progress(stored: bytes | None, attempt: int) -> Any:
    """The stored progress if ``attempt`` reported it, else None."""
    if not stored:
        return None
    tag, _, raw = stored.partition(b"|")
    if not tag.isdigit() or int(tag) != attempt:
        return None
    try:
        return msgspec.json.decode(raw)
    except msgspec.DecodeError:
        return None


@dataclass(eq=False)
class _Run:
    """One run's reporting state."""

    job: Job
    last_write: float = -math.inf
    pending: bytes | None = None
    lost: bool = False
    lock: anyio.Lock = field(default_factory=anyio.Lock)


class ProgressBoard:
    """The progress of a worker's running jobs: throttles and writes it (one per worker;
    its ``run`` loop writes values that waited for their interval)."""

    def __init__(self, worker: Worker, clock: Callable[[], float] = time.monotonic) -> None:
        self.worker = worker
        self.clock = clock
        self._runs: dict[int, _Run] = {}
        self._wake = anyio.Event()
        self.writes = 0
        """Progress writes sent to Redis (tests and metrics)."""

    @property
    def interval(self) -> float:
        return self.worker.queue.defaults.progress_interval_s

    def tracking(self) -> bool:
        """True while some running job has reported progress."""
        return bool(self._runs)

    async def report(self, job: Job, value: Any) -> None:
        """``Job.progress``: validate, then write now or keep it for the next interval."""
        q = self.worker.queue
        raw = encode_progress(value, q.defaults.max_progress_bytes)
        run = self._runs.get(id(job))
        if run is None:
            run = self._runs[id(job)] = _Run(job)
        if run.lost:
            raise LeaseLost(f"job {job.id} was taken over by another worker: its progress "
                            "and outcome from this run do not count")
        run.pending = raw
        if self.clock() - run.last_write >= self.interval and not run.lock.locked():
            await self._write(run)
            if run.lost:
                raise LeaseLost(f"job {job.id} was taken over by another worker: its "
                                "progress and outcome from this run do not count")
        else:
            self._wake.set()

    def mark_lost(self, job: Job) -> None:
        """A heartbeat found the job's claim gone: the next ``progress()`` raises."""
        run = self._runs.get(id(job))
        if run is not None:
            run.lost = True

    async def finish(self, job: Job) -> None:
        """Write the job's waiting value, if any, before its outcome is recorded."""
        run = self._runs.pop(id(job), None)
        if run is not None and run.pending is not None and not run.lost:
            await self._write(run)

    async def _write(self, run: _Run) -> None:
        async with run.lock:
            raw = run.pending
            if raw is None or run.lost:
                return
            run.pending = None
            run.last_write = self.clock()
            job = run.job
            w = self.worker
            q = w.queue
            k = q.layout.keys(job.partition)
            try:
                with anyio.CancelScope(shield=True):
                    r = await w.scripts(
                        "progress", [k.lanes[job.lane], k.progress(job.id), k.events],
                        [GROUP, w.consumer, job.entry_id, job.id, job.attempt, raw,
                         max(q.defaults.completed_ttl_ms, MIN_TTL_MS),
                         q.defaults.events_max, job.type_name or ""])
            except (RedisError, OSError) as exc:
                if run.pending is None:
                    run.pending = raw  # not written: tried again after the interval
                run.last_write = self.clock() + max(0.0, RETRY_S - self.interval)
                self._wake.set()
                log.warning("job.progress_not_written", queue=q.name, job_id=job.id,
                            error=" ".join(str(exc).split())[:200], retry_in=self.interval)
                return
            self.writes += 1
            if int(r) != 1:
                run.lost = True
                log.warning("job.lost_claim", queue=q.name, job_id=job.id,
                            attempt=job.attempt, transition="progress")

    async def run(self) -> None:
        """Write values that waited, each once its job's interval has passed."""
        while True:
            self._wake = anyio.Event()
            waiting = [r for r in self._runs.values() if r.pending is not None and not r.lost]
            if not waiting:
                await self._wake.wait()
                continue
            now = self.clock()
            due = [r for r in waiting if now - r.last_write >= self.interval]
            if not due:
                delay = min(r.last_write for r in waiting) + self.interval - now
                with anyio.move_on_after(max(0.001, delay)):
                    await self._wake.wait()
                continue
            for run in due:
                await self._write(run)


__all__ = ["ProgressBoard", "decode_progress", "encode_progress"]
