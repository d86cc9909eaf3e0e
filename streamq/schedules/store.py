"""The producer and operator side of schedules: upsert, list, pause, resume, remove, run now.

A schedule lives in the partition of its id (``routing.partition_of``), in one hash
(``QueueKeys.schedule``) listed in the partition's ``schedules`` ZSET, scored by its due
slot. Every change is a compare-and-set on the schedule's version token
(``lua/upsert_schedule.lua``): read, compute the due slot in Python (cron needs a
library), write if nothing changed meanwhile, else read again. Concurrent upserts of one
id therefore apply one after the other, and an upsert equal to what is stored writes
nothing.

What a change of spec does (cron, every, tz, start_at):

* the due slot is recomputed: the first slot of the new spec after now and after the
  last fired slot (the tombstone), so no slot already fired fires again, and no slot of
  the new grid in the past fires at all;
* the runs count, the missed count and the tombstone are kept: ``limit`` counts every
  run of the schedule's life (remove it and add it again to start over);
* a change of payload or options only (data, options, misfire, overlap, grace) keeps the
  due slot; a change of ``end_at`` or ``limit`` keeps it when it still fits, and ends
  the schedule (or revives it from now) otherwise.

``paused=True`` keeps the schedule (and its slot) but fires nothing; resuming fires the
due slot if it is still ahead, else continues from the first slot after now: slots that
fell in the pause are skipped, not missed.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from ..connection import translate_redis_errors
from ..crypto import PURPOSE_SCHEDULE, envelope_kid, is_envelope
from ..errors import ConfigError, DecryptError, StreamqError
from ..job import JobOptions, JobRef
from ..keys import QueueKeys
from ..settings import seconds
from .model import (
    MISFIRES,
    OVERLAPS,
    STATE_FIELDS,
    Misfire,
    Overlap,
    Schedule,
    check_schedule_id,
    parse_schedule,
    timing_of,
)
from .timing import Timing, check_cron, check_zone, to_ms

if TYPE_CHECKING:
    from ..queue import Queue

Clock = Callable[[], float]
"""Seconds since the epoch. The default is the Redis clock (``TIME``): every process
computes slots against the same clock the Lua transitions check due times with."""

MAX_CAS_TRIES = 50
DEFAULT_GRACE_S = 60.0
SPEC_FIELDS = ("cron", "every", "tz", "start")
"""The fields that place the grid: a change recomputes the due slot."""
WRITE_FIELDS = ("cron", "every", "tz", "start", "end", "lim", "mis", "grace", "ov", "d", "ln",
                "a", "b", "y", "pri")


def _text(v: Any) -> str:
    return v.decode("utf-8", "replace") if isinstance(v, bytes) else ("" if v is None else str(v))


def _ms(v: str) -> int | None:
    return int(v) if v else None


class Schedules:
    """The schedules of one queue (``Queue.upsert_schedule`` and friends use one)."""

    def __init__(self, queue: Queue, clock: Clock | None = None) -> None:
        self.queue = queue
        self.clock = clock

    async def now_ms(self) -> int:
        if self.clock is not None:
            return round(self.clock() * 1000)
        with translate_redis_errors(self.queue.redis_url):
            sec, usec = await self.queue.redis.time()
        return int(sec) * 1000 + int(usec) // 1000

    # -- reading ---------------------------------------------------------------------------
    async def _read(self, k: QueueKeys, schedule_id: str, extra: Sequence[str] = ()
                    ) -> dict[str, Any] | None:
        names = [*STATE_FIELDS, *extra]
        with translate_redis_errors(self.queue.redis_url):
            values = await self.queue.redis.hmget(k.schedule(schedule_id), names)
        if values[0] is None:
            return None
        return dict(zip(names, values, strict=True))

    async def locate(self, schedule_id: str, extra: Sequence[str] = (), *, store: bool = False
                     ) -> tuple[QueueKeys, dict[str, Any] | None]:
        """The partition holding the schedule and its fields, or the partition a new one
        goes to and None. A schedule stays in the partition it was created in: after the
        queue's count grew it is found under the earlier counts."""
        q = self.queue
        n = await q.partition_count(store=store)
        for k in q.layout.lookup(schedule_id, n):
            found = await self._read(k, schedule_id, extra)
            if found is not None:
                return k, found
        return q.layout.keys_for(schedule_id, n), None

    async def get(self, schedule_id: str) -> Schedule | None:
        check_schedule_id(schedule_id)
        k, f = await self.locate(schedule_id)
        return None if f is None else parse_schedule(schedule_id, [f[n] for n in STATE_FIELDS],
                                                     k.partition)

    async def all(self) -> list[Schedule]:
        """Every schedule of the queue, by id."""
        q = self.queue
        out: list[Schedule] = []
        for k in q.layout.all_keys(await q.partition_count()):
            with translate_redis_errors(q.redis_url):
                ids = [_text(i) for i in await q.redis.zrange(k.schedules, 0, -1)]
                if not ids:
                    continue
                pipe = q.redis.pipeline(transaction=False)
                for sid in ids:
                    pipe.hmget(k.schedule(sid), list(STATE_FIELDS))
                rows = await pipe.execute()
            for sid, values in zip(ids, rows, strict=True):
                s = parse_schedule(sid, values, k.partition)
                if s is not None:
                    out.append(s)
        return sorted(out, key=lambda s: s.id)

    # -- writing ---------------------------------------------------------------------------
    async def upsert(
        self,
        schedule_id: str,
        *,
        cron: str | None = None,
        every: float | timedelta | None = None,
        tz: str = "UTC",
        data: Any = None,
        options: JobOptions | None = None,
        misfire: Misfire = "run_once",
        overlap: Overlap = "allow",
        start_at: datetime | None = None,
        end_at: datetime | None = None,
        limit: int | None = None,
        paused: bool | None = None,
        misfire_grace: float | timedelta = DEFAULT_GRACE_S,
    ) -> Schedule:
        check_schedule_id(schedule_id)
        timing = build_timing(cron, every, tz, start_at, end_at)
        fields = self._spec_fields(schedule_id, timing, data, options, misfire, overlap, limit,
                                   misfire_grace)
        if paused is not None and not isinstance(paused, bool):
            raise ConfigError(f"paused must be True, False or None, got {paused!r}")
        return await self._write(schedule_id, fields, timing, paused, create=True)

    def _spec_fields(self, schedule_id: str, timing: Timing, data: Any,
                     options: JobOptions | None,
                     misfire: str, overlap: str, limit: int | None,
                     misfire_grace: float | timedelta) -> dict[str, str | bytes]:
        if misfire not in MISFIRES:
            raise ConfigError(f"misfire {misfire!r} is invalid: use one of {', '.join(MISFIRES)}")
        if overlap not in OVERLAPS:
            raise ConfigError(f"overlap {overlap!r} is invalid: use one of {', '.join(OVERLAPS)}")
        if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int)
                                  or limit < 1):
            raise ConfigError(f"limit must be an integer >= 1 (or None), got {limit!r}")
        grace = seconds(misfire_grace)
        if grace < 0:
            raise ConfigError(f"misfire_grace must be >= 0 seconds, got {grace:g}")
        opts = options or JobOptions()
        if opts.job_id is not None:
            raise ConfigError("a schedule's runs get their job ids from their slots: "
                              "options.job_id is not allowed")
        if opts.delay:
            raise ConfigError("options.delay is not allowed on a schedule: use start_at, "
                              "or the cron/every spec, to place its runs")
        # validated and encoded once, here: a bad payload fails at upsert, not at each run
        job_id, args = self.queue._job_args(data, opts)
        payload, lane, attempts, backoff, jtype = args[1], args[2], args[3], args[5], args[6]
        if isinstance(payload, bytes) and is_envelope(payload):
            # encrypted: bound to the schedule (each run gets it sealed for its own job id)
            payload = self.queue.codec.rebind(payload, job_id, schedule_id,
                                              to_purpose=PURPOSE_SCHEDULE)
        return {
            "cron": timing.cron or "",
            "every": "" if timing.every_ms is None else str(timing.every_ms),
            "tz": timing.tz,
            "start": "" if timing.start_ms is None else str(timing.start_ms),
            "end": "" if timing.end_ms is None else str(timing.end_ms),
            "lim": str(limit or 0),
            "mis": misfire,
            "grace": str(round(grace * 1000)),
            "ov": overlap,
            "d": payload if isinstance(payload, bytes) else str(payload).encode(),
            "ln": str(lane),
            "a": str(attempts),
            "b": str(backoff),
            "y": str(jtype),
            "pri": str(opts.priority),
        }

    async def _write(self, schedule_id: str, fields: dict[str, str | bytes] | None,
                     timing: Timing | None, paused: bool | None, *, create: bool,
                     ) -> Schedule:
        """The compare-and-set loop: read, compute the due slot, write unless changed."""
        q = self.queue
        for _ in range(MAX_CAS_TRIES):
            k, cur = await self.locate(schedule_id, ("d",), store=True)
            if cur is None and not create:
                raise LookupError(schedule_id)
            if fields is not None and cur is not None:
                fields = self._same_sealed_payload(schedule_id, fields, cur)
            now = await self.now_ms()
            plan = plan_write(cur, fields, timing, paused, now)
            if plan is None:  # nothing changes
                assert cur is not None
                return parse_schedule(schedule_id, [cur[n] for n in STATE_FIELDS],
                                      k.partition)  # type: ignore[return-value]
            due, new_paused, reason, to_store = plan
            if cur is None and due is None:
                raise ConfigError(f"schedule {schedule_id!r} would never fire: no slot after "
                                  "now within its start_at/end_at")
            args: list[str | bytes | int] = [
                schedule_id, "" if cur is None else _text(cur["v"]), secrets.token_hex(6),
                "" if due is None else str(due), "1" if new_paused else "0", reason,
                q.defaults.events_max]
            for name, value in to_store.items():
                args += [name, value]
            r = await q.run_script("upsert_schedule",
                                   [k.schedule(schedule_id), k.schedules, k.events, k.control],
                                   args)
            if int(r[0]) == 1:
                got = await self._read(k, schedule_id)
                if got is not None:
                    return parse_schedule(schedule_id, [got[n] for n in STATE_FIELDS],
                                          k.partition)  # type: ignore[return-value]
        raise StreamqError(f"schedule {schedule_id!r} kept changing under this update "
                           f"({MAX_CAS_TRIES} tries): try again")

    def _same_sealed_payload(self, schedule_id: str, fields: dict[str, str | bytes],
                             cur: dict[str, Any]) -> dict[str, str | bytes]:
        """On an encrypting queue every upsert seals the payload with a fresh nonce: when
        it holds the same bytes as the stored one, under the same key, keep the stored
        envelope, so that an unchanged upsert still writes nothing."""
        new, old = fields.get("d"), cur.get("d")
        if (not isinstance(new, bytes) or not isinstance(old, bytes) or new == old
                or not is_envelope(new) or envelope_kid(new) != envelope_kid(old)):
            return fields
        codec = self.queue.codec
        try:
            same = (codec.open(old, schedule_id, PURPOSE_SCHEDULE)
                    == codec.open(new, schedule_id, PURPOSE_SCHEDULE))
        except DecryptError:
            return fields
        return {**fields, "d": old} if same else fields

    async def set_paused(self, schedule_id: str, paused: bool) -> bool:
        """Pause or resume; False if there is no such schedule."""
        check_schedule_id(schedule_id)
        try:
            await self._write(schedule_id, None, None, paused, create=False)
        except LookupError:
            return False
        return True

    async def remove(self, schedule_id: str) -> bool:
        check_schedule_id(schedule_id)
        q = self.queue
        k, cur = await self.locate(schedule_id)
        if cur is None:
            return False
        r = await q.run_script("remove_schedule", [k.schedule(schedule_id), k.schedules, k.events],
                               [schedule_id, q.defaults.events_max])
        return int(r) == 1

    async def run_now(self, schedule_id: str) -> JobRef | None:
        """Add one extra run now, with its own job id (not a slot's); None if there is no
        such schedule. The due slot, runs and limit are untouched."""
        check_schedule_id(schedule_id)
        q = self.queue
        for _ in range(MAX_CAS_TRIES):
            k, cur = await self.locate(schedule_id, ("d",), store=True)
            if cur is None:
                return None
            run_id = "{" + schedule_id + "}@now-" + _letters(10)
            lane = int(_text(cur["ln"]) or 1)
            # an encrypted payload is sealed again for the run's id (DecryptError without
            # the key: one clear line)
            payload = q.codec.rebind(cur["d"] or b"", schedule_id, run_id,
                                     from_purpose=PURPOSE_SCHEDULE)
            r = int(await q.run_script(
                "run_schedule_now",
                [k.schedule(schedule_id), k.events, k.bucket(run_id), k.lanes[lane], k.lane_map],
                [schedule_id, _text(cur["v"]), run_id, payload, lane,
                 _text(cur["a"]) or "1", _text(cur["b"]), _text(cur["y"]), q.defaults.events_max]))
            if r == 1:
                return JobRef(run_id, q.name)
            if r == -1:
                return None
        raise StreamqError(f"schedule {schedule_id!r} kept changing: try again")


def _letters(n: int) -> str:
    """Random lowercase letters (no digits: job ids appear in key names)."""
    return "".join(chr(ord("a") + b % 26) for b in secrets.token_bytes(n))


def build_timing(cron: str | None, every: float | timedelta | None, tz: str,
                 start_at: datetime | None, end_at: datetime | None) -> Timing:
    """The validated timing of an upsert (ConfigError names what is wrong)."""
    if (cron is None) == (every is None):
        raise ConfigError("a schedule takes exactly one of cron= and every=")
    check_zone(tz)
    every_ms = None
    if every is not None:
        if isinstance(every, bool) or not isinstance(every, int | float | timedelta):
            raise ConfigError(f"every must be seconds or a timedelta, got {every!r}")
        every_ms = round(seconds(every) * 1000)
    return Timing(cron=None if cron is None else check_cron(cron), every_ms=every_ms, tz=tz,
                  start_ms=None if start_at is None else to_ms(start_at),
                  end_ms=None if end_at is None else to_ms(end_at))


def plan_write(cur: dict[str, Any] | None, fields: dict[str, str | bytes] | None,
               timing: Timing | None, paused: bool | None, now: int
               ) -> tuple[int | None, bool, str, dict[str, str | bytes]] | None:
    """What an upsert, pause or resume writes: (due slot, paused, reason, fields to store),
    or None when nothing would change. ``fields``/``timing`` are None for pause/resume."""
    was_paused = cur is not None and _text(cur["paused"]) == "1"
    new_paused = was_paused if paused is None else paused
    if cur is None:
        assert timing is not None and fields is not None
        return timing.next_after(now), new_paused, "created", dict(fields)
    stored = {n: cur.get(n) for n in WRITE_FIELDS}
    to_store: dict[str, str | bytes] = {}
    if fields is not None:
        to_store = {n: v for n, v in fields.items()
                    if (v if isinstance(v, bytes) else v.encode()) != (stored.get(n) or b"")}
    if not to_store and new_paused == was_paused:
        return None
    if timing is None:
        timing = timing_of(cur)
    last = _ms(_text(cur["last"]))
    after = now if last is None else max(now, last)
    due = _ms(_text(cur["due"]))
    runs = int(_text(cur["runs"]) or 0)
    lim = int(_text(to_store.get("lim", cur.get("lim"))) or 0)
    if any(n in to_store for n in SPEC_FIELDS) or (
            due is not None and last is not None and due <= last):
        # a new grid (or a due slot that is not after the tombstone: never valid): the
        # first slot after now and after the last fired slot
        due = timing.next_after(after)
    elif due is None and not (lim and runs >= lim):
        due = timing.next_after(after)  # ended before: end_at or limit changed, or revived
    elif due is not None and timing.end_ms is not None and due > timing.end_ms:
        due = None
    elif was_paused and not new_paused and due is not None and due < now:
        due = timing.next_after(after)  # slots that fell in the pause are skipped
    if lim and runs >= lim:
        due = None
    if new_paused != was_paused and not to_store:
        reason = "paused" if new_paused else "resumed"
    else:
        reason = "changed"
    return due, new_paused, reason, to_store


__all__ = ["DEFAULT_GRACE_S", "Clock", "Schedules", "build_timing", "plan_write"]
