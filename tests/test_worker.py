"""Worker behaviours (docs/reliability.md) against a real Redis (in-process workers)."""

from __future__ import annotations

import itertools
import time
from typing import Any

import anyio
import msgspec
import pytest

from streamq import (
    Backoff,
    Job,
    JobOptions,
    JobState,
    PermanentError,
    Queue,
    QueueDefaults,
    RetryAfter,
    Worker,
    WorkerEvent,
)
from streamq.keys import GROUP
from tests.support.util import running, wait_until
from tests.support.util import running as running_worker


async def redis_ms(q: Queue) -> float:
    sec, usec = await q.redis.time()
    return sec * 1000 + usec / 1000


async def test_jobs_complete_and_records_expire_on_schedule(redis_url: str, queue_name: str) -> None:
    defaults = QueueDefaults(completed_ttl_s=60, failed_ttl_s=120)
    async with Queue(queue_name, redis_url=redis_url, defaults=defaults) as q:
        refs = await q.add_bulk([{"i": i} for i in range(50)])
        seen: list[Any] = []

        async def handler(job: Job) -> int:
            seen.append(job.data["i"])
            return int(job.data["i"])

        completed: list[WorkerEvent] = []
        w = Worker(q, handler, concurrency=5, rate_limit=None)
        w.on("completed", completed.append)
        async with running(w):
            await wait_until(lambda: len(completed) == 50, message="50 completions")
        assert sorted(seen) == list(range(50))
        c = await q.counts()
        assert (c["waiting"], c["active"], c["completed"]) == (0, 0, 50)
        info = await q.get_job(refs[7].job_id)
        assert info is not None and info.state is JobState.COMPLETED and info.attempts == 1
        ttl = await q.redis.pttl(q.keys.job(refs[7].job_id))
        assert 55_000 < ttl <= 60_000
        assert {e.result for e in completed} == set(range(50))


async def test_retry_backoff_schedule_then_dead_letter_then_replay(
    redis_url: str, queue_name: str
) -> None:
    defaults = QueueDefaults(failed_ttl_s=30)
    async with Queue(queue_name, redis_url=redis_url, defaults=defaults) as q:
        ref = await q.add({"n": 1}, JobOptions(attempts=3, backoff=Backoff(base=0.2)))
        starts: list[float] = []
        attempts: list[int] = []
        fail = True

        async def handler(job: Job) -> None:
            starts.append(await redis_ms(q))
            attempts.append(job.attempt)
            if fail:
                raise RuntimeError(f"boom on attempt {job.attempt}")

        events: list[str] = []
        w = Worker(q, handler, rate_limit=None)
        for name in ("failed", "retrying", "dead"):
            w.on(name, lambda e: events.append(f"{e.name}:{e.attempt}"))  # type: ignore[arg-type]
        async with running(w):
            await wait_until(lambda: "dead:3" in events, message="dead letter")
            assert attempts == [1, 2, 3]
            gaps = [b - a for a, b in itertools.pairwise(starts)]
            # 0.2 s then 0.4 s, measured on the Redis clock; promotion is prompt
            assert 200 <= gaps[0] < 300, gaps
            assert 400 <= gaps[1] < 500, gaps
            assert events == ["failed:1", "retrying:1", "failed:2", "retrying:2", "failed:3",
                              "dead:3"]
            info = await q.get_job(ref.job_id)
            assert info is not None and info.state is JobState.FAILED
            assert info.error == "RuntimeError: boom on attempt 3" and info.attempts == 3
            assert 25_000 < await q.redis.pttl(q.keys.job(ref.job_id)) <= 30_000
            dead = await q.dead_letters()
            assert [(d.job_id, d.error, d.data) for d in dead] == [
                (ref.job_id, "RuntimeError: boom on attempt 3", {"n": 1})]
            assert (await q.counts())["failed"] == 1

            fail = False
            assert await q.replay_dead(ref.job_id) == 1
            await wait_until(lambda: len(starts) == 4, message="replayed run")
            assert attempts[3] == 1  # a replay starts with fresh attempts
            await wait_until(
                lambda: _state(q, ref.job_id, JobState.COMPLETED), message="replayed completion"
            )
        c = await q.counts()
        assert (c["failed"], c["dead"], c["completed"]) == (0, 0, 1)


async def _state(q: Queue, job_id: str, state: JobState) -> bool:
    info = await q.get_job(job_id)
    return info is not None and info.state is state


async def test_permanent_error_is_not_retried(redis_url: str, queue_name: str) -> None:
    async with Queue(queue_name, redis_url=redis_url) as q:
        ref = await q.add({"n": 1}, JobOptions(attempts=5))
        calls = 0

        async def handler(job: Job) -> None:
            nonlocal calls
            calls += 1
            raise PermanentError("recipient opted out")

        async with running(Worker(q, handler, rate_limit=None)):
            await wait_until(lambda: _state(q, ref.job_id, JobState.FAILED))
        assert calls == 1
        info = await q.get_job(ref.job_id)
        assert info is not None and info.error == "recipient opted out"


async def test_retry_after_overrides_backoff(redis_url: str, queue_name: str) -> None:
    async with Queue(queue_name, redis_url=redis_url) as q:
        await q.add({"n": 1}, JobOptions(backoff=60))
        starts: list[float] = []

        async def handler(job: Job) -> None:
            starts.append(await redis_ms(q))
            if job.attempt == 1:
                raise RetryAfter(0.3, "HTTP 429")

        async with running(Worker(q, handler, rate_limit=None)):
            await wait_until(lambda: len(starts) == 2 and True, timeout=5)
            await wait_until(lambda: _counts_equal(q, "completed", 1))
        assert 300 <= starts[1] - starts[0] < 400


async def _counts_equal(q: Queue, name: str, value: int) -> bool:
    return (await q.counts())[name] == value


async def test_high_priority_always_before_normal(redis_url: str, queue_name: str) -> None:
    async with Queue(queue_name, redis_url=redis_url) as q:
        await q.pause()
        await q.add_bulk([({"p": "low"}, JobOptions(priority="low")) for _ in range(10)])
        await q.add_bulk([({"p": "normal"}, JobOptions(priority="normal")) for _ in range(20)])
        await q.add_bulk([({"p": "high"}, JobOptions(priority="high")) for _ in range(20)])
        order: list[str] = []

        async def handler(job: Job) -> None:
            order.append(job.data["p"])

        async with running(Worker(q, handler, concurrency=3, rate_limit=None)):
            await q.resume()
            await wait_until(lambda: len(order) == 50)
        assert order == ["high"] * 20 + ["normal"] * 20 + ["low"] * 10


async def test_paused_queue_is_not_worked_until_resumed(redis_url: str, queue_name: str) -> None:
    async with Queue(queue_name, redis_url=redis_url) as q:
        done: list[str] = []

        async def handler(job: Job) -> None:
            done.append(job.id)

        async with running(Worker(q, handler, rate_limit=None)):
            await q.pause()
            await q.add({"a": 1})
            # the worker saw "paused" at least once: the job stays waiting
            await wait_until(lambda: _counts_equal(q, "waiting", 1))
            with anyio.move_on_after(0.5):
                await wait_until(lambda: bool(done), timeout=1)
            assert done == []
            t0 = time.monotonic()
            await q.resume()
            await wait_until(lambda: bool(done), timeout=3)
            assert time.monotonic() - t0 < 0.5  # resume wakes idle workers at once


async def test_delayed_job_starts_within_100ms_of_due(redis_url: str, queue_name: str) -> None:
    async with Queue(queue_name, redis_url=redis_url) as q:
        started: dict[str, float] = {}

        async def handler(job: Job) -> None:
            started[job.id] = await redis_ms(q)

        async with running(Worker(q, handler, rate_limit=None)):
            await wait_until(lambda: _idle(q))
            refs = [await q.add({"i": i}, JobOptions(delay=0.4 + i * 0.15)) for i in range(4)]
            dues = {}
            for r in refs:
                info = await q.get_job(r.job_id)
                assert info is not None and info.due_at is not None
                dues[r.job_id] = info.due_at.timestamp() * 1000
            await wait_until(lambda: len(started) == 4, timeout=5)
        for job_id, due in dues.items():
            late = started[job_id] - due
            assert 0 <= late <= 100, (job_id, late)


async def _idle(q: Queue) -> bool:
    return (await q.counts())["active"] == 0


async def test_cancelled_jobs_never_run(redis_url: str, queue_name: str) -> None:
    async with Queue(queue_name, redis_url=redis_url) as q:
        await q.pause()
        keep = await q.add({"k": 1})
        drop_waiting = await q.add({"k": 2})
        drop_delayed = await q.add({"k": 3}, JobOptions(delay=0.2))
        assert await q.cancel(drop_waiting.job_id)
        assert await q.cancel(drop_delayed.job_id)
        ran: list[str] = []

        async def handler(job: Job) -> None:
            ran.append(job.id)

        async with running(Worker(q, handler, rate_limit=None)):
            await q.resume()
            await wait_until(lambda: ran == [keep.job_id])
            late = await q.add({"k": 4}, JobOptions(delay=0.3))
            await q.cancel(late.job_id)
            await anyio.sleep(0.5)  # past the due time: it must not appear
        assert ran == [keep.job_id]


async def test_active_job_cannot_be_cancelled(redis_url: str, queue_name: str) -> None:
    async with Queue(queue_name, redis_url=redis_url) as q:
        release = anyio.Event()
        started = anyio.Event()

        async def handler(job: Job) -> None:
            started.set()
            await release.wait()

        ref = await q.add({})
        async with running(Worker(q, handler, rate_limit=None)):
            await started.wait()
            assert await q.cancel(ref.job_id) is False
            info = await q.get_job(ref.job_id)
            assert info is not None and info.state is JobState.ACTIVE
            release.set()
            await wait_until(lambda: _state(q, ref.job_id, JobState.COMPLETED))


async def test_undecodable_payload_is_dead_lettered_and_worker_continues(
    redis_url: str, queue_name: str
) -> None:
    class Msg(msgspec.Struct):
        text: str

    async with Queue(queue_name, redis_url=redis_url, job_type=Msg) as q:
        await q.ensure_groups()
        lane = q.keys.lanes[1]
        await q.redis.xadd(lane, {"j": "bad1", "d": b"\xc1\xff not msgpack", "a": 3, "n": 0,
                                  "s": 0, "t": 0, "b": "2000"})
        await q.redis.xadd(lane, {"j": "bad2", "d": msgspec.msgpack.encode({"text": 5}), "a": 3,
                                  "n": 0, "s": 0, "t": 0, "b": "2000"})
        await q.redis.xadd(lane, {"garbage": "entry"})
        good = await q.add_bulk([Msg(text=str(i)) for i in range(20)])
        done: list[str] = []

        async def handler(job: Job) -> None:
            assert isinstance(job.data, Msg)
            done.append(job.id)

        async with running(Worker(q, handler, rate_limit=None)):
            await wait_until(lambda: len(done) == 20)
            await wait_until(lambda: _counts_equal(q, "failed", 3))
        dead = {d.job_id: d.error for d in await q.dead_letters()}
        assert dead["bad1"].startswith("decode: malformed payload")
        assert dead["bad2"].startswith("decode: Expected `str`, got `int`")
        assert set(done) == {r.job_id for r in good}
        assert len(dead) == 3


async def test_rate_limit_in_process(redis_url: str, queue_name: str) -> None:
    async with Queue(queue_name, redis_url=redis_url) as q:
        await q.add_bulk([{} for _ in range(30)])
        times: list[float] = []

        async def handler(job: Job) -> None:
            times.append(time.monotonic())

        w = Worker(q, handler, concurrency=10, rate_limit=20.0, burst=5)
        async with running(w):
            await wait_until(lambda: len(times) == 30, timeout=10)
        assert w.rate_limited_waits > 0 and 0.5 < w.rate_limited_s < 2.0
        # burst of 5 at once, then 25 more at 20/s: about 1.25 s
        span = times[-1] - times[0]
        assert 1.1 <= span <= 1.6, span


async def test_heartbeat_keeps_a_long_job_claimed(redis_url: str, queue_name: str) -> None:
    async with Queue(queue_name, redis_url=redis_url) as q:
        await q.add({"long": True})
        runs: list[str] = []

        async def slow(job: Job) -> None:
            runs.append(job.id)
            await anyio.sleep(1.2)  # 4x the visibility timeout

        w1 = Worker(q, slow, rate_limit=None, visibility_timeout=0.3, reclaim_interval=0.1)
        w2 = Worker(q, slow, rate_limit=None, visibility_timeout=0.3, reclaim_interval=0.1)
        async with running(w1), running(w2):
            await wait_until(lambda: _counts_equal(q, "completed", 1), timeout=5)
        assert len(runs) == 1


async def test_stalled_max_times_is_dead_lettered(redis_url: str, queue_name: str) -> None:
    """A job whose workers keep dying: played by consumers that claim and vanish. Each
    claim takes the dead holder's entry over first; the third death dead-letters it."""
    async with Queue(queue_name, redis_url=redis_url) as q:
        await q.ensure_groups()
        ref = await q.add({"poison": True})
        other = await q.add({"other": True})
        stalled: list[int] = []
        dead: list[str] = []
        for round_ in range(4):
            w = Worker(q, _never, rate_limit=None, visibility_timeout=0.05, max_stalled=3,
                       name=f"ghost{round_}")
            w.on("stalled", lambda e: stalled.append(e.stalls))
            w.on("dead", lambda e: dead.append(e.error or ""))
            await q.redis.delete(q.keys.reclaim_lock)
            got = [j.id for j in await w.claim_now(1)]
            # three deaths taken over; the fourth claim dead-letters it and takes the next job
            assert got == ([ref.job_id] if round_ < 3 else [other.job_id]), (round_, got)
            await anyio.sleep(0.06)
        assert stalled == [1, 2, 3]  # two take-overs, then the final one that dead-letters
        assert dead == ["stalled 3 times"]
        info = await q.get_job(ref.job_id)
        assert info is not None and info.state is JobState.FAILED
        assert info.error == "stalled 3 times"
        names = [e.name for e in await q.read_events() if e.job_id == ref.job_id]
        assert names == ["added", "active", "stalled", "active", "stalled", "active", "dead"]


async def _never(job: Job) -> None:
    raise AssertionError("must not run")


async def test_late_completion_from_lost_claim_does_not_overwrite(
    redis_url: str, queue_name: str
) -> None:
    async with Queue(queue_name, redis_url=redis_url) as q:
        await q.ensure_groups()
        ref = await q.add({"x": 1}, JobOptions(attempts=1))
        zombie = Worker(q, _never, rate_limit=None, name="zombie")
        [old] = await zombie.claim_now(1)
        await anyio.sleep(0.03)
        # the zombie went silent: a live worker takes its entry over and fails the job
        alive = Worker(q, _never, rate_limit=None, name="alive", visibility_timeout=0.02)
        await q.redis.delete(q.keys.reclaim_lock)
        [new] = await alive.claim_now(1)
        assert (new.id, new.stalls) == (ref.job_id, 1)
        await alive._dead(new, "real outcome")
        # the zombie wakes up and reports success for its old claim: rejected
        completed: list[str] = []
        zombie.on("completed", lambda e: completed.append(e.job_id))
        zombie._done.append((old, None))
        await zombie._flush_now()
        assert completed == []
        info = await q.get_job(ref.job_id)
        assert info is not None and info.state is JobState.FAILED and info.error == "real outcome"
        c = await q.counts()
        assert (c["completed"], c["failed"]) == (0, 1)
        # and the zombie's heartbeat cannot steal the entry back
        k = q.keys
        assert await q.scripts("extend", list(k.lanes),
                               [GROUP, "zombie", 1, old.lane, old.entry_id]) == [1]


async def test_script_flush_mid_run_is_survived(redis_url: str, queue_name: str) -> None:
    async with Queue(queue_name, redis_url=redis_url) as q:
        done: list[str] = []

        async def handler(job: Job) -> None:
            done.append(job.id)

        async with running(Worker(q, handler, rate_limit=None)):
            await q.add_bulk([{} for _ in range(10)])
            await wait_until(lambda: len(done) == 10)
            await q.redis.script_flush()
            await q.add_bulk([{} for _ in range(10)])
            await q.redis.script_flush()
            await q.add({"one": 1})
            await wait_until(lambda: len(done) == 21)
        assert (await q.counts())["completed"] == 21


async def test_graceful_close_hands_back_and_finishes(redis_url: str, queue_name: str) -> None:
    async with Queue(queue_name, redis_url=redis_url) as q:
        await q.add_bulk([{} for _ in range(20)])
        finished: list[str] = []
        started = anyio.Event()

        async def handler(job: Job) -> None:
            started.set()
            await anyio.sleep(0.2)
            finished.append(job.id)

        w = Worker(q, handler, concurrency=4, rate_limit=None)
        async with anyio.create_task_group() as tg:
            tg.start_soon(w.run)
            await started.wait()
            await w.close()
        assert len(finished) == 4
        c = await q.counts()
        assert (c["completed"], c["active"], c["waiting"]) == (4, 0, 16)


async def test_grace_expiry_cuts_and_hands_back(redis_url: str, queue_name: str) -> None:
    async with Queue(queue_name, redis_url=redis_url) as q:
        ref = await q.add({})
        started = anyio.Event()

        async def handler(job: Job) -> None:
            started.set()
            await anyio.sleep(30)

        w = Worker(q, handler, rate_limit=None, shutdown_grace=0.2)
        async with anyio.create_task_group() as tg:
            tg.start_soon(w.run)
            await started.wait()
            t0 = time.monotonic()
            await w.close()
            assert time.monotonic() - t0 < 1.0
        info = await q.get_job(ref.job_id)
        assert info is not None and info.state is JobState.WAITING and info.attempts == 0


@pytest.mark.parametrize("concurrency", [1, 7])
async def test_fetches_no_more_than_free_slots(
    redis_url: str, queue_name: str, concurrency: int
) -> None:
    async with Queue(queue_name, redis_url=redis_url) as q:
        await q.add_bulk([{} for _ in range(40)])
        gate = anyio.Event()
        peak = 0

        async def handler(job: Job) -> None:
            await gate.wait()

        async with running(Worker(q, handler, concurrency=concurrency, rate_limit=None)):
            await wait_until(lambda: _counts_equal(q, "active", concurrency))
            for _ in range(5):
                peak = max(peak, (await q.counts())["active"])
                await anyio.sleep(0.02)
            gate.set()
            await wait_until(lambda: _counts_equal(q, "completed", 40))
        assert peak == concurrency


async def test_same_entry_id_in_two_lanes_runs_concurrently(redis_url: str, queue_name: str) -> None:
    """Entry ids are per stream: jobs of different lanes can share one (same millisecond)."""
    async with Queue(queue_name, redis_url=redis_url) as q:
        await q.ensure_groups()
        for lane in q.keys.lanes:
            await q.redis.xadd(lane, {"j": lane[-4:], "d": msgspec.msgpack.encode({}), "a": 1,
                                      "n": 0, "s": 0, "t": 0, "b": "2000"}, id="1-1")
        running = 0
        peak = 0

        async def handler(job: Job) -> None:
            nonlocal running, peak
            running += 1
            peak = max(peak, running)
            await anyio.sleep(0.1)
            running -= 1

        async with running_worker(Worker(q, handler, concurrency=3, rate_limit=None)):
            await wait_until(lambda: _counts_equal(q, "completed", 3))
        assert peak == 3


async def test_events_stream_carries_each_transition_once(redis_url: str, queue_name: str) -> None:
    async with Queue(queue_name, redis_url=redis_url) as q:
        ok = await q.add({"ok": True})
        bad = await q.add({"ok": False}, JobOptions(attempts=2, backoff=0.05))
        gone = await q.add({"ok": True}, JobOptions(delay=60))
        assert await q.cancel(gone.job_id)

        async def handler(job: Job) -> None:
            if not job.data["ok"]:
                raise ValueError("no +254712345678 here")

        async with running(Worker(q, handler, rate_limit=None)):
            await wait_until(lambda: _counts_equal(q, "failed", 1))
            await wait_until(lambda: _counts_equal(q, "completed", 1))
        events = await q.read_events(count=1000)
        by_job: dict[str, list[str]] = {}
        for e in events:
            by_job.setdefault(e.job_id, []).append(e.name)
        assert by_job[ok.job_id] == ["added", "active", "completed"]
        assert by_job[bad.job_id] == ["added", "active", "failed", "retrying", "active", "failed",
                                      "dead"]
        assert by_job[gone.job_id] == ["added", "cancelled"]
        errors = [e.error for e in events if e.error]
        assert errors and all("712345678" not in err for err in errors)  # masked
        assert [e.attempt for e in events if e.job_id == bad.job_id and e.name == "active"] == [1, 2]
        # following from the end sees only new events
        tail = events[-1].id
        assert await q.read_events(after=tail, block=0.05) == []
        await q.add({"ok": True})
        assert [e.name for e in await q.read_events(after=tail)] == ["added"]


async def test_events_can_be_turned_off(redis_url: str, queue_name: str) -> None:
    async with Queue(queue_name, redis_url=redis_url, defaults=QueueDefaults(events_max=0)) as q:
        await q.add({})
        assert await q.read_events() == []
        assert not await q.redis.exists(q.keys.events)


async def test_idle_consumers_without_pending_are_pruned(redis_url: str, queue_name: str) -> None:
    async with Queue(queue_name, redis_url=redis_url) as q:
        await q.ensure_groups()
        await q.add({})
        holder = Worker(q, _never, rate_limit=None, name="crashed-with-work")
        assert len(await holder.claim_now(1)) == 1
        for name in ("old-1", "old-2"):
            await Worker(q, _never, rate_limit=None, name=name).claim_now(1)  # nothing left
        await anyio.sleep(0.15)
        sweeper = Worker(q, _never, rate_limit=None, consumer_prune_after=0.1,
                         visibility_timeout=60)
        await sweeper.reclaim_once()
        names = set()
        for lane in q.keys.lanes:
            names |= {c["name"].decode() for c in await q.redis.xinfo_consumers(lane, GROUP)}
        # the consumer holding an entry stays: deleting it would drop the entry
        assert "crashed-with-work" in names
        assert not names & {"old-1", "old-2"}


async def test_replay_all_replays_each_letter_once_even_if_they_fail_again(
    redis_url: str, queue_name: str
) -> None:
    async with Queue(queue_name, redis_url=redis_url) as q:
        await q.add_bulk([({"i": i}, JobOptions(attempts=1)) for i in range(30)])
        runs = 0

        async def always_fails(job: Job) -> None:
            nonlocal runs
            runs += 1
            raise PermanentError("still broken")

        async with running(Worker(q, always_fails, rate_limit=None, concurrency=10)):
            await wait_until(lambda: _counts_equal(q, "failed", 30))
            assert await q.replay_dead() == 30  # letters written meanwhile are not replayed
            await wait_until(lambda: runs == 60 and _counts_equal(q, "failed", 30))
        assert (await q.counts())["dead"] == 30
