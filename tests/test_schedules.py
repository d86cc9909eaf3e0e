"""Schedules against a real Redis: upsert, firing by workers, exactly one run per slot,
the compare-and-set and the tombstone, misfire and overlap, start/end/limit, pause,
spec changes, run now, bad specs, partitioned queues, events and metrics."""

from __future__ import annotations

import itertools
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import anyio
import msgspec
import pytest

from streamq import ConfigError, Job, JobOptions, JobState, PayloadError, Queue, Schedule, Worker
from streamq.metrics import Metrics
from streamq.routing import partition_of
from streamq.schedules import Schedules, run_job_id
from streamq.schedules.model import slot_text
from tests.support.util import running, wait_until


@asynccontextmanager
async def worker_on(q: Queue, seen: list[tuple[str, float, int]], **kw: Any
                    ) -> AsyncIterator[Worker]:
    async def handler(job: Job) -> None:
        seen.append((job.id, time.time(), job.partition))

    kw.setdefault("rate_limit", None)
    async with running(Worker(q, handler, **kw)) as w:
        yield w


def slot_of(job_id: str) -> int:
    stamp = job_id.split("}@", 1)[1]
    return round(datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp() * 1000)


async def events(q: Queue, name: str) -> list[Any]:
    return [e for e in await q.read_events("0-0", 10_000) if e.name == name]


async def test_upsert_returns_the_schedule_and_is_idempotent(redis_url: str, queue_name: str) -> None:
    async with Queue(queue_name, redis_url=redis_url) as q:
        s = await q.upsert_schedule("digest", cron="0 8 * * *", tz="Africa/Nairobi",
                                    data={"kind": "digest"},
                                    options=JobOptions(priority="high", attempts=5))
        assert isinstance(s, Schedule)
        assert (s.id, s.cron, s.every, s.tz, s.runs, s.paused) == (
            "digest", "0 8 * * *", None, "Africa/Nairobi", 0, False)
        assert s.next_run_at is not None and s.next_run_at > datetime.now(UTC)
        # 08:00 in Nairobi (UTC+3, no DST) is 05:00 UTC
        assert (s.next_run_at.hour, s.next_run_at.minute) == (5, 0)
        assert s.priority == "high" and s.attempts == 5 and s.last_run_at is None
        again = await q.upsert_schedule("digest", cron="0 8 * * *", tz="Africa/Nairobi",
                                        data={"kind": "digest"},
                                        options=JobOptions(priority="high", attempts=5))
        assert again.version == s.version and again.next_run_at == s.next_run_at
        assert len(await events(q, "scheduled")) == 1  # the second upsert wrote nothing
        ping = await q.upsert_schedule("ping", every=timedelta(seconds=30), data=None)
        assert ping.every == 30.0 and ping.cron is None
        assert ping.next_run_at is not None and ping.next_run_at.second in (0, 30)
        assert [x.id for x in await q.schedules()] == ["digest", "ping"]
        assert await q.remove_schedule("digest") is True
        assert await q.remove_schedule("digest") is False
        assert [x.id for x in await q.schedules()] == ["ping"]
        assert await q.get_schedule("digest") is None


@pytest.mark.timeout(60)
async def test_a_worker_fires_each_slot_once_and_the_run_lands_as_a_job(
        redis_url: str, queue_name: str) -> None:
    seen: list[tuple[str, float, int]] = []
    async with Queue(queue_name, redis_url=redis_url) as q:
        await q.upsert_schedule("tick", every=1.0, data={"n": 1})
        async with worker_on(q, seen):
            await wait_until(lambda: len(seen) >= 3, 10, message="3 runs")
        ids = [j for j, _, _ in seen]
        assert len(ids) == len(set(ids))
        slots = [slot_of(j) for j in ids]
        assert all(b - a == 1000 for a, b in itertools.pairwise(slots))
        for job_id, started, _ in seen:
            assert started * 1000 - slot_of(job_id) < 1000, "a run started a second late"
        s = await q.get_schedule("tick")
        assert s is not None and s.runs == len(seen) and s.missed == 0
        assert s.last_run_id == ids[-1] and s.last_run_at is not None
        assert s.next_run_at is not None and s.next_run_at.timestamp() * 1000 == slots[-1] + 1000
        info = await q.get_job(ids[0])
        assert info is not None and info.state is JobState.COMPLETED
        fired = await events(q, "fired")
        assert [e.job_id for e in fired] == ids
        assert all(e.fields and e.fields["sched"] == "tick" for e in fired)
        assert {e.job_id for e in await events(q, "added")} >= set(ids)


async def test_concurrent_upserts_of_one_id_apply_one_after_the_other(
        redis_url: str, queue_name: str) -> None:
    async with Queue(queue_name, redis_url=redis_url) as q:
        specs = [{"every": float(10 + i % 5)} for i in range(40)]
        results: list[Schedule] = []

        async def one(spec: dict[str, Any]) -> None:
            results.append(await q.upsert_schedule("race", data={"spec": spec}, **spec))

        async with anyio.create_task_group() as tg:
            for spec in specs:
                tg.start_soon(one, spec)
        listed = await q.schedules()
        assert [s.id for s in listed] == ["race"]
        final = listed[0]
        assert final.version in {r.version for r in results}
        assert final.every is not None
        # the stored due slot belongs to the stored spec's grid
        assert final.next_run_at is not None
        assert round(final.next_run_at.timestamp() * 1000) % round(final.every * 1000) == 0
        # every write was a real change (identical data and spec writes nothing)
        changes = await events(q, "scheduled")
        assert 1 <= len(changes) <= len(specs)
        assert len({r.version for r in results}) == len(changes)
        # identical concurrent upserts: one write only
        versions: set[str] = set()

        async def same() -> None:
            versions.add((await q.upsert_schedule("same", every=5.0, data=1)).version)

        async with anyio.create_task_group() as tg:
            for _ in range(20):
                tg.start_soon(same)
        assert len(versions) == 1
        assert sum(1 for e in await events(q, "scheduled") if e.fields
                   and e.fields["sched"] == "same") == 1


async def test_a_slow_worker_cannot_fire_a_finished_slot_even_after_its_record_expired(
        redis_url: str, queue_name: str) -> None:
    """Worker A reads the schedule and computes; worker B fires the slot, the run completes
    and its record goes (purged here, as expiry would); A's fire then arrives: refused by
    the compare-and-set. The negative control shows the job id alone would not stop it."""
    seen: list[tuple[str, float, int]] = []
    async with Queue(queue_name, redis_url=redis_url) as q:
        await Schedules(q, clock=lambda: time.time() - 3).upsert("once", every=1.0, data="x")
        k = q.keys
        raw = await q.redis.hmget(k.schedule("once"), ["v", "due", "d", "ln", "a", "b"])
        v, due, payload, lane = raw[0].decode(), raw[1].decode(), raw[2], int(raw[3])
        run_id = run_job_id("once", int(due))
        stale = [k.schedule("once"), k.schedules, k.events, k.bucket(run_id), k.bucket(run_id),
                 k.lanes[lane], k.lane_map]
        stale_args = ["once", v, due, due, run_id, str(int(due) + 1000), 0, payload, lane,
                      raw[4].decode(), raw[5].decode(), 100, "", "downtime", ""]
        async with worker_on(q, seen):  # worker B
            await wait_until(lambda: seen, 10, message="B fired the schedule")
            await wait_until(lambda: q.counts(), 5)
            await q.pause_schedule("once")
        await wait_until(lambda: _completed(q, seen[0][0]), 5, message="the run completed")
        assert await q.purge_completed() >= 1  # the run's record is gone
        assert await q.get_job(seen[0][0]) is None
        before = (await q.counts())["waiting"]
        r = await q.run_script("fire_schedule", stale, stale_args)
        assert int(r[0]) in (0, -2)  # stale (due moved) or paused: refused either way
        assert (await q.counts())["waiting"] == before
        # the tombstone: even with the due slot and version put back, a slot at or before
        # the last fired slot is refused
        s = await q.get_schedule("once")
        assert s is not None and s.last_run_at is not None
        await q.resume_schedule("once")
        cur = await q.redis.hmget(k.schedule("once"), ["v", "due", "last"])
        last = cur[2].decode()
        await q.redis.hset(k.schedule("once"), "due", last)  # a corrupted due slot
        r = await q.run_script("fire_schedule", stale, [
            "once", cur[0].decode(), last, last, run_job_id("once", int(last)),
            str(int(last) + 1000), 0, payload, lane, "1", "2000", 100, "", "downtime", ""])
        assert int(r[0]) == -4
        # negative control: the job id alone dedups only while the run is live
        await q.pause_schedule("once")
        ref = await q.add("x", JobOptions(job_id=seen[0][0]))
        assert ref.job_id == seen[0][0] and (await q.counts())["waiting"] == before + 1


async def _completed(q: Queue, job_id: str) -> bool:
    info = await q.get_job(job_id)
    return info is not None and info.state is JobState.COMPLETED


@pytest.mark.timeout(60)
async def test_misfire_run_once_fires_one_run_for_all_missed_slots(
        redis_url: str, queue_name: str) -> None:
    seen: list[tuple[str, float, int]] = []
    async with Queue(queue_name, redis_url=redis_url) as q:
        # stored as if upserted 10.5 s ago, with no worker since: ~10 slots are overdue
        await Schedules(q, clock=lambda: time.time() - 10.5).upsert("catch", every=1.0, data=1)
        async with worker_on(q, seen):
            await wait_until(lambda: len(seen) >= 3, 10, message="three runs")
        first = slot_of(seen[0][0])
        assert seen[0][1] * 1000 - first < 1500, "the catch-up run is the latest missed slot"
        slots = [slot_of(j) for j, _, _ in seen]
        assert all(b - a == 1000 for a, b in itertools.pairwise(slots)), slots
        s = await q.get_schedule("catch")
        assert s is not None and s.runs == len(seen) and 9 <= s.missed <= 11
        missed = await events(q, "missed")
        assert len(missed) == 1 and missed[0].fields
        assert int(missed[0].fields["n"]) == s.missed and missed[0].fields["why"] == "downtime"


async def test_misfire_skip_drops_a_stale_slot_and_returns_to_the_grid(
        redis_url: str, queue_name: str) -> None:
    seen: list[tuple[str, float, int]] = []
    async with Queue(queue_name, redis_url=redis_url) as q:
        now = time.time()
        # a minute grid stored 10 min ago, whose latest due slot is 45 s old: older than
        # the 30 s grace; the 10 slots since were missed (no worker ran)
        start = datetime.fromtimestamp(now - 10 * 60 - 45, UTC)
        store = Schedules(q, clock=lambda: now - 10 * 60 - 44)
        await store.upsert("skip", every=60.0, start_at=start, misfire="skip",
                           misfire_grace=30.0, data=1)
        await store.upsert("once", every=60.0, start_at=start, misfire="run_once", data=1)
        async with worker_on(q, seen):
            await wait_until(lambda: _fired(q, "once"), 10, message="the run_once schedule")
            await wait_until(lambda: _missed(q, "skip"), 10, message="the skip schedule")
        skip = await q.get_schedule("skip")
        once = await q.get_schedule("once")
        assert skip is not None and once is not None
        assert skip.runs == 0 and skip.missed == 10 and skip.last_run_at is None
        assert [j for j, _, _ in seen if j.startswith("{skip}")] == []
        assert once.runs == 1 and once.missed == 9
        latest = round(start.timestamp() * 1000) + 10 * 60_000
        assert once.last_run_id == run_job_id("once", latest)
        # both back on the grid: the next slot is the first after now
        for s in (skip, once):
            assert s.next_run_at is not None
            assert round(s.next_run_at.timestamp() * 1000) == latest + 60_000


async def _fired(q: Queue, sid: str) -> bool:
    s = await q.get_schedule(sid)
    return s is not None and s.runs > 0


async def _missed(q: Queue, sid: str) -> bool:
    s = await q.get_schedule(sid)
    return s is not None and s.missed > 0


@pytest.mark.timeout(60)
async def test_overlap_skip_adds_no_run_while_the_previous_one_is_live(
        redis_url: str, queue_name: str) -> None:
    release = anyio.Event()
    started: list[str] = []

    async def handler(job: Job) -> None:
        started.append(job.id)
        if len(started) == 1:
            await release.wait()

    async with Queue(queue_name, redis_url=redis_url) as q:
        await q.upsert_schedule("solo", every=1.0, overlap="skip", data=1)
        async with running(Worker(q, handler, rate_limit=None, concurrency=3)):
            await wait_until(lambda: started, 10, message="the first run")
            await wait_until(lambda: _missed_at_least(q, "solo", 2), 10,
                             message="two slots skipped by overlap")
            assert len(started) == 1  # concurrency 3, yet no second run while one is live
            release.set()
            await wait_until(lambda: len(started) >= 2, 10, message="runs again")
        s = await q.get_schedule("solo")
        assert s is not None and s.missed >= 2
        why = {e.fields["why"] for e in await events(q, "missed") if e.fields}
        assert why == {"overlap"}
        assert slot_of(started[1]) - slot_of(started[0]) >= 3000


async def _missed_at_least(q: Queue, sid: str, n: int) -> bool:
    s = await q.get_schedule(sid)
    return s is not None and s.missed >= n


@pytest.mark.timeout(60)
async def test_start_end_and_limit(redis_url: str, queue_name: str) -> None:
    seen: list[tuple[str, float, int]] = []
    async with Queue(queue_name, redis_url=redis_url) as q:
        now = time.time()
        start = datetime.fromtimestamp(int(now) + 2, UTC)
        await q.upsert_schedule("limited", every=1.0, limit=3, data=1)
        await q.upsert_schedule("window", every=1.0, start_at=start,
                                end_at=start + timedelta(seconds=1.5), data=1)
        w = await q.get_schedule("window")
        assert w is not None and w.next_run_at == start
        async with worker_on(q, seen):
            await wait_until(lambda: _ended(q, "limited"), 15, message="limit reached")
            await wait_until(lambda: _ended(q, "window"), 15, message="window over")
            # the last runs fired may still be waiting for the worker: let them run
            await wait_until(lambda: len(seen) >= 5, 10, message="every fired run handled")
        limited = [j for j, _, _ in seen if j.startswith("{limited}")]
        window = [slot_of(j) for j, _, _ in seen if j.startswith("{window}")]
        assert len(limited) == 3
        start_ms = round(start.timestamp() * 1000)
        assert window == [start_ms, start_ms + 1000]
        s = await q.get_schedule("limited")
        assert s is not None and s.ended and s.runs == 3 and s.next_run_at is None
        # raising the limit revives it from now, keeping the count
        s = await q.upsert_schedule("limited", every=1.0, limit=4, data=1)
        assert s.next_run_at is not None and s.runs == 3
    with pytest.raises(ConfigError, match="would never fire"):
        async with Queue(queue_name, redis_url=redis_url) as q:
            await q.upsert_schedule("past", every=1.0, end_at=datetime(2020, 1, 1, tzinfo=UTC))


async def _ended(q: Queue, sid: str) -> bool:
    s = await q.get_schedule(sid)
    return s is not None and s.ended


@pytest.mark.timeout(60)
async def test_pause_resume_and_a_spec_change_never_refire_a_slot(
        redis_url: str, queue_name: str) -> None:
    seen: list[tuple[str, float, int]] = []
    async with Queue(queue_name, redis_url=redis_url) as q:
        await q.upsert_schedule("p", every=1.0, data=1)
        async with worker_on(q, seen):
            await wait_until(lambda: len(seen) >= 2, 10, message="two runs")
            assert await q.pause_schedule("p") is True
            paused = await q.get_schedule("p")
            assert paused is not None and paused.paused
            n = len(seen)
            await anyio.sleep(2.2)  # two slots pass while paused: none fires
            assert len(seen) in (n, n + 1)  # (one may have been firing as we paused)
            n = len(seen)
            assert await q.resume_schedule("p") is True
            await wait_until(lambda: len(seen) >= n + 1, 10, message="runs after resume")
            resumed = await q.get_schedule("p")
            assert resumed is not None and resumed.missed == 0  # skipped in the pause, not missed
            # a spec change: the runs count is kept, the next slot is on the new grid,
            # after the last fired slot
            before = await q.get_schedule("p")
            assert before is not None
            changed = await q.upsert_schedule("p", every=2.0, data=1)
            assert changed.runs >= before.runs and changed.version != before.version
            assert changed.next_run_at is not None and before.last_run_at is not None
            assert changed.next_run_at > before.last_run_at
            assert round(changed.next_run_at.timestamp()) % 2 == 0
            m = len(seen)
            await wait_until(lambda: len(seen) >= m + 2, 10, message="runs on the new grid")
        slots = [slot_of(j) for j, _, _ in seen]
        assert slots == sorted(set(slots)), "a slot fired twice or out of order"
        assert slots[-1] - slots[-2] == 2000
        assert await q.pause_schedule("nope") is False


async def test_run_now_adds_an_extra_run_outside_the_slots(redis_url: str, queue_name: str) -> None:
    async with Queue(queue_name, redis_url=redis_url) as q:
        s = await q.upsert_schedule("nightly", cron="0 3 * * *", tz="Europe/Berlin",
                                    data={"report": True}, options=JobOptions(priority="low"))
        ref = await q.run_schedule_now("nightly")
        assert ref is not None and ref.job_id.startswith("{nightly}@now-")
        assert await q.job_payload(ref.job_id) is not None
        info = await q.get_job(ref.job_id)
        assert info is not None and info.state is JobState.WAITING and info.priority == "low"
        after = await q.get_schedule("nightly")
        assert after is not None and after.runs == 0 and after.next_run_at == s.next_run_at
        assert await q.run_schedule_now("unknown") is None


async def test_bad_specs_fail_at_upsert_and_write_nothing(redis_url: str, queue_name: str) -> None:
    class Order(msgspec.Struct):
        order_id: int

    async with Queue(queue_name, redis_url=redis_url, job_type=Order) as q:
        cases: list[tuple[dict[str, Any], type[Exception], str]] = [
            ({"cron": "0 8 * *"}, ConfigError, "needs 5 fields"),
            ({"cron": "0 8 * * *", "tz": "Nairobi"}, ConfigError, "time zone 'Nairobi' is unknown"),
            ({"every": 10.0, "options": JobOptions(job_id="x")}, ConfigError, "job ids"),
            ({"every": 10.0, "options": JobOptions(delay=5)}, ConfigError, "delay"),
            ({"every": 10.0, "limit": 0}, ConfigError, "limit must be"),
            ({"every": 10.0, "misfire": "later"}, ConfigError, "misfire 'later' is invalid"),
            ({"every": 10.0, "overlap": "queue"}, ConfigError, "overlap 'queue' is invalid"),
            ({"every": 10.0, "data": {"order_id": "x"}}, PayloadError, "does not validate"),
        ]
        for kwargs, exc, text in cases:
            kwargs.setdefault("data", Order(1))
            with pytest.raises(exc) as err:
                await q.upsert_schedule("bad", **kwargs)
            assert text in str(err.value) and "\n" not in str(err.value)
        with pytest.raises(ConfigError, match="schedule id"):
            await q.upsert_schedule("has{braces}", every=10.0, data=Order(1))
        assert await q.schedules() == []
        assert not await q.redis.exists(q.keys.schedule("bad"), q.keys.schedules)


@pytest.mark.timeout(60)
async def test_a_partitioned_queue_fires_each_schedule_into_its_own_partition(
        redis_url: str, queue_name: str) -> None:
    seen: list[tuple[str, float, int]] = []
    ids = [f"s{i}" for i in range(6)]
    async with Queue(queue_name, redis_url=redis_url, partitions=3) as q:
        for sid in ids:
            await q.upsert_schedule(sid, every=1.0, data=sid)
        listed = await q.schedules()
        assert [s.id for s in listed] == ids
        assert {s.partition for s in listed} == {partition_of(sid, 3) for sid in ids}
        assert len({s.partition for s in listed}) > 1
        for s in listed:
            assert await q.redis.exists(q.layout.keys(s.partition).schedule(s.id))
        async with worker_on(q, seen):
            await wait_until(lambda: {j.split("}")[0][1:] for j, _, _ in seen} >= set(ids), 15,
                             message="every schedule fired")
        for job_id, _, partition in seen:
            sid = job_id.split("}")[0][1:]
            assert partition == partition_of(sid, 3), job_id
        ids_seen = [j for j, _, _ in seen]
        assert len(ids_seen) == len(set(ids_seen))
        info = await q.get_job(ids_seen[0])
        assert info is not None


async def test_a_worker_without_fire_schedules_fires_nothing(redis_url: str, queue_name: str) -> None:
    seen: list[tuple[str, float, int]] = []
    async with Queue(queue_name, redis_url=redis_url) as q:
        await q.add({"plain": True}, JobOptions(job_id="plain"))
        await q.upsert_schedule("off", every=1.0, data=1)
        async with worker_on(q, seen, fire_schedules=False) as w:
            await wait_until(lambda: seen, 5, message="the plain job")
            await anyio.sleep(1.5)
            assert w.schedules is None
        assert [j for j, _, _ in seen] == ["plain"]


@pytest.mark.timeout(60)
async def test_metrics_count_fired_and_missed_slots(redis_url: str, queue_name: str) -> None:
    seen: list[tuple[str, float, int]] = []
    async with Queue(queue_name, redis_url=redis_url) as q:
        await Schedules(q, clock=lambda: time.time() - 5.5).upsert("m", every=1.0, data=1)

        async def handler(job: Job) -> None:
            seen.append((job.id, time.time(), 0))

        worker = Worker(q, handler, rate_limit=None)
        metrics = Metrics()
        metrics.attach(worker)
        async with running(worker):
            await wait_until(lambda: len(seen) >= 2, 10, message="two runs")
        body, _ = await metrics.scrape()
        text = body.decode()
        fired = _sample(text, f'streamq_schedule_runs_fired_total{{queue="{q.name}",schedule="m"}}')
        missed = _sample(text, f'streamq_schedule_slots_missed_total{{queue="{q.name}",'
                         'schedule="m",why="downtime"}')
        assert fired == len(seen) >= 2
        assert 4 <= missed <= 6
        assert f'streamq_schedule_lateness_seconds_count{{queue="{q.name}"}}' in text


def _sample(text: str, name: str) -> float:
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[-1])
    raise AssertionError(f"{name} not in the exposition")


def test_slot_text_round_trips() -> None:
    assert slot_text(0) == "1970-01-01T00:00:00Z"


async def test_upsert_with_an_injected_clock_places_slots_across_dst(
        redis_url: str, queue_name: str) -> None:
    """The upsert computes next_run_at from the clock it is given, in the schedule's zone,
    by the DST rule (a skipped wall time fires after the gap; a repeated one once)."""
    from zoneinfo import ZoneInfo

    def at(tz: str, *parts: int) -> float:
        return datetime(*parts, tzinfo=ZoneInfo(tz)).timestamp()

    async with Queue(queue_name, redis_url=redis_url) as q:
        cases = [
            ("ny", "30 2 * * *", "America/New_York", at("America/New_York", 2026, 3, 7, 12),
             ["2026-03-08T07:00:00+00:00", "2026-03-09T06:30:00+00:00"]),
            ("berlin", "30 2 * * *", "Europe/Berlin", at("Europe/Berlin", 2026, 10, 24, 12),
             ["2026-10-25T00:30:00+00:00", "2026-10-26T01:30:00+00:00"]),
            ("howe", "45 1 * * *", "Australia/Lord_Howe",
             at("Australia/Lord_Howe", 2026, 4, 4, 12),
             ["2026-04-04T14:45:00+00:00", "2026-04-05T15:15:00+00:00"]),
        ]
        for sid, expr, tz, now, expected in cases:
            s = await Schedules(q, clock=lambda now=now: now).upsert(sid, cron=expr, tz=tz, data=1)
            assert [t.isoformat() for t in s.upcoming(2)] == expected, sid
