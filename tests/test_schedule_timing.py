"""Where a schedule's slots fall: cron in IANA zones across DST, interval grids, catch-up
after downtime and the misfire plan. Pure functions: time is an input (instants are
passed in), no clock is read and no Redis is needed."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from streamq import ConfigError
from streamq.schedules import Timing, plan_fire, run_job_id
from streamq.schedules.store import build_timing
from streamq.schedules.timing import MAX_CATCH_UP, check_cron, check_zone


def ms(dt: datetime) -> int:
    return round(dt.timestamp() * 1000)


def local(ms_value: int, tz: str) -> str:
    """An instant as the zone's wall time with its offset: '2026-11-01T01:30:00-04:00'."""
    return datetime.fromtimestamp(ms_value / 1000, ZoneInfo(tz)).isoformat()


def slots(timing: Timing, start: datetime, n: int) -> list[str]:
    out: list[str] = []
    t = ms(start)
    for _ in range(n):
        nxt = timing.next_after(t)
        assert nxt is not None
        out.append(local(nxt, timing.tz))
        t = nxt
    return out


def cron(expr: str, tz: str, **kw: int) -> Timing:
    return Timing(cron=check_cron(expr), every_ms=None, tz=tz, **kw)  # type: ignore[arg-type]


# -- DST: a fixed-hour schedule fires a repeated wall time once, a skipped one after the gap ----
NY = "America/New_York"        # 2026-03-08 02:00 -> 03:00; 2026-11-01 02:00 -> 01:00
BERLIN = "Europe/Berlin"       # 2026-03-29 02:00 -> 03:00; 2026-10-25 03:00 -> 02:00
LORD_HOWE = "Australia/Lord_Howe"  # 30-minute shifts: 2026-04-05 02:00 -> 01:30;
#                                    2026-10-04 02:00 -> 02:30


@pytest.mark.parametrize(("tz", "expr", "start", "expected"), [
    # fall back: 01:30 happens twice in New York; the daily run fires once, at the first
    (NY, "30 1 * * *", datetime(2026, 10, 31, 12), [
        "2026-11-01T01:30:00-04:00", "2026-11-02T01:30:00-05:00"]),
    # 02:30 happens twice in Berlin
    (BERLIN, "30 2 * * *", datetime(2026, 10, 24, 12), [
        "2026-10-25T02:30:00+02:00", "2026-10-26T02:30:00+01:00"]),
    # Lord Howe repeats 01:30-02:00 only: 01:45 twice, fired once
    (LORD_HOWE, "45 1 * * *", datetime(2026, 4, 4, 12), [
        "2026-04-05T01:45:00+11:00", "2026-04-06T01:45:00+10:30"]),
])
def test_a_wall_time_that_happens_twice_fires_once(tz: str, expr: str, start: datetime,
                                                   expected: list[str]) -> None:
    t = cron(expr, tz)
    assert slots(t, start.replace(tzinfo=ZoneInfo(tz)), 2) == expected


@pytest.mark.parametrize(("tz", "expr", "start", "expected"), [
    # spring forward: 02:30 does not exist in New York on 2026-03-08: 03:00 instead
    (NY, "30 2 * * *", datetime(2026, 3, 7, 12), [
        "2026-03-08T03:00:00-04:00", "2026-03-09T02:30:00-04:00"]),
    (BERLIN, "15 2 * * 0", datetime(2026, 3, 28, 12), [
        "2026-03-29T03:00:00+02:00", "2026-04-05T02:15:00+02:00"]),
    # Lord Howe skips 02:00-02:30 only: 02:15 fires at 02:30, the first valid instant
    (LORD_HOWE, "15 2 * * *", datetime(2026, 10, 3, 12), [
        "2026-10-04T02:30:00+11:00", "2026-10-05T02:15:00+11:00"]),
])
def test_a_wall_time_that_does_not_exist_fires_at_the_first_valid_instant_after(
        tz: str, expr: str, start: datetime, expected: list[str]) -> None:
    t = cron(expr, tz)
    assert slots(t, start.replace(tzinfo=ZoneInfo(tz)), 2) == expected


@pytest.mark.parametrize(("tz", "start", "expected"), [
    # hourly jobs follow elapsed time: the repeated hour fires again, an hour later
    (NY, datetime(2026, 11, 1, 0, 30), [
        "2026-11-01T01:00:00-04:00", "2026-11-01T01:00:00-05:00", "2026-11-01T02:00:00-05:00"]),
    (BERLIN, datetime(2026, 10, 25, 1, 30), [
        "2026-10-25T02:00:00+02:00", "2026-10-25T02:00:00+01:00", "2026-10-25T03:00:00+01:00"]),
    # and a skipped hour has no slot: no time passes in it
    (NY, datetime(2026, 3, 8, 0, 30), [
        "2026-03-08T01:00:00-05:00", "2026-03-08T03:00:00-04:00", "2026-03-08T04:00:00-04:00"]),
])
def test_hourly_schedules_follow_elapsed_time(tz: str, start: datetime,
                                               expected: list[str]) -> None:
    t = cron("0 * * * *", tz)
    got = slots(t, start.replace(tzinfo=ZoneInfo(tz)), 3)
    assert got == expected
    firsts = [datetime.fromisoformat(x) for x in got]
    assert all(b - a == timedelta(hours=1) for a, b in itertools.pairwise(firsts))


def test_quarter_hourly_through_lord_howes_half_hour_fall_back() -> None:
    t = cron("*/15 * * * *", LORD_HOWE)
    got = slots(t, datetime(2026, 4, 5, 1, 20, tzinfo=ZoneInfo(LORD_HOWE)), 5)
    assert got == ["2026-04-05T01:30:00+11:00", "2026-04-05T01:45:00+11:00",
                   "2026-04-05T01:30:00+10:30", "2026-04-05T01:45:00+10:30",
                   "2026-04-05T02:00:00+10:30"]


def test_next_after_an_instant_in_the_second_pass_of_a_repeated_hour_never_goes_back() -> None:
    """cronsim walks fixed-hour schedules in wall time; asked from inside the repeated
    hour's second pass it would name the first pass (already gone): we skip to the next day."""
    t = cron("45 1 * * *", NY)
    second_pass = datetime(2026, 11, 1, 1, 20, tzinfo=ZoneInfo(NY), fold=1)  # 01:20 EST
    nxt = t.next_after(ms(second_pass))
    assert nxt is not None and nxt > ms(second_pass)
    assert local(nxt, NY) == "2026-11-02T01:45:00-05:00"


def test_cron_in_a_zone_without_dst_and_in_utc() -> None:
    nairobi = cron("0 8 * * *", "Africa/Nairobi")
    assert slots(nairobi, datetime(2026, 3, 8, 9, tzinfo=UTC), 2) == [
        "2026-03-09T08:00:00+03:00", "2026-03-10T08:00:00+03:00"]
    assert slots(cron("@hourly", "UTC"), datetime(2026, 1, 1, 0, 10, tzinfo=UTC), 1) == [
        "2026-01-01T01:00:00+00:00"]


# -- intervals -------------------------------------------------------------------------------
def test_every_is_a_grid_in_absolute_time() -> None:
    t = Timing(cron=None, every_ms=30_000)
    base = ms(datetime(2026, 11, 1, 5, 59, 50, tzinfo=UTC))
    assert t.next_after(base) == ms(datetime(2026, 11, 1, 6, 0, 0, tzinfo=UTC))
    assert t.next_after(base + 10_000) == base + 40_000  # strictly after
    anchored = Timing(cron=None, every_ms=30_000, start_ms=base + 1234)
    assert anchored.next_after(base) == base + 1234
    assert anchored.next_after(base + 1234) == base + 31_234


def test_start_and_end_bound_the_slots() -> None:
    start = ms(datetime(2026, 6, 1, tzinfo=UTC))
    t = cron("0 8 * * *", "UTC", start_ms=start, end_ms=start + 2 * 86_400_000)
    first = t.next_after(start - 10 * 86_400_000)
    assert first == start + 8 * 3_600_000
    second = t.next_after(first)
    assert second == first + 86_400_000
    assert t.next_after(second) is None  # the third would be after end_at
    assert t.first_from(first) == first


# -- catch-up and the misfire plan ---------------------------------------------------------------
def test_catch_up_counts_the_missed_slots_and_finds_the_next() -> None:
    t = Timing(cron=None, every_ms=1000)
    c = t.catch_up(10_000, 15_400)
    assert (c.latest, c.count, c.next) == (15_000, 6, 16_000)
    cr = cron("* * * * *", "UTC")
    c = cr.catch_up(60_000, 60_000 * 5 + 10)
    assert (c.latest, c.count, c.next) == (300_000, 5, 360_000)


def test_catch_up_after_a_long_outage_jumps_to_the_latest_slot() -> None:
    cr = cron("* * * * *", "UTC")
    now = 60_000 * 5000 + 5
    c = cr.catch_up(60_000, now)
    assert c.latest == 60_000 * 5000
    assert c.count == MAX_CATCH_UP
    assert c.next == 60_000 * 5001


def test_plan_fire_run_once_fires_the_latest_due_slot_once() -> None:
    t = Timing(cron=None, every_ms=1000)
    p = plan_fire(t, 10_000, 15_400, "run_once", 60_000)
    assert (p.slot, p.next, p.missed) == (15_000, 16_000, 5)
    on_time = plan_fire(t, 10_000, 10_003, "run_once", 60_000)
    assert (on_time.slot, on_time.next, on_time.missed) == (10_000, 11_000, 0)


def test_plan_fire_skip_runs_the_latest_slot_only_within_the_grace() -> None:
    daily = cron("0 8 * * *", "UTC")
    eight = ms(datetime(2026, 6, 1, 8, tzinfo=UTC))
    late = plan_fire(daily, eight, eight + 10 * 3_600_000, "skip", 60_000)  # 10 h of downtime
    assert late.slot is None and late.missed == 1 and late.next == eight + 86_400_000
    in_grace = plan_fire(daily, eight, eight + 30_000, "skip", 60_000)
    assert in_grace.slot == eight and in_grace.missed == 0
    every = Timing(cron=None, every_ms=1000)
    p = plan_fire(every, 10_000, 15_400, "skip", 60_000)
    assert (p.slot, p.missed) == (15_000, 5)  # the backlog is dropped, the current slot runs
    ran_late = plan_fire(daily, eight, eight + 10 * 3_600_000, "run_once", 60_000)
    assert ran_late.slot == eight and ran_late.missed == 0


def test_plan_fire_past_end_fires_nothing() -> None:
    t = Timing(cron=None, every_ms=1000, end_ms=12_000)
    p = plan_fire(t, 10_000, 20_000, "run_once", 60_000)
    assert (p.slot, p.next, p.missed) == (12_000, None, 2)


# -- bad specs, one clear line each ----------------------------------------------------------------
@pytest.mark.parametrize(("kwargs", "message"), [
    ({"cron": "61 * * * *"}, "cron expression '61 * * * *' is invalid: bad minute"),
    ({"cron": "0 25 * * *"}, "bad hour"),
    ({"cron": "* * * *"}, "it needs 5 fields"),
    ({"cron": "0 0 * * * *"}, "use every= for intervals under a minute"),
    ({"cron": "0 0 30 2 *"}, "bad day-of-month"),
    ({"cron": "0 8 * * *", "tz": "Mars/Olympus"}, "time zone 'Mars/Olympus' is unknown"),
    ({"cron": "0 8 * * *", "tz": "../../etc/passwd"}, "is unknown"),
    ({"cron": "0 8 * * *", "every": 5.0}, "exactly one of cron= and every="),
    ({}, "exactly one of cron= and every="),
    ({"every": 0.5}, "every must be at least 1 second"),
    ({"every": "5"}, "every must be seconds or a timedelta"),
    ({"every": 60.0, "start_at": datetime(2026, 1, 2)}, "timezone-aware"),
    ({"every": 60.0, "start_at": datetime(2026, 1, 2, tzinfo=UTC),
      "end_at": datetime(2026, 1, 1, tzinfo=UTC)}, "end_at is before start_at"),
])
def test_bad_specs_are_rejected_with_one_line(kwargs: dict[str, object], message: str) -> None:
    args = {"cron": None, "every": None, "tz": "UTC", "start_at": None, "end_at": None, **kwargs}
    with pytest.raises(ConfigError) as err:
        build_timing(**args)  # type: ignore[arg-type]
    assert message in str(err.value)
    assert "\n" not in str(err.value)


def test_zone_names_and_macros() -> None:
    assert check_zone("Africa/Nairobi").key == "Africa/Nairobi"
    assert check_cron(" 0   8 * *  1-5 ") == "0 8 * * 1-5"
    assert check_cron("@daily") == "0 0 * * *"


def test_run_ids_name_the_slot_with_a_routing_tag_and_no_long_digit_runs() -> None:
    slot = ms(datetime(2026, 3, 8, 8, 0, 0, tzinfo=UTC))
    assert run_job_id("digest", slot) == "{digest}@2026-03-08T08:00:00Z"
    assert run_job_id("ping", slot + 500) == "{ping}@2026-03-08T08:00:00.500Z"
    import re

    assert not re.search(r"\d{5,}", run_job_id("digest", slot + 123))
