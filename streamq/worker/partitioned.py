"""The fetch loop of a worker on a partitioned queue (N > 1): every partition, fairly.

A one-partition queue is fetched by ``Worker._fetch_single`` (one claim call takes
jobs, tokens and due retries at once). With N partitions every claim still runs in one
partition's slot, so a round here is:

1. take tokens from the queue-wide bucket in the home slot (``lua/take_tokens``), when
   the worker has a rate limit: at most that many jobs start in this round;
2. claim every free slot (or token) from the next partition in turn that may have
   work (one ``claim`` call, without its own rate limit); when it has fewer jobs than
   that, claim the rest from the partition after it, and so on;
3. hand back the tokens no job used.

Fairness: each round starts at the partition after the one that started the previous
round, so a partition with a backlog cannot keep another from being served: with two
busy partitions, every other claim goes to each. Claiming whole rounds from one
partition rather than splitting each round's slots keeps one call per round, as on a
one-partition queue (measured: a drain on one Redis ran at 0.82 of the one-partition
rate this way, at 0.63 with the slots split three ways). A partition whose claim found
nothing is left out of the rounds until its *waker* sees new work: each partition has
one task blocked in one bounded XREAD on its lanes and control stream (an XREAD may not
span slots on a cluster), or until its next delayed job is due, or the reclaim period
passes while it has entries held by others.

Priorities: level 1 before 2 ... before 10 holds within a partition. Across partitions,
rounds go in turn, so an urgent job waiting in one partition can wait behind the less
urgent jobs a round claims from another: one round, at most the worker's concurrency of them.
"""

from __future__ import annotations

import math
import time
from typing import TYPE_CHECKING, Any

import anyio
import structlog
from redis.exceptions import RedisError, ResponseError

from ..errors import StreamqError
from ..job import Job
from ..keys import QueueKeys
from ..redact import redact_text
from ..settings import MAX_BLOCK_MS

if TYPE_CHECKING:
    from .core import Worker

log = structlog.get_logger("streamq.worker")


def idle_streams(k: QueueKeys, reply: list[Any]) -> dict[str, Any]:
    """What an idle claim's reply ({0, next due, pending, control id, lane ids}) says to
    wait on: every lane and the control stream, each after the last id the claim saw."""
    streams: dict[str, Any] = dict(zip(k.lanes, reply[4], strict=True))
    streams[k.control] = reply[3]
    return streams


class PartitionedFetch:
    """One run of the fetch loop over a fixed partition count; returns when the worker
    stops or the queue's count changes (the worker then starts another)."""

    def __init__(self, worker: Worker) -> None:
        self.w = worker
        self.n = worker.queue.layout.count
        self.parts: list[QueueKeys] = worker.queue.layout.all_keys(self.n)
        self.ready = [True] * self.n
        """Partitions to claim from in the next round (may have work)."""
        self.due_at = [math.inf] * self.n
        """When an idle partition must be claimed from again anyway (monotonic s)."""
        self.next_first = 0
        self.wake = anyio.Event()
        self._armed: list[dict[str, Any]] = [{} for _ in range(self.n)]
        self._arm_events = [anyio.Event() for _ in range(self.n)]
        self._errors = 0
        self._last_job: Job | None = None
        """The last job claimed (a hold's probe is the one job of its round)."""

    async def run(self) -> None:
        async with anyio.create_task_group() as tg:
            for p in range(self.n):
                tg.start_soon(self._waker, p)
            await self._loop()
            tg.cancel_scope.cancel()

    # -- the rounds ---------------------------------------------------------------------------
    async def _loop(self) -> None:
        w = self.w
        error_backoff = 0.05
        while not w._stopping and w.queue.layout.count == self.n:
            w.last_loop_at = time.monotonic()
            if w._free <= 0:
                w._slot_freed = anyio.Event()
                if w._free <= 0:
                    await w._slot_freed.wait()
                continue
            order = [(self.next_first + i) % self.n for i in range(self.n)]
            now = time.monotonic()
            for p in order:
                if not self.ready[p] and self.due_at[p] <= now:
                    self.ready[p] = True
            candidates = [p for p in order if self.ready[p]]
            if not candidates:
                await self._wait_for_work()
                continue
            want = min(w._free, w.claim_max)
            # a handler's Defer(hold=True) holds fetching: nothing, or one probe (hold.py)
            hold_limit = w.fetch_hold.limit()
            if hold_limit is not None:
                if hold_limit <= 0:
                    await w.fetch_hold.wait(MAX_BLOCK_MS / 1000)
                    continue
                want = min(want, hold_limit)
            try:
                if w.rate_limit:
                    want, wait_ms = await self._take_tokens(want)
                    if want == 0:
                        w.rate_limited_waits += 1
                        w.rate_limited_s += wait_ms / 1000
                        await anyio.sleep(wait_ms / 1000)
                        continue
                self.next_first = (candidates[0] + 1) % self.n
                self._last_job = None
                got = await self._claim_in_turn(candidates, want)
                if hold_limit is not None:  # probing: the one job claimed is the probe
                    w.fetch_hold.claimed(self._last_job)
                if w.rate_limit and got < want:
                    await self._hand_back(want - got)
                if self._errors:
                    self._errors = 0
                    await anyio.sleep(error_backoff)
                    error_backoff = min(error_backoff * 2, 5.0)
                else:
                    error_backoff = 0.05
                    w.healthy = True
            except (RedisError, OSError, StreamqError) as exc:
                w.healthy = False
                log.error("redis.unreachable", queue=w.queue.name, error=redact_text(str(exc)),
                          retry_in=round(error_backoff, 2))
                await anyio.sleep(error_backoff)
                error_backoff = min(error_backoff * 2, 5.0)

    async def _claim_in_turn(self, candidates: list[int], want: int) -> int:
        """Claim ``want`` jobs from the first candidate, the rest from the next ones."""
        got = 0
        for p in candidates:
            got += await self._claim_one(p, want - got)
            if got >= want:
                break
        return got

    async def _claim_one(self, p: int, count: int) -> int:
        """One claim call in partition p. Its reply is accepted right after the shielded
        call (no checkpoint between), so a stop cannot strand claimed entries in our
        pending list; the rest (hooks, dead-lettering, arming the waker) follows."""
        w = self.w
        try:
            with anyio.CancelScope(shield=True):
                reply = await w.scripts("claim", w.claim_keys(p),
                                        w.claim_args(count, limited=False))
        except (RedisError, OSError, StreamqError) as exc:
            await self._failed(p, exc)
            return 0
        status = int(reply[0])
        if status == 1:
            taken_over = w._accept(reply[1], p)
            if reply[1]:
                self._last_job = w._ready[-1]
            w._wake_runners()
            if taken_over:
                await w._stalled(taken_over)
            if reply[2]:
                await w._dead_stalled(reply[2], p)
            return len(reply[1]) // 5
        if status == 0:
            self._idle(p, reply)
        elif status == -1:
            self._paused(p)
        return 0

    async def _failed(self, p: int, exc: BaseException) -> None:
        w = self.w
        self._errors += 1
        if isinstance(exc, ResponseError):
            if "NOGROUP" in str(exc):
                log.error("consumer group missing, Redis lost data; recreating it",
                          queue=w.queue.name, partition=p)
                await w.queue.prepare_partition(self.parts[p])
            else:
                log.error("worker.fetch_failed", queue=w.queue.name, partition=p,
                          error=str(exc))
            return
        w.healthy = False
        log.error("redis.unreachable", queue=w.queue.name, partition=p,
                  error=redact_text(str(exc)))

    def _idle(self, p: int, reply: list[Any]) -> None:
        """Nothing to claim in partition p: leave it out until its waker sees work, or its
        next delayed job is due, or (entries held elsewhere) the reclaim period passes."""
        next_due = int(reply[1])
        if int(reply[2]) > 0:
            reclaim_ms = max(1, round(self.w.reclaim_interval * 1000))
            next_due = reclaim_ms if next_due < 0 else min(next_due, reclaim_ms)
        self.ready[p] = False
        self.due_at[p] = math.inf if next_due < 0 else time.monotonic() + next_due / 1000 + 0.001
        self._arm(p, idle_streams(self.parts[p], reply))

    def _paused(self, p: int) -> None:
        # a paused partition wakes on resume (its control stream) or looks again every 2 s
        self.ready[p] = False
        self.due_at[p] = math.inf
        self._arm(p, {self.parts[p].control: "$"})

    async def _wait_for_work(self) -> None:
        self.wake = anyio.Event()
        timeout = min(self.due_at) - time.monotonic()
        if timeout == math.inf:
            await self.wake.wait()
            return
        with anyio.move_on_after(max(0.0, timeout)):
            await self.wake.wait()

    # -- wakers -------------------------------------------------------------------------------
    def _arm(self, p: int, streams: dict[str, Any]) -> None:
        self._armed[p] = streams
        self._arm_events[p].set()

    async def _waker(self, p: int) -> None:
        """Partition p's one blocking read: armed with the ids its last idle claim saw, it
        returns on the first new entry (or after MAX_BLOCK_MS) and marks p ready. A read
        still blocked when p is armed again keeps waiting: its ids are not newer than any
        entry added since, so it still wakes on new work."""
        w = self.w
        while True:
            await self._arm_events[p].wait()
            self._arm_events[p] = anyio.Event()
            try:
                await w.redis.xread(self._armed[p], count=1,  # type: ignore[arg-type]
                                    block=MAX_BLOCK_MS)
            except (RedisError, OSError) as exc:
                # the fetch round reports the outage; look again after a pause
                log.debug("worker.wait_failed", queue=w.queue.name, partition=p,
                          error=redact_text(str(exc)))
                await anyio.sleep(0.5)
            self.ready[p] = True
            self.wake.set()

    # -- the queue-wide token bucket ------------------------------------------------------------
    async def _take_tokens(self, want: int) -> tuple[int, int]:
        w = self.w
        r = await w.scripts("take_tokens", [self.parts[0].limiter],
                            [w.rate_limit or 0, w.burst, want, 0])
        return int(r[0]), int(r[1])

    async def _hand_back(self, unused: int) -> None:
        """Give tokens no job used back to the bucket, so other workers may use them."""
        w = self.w
        try:
            with anyio.CancelScope(shield=True):
                await w.scripts("take_tokens", [self.parts[0].limiter],
                                [w.rate_limit or 0, w.burst, 0, unused])
        except (RedisError, OSError) as exc:  # lost tokens only slow the queue down
            log.warning("worker.tokens_not_returned", queue=w.queue.name, tokens=unused,
                        error=redact_text(str(exc)))


__all__ = ["PartitionedFetch", "idle_streams"]
