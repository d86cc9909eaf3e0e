"""The consumer side: ``Worker`` runs a handler over a queue's jobs.

Shape (after saq): ``concurrency`` long-lived runner tasks fed by one fetch loop, plus
named upkeep loops (flush, heartbeat, reclaim), all in one anyio task group; an
event-driven stop. The fetch loop claims only as many jobs as there are free slots, in
one Lua call that also promotes due jobs and takes rate-limit tokens; when nothing is
waiting it blocks in XREAD (bounded, below the socket timeout) until a lane or the
control stream moves, or the next delayed job falls due.

Finished jobs are acknowledged in batches by the flush loop (one fenced ``complete``
call for all jobs finished since the last one). Running entries are kept claimed by
heartbeats; entries of dead workers are put back by the reclaim sweep.

On a partitioned queue the fetch loop of ``partitioned.py`` claims from every partition
in turn, and every per-job transition, heartbeat, flush and sweep goes to the job's own
partition (``Job.partition``), one call per partition.
"""

from __future__ import annotations

import math
import os
import secrets
import socket
import time
from collections import deque
from collections.abc import Awaitable, Callable
from functools import lru_cache
from typing import Any, cast

import anyio
import anyio.lowlevel
import structlog
from anyio.abc import TaskGroup
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError, ResponseError

from ..cancellation import cancelled_from_outside
from ..cluster import Client
from ..connection import translate_redis_errors
from ..errors import Defer, PayloadError, PermanentError, RetryAfter, StreamqError
from ..events import Callback, EventName, Hooks, WorkerEvent
from ..flows.link import parse_spec
from ..job import Job
from ..keys import GROUP, QueueKeys
from ..priority import PRIORITY_OF_LANE as _SHOWN
from ..queue import Queue
from ..redact import redact_text, redact_url
from ..results import result_tail
from ..schedules.runner import ScheduleRunner
from ..scripts import ScriptRunner
from ..settings import MAX_BLOCK_MS, make_client
from .attempt import AttemptFailed, AttemptTimedOut, HandlerCancelled, run_with_timeout
from .batch import BatchHandler, BatchOptions, BatchRunner, check_batch, claim_max
from .hold import FetchHold
from .options import check_worker_options
from .partitioned import PartitionedFetch, idle_streams
from .runtime import WorkerRuntime

Handler = Callable[[Job], Awaitable[Any]]
"""A handler of one job: its return value is the job's stored result."""

log = structlog.get_logger("streamq.worker")

MAX_ERROR_CHARS = 500
FLUSH_BATCH = 500


def _one_line(exc: BaseException) -> str:
    text = str(exc).replace("\r", " ").replace("\n", " ").strip()
    name = type(exc).__name__
    msg = f"{name}: {text}" if text and not isinstance(
        exc, PermanentError | PayloadError | AttemptFailed) else (text or name)
    if isinstance(exc, PayloadError):
        return msg[:MAX_ERROR_CHARS]  # our own words (sizes, decode errors): no personal data
    return redact_text(msg)[:MAX_ERROR_CHARS]


@lru_cache(maxsize=64)
def _type_name(raw: bytes) -> str | None:
    return raw.decode("utf-8", "replace") or None


def _text(v: Any) -> str:
    return v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v)


class Worker:
    """Process a queue's jobs with ``handler``; ``await run()`` until ``await close()``.

    With ``batch=BatchOptions(...)`` the handler is a batch handler: it gets ``list[Job]``
    and ``concurrency`` counts batches (see worker/batch.py)."""

    def __init__(
        self,
        queue: Queue,
        handler: Handler | BatchHandler,
        *,
        concurrency: int = 5,
        rate_limit: float | None = 10.0,
        burst: float | None = None,
        visibility_timeout: float = 30.0,
        heartbeat_interval: float | None = None,
        reclaim_interval: float | None = None,
        max_stalled: int = 3,
        shutdown_grace: float = 30.0,
        max_retry_delay: float = 3600.0,
        consumer_prune_after: float = 3600.0,
        name: str | None = None,
        job_timeout: float | None = None,
        fire_schedules: bool = True,
        batch: BatchOptions | None = None,
    ) -> None:
        check_worker_options(
            concurrency=concurrency, rate_limit=rate_limit, burst=burst,
            visibility_timeout=visibility_timeout, heartbeat_interval=heartbeat_interval,
            reclaim_interval=reclaim_interval, max_stalled=max_stalled,
            shutdown_grace=shutdown_grace, max_retry_delay=max_retry_delay,
            consumer_prune_after=consumer_prune_after, name=name, job_timeout=job_timeout)
        self.batch = check_batch(batch, visibility_timeout)
        """Batch mode (worker/batch.py), or None: the handler takes one job."""
        self.queue = queue
        self.handler: Handler = cast(Handler, handler)
        """The handler; a ``BatchHandler`` when ``batch`` is set (batch.py calls it)."""
        self.concurrency = concurrency
        self.slots = concurrency * (self.batch.size if self.batch else 1)
        """Jobs this worker may hold claimed at once: concurrency, times the batch size."""
        self.claim_max = claim_max(self.batch, self.slots)
        """Jobs one claim call takes at most."""
        self.rate_limit = rate_limit
        self.burst = burst if burst is not None else max(1.0, rate_limit or 0.0)
        self.visibility_timeout = visibility_timeout
        self.heartbeat_interval = heartbeat_interval or visibility_timeout / 3
        self.reclaim_interval = reclaim_interval or max(0.2, min(visibility_timeout / 2, 10.0))
        self.max_stalled = max_stalled
        self.shutdown_grace = shutdown_grace
        self.max_retry_delay = max_retry_delay
        self.consumer_prune_after = consumer_prune_after
        self.job_timeout = None if job_timeout is None else float(job_timeout)
        """Seconds an attempt of a job without its own ``JobOptions.timeout`` may run."""
        self.consumer = name or f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(3)}"
        self.hooks = Hooks()
        self.fetch_hold = FetchHold(queue.name)
        """Set by a handler's ``Defer(hold=True)``: fetching pauses, then probes (see hold.py)."""
        self.schedules = ScheduleRunner(self) if fire_schedules else None
        """Fires the queue's due schedules (streamq/schedules/runner.py); None when off."""

        self._redis: Client | None = None
        self._scripts: ScriptRunner | None = None
        self._cut_now = anyio.Event()
        self._free = self.slots
        self._slot_freed = anyio.Event()
        self._ready: deque[Job] = deque()
        self._ready_event = anyio.Event()
        # keyed by the Job object: entry ids repeat across the lanes
        self._running: dict[int, Job] = {}
        # running jobs with a timeout: when (anyio clock) they are cut; heartbeats stop then
        self._cut_at: dict[int, float] = {}
        self._done: list[tuple[Job, Any]] = []
        self._done_event = anyio.Event()
        self._unacked: dict[int, Job] = {}
        self._interrupted: list[Job] = []
        self._stopping = False
        self._stop_event = anyio.Event()
        self._finished = anyio.Event()
        self._started = False
        self.runtime = WorkerRuntime(self)
        """Progress (``Job.progress``) and flows (``add_flow``'s jobs) of running jobs."""
        self._saw_flows = False
        self._grace_override: float | None = None
        self.healthy = False
        self.last_loop_at = time.monotonic()
        self.processed = 0
        self.rate_limited_waits = 0
        """Times the fetch loop waited for a rate-limit token (metrics)."""
        self.rate_limited_s = 0.0
        self.start_info: dict[str, Any] = {}
        """Extra fields for the ``worker.started`` log line (the CLI adds the provider)."""
        self.paused_log_interval = 60.0
        """Seconds between the reminders that the queue is paused (the first comes at once)."""
        self._paused_since: float | None = None
        self._paused_noted_at = 0.0

    # -- connection --------------------------------------------------------------------
    @property
    def redis(self) -> Client:
        """The client in use: while running, the worker's own one, without automatic
        retries (the loops retry and say so, and a half-open link is reported after one
        socket timeout, not three); otherwise, and for a queue built on a client the
        caller passed in, the queue's."""
        return self._redis or self.queue.redis

    @property
    def scripts(self) -> ScriptRunner:
        return self._scripts or self.queue.scripts

    # -- public control ------------------------------------------------------------------
    def on(self, event: EventName, callback: Callback) -> None:
        """Register a hook for active, completed, failed, retrying, dead, stalled or deferred."""
        self.hooks.on(event, callback)

    def stop(self, *, immediate: bool = False) -> None:
        """Ask the worker to stop (safe from a signal handler on the loop). ``immediate``
        cuts running jobs now instead of waiting for the grace period; they are handed back."""
        if immediate:
            self._grace_override = 0.0
            self._cut_now.set()
        self._stopping = True
        self._stop_event.set()

    async def close(self) -> None:
        """Stop gracefully and wait until ``run()`` has returned."""
        self.stop()
        if self._started:
            await self._finished.wait()

    @property
    def in_flight(self) -> int:
        return self.slots - self._free

    # -- the main loop ---------------------------------------------------------------------
    async def run(self) -> None:
        if self._started:
            raise RuntimeError("a Worker runs once; create a new one")
        self._started = True
        try:
            await self.queue.connect()
            await self.queue.ensure_groups()
            if self.queue.owns_client:
                with translate_redis_errors(self.queue.redis_url):
                    # a cluster client when the queue found the URL to name a cluster node
                    self._redis = make_client(self.queue.redis_url, self.queue.is_cluster,
                                              retry=Retry(NoBackoff(), 0))
                    self._scripts = ScriptRunner(self._redis)
                    await self._scripts.load_all()
            self.healthy = True
            where = {"redis": redact_url(self.queue.redis_url)} if self.queue.owns_client else {}
            log.info("worker.started", queue=self.queue.name, consumer=self.consumer, **where,
                     concurrency=self.concurrency, rate_limit=self.rate_limit,
                     paused=await self.queue.is_paused(), **self.start_info)
            async with anyio.create_task_group() as upkeep:
                upkeep.start_soon(self._flush_loop)
                upkeep.start_soon(self._heartbeat_loop)
                upkeep.start_soon(self._reclaim_loop)
                if self.schedules is not None:
                    upkeep.start_soon(self.schedules.run)
                upkeep.start_soon(self.runtime.board.run)
                async with anyio.create_task_group() as runners:
                    runner = self._runner
                    if self.batch is not None:
                        runner = BatchRunner(self, cast(BatchHandler, self.handler),
                                             self.batch).run
                    for _ in range(self.concurrency):
                        runners.start_soon(runner)
                    async with anyio.create_task_group() as fetch:
                        fetch.start_soon(self._fetch_loop)
                        await self._stop_event.wait()
                        fetch.cancel_scope.cancel()
                    await self._shutdown(runners)
                await self._release(self._take_unstarted() + self._interrupted, "shutdown")
                await self._flush_now()
                upkeep.cancel_scope.cancel()
            if not self._stopping:
                # every way out of the loops above starts with stop(); getting here without
                # it means a task group absorbed a stray CancelledError of its own tasks
                raise RuntimeError(
                    f"worker of queue {self.queue.name!r} stopped unexpectedly: a task "
                    "ended with a CancelledError no one asked for; unfinished jobs are "
                    "taken over by other workers after the visibility timeout")
        finally:
            self.healthy = False
            if self._redis is not None:
                with anyio.CancelScope(shield=True):
                    await self._redis.aclose()
                self._redis = None
                self._scripts = None
            self._finished.set()
            log.info("worker.stopped", queue=self.queue.name, consumer=self.consumer,
                     processed=self.processed)

    async def _shutdown(self, runners: TaskGroup) -> None:
        """Stop fetching (done), hand back unstarted jobs at once, let running jobs finish
        within the grace period, then cut the rest (handed back too)."""
        self._wake_runners()  # idle runners see _stopping and leave
        await self._release(self._take_unstarted(), "unstarted")
        grace = self.shutdown_grace if self._grace_override is None else self._grace_override
        if not self._cut_now.is_set():
            note = {"note": "running jobs get the grace period to finish; stop(immediate=True) "
                    "or a second signal cuts them now (handed back)"} if self._running else {}
            log.info("worker.stopping", queue=self.queue.name, waiting_for=len(self._running),
                     grace_s=grace, **note)
        with anyio.move_on_after(grace):
            while self._running and not self._cut_now.is_set():
                self._slot_freed = anyio.Event()
                async with anyio.create_task_group() as either:
                    # a second signal (stop(immediate=True)) cuts the grace period short
                    async def cut(scope: anyio.CancelScope = either.cancel_scope) -> None:
                        await self._cut_now.wait()
                        scope.cancel()

                    either.start_soon(cut)
                    await self._slot_freed.wait()
                    either.cancel_scope.cancel()
        if self._running and self._cut_now.is_set():
            log.warning("worker.forced_stop", queue=self.queue.name, cut=len(self._running),
                        note="cut jobs are handed back and run again")
        elif self._running:
            log.warning("worker.grace_expired", queue=self.queue.name, cut=len(self._running),
                        grace_s=grace, note="cut jobs are handed back and run again")
        runners.cancel_scope.cancel()

    def _take_unstarted(self) -> list[Job]:
        jobs = list(self._ready)
        self._ready.clear()
        self._free += len(jobs)
        return jobs

    def _wake_runners(self) -> None:
        self._ready_event.set()
        self._ready_event = anyio.Event()

    def _keys(self, partition: int) -> QueueKeys:
        return self.queue.layout.keys(partition)

    def _by_partition(self, jobs: list[Job]) -> dict[int, list[Job]]:
        groups: dict[int, list[Job]] = {}
        for job in jobs:
            groups.setdefault(job.partition, []).append(job)
        return groups

    async def _fetch_loop(self) -> None:
        # the queue's partition count may grow while we run (re-read by the reclaim loop)
        while not self._stopping:
            if self.queue.layout.count == 1:
                await self._fetch_single()
            else:
                await PartitionedFetch(self).run()

    async def _fetch_single(self) -> None:
        """The fetch loop of a one-partition queue: one claim call takes tokens, due jobs
        and waiting jobs at once."""
        q = self.queue
        keys = self.claim_keys()
        error_backoff = 0.05
        while not self._stopping and q.layout.count == 1:
            self.last_loop_at = time.monotonic()
            if self._free <= 0:
                self._slot_freed = anyio.Event()
                if self._free <= 0:
                    await self._slot_freed.wait()
                continue
            count = min(self._free, self.claim_max)
            hold_limit = self.fetch_hold.limit()
            if hold_limit is not None:
                if hold_limit <= 0:
                    await self.fetch_hold.wait(MAX_BLOCK_MS / 1000)
                    continue
                count = min(count, hold_limit)
            try:
                with anyio.CancelScope(shield=True):
                    # shielded: a claim cut off mid-reply would strand entries in our PEL
                    reply = await self.scripts("claim", keys, self.claim_args(count))
                status = int(reply[0])
                if self._paused_since is not None and status != -1:
                    self._note_resumed()
                if status == 1:
                    taken_over = self._accept(reply[1])
                    if hold_limit is not None:  # probing: the one job claimed is the probe
                        self.fetch_hold.claimed(self._ready[-1] if reply[1] else None)
                    self._wake_runners()
                    if taken_over:
                        await self._stalled(taken_over)
                    if reply[2]:
                        await self._dead_stalled(reply[2])
                elif status == 0:
                    if hold_limit is not None:
                        self.fetch_hold.claimed(None)
                    await self._idle_wait(reply)
                elif status == -1:
                    self._note_paused()
                    await self._paused_wait(int(reply[1]))
                else:
                    wait = int(reply[1]) / 1000
                    self.rate_limited_waits += 1
                    self.rate_limited_s += wait
                    await anyio.sleep(wait)
                error_backoff = 0.05
                self.healthy = True
            except ResponseError as exc:
                if "NOGROUP" in str(exc):
                    log.error("consumer group missing, Redis lost data; recreating it",
                              queue=q.name)
                    await q.ensure_groups()
                    await anyio.sleep(error_backoff)
                else:
                    log.error("worker.fetch_failed", queue=q.name, error=str(exc))
                    await anyio.sleep(error_backoff)
                error_backoff = min(error_backoff * 2, 5.0)
            except (RedisError, OSError, StreamqError) as exc:
                self.healthy = False
                log.error("redis.unreachable", queue=q.name, error=redact_text(str(exc)),
                          retry_in=round(error_backoff, 2))
                await anyio.sleep(error_backoff)
                error_backoff = min(error_backoff * 2, 5.0)

    def claim_keys(self, partition: int = 0) -> list[str]:
        k = self._keys(partition)
        return [*k.lane_keys, k.events, k.delayed, k.delayed_data, k.paused, k.limiter, k.control,
                k.moves, k.reclaim_lock]

    def claim_args(self, count: int, *, limited: bool = True) -> list[Any]:
        """``limited``: the claim takes the rate limit's tokens itself (one partition); a
        partitioned queue's worker takes them from the home bucket before claiming."""
        d = self.queue.defaults
        rate = (self.rate_limit or 0) if limited else 0
        return [GROUP, self.consumer, count, rate, self.burst, 100, d.events_max,
                round(self.visibility_timeout * 1000), self.max_stalled,
                max(1, round(self.reclaim_interval * 1000)), d.max_payload_bytes]

    async def claim_now(self, count: int, partition: int = 0) -> list[Job]:
        """Claim up to ``count`` jobs of one partition for this worker's consumer without
        running them (operators and tests: e.g. to play a worker that then dies). Entries
        of dead workers are taken over first; ones that stalled too often are
        dead-lettered. On a one-partition queue the claim takes rate-limit tokens as usual;
        on a partitioned one no rate limit applies."""
        reply = await self.scripts("claim", self.claim_keys(partition),
                                   self.claim_args(count,
                                                   limited=self.queue.layout.count == 1))
        if int(reply[0]) != 1:
            return []
        await self._stalled(self._accept(reply[1], partition))
        await self._dead_stalled(reply[2], partition)
        return self._take_unstarted()

    def _accept(self, claimed: list[Any], partition: int = 0) -> list[Job]:
        """Turn claimed entries (lane, id, fields, deliveries before, oversize) into jobs;
        return the ones taken over from a dead or silent worker."""
        qname = self.queue.name
        ready = self._ready
        job_timeout = self.job_timeout
        taken_over: list[Job] = []
        for i in range(0, len(claimed), 5):
            lane = int(claimed[i])
            entry_id = claimed[i + 1].decode()
            raw = claimed[i + 2]
            stalls = int(claimed[i + 3])
            oversize = int(claimed[i + 4])
            try:
                if len(raw) >= 6 and raw[0] == b"j" and raw[2] == b"d" and raw[4] == b"m":
                    # the order every transition writes: j, d, m 'a|n|s|t|b|y' [, e]
                    job_id, data = raw[1], raw[3]
                    a, n, st, t, b, y = raw[5].split(b"|", 5)
                else:
                    f = dict(zip(raw[::2], raw[1::2], strict=False))
                    job_id, data = f[b"j"], f[b"d"]
                    if b"m" in f:
                        a, n, st, t, b, y = f[b"m"].split(b"|", 5)
                    else:  # written by hand with separate fields
                        a, n, st, t, b = f[b"a"], f[b"n"], f[b"s"], f[b"t"], f[b"b"]
                        y = f.get(b"y", b"")
                enqueued = int(entry_id.partition("-")[0])
                backoff, timeout, link = parse_spec(b)
                job = Job(job_id.decode(), data, int(n) + 1, int(a), qname,
                          _SHOWN[lane],
                          enqueued - int(t), enqueued, backoff, lane, entry_id,
                          max(stalls, int(st)), _type_name(y), 0.0, 0.0, partition,
                          job_timeout if timeout is None else timeout)  # all positional: faster
                if link is not None:  # a job of a flow (flows/link.py)
                    job.flow = link
                    self._saw_flows = True
            except (KeyError, ValueError, IndexError, UnicodeDecodeError):
                f = dict(zip(raw[::2], raw[1::2], strict=False))
                job = Job(id=_text(f.get(b"j", b"")) or "?malformed", data=_MalformedEntry(),
                          attempt=1, max_attempts=1, queue_name=qname,
                          priority=_SHOWN[lane],
                          created_ms=0, enqueued_ms=0, lane=lane, entry_id=entry_id,
                          stalls=stalls)
            if oversize:
                job.data = _Oversize(oversize)
            if partition:
                job.partition = partition  # (a malformed entry's Job was built without it)
            if stalls:
                taken_over.append(job)
            self._free -= 1
            ready.append(job)
        return taken_over

    async def _stalled(self, jobs: list[Job]) -> None:
        for job in jobs:
            log.warning("job.stalled", queue=self.queue.name, job_id=job.id, stalls=job.stalls)
            await self.hooks.emit(self._event("stalled", job))

    async def _dead_stalled(self, to_dead: list[Any], partition: int = 0) -> None:
        """Dead-letter entries whose workers died max_stalled times (claimed to us for it)."""
        q = self.queue
        for i in range(0, len(to_dead), 4):
            lane, entry_id, stalls = int(to_dead[i]), _text(to_dead[i + 1]), int(to_dead[i + 3])
            job_id = _text(to_dead[i + 2]) or "?malformed"
            job = Job(id=job_id, data=None, attempt=0, max_attempts=0, queue_name=q.name,
                      priority=_SHOWN[lane],
                      created_ms=0, enqueued_ms=0, lane=lane, entry_id=entry_id, stalls=stalls,
                      partition=partition)
            log.warning("job.stalled", queue=q.name, job_id=job_id, stalls=stalls, final=True)
            await self.hooks.emit(WorkerEvent("stalled", q.name, job_id, stalls=stalls))
            await self._dead(job, f"stalled {stalls} times", attempts_made=0)

    async def _idle_wait(self, reply: list[Any]) -> None:
        next_due = int(reply[1])
        if int(reply[2]) > 0:
            # entries are held elsewhere: look again for dead holders once the lock allows
            reclaim_ms = max(1, round(self.reclaim_interval * 1000))
            next_due = reclaim_ms if next_due < 0 else min(next_due, reclaim_ms)
        block = MAX_BLOCK_MS if next_due < 0 else max(1, min(MAX_BLOCK_MS, next_due))
        streams = idle_streams(self.queue.keys, reply)
        if next_due < 0 or next_due >= MAX_BLOCK_MS:
            await self.redis.xread(streams, count=1, block=block)  # type: ignore[arg-type]
            return
        # Redis checks blocked clients' timeouts on its cron (hz 10: up to 100 ms late), so
        # a due time is kept by our own clock; the XREAD still wakes us early on new work.
        with anyio.move_on_after(next_due / 1000 + 0.001):
            await self.redis.xread(streams, count=1, block=block + 50)  # type: ignore[arg-type]

    def _note_paused(self) -> None:
        """Say that the queue is paused: at once, then every ``paused_log_interval``."""
        now = time.monotonic()
        if self._paused_since is None:
            self._paused_since = now
        elif now - self._paused_noted_at < self.paused_log_interval:
            return
        self._paused_noted_at = now
        name = self.queue.name
        log.warning("queue.paused", queue=name, paused_for_s=round(now - self._paused_since),
                    note=f"this worker takes no jobs until: python -m streamq resume --queue {name}")

    def _note_resumed(self) -> None:
        paused_for = time.monotonic() - (self._paused_since or 0.0)
        self._paused_since = None
        log.info("queue.resumed", queue=self.queue.name, paused_for_s=round(paused_for, 1))

    async def _paused_wait(self, next_due: int) -> None:
        # a paused queue wakes on resume (control stream) or re-checks every 2 s
        await self.redis.xread({self.queue.keys.control: "$"}, count=1, block=MAX_BLOCK_MS)

    # -- running jobs ------------------------------------------------------------------------
    async def _runner(self) -> None:
        cancelled = anyio.get_cancelled_exc_class()
        ready = self._ready
        streak = 0
        while True:
            if self._stopping:
                return
            if not ready:
                streak = 0
                await self._ready_event.wait()
                continue
            job = ready.popleft()
            self._running[id(job)] = job
            try:
                await self._process(job)
            except cancelled:
                self._interrupted.append(job)
                raise
            except Exception as exc:
                # our own bookkeeping failed (not the handler): the entry stays pending
                # and is reclaimed after the visibility timeout; the runner goes on
                log.error("worker.internal_error", queue=self.queue.name, job_id=job.id,
                          error=_one_line(exc))
            finally:
                self.free_slot(job)
            streak += 1
            if streak >= 64:
                # handlers that never suspend would otherwise starve the fetch and flush loops
                streak = 0
                await anyio.lowlevel.checkpoint()

    def free_slot(self, job: Job) -> None:
        """A job left its runner (any outcome, or handed back): its slot is free."""
        del self._running[id(job)]
        if job.timeout is not None:
            self._cut_at.pop(id(job), None)
        self._free += 1
        self._slot_freed.set()
        self.fetch_hold.finished(job)

    def unpack(self, job: Job) -> str | None:
        """Before a job's handler runs: decode its payload and give it the runtime. Returns
        why it must be dead-lettered instead (a malformed entry, an oversize or undecodable
        payload), else None. (Synchronous: the hot path pays no coroutine for it.)"""
        if isinstance(job.data, _MalformedEntry):
            return "malformed stream entry"
        if isinstance(job.data, _Oversize):
            return f"payload {job.data.size} B exceeds limit {self.queue.codec.max_bytes} B"
        try:
            job.data = self.queue.codec.decode(job.data, job.id)
        except PayloadError as exc:
            return _one_line(exc)
        job.wait_s = max(0.0, time.time() - job.enqueued_ms / 1000)
        job.runtime = self.runtime
        return None

    async def prepare(self, job: Job) -> bool:
        """``unpack``, then dead-letter the job (False) or emit 'active' (True)."""
        reason = self.unpack(job)
        if reason is not None:
            await self._dead(job, reason)
            return False
        if self.hooks.wants("active"):
            await self.hooks.emit(self._event("active", job))
        return True

    def succeeded(self, job: Job, result: Any) -> None:
        """An attempt succeeded: recorded with the next flush (its result stored)."""
        self.processed += 1
        self._unacked[id(job)] = job
        self._done.append((job, result))
        self._done_event.set()

    async def attempt_failed(self, job: Job, exc: BaseException) -> None:
        """An attempt ended with ``exc``, settled by its kind: ``PermanentError`` dead-letters,
        ``RetryAfter`` retries after its delay, ``Defer`` puts the job back without using an
        attempt, anything else retries with the job's backoff while attempts remain."""
        if isinstance(exc, AttemptTimedOut):
            log.warning("job.timed_out", queue=self.queue.name, job_id=job.id,
                        attempt=job.attempt, timeout=exc.timeout)
            await self._failed(job, exc, retry=True)
        elif isinstance(exc, PermanentError):
            await self._failed(job, exc, retry=False)
        elif isinstance(exc, RetryAfter):
            await self._failed(job, exc, retry=True, delay=exc.delay)
        elif isinstance(exc, Defer):
            await self._deferred(job, exc)
        else:
            await self._failed(job, exc, retry=True)

    async def _process(self, job: Job) -> None:
        reason = self.unpack(job)
        if reason is not None:
            await self._dead(job, reason)
            return
        if self.hooks.wants("active"):
            await self.hooks.emit(self._event("active", job))
        if job.timeout is not None:
            self._cut_at[id(job)] = anyio.current_time() + job.timeout
        t0 = time.perf_counter()
        board = self.runtime.board
        try:
            try:
                if job.timeout is None:
                    result = await self.handler(job)
                else:
                    result = await run_with_timeout(self.handler, job, job.timeout)
            finally:
                if board.tracking():  # the last progress value goes out before the outcome
                    with anyio.CancelScope(shield=True):
                        await board.finish(job)
        except anyio.get_cancelled_exc_class():
            if cancelled_from_outside():
                raise  # the worker's own cut (shutdown): the attempt is handed back
            # the handler raised it although nobody cancelled it: a failed attempt, or one
            # poison job would stop every worker that takes it
            job.run_s = time.perf_counter() - t0
            await self._failed(job, HandlerCancelled(), retry=True)
        except Exception as exc:
            job.run_s = time.perf_counter() - t0
            await self.attempt_failed(job, exc)
        else:
            job.run_s = time.perf_counter() - t0
            self.succeeded(job, result)

    async def _failed(
        self, job: Job, exc: BaseException, *, retry: bool, delay: float | None = None
    ) -> None:
        error = self.queue.codec.redact_error(_one_line(exc), job.data)
        self.processed += 1
        await self.hooks.emit(self._event("failed", job, error=error))
        if not retry or job.attempt >= job.max_attempts:
            await self._dead(job, error, attempt_failed=True)
            return
        if delay is None:
            delay = job.backoff.delay(job.attempt)
        delay = min(delay, self.max_retry_delay)
        k = self._keys(job.partition)
        r = await self._call_retrying(
            "retry",
            [*k.lane_keys, k.events, k.delayed, k.delayed_data, k.control, k.moves, k.bucket(job.id)],
            [GROUP, self.consumer, job.lane, job.entry_id, job.id, math.ceil(delay * 1000), error,
             self.queue.defaults.events_max],
        )
        if r is None or int(r) <= 0:
            log.warning("job.lost_claim", queue=self.queue.name, job_id=job.id,
                        attempt=job.attempt, transition="retry")
            return
        log.info("job.retry_scheduled", queue=self.queue.name, job_id=job.id,
                 attempt=job.attempt, delay=round(delay, 3), error=error)
        await self.hooks.emit(self._event("retrying", job, error=error, delay=delay))

    async def _deferred(self, job: Job, exc: Defer) -> None:
        """``Defer``: back to the delayed set without using an attempt (lua/defer.lua);
        with ``hold``, this worker also pauses its fetching (hold.py)."""
        reason = self.queue.codec.redact_error(
            redact_text(" ".join(str(exc).split()))[:MAX_ERROR_CHARS], job.data)
        delay = min(exc.delay, self.max_retry_delay)
        if exc.hold:
            self.fetch_hold.hold(job, delay, reason)
        k = self._keys(job.partition)
        r = await self._call_retrying(
            "defer",
            [*k.lane_keys, k.events, k.delayed, k.delayed_data, k.control, k.moves, k.bucket(job.id)],
            [GROUP, self.consumer, job.lane, job.entry_id, job.id, math.ceil(delay * 1000), reason,
             self.queue.defaults.events_max],
        )
        if r is None or int(r) <= 0:
            log.warning("job.lost_claim", queue=self.queue.name, job_id=job.id,
                        attempt=job.attempt, transition="defer")
            return
        log.info("job.deferred", queue=self.queue.name, job_id=job.id, attempt=job.attempt,
                 delay=round(delay, 3), reason=reason, hold=exc.hold)
        await self.hooks.emit(self._event("deferred", job, error=reason, delay=delay))

    async def _dead(
        self, job: Job, error: str, attempts_made: int | None = None, *, attempt_failed: bool = False
    ) -> None:
        q = self.queue
        k = self._keys(job.partition)
        made = job.attempt if attempts_made is None else attempts_made
        r: Any = None
        if job.flow is None:
            r = await self._call_retrying(
                "dead_letter",
                [*k.lane_keys, k.events, k.dead, k.stats, k.moves, k.bucket(job.id), k.job(job.id)],
                [GROUP, self.consumer, job.lane, job.entry_id, job.id, error,
                 q.defaults.failed_ttl_ms, made, q.defaults.dead_letter_max,
                 q.defaults.events_max, 1 if attempt_failed else 0],
            )
            if isinstance(r, list):  # a job of a flow the worker did not know as one (stalled)
                job.flow = parse_spec(r[1])[2]
        if job.flow is not None:
            r = await self.runtime.flows.dead_letter(job, error, made, attempt_failed)
        if r is None or r == 0 or r == b"0":
            log.warning("job.lost_claim", queue=q.name, job_id=job.id, attempt=job.attempt,
                        transition="dead_letter")
            return
        log.warning("job.dead_lettered", queue=q.name, job_id=job.id, attempt=job.attempt,
                    error=error)
        await self.hooks.emit(self._event("dead", job, error=error))

    def _event(self, name: EventName, job: Job, **extra: Any) -> WorkerEvent:
        return WorkerEvent(
            name, self.queue.name, job.id, job.attempt, stalls=job.stalls,
            job_type=job.type_name,
            wait_s=job.wait_s, run_s=job.run_s, **extra,
        )

    async def _call_retrying(self, name: str, keys: list[str], args: list[Any]) -> Any:
        """Run a fenced transition, retrying while Redis is unreachable (it is safe to
        repeat: a repeat after success finds the claim gone and changes nothing).
        Returns None when the consumer group is gone (Redis lost its data): the entry
        went with it, so the claim is lost. Also None when the worker is stopping and
        Redis stays away past the grace period (at once after an immediate stop): the
        entry stays pending and another worker takes it over later."""
        delay = 0.05
        failing_since: float | None = None
        while True:
            try:
                with anyio.CancelScope(shield=True):
                    return await self.scripts(name, keys, args)
            except (RedisError, OSError) as exc:
                if isinstance(exc, ResponseError):
                    if "NOGROUP" not in str(exc):
                        raise
                    log.error("consumer group missing, Redis lost data; recreating it",
                              queue=self.queue.name, transition=name)
                    with anyio.CancelScope(shield=True):
                        await self.queue.ensure_groups()
                    return None
                self.healthy = False
                now = time.monotonic()
                failing_since = failing_since if failing_since is not None else now
                if self._stopping and (self._cut_now.is_set()
                                       or now - failing_since > self.shutdown_grace):
                    log.error("worker.gave_up", queue=self.queue.name, transition=name,
                              error=redact_text(str(exc)),
                              note="left pending: another worker takes it over")
                    return None
                log.error("redis.unreachable", queue=self.queue.name, transition=name,
                          error=redact_text(str(exc)), retry_in=delay)
                await anyio.sleep(delay)
                delay = min(delay * 2, 5.0)

    # -- upkeep loops ------------------------------------------------------------------------
    async def _flush_loop(self) -> None:
        while True:
            await self._done_event.wait()
            self._done_event = anyio.Event()
            await self._flush_now()

    async def _flush_now(self) -> None:
        while self._done:
            batch, self._done = self._done[:FLUSH_BATCH], self._done[FLUSH_BATCH:]
            if self._saw_flows:  # jobs of flows tell their parents (flows/finish.py)
                flow = [done for done in batch if done[0].flow is not None]
                if flow:
                    batch = [done for done in batch if done[0].flow is None]
                    await self.runtime.flows.complete(flow)
                    if not batch:
                        continue
            if self.queue.layout.count == 1:
                await self._flush_batch(batch, self.queue.keys)
                continue
            groups: dict[int, list[tuple[Job, Any]]] = {}
            for done in batch:
                groups.setdefault(done[0].partition, []).append(done)
            for p, part in groups.items():
                await self._flush_batch(part, self._keys(p))

    async def _flush_batch(self, batch: list[tuple[Job, Any]], k: QueueKeys) -> None:
        """One fenced ``complete`` call for jobs of one partition."""
        q = self.queue
        args: list[Any] = [GROUP, self.consumer, q.defaults.completed_ttl_ms,
                           len(batch), q.defaults.events_max,
                           2 * self.slots + 2 * FLUSH_BATCH,
                           q.defaults.completed_index_max]
        keys = [*k.lane_keys, k.events, k.stats, k.moves, k.completed_index]
        prefix = k.prefix + "job:"
        bucket = k.bucket
        tails: list[Any] = []
        for pos, (job, result) in enumerate(batch, 1):
            # one packed argument per job: the client encodes each argument separately
            args.append(f"{job.lane}|{job.entry_id}|{job.attempt}|{job.created_ms}|"
                        f"{job.max_attempts}|{job.type_name or ''}|{job.id}")
            keys.append(bucket(job.id))
            keys.append(prefix + job.id)
            if result is not None:
                tail = result_tail(q.codec, q.defaults.max_result_bytes, q.name, job.id, result)
                if tail is not None:
                    tails += [pos, tail]
        args += tails
        args.append(len(tails) // 2)  # results last (lua/complete.lua)
        try:
            lost = await self._call_retrying("complete", keys, args)
        except (RedisError, OSError) as exc:
            # not ours to fix here: the entries stay pending and are taken over later
            log.error("worker.complete_failed", queue=q.name, jobs=len(batch),
                      error=redact_text(str(exc)))
            lost = None
        lost_pos = set(range(1, len(batch) + 1)) if lost is None else {int(i) for i in lost}
        for pos, (job, result) in enumerate(batch, 1):
            self._unacked.pop(id(job), None)
            if pos in lost_pos:
                log.warning("job.lost_claim", queue=q.name, job_id=job.id,
                            attempt=job.attempt, transition="complete")
            elif self.hooks.wants("completed"):
                await self.hooks.emit(self._event("completed", job, result=result))

    async def _heartbeat_loop(self) -> None:
        while True:
            await anyio.sleep(self.heartbeat_interval)
            running = list(self._running.values())
            if self._cut_at:
                # an attempt past its timeout is kept no longer, even if its handler ignores
                # the cut: its entry is then taken over after the visibility timeout
                now = anyio.current_time()
                running = [j for j in running if self._cut_at.get(id(j), now + 1) > now]
            running += list(self._unacked.values())
            for p, jobs in self._by_partition(running).items():
                await self._heartbeat(self._keys(p), jobs)

    async def _heartbeat(self, k: QueueKeys, jobs: list[Job]) -> None:
        args: list[Any] = [GROUP, self.consumer, len(jobs)]
        for job in jobs:
            args += [job.lane, job.entry_id]
        try:
            lost = await self.scripts("extend", list(k.lane_keys), args)
        except (RedisError, OSError) as exc:
            log.error("worker.heartbeat_failed", queue=self.queue.name,
                      error=redact_text(str(exc)))
            return
        for pos in lost:
            job = jobs[int(pos) - 1]
            self.runtime.board.mark_lost(job)
            log.warning("job.lost_claim", queue=self.queue.name, job_id=job.id,
                        attempt=job.attempt, transition="heartbeat")

    async def _reclaim_loop(self) -> None:
        q = self.queue
        while True:
            try:
                # a queue grown by an operator is picked up here (and by the fetch loop)
                await q.partition_count()
                await self.reclaim_once()
            except (RedisError, OSError, StreamqError) as exc:
                log.error("worker.sweep_failed", queue=q.name, error=redact_text(str(exc)))
            await anyio.sleep(self.reclaim_interval)

    async def reclaim_once(self, partition: int | None = None) -> int:
        """One upkeep sweep of each partition (or of one; each only if no other worker
        holds that partition's lock): dead-letter entries whose workers died max_stalled
        times, re-queue entries no claim took over within twice the visibility timeout,
        drop orphaned pending entries, prune idle consumers. Returns the number of jobs
        dead-lettered or re-queued."""
        if partition is None:
            return sum([await self._sweep(p) for p in range(self.queue.layout.count)])
        return await self._sweep(partition)

    async def _sweep(self, partition: int) -> int:
        q = self.queue
        k = self._keys(partition)
        r = await self.scripts(
            "reclaim", [*k.lane_keys, k.events, k.moves, k.sweep_lock],
            [GROUP, self.consumer, round(self.visibility_timeout * 1000), self.max_stalled,
             max(1, round(self.reclaim_interval * 1000) - 50),
             round(self.consumer_prune_after * 1000), 1000,
             round(2 * self.visibility_timeout * 1000), q.defaults.events_max],
        )
        if r == [-1] or (r and not isinstance(r[0], list)):
            return 0
        to_dead, requeued = r[0], r[1]
        for i in range(0, len(requeued), 3):
            job_id, stalls = _text(requeued[i]), int(requeued[i + 1])
            log.warning("job.stalled", queue=q.name, job_id=job_id, stalls=stalls,
                        previous_owner=_text(requeued[i + 2]), requeued=True)
            await self.hooks.emit(WorkerEvent("stalled", q.name, job_id, stalls=stalls))
        await self._dead_stalled(to_dead, partition)
        return len(to_dead) // 4 + len(requeued) // 3

    async def _release(self, jobs: list[Job], why: str) -> None:
        if not jobs:
            return
        n = 0
        failed = False
        for p, part in self._by_partition(jobs).items():
            k = self._keys(p)
            args: list[Any] = [GROUP, self.consumer, len(part)]
            keys = [*k.lane_keys, k.moves]
            for job in part:
                args += [job.lane, job.entry_id]
                keys.append(k.bucket(job.id))
            try:
                with anyio.CancelScope(shield=True):
                    n += int(await self.scripts("release", keys, args))
            except (RedisError, OSError) as exc:
                log.error("worker.release_failed", queue=self.queue.name, jobs=len(part),
                          error=redact_text(str(exc)), note="they will be reclaimed after "
                          "the visibility timeout")
                failed = True
        if failed:
            return
        log.info("worker.released", queue=self.queue.name, jobs=n, reason=why)
        jobs.clear()


class _MalformedEntry:
    """Marks a stream entry whose envelope fields could not be read (dead-lettered)."""


class _Oversize:
    """Marks an entry whose payload was over the size cap; the claim sent only its size."""

    __slots__ = ("size",)

    def __init__(self, size: int) -> None:
        self.size = size


__all__ = ["Handler", "Worker"]
