"""When a schedule's slots fall: cron in an IANA time zone, or a fixed interval.

Pure functions of the spec and of the instants given to them (integer milliseconds
since the Unix epoch): no clock is read here, so tests move time by passing instants.

Cron expressions are parsed and evaluated by `cronsim`_ in the schedule's zone
(``zoneinfo``). Its DST rule is Debian cron's, which is ours:

* a schedule at fixed hours (neither the minute nor the hour field starts with ``*``:
  ``0 8 * * *``, ``30 1 * * 1-5``, ``0 9,17 * * *``) follows the wall clock. A wall time
  that happens twice (the clock falls back) fires once, at its first occurrence; a wall
  time that does not exist (the clock jumps forward over it) fires at the first valid
  instant after the gap (``30 2 * * *`` fires at 03:00 on the night New York springs
  forward, ``15 2 * * *`` at 02:30 on Lord Howe Island's half-hour jump);
* a schedule whose minute or hour field starts with ``*`` (``0 * * * *``,
  ``*/15 * * * *``, ``0 */2 * * *``) follows elapsed time: every instant whose wall
  clock matches fires, so an hourly job runs every hour through a fall-back night
  (01:00 fires twice, an hour apart) and a skipped hour has no slots (no time passes
  in it).

An interval (``every``) is a grid in absolute time: ``start_at + k * every``, or, with
no ``start_at``, multiples of ``every`` since the epoch (``every=30`` fires at :00 and
:30 of each minute). Time zones and DST do not move it.

.. _cronsim: https://pypi.org/project/cronsim/
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from cronsim import CronSim, CronSimError

from ..errors import ConfigError

MIN_EVERY_MS = 1000
"""The shortest interval: a schedule firing more often than once a second is a loop."""
MAX_CATCH_UP = 1000
"""Slots counted one by one when catching up after downtime; beyond that the latest
missed slot is found directly and the count of missed slots is reported as this many."""

MACROS: dict[str, str] = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}
FIELDS = "minute hour day-of-month month day-of-week"


def check_zone(tz: str) -> ZoneInfo:
    """The zone named ``tz`` (IANA name such as ``Africa/Nairobi``), else ConfigError."""
    if not isinstance(tz, str) or not tz or len(tz) > 64:
        raise ConfigError(f"time zone {str(tz)[:64]!r} is invalid: use an IANA name such as "
                          "'Africa/Nairobi' or 'UTC'")
    try:
        return ZoneInfo(tz)
    except (ZoneInfoNotFoundError, ValueError):
        raise ConfigError(f"time zone {tz!r} is unknown: use an IANA name such as "
                          "'Africa/Nairobi' or 'UTC'") from None


def check_cron(expr: str) -> str:
    """The expression normalised (one space between 5 fields, macros expanded), else a
    ConfigError naming the bad field."""
    if not isinstance(expr, str):
        raise ConfigError(f"cron must be a string such as '0 8 * * *', got {type(expr).__name__}")
    text = " ".join(expr.split())
    text = MACROS.get(text.lower(), text)
    shown = expr.strip()[:80]
    if len(text.split()) != 5:
        raise ConfigError(f"cron expression {shown!r} is invalid: it needs 5 fields ({FIELDS}); "
                          "use every= for intervals under a minute")
    try:
        CronSim(text, datetime(2000, 1, 1))
    except CronSimError as exc:
        reason = str(exc).lower() or "malformed"
        raise ConfigError(f"cron expression {shown!r} is invalid: {reason} ({FIELDS})") from None
    return text


def to_ms(dt: datetime) -> int:
    if dt.tzinfo is None:
        raise ConfigError("start_at and end_at must be timezone-aware datetimes (e.g. "
                          "datetime(2026, 1, 1, tzinfo=UTC))")
    return round(dt.timestamp() * 1000)


def ms_to_datetime(ms: int | None) -> datetime | None:
    return None if ms is None else datetime.fromtimestamp(ms / 1000, UTC)


@dataclass(frozen=True, slots=True)
class Timing:
    """A schedule's slots. Exactly one of ``cron`` (normalised) and ``every_ms``."""

    cron: str | None
    every_ms: int | None
    tz: str = "UTC"
    start_ms: int | None = None
    end_ms: int | None = None

    def __post_init__(self) -> None:
        if (self.cron is None) == (self.every_ms is None):
            raise ConfigError("a schedule takes exactly one of cron= and every=")
        if self.every_ms is not None and self.every_ms < MIN_EVERY_MS:
            raise ConfigError(f"every must be at least {MIN_EVERY_MS / 1000:g} second, got "
                              f"{self.every_ms / 1000:g}")
        if (self.start_ms is not None and self.end_ms is not None
                and self.end_ms < self.start_ms):
            raise ConfigError("end_at is before start_at: the schedule would never fire")

    @property
    def zone(self) -> ZoneInfo:
        return check_zone(self.tz)

    # -- the grid ---------------------------------------------------------------------------
    def next_after(self, t_ms: int) -> int | None:
        """The first slot strictly after ``t_ms`` (and at or after ``start_ms``, at or
        before ``end_ms``), or None when there is none."""
        if self.start_ms is not None and t_ms < self.start_ms:
            t_ms = self.start_ms - 1
        slot = self._every_after(t_ms) if self.every_ms is not None else self._cron_after(t_ms)
        if slot is None or (self.end_ms is not None and slot > self.end_ms):
            return None
        return slot

    def first_from(self, t_ms: int) -> int | None:
        """The first slot at or after ``t_ms``."""
        return self.next_after(t_ms - 1)

    def _every_after(self, t_ms: int) -> int:
        every = self.every_ms
        assert every is not None
        anchor = self.start_ms if self.start_ms is not None else 0
        if t_ms < anchor:
            return anchor
        return anchor + ((t_ms - anchor) // every + 1) * every

    def _cron_after(self, t_ms: int) -> int | None:
        assert self.cron is not None
        start = datetime.fromtimestamp(t_ms / 1000, self.zone)
        it = CronSim(self.cron, start)
        try:
            while True:
                slot = round(next(it).timestamp() * 1000)
                # cronsim walks fixed-hour schedules in wall time: started inside the
                # second pass of a repeated hour it can name the first pass, which is
                # earlier than t_ms (and was that slot's only firing)
                if slot > t_ms:
                    return slot
        except StopIteration:  # no match within 50 years
            return None

    def _cron_latest_until(self, t_ms: int) -> int | None:
        """The last slot at or before ``t_ms`` (cronsim iterating backwards)."""
        assert self.cron is not None
        start = datetime.fromtimestamp((t_ms // 1000 + 1), self.zone)
        it = CronSim(self.cron, start, reverse=True)
        try:
            while True:
                slot = round(next(it).timestamp() * 1000)
                if slot <= t_ms:
                    return slot
        except StopIteration:
            return None

    def catch_up(self, due_ms: int, now_ms: int) -> CatchUp:
        """The slots from ``due_ms`` (a slot, at or before ``now_ms``) up to ``now_ms``:
        the latest of them, how many there are, and the first slot after ``now_ms``."""
        if due_ms > now_ms:  # not due yet
            return CatchUp(None, 0, due_ms)
        if self.end_ms is not None and due_ms > self.end_ms:
            return CatchUp(None, 0, None)
        horizon = now_ms if self.end_ms is None else min(now_ms, self.end_ms)
        if self.every_ms is not None:
            count = (horizon - due_ms) // self.every_ms + 1
            latest = due_ms + (count - 1) * self.every_ms
        else:
            latest, count = due_ms, 1
            while count <= MAX_CATCH_UP:
                n = self.next_after(latest)
                if n is None or n > horizon:
                    break
                latest, count = n, count + 1
            else:  # a long outage of a frequent schedule: jump to the latest slot
                jumped = self._cron_latest_until(horizon)
                if jumped is not None and jumped > latest:
                    latest = jumped
                count = MAX_CATCH_UP
        return CatchUp(latest, count, self.next_after(max(latest, now_ms)))


@dataclass(frozen=True, slots=True)
class CatchUp:
    latest: int | None
    """The latest due slot (None: none is due)."""
    count: int
    """Due slots, the latest included."""
    next: int | None
    """The first slot after now (None: the schedule has ended)."""


__all__ = ["MACROS", "MAX_CATCH_UP", "MIN_EVERY_MS", "CatchUp", "Timing", "check_cron",
           "check_zone", "ms_to_datetime", "to_ms"]
