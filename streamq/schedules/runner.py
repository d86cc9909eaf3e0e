"""The worker side of schedules: an upkeep loop per partition that fires due slots.

Each running worker of a queue runs one loop per partition (no extra process):

1. ``lua/due_schedules`` (read-only) lists the partition's due schedules on the Redis
   clock, the milliseconds until the next one, and the control stream's last id;
2. for each due schedule: read it, compute in Python (cron needs a library) which slot
   to fire and the next due slot, applying the misfire policy to slots missed while no
   worker ran; then ``lua/fire_schedule`` claims the slot, enqueues its run and advances
   the schedule in one transition, compare-and-set on (version, due slot). Workers
   racing for a slot all compute; one fires; the others find the slot moved;
3. wait, in a blocking XREAD on the partition's control stream, until the next due slot
   (kept by our own clock, as the fetch loop keeps delayed jobs' due times) or until an
   upsert of an earlier slot writes to the control stream; at most MAX_BLOCK_MS.

The run lands in a lane like any added job, so an idle fetch loop (blocked on the lanes)
starts it at once: the lateness of a run is this loop's wake-up plus two round trips.

Hooks ``fired`` and ``missed`` feed metrics (streamq/metrics.py).
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import anyio
import structlog
from redis.exceptions import RedisError

from ..crypto import PURPOSE_SCHEDULE
from ..errors import ConfigError, DecryptError, StreamqError
from ..keys import QueueKeys
from ..redact import redact_text
from ..settings import MAX_BLOCK_MS
from .model import STATE_FIELDS, run_job_id, timing_of
from .timing import Timing

if TYPE_CHECKING:
    from ..worker.core import Worker

log = structlog.get_logger("streamq.schedules")

DUE_BATCH = 50
"""Schedules fired per turn of a partition's loop (the next turn follows at once)."""
FIRE_FIELDS = (*STATE_FIELDS, "d")
ERROR_BACKOFF_S = (0.05, 5.0)


def _text(v: Any) -> str:
    return v.decode("utf-8", "replace") if isinstance(v, bytes) else ("" if v is None else str(v))


@dataclass(frozen=True, slots=True)
class ScheduleEvent:
    """What a ``fired`` or ``missed`` hook receives."""

    queue: str
    schedule_id: str
    slot_ms: int
    """The slot fired, or the first slot missed."""
    job_id: str | None = None
    """The run's job id (fired)."""
    lateness_s: float = 0.0
    """Seconds from the slot to its firing, on the Redis clock (fired)."""
    missed: int = 0
    """Slots missed (missed)."""
    why: str = ""
    """downtime (misfire) or overlap (missed)."""


Hook = Callable[[ScheduleEvent], Awaitable[None] | None]


@dataclass(frozen=True, slots=True)
class FirePlan:
    slot: int | None
    """The slot to fire (None: fire nothing)."""
    next: int | None
    missed: int


def plan_fire(timing: Timing, due: int, now: int, misfire: str, grace_ms: int) -> FirePlan:
    """Which slot to fire for a schedule whose slot ``due`` is due at ``now`` (Redis
    clock, ms), and the next due slot. ``run_once``: one run, for the latest due slot,
    whatever was missed. ``skip``: the latest due slot runs only if it is at most
    ``grace_ms`` late; the missed ones never run."""
    c = timing.catch_up(due, now)
    if c.latest is None:
        return FirePlan(None, c.next, 0)
    if misfire == "skip" and now - c.latest > grace_ms:
        return FirePlan(None, c.next, c.count)
    return FirePlan(c.latest, c.next, c.count - 1)


class ScheduleRunner:
    """Fires the due schedules of a worker's queue (``Worker.schedules``)."""

    def __init__(self, worker: Worker) -> None:
        self.worker = worker
        self._hooks: dict[str, list[Hook]] = {"fired": [], "missed": []}
        self.fired = 0
        self.missed = 0
        self._sealed_warned: set[str] = set()
        """Schedules whose encrypted payload this worker could not open (logged once)."""

    def on(self, name: str, hook: Hook) -> None:
        """Call ``hook`` for each slot this worker fired (``fired``) or missed (``missed``)."""
        if name not in self._hooks:
            raise ValueError(f"unknown schedule event {name!r}: use fired or missed")
        self._hooks[name].append(hook)

    async def _emit(self, name: str, event: ScheduleEvent) -> None:
        for hook in self._hooks[name]:
            try:
                r = hook(event)
                if inspect.isawaitable(r):
                    await r
            except Exception as exc:  # a hook must never take the loop down
                log.warning("hook.failed", event=name, queue=event.queue,
                            schedule=event.schedule_id, error=f"{type(exc).__name__}: {exc}")

    # -- the loops -------------------------------------------------------------------------
    async def run(self) -> None:
        """Until cancelled (the worker's upkeep group): one loop per partition, restarted
        when the queue's partition count changes."""
        layout = self.worker.queue.layout
        while not self.worker._stopping:
            n = layout.count
            async with anyio.create_task_group() as tg:
                for p in range(n):
                    tg.start_soon(self._partition_loop, layout.keys(p), n)

    async def _partition_loop(self, k: QueueKeys, n: int) -> None:
        w = self.worker
        q = w.queue
        backoff = ERROR_BACKOFF_S[0]
        while not w._stopping and q.layout.count == n:
            try:
                turn = await self.fire_due(k)
                asked_at = anyio.current_time()
                # read and plan the next slot now, so that at its instant firing it is one
                # round trip (and the racing workers do not all read it at once)
                ready = None
                if turn.next_id and 0 < turn.wait_ms < MAX_BLOCK_MS:
                    ready = await self.prepare(k, turn.next_id, turn.next_due, turn.next_due)
                backoff = ERROR_BACKOFF_S[0]
            except (RedisError, OSError, StreamqError) as exc:
                log.error("schedule.fire_failed", queue=q.name, partition=k.partition,
                          error=redact_text(str(exc)), retry_in=round(backoff, 2))
                await anyio.sleep(backoff)
                backoff = min(backoff * 2, ERROR_BACKOFF_S[1])
                continue
            if turn.wait_ms == 0:
                continue
            try:
                timed_out = await self._wait(k, turn.wait_ms, turn.control_id, asked_at)
                if timed_out and ready is not None and not w._stopping:
                    await self.fire(k, ready)
            except (RedisError, OSError, StreamqError) as exc:
                log.debug("schedule.wait_failed", queue=q.name, error=redact_text(str(exc)))
                await anyio.sleep(backoff)

    async def _wait(self, k: QueueKeys, wait_ms: int, control_id: str, asked_at: float
                    ) -> bool:
        """Until the next due slot, ``wait_ms`` after the due check answered at
        ``asked_at`` (by our clock: Redis checks blocked clients' timeouts only on its
        cron), or an entry on the control stream (an earlier slot was upserted), at most
        MAX_BLOCK_MS. True when the due slot's time came."""
        redis = self.worker.redis
        streams: Any = {k.control: control_id}
        if wait_ms < 0 or wait_ms >= MAX_BLOCK_MS:
            await redis.xread(streams, count=1, block=MAX_BLOCK_MS)
            return False
        with anyio.CancelScope(deadline=asked_at + wait_ms / 1000 + 0.0005):
            await redis.xread(streams, count=1, block=wait_ms + 50)
            return False
        return True

    async def fire_due(self, k: QueueKeys) -> Turn:
        """Fire the partition's due schedules (at most DUE_BATCH). Returns the ms until
        the next due slot (0: look again at once; -1: none), that slot's schedule, and
        the control stream's last id to wait from."""
        w = self.worker
        r = await w.scripts("due_schedules", [k.schedules, k.control], [DUE_BATCH])
        now, next_ms, control_id = int(r[0]), int(r[1]), _text(r[2])
        next_id, next_due = _text(r[3]), int(r[4]) if _text(r[4]) else 0
        due = [_text(r[i]) for i in range(5, len(r), 2)]
        if not due:
            return Turn(next_ms, control_id, next_id, next_due)
        failed = 0
        for sid in due:
            if w._stopping:
                break
            try:
                ready = await self.prepare(k, sid, None, now)
                ok = ready is None or await self.fire(k, ready)
            except ConfigError as exc:  # a malformed spec in Redis: say so, keep going
                log.error("schedule.malformed", queue=w.queue.name, schedule=sid,
                          error=str(exc))
                ok = False
            failed += 0 if ok else 1
        if failed == len(due):
            # nothing fired this turn (each refused or unreadable): do not spin on them
            return Turn(max(100, next_ms if next_ms >= 0 else MAX_BLOCK_MS), control_id)
        return Turn(0, control_id)

    async def prepare(self, k: QueueKeys, schedule_id: str, due_expected: int | None,
                      now: int) -> Prepared | None:
        """Read a schedule and plan the firing of its due slot as of ``now`` (Redis
        clock, ms; for a slot not yet due: its own instant). None when there is nothing
        to fire (removed, paused, ended, or not the slot expected)."""
        values = await self.worker.redis.hmget(k.schedule(schedule_id), list(FIRE_FIELDS))
        f = dict(zip(FIRE_FIELDS, values, strict=True))
        if f["v"] is None or _text(f["paused"]) == "1" or not _text(f["due"]):
            return None
        due = int(_text(f["due"]))
        if (due_expected is not None and due != due_expected) or due > now:
            return None
        grace = int(_text(f["grace"]) or 0)
        misfire = _text(f["mis"]) or "run_once"
        plan = plan_fire(timing_of(f), due, now, misfire, grace)
        # the plan holds while no later slot is due (and, for skip, while its slot is
        # within the grace): the transition refuses it after that, and we plan again
        valid = [t for t in (plan.next, None if misfire != "skip" or plan.slot is None
                             else plan.slot + grace + 1) if t is not None]
        return Prepared(schedule_id, f, due, plan, min(valid) if valid else None)

    async def fire(self, k: QueueKeys, ready: Prepared) -> bool:
        """Run the firing transition for a planned slot. True when done (by us, or by
        another worker first, or there is nothing to do); False when it was refused."""
        w = self.worker
        q = w.queue
        f, plan, sid = ready.fields, ready.plan, ready.schedule_id
        run_id = run_job_id(sid, plan.slot) if plan.slot is not None else ""
        lane = int(_text(f["ln"]) or 1)
        prev = _text(f["lr"])
        payload = f["d"] or b""
        if run_id:
            try:  # an encrypted payload is bound to the schedule: seal it for the run
                payload = q.codec.rebind(payload, sid, run_id, from_purpose=PURPOSE_SCHEDULE)
            except DecryptError as exc:
                # no key for it here: leave the slot to a worker that has one
                if sid not in self._sealed_warned:
                    self._sealed_warned.add(sid)
                    log.error("schedule.payload_sealed", queue=q.name, schedule=sid,
                              reason=str(exc))
                return False
        r = await w.scripts(
            "fire_schedule",
            [k.schedule(sid), k.schedules, k.events, k.bucket(run_id or sid),
             k.bucket(prev or sid), k.lanes[lane], k.lane_map],
            [sid, _text(f["v"]), str(ready.due), "" if plan.slot is None else str(plan.slot),
             run_id, "" if plan.next is None else str(plan.next), plan.missed,
             payload, lane, _text(f["a"]) or "1", _text(f["b"]), q.defaults.events_max,
             _text(f["y"]), "downtime",
             "" if ready.valid_until is None else str(ready.valid_until)])
        status = int(r[0])
        if status in (0, -1, -2, -3, -5):
            # 0: another worker fired it first; -1/-2: removed or paused meanwhile; -3: not
            # due yet on the Redis clock; -5: a later slot is due too: the next turn plans
            # again with the Redis clock's now
            return True
        if status != 1:
            log.error("schedule.refused", queue=q.name, schedule=sid, status=status,
                      slot=plan.slot, last=_text(r[1]) if len(r) > 1 else "")
            return False
        fired_at = int(r[2])
        if int(r[1]) == 1 and plan.slot is not None:
            self.fired += 1
            late = max(0, fired_at - plan.slot) / 1000
            log.info("schedule.fired", queue=q.name, schedule=sid, job_id=run_id,
                     late_s=round(late, 3), missed=plan.missed)
            await self._emit("fired", ScheduleEvent(q.name, sid, plan.slot, run_id, late))
        missed = plan.missed + (1 if int(r[1]) == 0 and plan.slot is not None else 0)
        if missed:
            why = "overlap" if int(r[1]) == 0 and plan.slot is not None else "downtime"
            self.missed += missed
            log.warning("schedule.missed", queue=q.name, schedule=sid, slots=missed, why=why)
            await self._emit("missed", ScheduleEvent(q.name, sid, ready.due, None, 0.0,
                                                     missed, why))
        return True


@dataclass(frozen=True, slots=True)
class Turn:
    wait_ms: int
    control_id: str
    next_id: str = ""
    next_due: int = 0


@dataclass(frozen=True, slots=True)
class Prepared:
    schedule_id: str
    fields: dict[str, Any]
    due: int
    plan: FirePlan
    valid_until: int | None


__all__ = ["FirePlan", "ScheduleEvent", "ScheduleRunner", "plan_fire"]
