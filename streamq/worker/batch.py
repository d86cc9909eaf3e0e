"""Batch handlers: ``Worker(queue, handler, batch=BatchOptions(size=100, max_wait=0.05))``.

The handler gets ``list[Job]`` (at most ``size`` jobs, all of one priority level) and
returns ``None`` (every job succeeded) or a mapping ``job id -> outcome``: an exception
fails that job alone (``PermanentError`` dead-letters it, ``RetryAfter`` and ``Defer``
act as when raised by a handler of one job, any other exception is retried by the job's
own attempts and backoff); any other value is that job's stored result (a job the
mapping leaves out succeeded with no result). An exception raised by the handler itself
is the outcome of every job of the batch.

What stays as it is for jobs handled one by one (the worker's fetch loop, transitions
and upkeep are the same; only the runners differ):

* claimed entries stay in the consumer group's pending list while the batch is
  collected and runs: a worker that dies mid-batch leaves them to be taken over by
  another worker (nothing is held only in this process's memory);
* heartbeats keep every job of a running or filling batch (they are the worker's
  running jobs);
* every outcome is recorded per job, in the job's own partition, fenced by ownership;
* the rate limit counts jobs: the claim takes one token per job;
* a batch never mixes priority levels: a runner takes the most urgent level waiting,
  and stops filling when a more urgent job arrives. Jobs of several partitions may share
  a batch (each job's transitions still go to its own partition).

Runners: ``concurrency`` batches run at once, so up to ``concurrency * size`` jobs are
claimed. One runner fills at a time: it takes the waiting jobs of one level and waits up
to ``max_wait`` (from its first job) for more of that level, so a trickle of jobs makes
full batches rather than many small ones; a backlog fills a batch at once.

Shutdown: jobs of a batch that has not started are handed back at once (as unstarted
jobs are); a running batch gets the grace period; a batch cut at the grace deadline is
handed back whole, to run again elsewhere.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import anyio
import anyio.lowlevel
import structlog

from ..cancellation import cancelled_from_outside
from ..errors import ConfigError
from ..job import Job
from ..priority import rank_of_lane
from ..validate import int_value, seconds_value
from .attempt import HandlerCancelled, run_with_timeout

if TYPE_CHECKING:
    from .core import Worker

log = structlog.get_logger("streamq.worker")

BatchHandler = Callable[[list[Job]], Awaitable[Mapping[str, Any] | None]]
"""A handler of ``list[Job]``: returns None (all succeeded) or job id -> result or exception."""

MAX_BATCH = 10_000
"""The largest batch: a batch's jobs are claimed, kept alive by heartbeats and recorded
together, each a few hundred bytes in one call."""
CLAIM_JOBS = 500
"""Jobs one claim call takes at most in batch mode (a larger batch: one batch's worth).
A worker holds concurrency x size jobs; claiming them all in one Lua call would keep
Redis busy for tens of ms, claiming one batch at a time would cost a call per batch."""


@dataclass(frozen=True, slots=True)
class BatchOptions:
    """How a worker batches jobs for a batch handler: at most ``size`` jobs (1 to 10,000)
    per call, waiting at most ``max_wait`` seconds (0 to 60) for a batch to fill."""

    size: int = 100
    max_wait: float = 0.05

    def __post_init__(self) -> None:
        int_value("batch size", self.size, minimum=1)
        if self.size > MAX_BATCH:
            raise ConfigError(f"batch size must be at most {MAX_BATCH}, got {self.size}")
        seconds_value("batch max_wait", self.max_wait, maximum=60.0)


def check_batch(batch: object, visibility_timeout: float) -> BatchOptions | None:
    """A ``Worker``'s ``batch`` argument: None or BatchOptions whose filling wait fits
    well inside the visibility timeout."""
    if batch is None:
        return None
    if not isinstance(batch, BatchOptions):
        raise ConfigError(f"batch must be a BatchOptions, got {type(batch).__name__}")
    if batch.max_wait >= visibility_timeout / 2:
        raise ConfigError(f"batch max_wait ({batch.max_wait:g}s) must be below half the "
                          f"visibility_timeout ({visibility_timeout:g}s)")
    return batch


def claim_max(batch: BatchOptions | None, slots: int) -> int:
    """Jobs one claim call takes at most: every free slot (one job per handler call), or
    in batch mode up to CLAIM_JOBS, and at least one batch's worth."""
    if batch is None:
        return slots
    return max(batch.size, min(slots, CLAIM_JOBS))


def _describe(value: object) -> str:
    return type(value).__name__


class BatchRunner:
    """The runner tasks of a worker with a batch handler (``run`` once per concurrency)."""

    def __init__(self, worker: Worker, handler: BatchHandler, options: BatchOptions) -> None:
        self.w = worker
        self.handler = handler
        self.options = options
        self._filling = anyio.Lock()
        """Held by the one runner that is collecting a batch."""

    async def run(self) -> None:
        w = self.w
        while not w._stopping:
            async with self._filling:
                batch = await self._collect()
            if batch:
                await self._run(batch)
                # a handler that never suspends would otherwise starve the other loops
                await anyio.lowlevel.checkpoint()

    # -- collecting --------------------------------------------------------------------------
    async def _collect(self) -> list[Job]:
        """Wait for jobs, take those of the most urgent level waiting (up to size), and
        wait up to max_wait for more of that level. Empty when the worker stops."""
        w = self.w
        ready = w._ready
        while not ready:
            if w._stopping:
                return []
            await w._ready_event.wait()
        size = self.options.size
        lane = min((job.lane for job in ready), key=rank_of_lane)
        batch: list[Job] = []
        started = False
        try:
            self._take(lane, batch, size)
            deadline = anyio.current_time() + self.options.max_wait
            while len(batch) < size and not w._stopping:
                left = deadline - anyio.current_time()
                if left <= 0 or self._more_urgent_waiting(lane):
                    break
                with anyio.move_on_after(left):
                    await w._ready_event.wait()
                self._take(lane, batch, size)
            started = not w._stopping
        finally:
            if not started:
                # stopping (or cancelled) before the batch ran: its jobs are unstarted and
                # go back for the worker to hand back
                for job in reversed(batch):
                    del w._running[id(job)]
                    ready.appendleft(job)
                w._slot_freed.set()
                batch = []
        return batch

    def _take(self, lane: int, batch: list[Job], size: int) -> None:
        """Move waiting jobs of ``lane`` from the worker's ready queue into ``batch``."""
        w = self.w
        ready = w._ready
        if not ready or len(batch) >= size:
            return
        kept: deque[Job] = deque()
        while ready:
            job = ready.popleft()
            if job.lane == lane and len(batch) < size:
                batch.append(job)
                w._running[id(job)] = job  # heartbeats keep it from now on
            else:
                kept.append(job)
        ready.extend(kept)

    def _more_urgent_waiting(self, lane: int) -> bool:
        rank = rank_of_lane(lane)
        return any(rank_of_lane(job.lane) < rank for job in self.w._ready)

    # -- running -----------------------------------------------------------------------------
    async def _run(self, batch: list[Job]) -> None:
        """Run one batch. A job leaves the worker's running set once its outcome is
        recorded; the ones still in it when the worker cuts the batch are handed back."""
        w = self.w
        try:
            runnable: list[Job] = []
            for job in batch:
                if await w.prepare(job):
                    runnable.append(job)
                else:
                    w.free_slot(job)  # dead-lettered before the handler (its payload)
            if runnable:
                await self._call(runnable)
        except anyio.get_cancelled_exc_class():
            w._interrupted.extend(j for j in batch if id(j) in w._running)
            raise
        except Exception as exc:
            # our own bookkeeping failed (not the handler): the entries stay pending and
            # are taken over after the visibility timeout
            log.error("worker.internal_error", queue=w.queue.name, jobs=len(batch),
                      error=" ".join(str(exc).split())[:200])
        finally:
            for job in batch:
                if id(job) in w._running:
                    w.free_slot(job)

    async def _call(self, jobs: list[Job]) -> None:
        w = self.w
        timeouts = [j.timeout for j in jobs if j.timeout is not None]
        timeout = min(timeouts) if timeouts else None
        if timeout is not None:
            # heartbeats stop at the cut (for the jobs whose timeout it is: free_slot
            # forgets those; the others' outcomes are recorded right after the cut)
            cut = anyio.current_time() + timeout
            for job in jobs:
                if job.timeout is not None:
                    w._cut_at[id(job)] = cut
        board = w.runtime.board
        t0 = time.perf_counter()
        outcome: Any
        try:
            try:
                if timeout is None:
                    outcome = await self.handler(jobs)
                else:
                    outcome = await run_with_timeout(self.handler, jobs, timeout)
            finally:
                if board.tracking():  # last progress values go out before the outcomes
                    with anyio.CancelScope(shield=True):
                        for job in jobs:
                            await board.finish(job)
        except anyio.get_cancelled_exc_class():
            if cancelled_from_outside():
                raise  # the worker's own cut: the batch is handed back
            outcome = HandlerCancelled()
        except Exception as exc:
            outcome = exc
        run_s = time.perf_counter() - t0
        for job in jobs:
            job.run_s = run_s
        await self._settle(jobs, outcome)

    async def _settle(self, jobs: list[Job], outcome: Any) -> None:
        """Record each job's outcome: the handler's exception for all, or each one's own."""
        w = self.w
        if outcome is None:
            for job in jobs:
                w.succeeded(job, None)
                w.free_slot(job)
            return
        if not isinstance(outcome, Exception | Mapping):
            outcome = TypeError(f"the batch handler returned a {_describe(outcome)}: return "
                                "None or a dict of job id -> result or exception")
        if isinstance(outcome, Exception):
            for job in jobs:
                await w.attempt_failed(job, outcome)
                w.free_slot(job)
            return
        ids = set()
        for job in jobs:
            ids.add(job.id)
            value = outcome.get(job.id)
            if isinstance(value, Exception):
                await w.attempt_failed(job, value)
            else:
                w.succeeded(job, value)
            w.free_slot(job)
        unknown = [k for k in outcome if k not in ids]
        if unknown:
            log.warning("batch.unknown_job_ids", queue=w.queue.name, count=len(unknown),
                        note="the batch handler's result names jobs not in its batch; ignored")


__all__ = ["CLAIM_JOBS", "MAX_BATCH", "BatchHandler", "BatchOptions", "BatchRunner",
           "check_batch", "claim_max"]
