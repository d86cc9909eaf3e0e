"""A schedule as Redis holds it (one hash per schedule) and as users see it (``Schedule``).

The hash's fields, written by ``lua/upsert_schedule.lua`` and ``lua/fire_schedule.lua``:

==========  ==================================================================
v           version token: changes on every upsert, pause and resume
due         the due slot (ms, Redis clock), '' when no slot is left
last        the last fired slot (ms): the tombstone no worker fires at or before
lr          the job id of the last fired run
runs        runs fired (kept across spec changes; ``limit`` counts these)
missed      slots not run (after downtime, or skipped by ``overlap="skip"``)
fired       when the last run was fired (ms, Redis clock)
paused      0/1
cron, every, tz, start, end, lim, mis, grace, ov   the spec (every/start/end/grace in ms)
d, ln, a, b, y, pri   the run's payload, lane, attempts, backoff, type tag, priority
created, updated   ms
==========  ==================================================================
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

from ..errors import ConfigError
from ..priority import Priority
from .timing import Timing, ms_to_datetime

Misfire = Literal["run_once", "skip"]
Overlap = Literal["allow", "skip"]
MISFIRES: tuple[str, ...] = ("run_once", "skip")
OVERLAPS: tuple[str, ...] = ("allow", "skip")

# no braces: the id becomes a run's routing tag, {<schedule id>}
_SCHEDULE_ID_RE = re.compile(r"^[A-Za-z0-9_.:@=+-]{1,100}$")

STATE_FIELDS: tuple[str, ...] = (
    "v", "due", "last", "lr", "runs", "missed", "fired", "paused", "created", "updated",
    "cron", "every", "tz", "start", "end", "lim", "mis", "grace", "ov", "ln", "a", "b", "y", "pri",
)
"""The fields read for listing and firing (the payload ``d`` only when needed)."""


def check_schedule_id(schedule_id: str) -> str:
    if not isinstance(schedule_id, str) or not _SCHEDULE_ID_RE.match(schedule_id):
        shown = schedule_id[:40] if isinstance(schedule_id, str) else type(schedule_id).__name__
        raise ConfigError(f"schedule id {shown!r} is invalid: use 1-100 characters of "
                          "A-Z a-z 0-9 _ . : @ = + -")
    return schedule_id


def slot_text(slot_ms: int) -> str:
    """A slot as the tail of its run's job id: ISO 8601 in UTC, milliseconds only when
    not zero (no digit run longer than 4: job ids appear in key names)."""
    dt = datetime.fromtimestamp(slot_ms / 1000, UTC)
    text = dt.strftime("%Y-%m-%dT%H:%M:%S")
    if slot_ms % 1000:
        text += f".{slot_ms % 1000:03d}"
    return text + "Z"


def run_job_id(schedule_id: str, slot_ms: int) -> str:
    """The job id of a slot's run: ``{<schedule id>}@<slot>``. The braces are a routing
    tag: the run goes to the partition of the schedule id, where the schedule lives."""
    return "{" + schedule_id + "}@" + slot_text(slot_ms)


def _text(v: Any) -> str:
    return v.decode("utf-8", "replace") if isinstance(v, bytes) else ("" if v is None else str(v))


def _priority(text: str) -> Priority:
    """A stored priority: a level as digits, else a name (a schedule from before levels)."""
    if text.isdigit():
        return int(text)
    if text == "high":
        return "high"
    return "low" if text == "low" else "normal"


def _int(v: Any) -> int | None:
    t = _text(v)
    try:
        return int(t) if t else None
    except ValueError:
        return None


@dataclass(frozen=True, slots=True)
class Schedule:
    """One schedule of a queue (``Queue.schedules()``). Times are UTC datetimes."""

    id: str
    cron: str | None
    """The cron expression (5 fields), or None for an interval."""
    every: float | None
    """The interval in seconds, or None for a cron schedule."""
    tz: str
    """The IANA zone the cron expression is read in."""
    next_run_at: datetime | None
    """The due slot (None: paused with no slot, or no slot left: ended or limit reached)."""
    last_run_at: datetime | None
    """The slot of the last run fired."""
    runs: int
    """Runs fired (kept across spec changes)."""
    paused: bool
    misfire: Misfire = "run_once"
    overlap: Overlap = "allow"
    start_at: datetime | None = None
    end_at: datetime | None = None
    limit: int | None = None
    missed: int = 0
    """Slots not run: missed in downtime (misfire), or skipped by overlap="skip"."""
    last_run_id: str | None = None
    """The job id of the last run fired (``Queue.get_job`` tells its state)."""
    last_fired_at: datetime | None = None
    """When the last run was fired (Redis clock)."""
    misfire_grace: float = 60.0
    priority: Priority = "normal"
    """The runs' priority as given at upsert (a name, or a level 1-10)."""
    attempts: int | None = None
    version: str = ""
    partition: int = 0

    @property
    def ended(self) -> bool:
        """No slot is left (end_at passed, or limit reached)."""
        return self.next_run_at is None and not self.paused

    @property
    def state(self) -> str:
        """active, paused or ended."""
        return "paused" if self.paused else "ended" if self.next_run_at is None else "active"

    @property
    def spec_text(self) -> str:
        """``cron 0 8 * * * (Africa/Nairobi)`` or ``every 30s``."""
        if self.cron is not None:
            return f"cron {self.cron} ({self.tz})"
        return f"every {self.every or 0:g}s"

    @property
    def timing(self) -> Timing:
        def ms(dt: datetime | None) -> int | None:
            return None if dt is None else round(dt.timestamp() * 1000)

        return Timing(cron=self.cron, every_ms=None if self.every is None
                      else round(self.every * 1000), tz=self.tz, start_ms=ms(self.start_at),
                      end_ms=ms(self.end_at))

    def upcoming(self, n: int) -> list[datetime]:
        """The next ``n`` slots from the due slot (limit and end_at applied; none while
        paused without a due slot, or ended)."""
        if self.next_run_at is None or n < 1:
            return []
        left = n if self.limit is None else min(n, max(0, self.limit - self.runs))
        timing = self.timing
        out: list[datetime] = []
        t: int | None = round(self.next_run_at.timestamp() * 1000)
        while t is not None and len(out) < left:
            out.append(datetime.fromtimestamp(t / 1000, UTC))
            t = timing.next_after(t)
        return out


def parse_schedule(schedule_id: str, values: list[Any], partition: int = 0) -> Schedule | None:
    """A ``Schedule`` from the values of STATE_FIELDS (HMGET order); None if absent."""
    f = dict(zip(STATE_FIELDS, values, strict=True))
    if f["v"] is None:
        return None
    every_ms = _int(f["every"])
    lim = _int(f["lim"]) or 0
    mis = _text(f["mis"]) or "run_once"
    ov = _text(f["ov"]) or "allow"
    return Schedule(
        id=schedule_id,
        cron=_text(f["cron"]) or None,
        every=None if every_ms is None else every_ms / 1000,
        tz=_text(f["tz"]) or "UTC",
        next_run_at=ms_to_datetime(_int(f["due"])),
        last_run_at=ms_to_datetime(_int(f["last"])),
        runs=_int(f["runs"]) or 0,
        paused=_text(f["paused"]) == "1",
        misfire=mis if mis in MISFIRES else "run_once",  # type: ignore[arg-type]
        overlap=ov if ov in OVERLAPS else "allow",  # type: ignore[arg-type]
        start_at=ms_to_datetime(_int(f["start"])),
        end_at=ms_to_datetime(_int(f["end"])),
        limit=lim or None,
        missed=_int(f["missed"]) or 0,
        last_run_id=_text(f["lr"]) or None,
        last_fired_at=ms_to_datetime(_int(f["fired"])),
        misfire_grace=(_int(f["grace"]) or 0) / 1000,
        priority=_priority(_text(f["pri"])),
        attempts=_int(f["a"]),
        version=_text(f["v"]),
        partition=partition,
    )


def timing_of(fields: dict[str, Any]) -> Timing:
    """The stored spec's timing (raises ConfigError for a malformed one)."""
    return Timing(cron=_text(fields.get("cron")) or None, every_ms=_int(fields.get("every")),
                  tz=_text(fields.get("tz")) or "UTC", start_ms=_int(fields.get("start")),
                  end_ms=_int(fields.get("end")))


__all__ = ["MISFIRES", "OVERLAPS", "STATE_FIELDS", "Misfire", "Overlap", "Schedule",
           "check_schedule_id", "parse_schedule", "run_job_id", "slot_text", "timing_of"]
