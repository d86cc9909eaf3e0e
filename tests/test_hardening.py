"""Regression tests for the seven defects of issue 9 (an adversarial review of the engine).

Each test goes through the public API against a real redis-server and failed on the code
before the fix; the comment above each says how it failed there.
"""

from __future__ import annotations

import asyncio
import math
import os
import signal
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from typing import Any

import anyio
import pytest

from streamq import (
    Backoff,
    ConfigError,
    Job,
    JobOptions,
    JobState,
    Queue,
    QueueDefaults,
    Worker,
    WorkerEvent,
)
from streamq.validate import MAX_DELAY_S
from tests.support.util import ROOT, running, wait_until


async def _stray_cancel() -> None:
    """What a handler sees when a library cancels a future it awaits: a CancelledError
    although nobody cancelled the task."""
    loop = asyncio.get_running_loop()
    fut: asyncio.Future[None] = loop.create_future()
    loop.call_soon(fut.cancel)
    await fut


async def cancelling_handler(job: Job) -> str:
    """For the CLI test (``--handler tests.test_hardening:cancelling_handler``)."""
    if isinstance(job.data, dict) and job.data.get("poison"):
        await _stray_cancel()
    return "ok"


async def _count(q: Queue, state: str) -> int:
    return (await q.counts())[state]


# -- 1. a handler raising CancelledError ---------------------------------------------------
# Before: the runner task re-raised the stray CancelledError, the task group treated it as a
# cancellation of the whole worker, run() returned quietly and the job went back to waiting
# with no attempt counted: the wait for the dead letter below timed out.

async def test_stray_cancelled_error_is_a_failed_attempt_and_the_worker_keeps_draining(
    redis_url: str, queue_name: str
) -> None:
    async with Queue(queue_name, redis_url=redis_url) as q:
        poison = await q.add({"poison": True}, JobOptions(attempts=2, backoff=Backoff(base=0.01)))
        runs: list[int] = []
        done: list[Any] = []

        async def handler(job: Job) -> None:
            if job.data.get("poison"):
                runs.append(job.attempt)
                await _stray_cancel()
            done.append(job.data["i"])

        events: list[WorkerEvent] = []
        w = Worker(q, handler, concurrency=1, rate_limit=None)
        for name in ("failed", "retrying", "dead"):
            w.on(name, events.append)  # type: ignore[arg-type]
        async with anyio.create_task_group() as tg:
            tg.start_soon(w.run)
            await q.add_bulk([{"i": i} for i in range(5)])
            await wait_until(lambda: _count(q, "dead"), timeout=5, message="the dead letter")
            # still draining after the poison job: new work is done
            await q.add({"i": 99})
            await wait_until(lambda: 99 in done, timeout=5, message="a job after the poison one")
            assert not w._finished.is_set()
            await w.close()
        assert runs == [1, 2]  # both attempts ran, each counted
        assert sorted(done) == [0, 1, 2, 3, 4, 99]
        info = await q.get_job(poison.job_id)
        assert info is not None and info.state is JobState.FAILED and info.attempts == 2
        assert info.error == "CancelledError raised by the handler (not a worker cancellation)"
        assert [e.name for e in events] == ["failed", "retrying", "failed", "dead"]


# Before: a hook's stray CancelledError escaped Hooks.emit (it caught Exception only) and
# stopped the worker the same way. And a hook raising any exception made the worker's own
# log call fail (structlog's positional 'event' was also passed as a keyword), so the job
# was never run: its entry stayed pending until taken over, and failed the same way.
async def test_broken_hooks_do_not_stop_the_worker(redis_url: str, queue_name: str) -> None:
    async with Queue(queue_name, redis_url=redis_url) as q:
        done: list[int] = []

        async def handler(job: Job) -> None:
            done.append(job.data["i"])

        async def hook(event: WorkerEvent) -> None:
            await _stray_cancel()

        def bad_hook(event: WorkerEvent) -> None:
            raise RuntimeError("hook bug")

        w = Worker(q, handler, concurrency=1, rate_limit=None)
        w.on("active", hook)
        w.on("active", bad_hook)
        w.on("completed", bad_hook)
        async with running(w):
            await q.add_bulk([{"i": i} for i in range(3)])
            await wait_until(lambda: len(done) == 3, timeout=5)
            await q.add({"i": 3})
            await wait_until(lambda: len(done) == 4, timeout=5)
        assert (await q.counts())["completed"] == 4


# Before: run() returned None as if asked to stop. Now a stray CancelledError that ends
# one of the worker's own tasks makes run() raise (a supervisor sees a failure, not exit 0).
async def test_run_never_returns_quietly_when_a_stray_cancel_ends_its_tasks(
    redis_url: str, queue_name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with Queue(queue_name, redis_url=redis_url) as q:
        w = Worker(q, cancelling_handler, rate_limit=None)

        async def broken_sweep() -> None:
            await _stray_cancel()

        monkeypatch.setattr(w, "_reclaim_loop", broken_sweep)
        with pytest.raises(RuntimeError, match="stopped unexpectedly"):
            with anyio.fail_after(10):
                await w.run()


# Before: the CLI worker exited 0 right after taking the poison job (a supervisor with
# restart-on-failure would not restart it) and the job never reached the dead letters.
async def test_cli_worker_survives_a_handler_raising_cancelled_error(
    redis_url: str, queue_name: str
) -> None:
    env = dict(os.environ, REDIS_URL=redis_url, PYTHONPATH=str(ROOT))
    async with Queue(queue_name, redis_url=redis_url) as q:
        await q.add({"poison": True}, JobOptions(attempts=1))
        proc = subprocess.Popen(
            [sys.executable, "-m", "streamq.worker", "--queue", queue_name, "--rate-limit", "0",
             "--handler", "tests.test_hardening:cancelling_handler", "--log-level", "warning"],
            cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        try:
            await wait_until(lambda: _count(q, "dead"), timeout=20, message="the dead letter")
            await q.add({"after": True})
            await wait_until(lambda: _count(q, "completed"), timeout=10, message="the next job")
            assert proc.poll() is None, "the worker exited"
        finally:
            proc.send_signal(signal.SIGTERM)
            code = proc.wait(timeout=20)
            assert proc.stderr is not None
            stderr = proc.stderr.read()
            proc.stderr.close()
        assert code == 0, stderr
        [letter] = await q.dead_letters()
        assert "CancelledError raised by the handler" in letter.error


# -- 2. Backoff overflow -------------------------------------------------------------------
# Before: 2.0 ** (retry - 1) raised OverflowError from retry 1025 on, cap or not.

def test_backoff_cap_bounds_the_delay_at_any_retry_count() -> None:
    b = Backoff(base=2.0, cap=30.0)
    assert [b.delay(r) for r in (1, 2, 3, 4, 5, 6)] == [2.0, 4.0, 8.0, 16.0, 30.0, 30.0]
    for retry in (1024, 1025, 1100, 10**6, 10**18):
        assert b.delay(retry) == 30.0
    jittered = Backoff(base=1.0, cap=10.0, jitter=True)
    assert all(5.0 <= jittered.delay(r) <= 10.0 for r in (2000, 10**9))
    # without a cap the delay is still a finite number (the worker's max_retry_delay
    # bounds it further)
    assert Backoff(base=2.0).delay(10**9) == MAX_DELAY_S
    assert Backoff(base=0.0).delay(5000) == 0.0
    assert Backoff().delay(1) == 2.0 and Backoff().delay(3) == 8.0  # defaults unchanged


@pytest.mark.parametrize("kwargs", [{"base": math.inf}, {"base": math.nan}, {"base": -1},
                                    {"cap": math.nan}, {"cap": -0.5}, {"base": 1e12}])
def test_backoff_refuses_values_that_are_not_durations(kwargs: dict[str, float]) -> None:
    with pytest.raises(ConfigError, match="backoff"):
        Backoff(**kwargs)


# Before: the 1025th retry raised OverflowError inside the worker; the entry stayed pending,
# was taken over again and again and ended "stalled 3 times" with attempts 0.
async def test_a_job_retried_past_1024_times_keeps_its_capped_backoff(
    redis_url: str, queue_name: str
) -> None:
    attempts = 1030
    async with Queue(queue_name, redis_url=redis_url,
                     defaults=QueueDefaults(events_max=0)) as q:
        ref = await q.add({}, JobOptions(attempts=attempts, backoff=Backoff(base=0.001, cap=0.0)))
        seen: list[int] = []

        async def handler(job: Job) -> None:
            seen.append(job.attempt)
            raise RuntimeError("again")

        async with running(Worker(q, handler, concurrency=1, rate_limit=None)):
            await wait_until(lambda: _count(q, "dead"), timeout=60, message="the dead letter")
        assert seen == list(range(1, attempts + 1))
        info = await q.get_job(ref.job_id)
        assert info is not None and info.state is JobState.FAILED
        assert (info.attempts, info.error, info.stalls) == (attempts, "RuntimeError: again", 0)


# -- 3. the queue-wide token bucket across an idle spell -----------------------------------
# A missing bucket reads as full. That is right only if the key cannot vanish before the
# bucket would have refilled anyway: then an idle spell of any length grants at most what
# the rate gave. Moving Redis's clock past the old 60 s expiry is not possible here
# (libfaketime makes Debian's redis-server abort at start: jemalloc calls clock_gettime
# while libfaketime initialises), so the first test checks that invariant on the bucket
# itself, with the figures, and the second one watches a real, short expiry.

async def _bucket_full_at_expiry(q: Queue, rate: float, burst: float) -> tuple[float, float]:
    """(tokens the bucket would hold when its key expires, burst)."""
    tk, ts = await q.redis.hmget(q.keys.limiter, ["tk", "ts"])
    pttl = await q.redis.pttl(q.keys.limiter)
    sec, usec = await q.redis.time()
    now_ms = sec * 1000 + usec / 1000
    assert tk is not None and ts is not None and pttl > 0
    expires_at = now_ms + pttl
    return float(tk) + (expires_at - float(ts)) * rate / 1000, burst


# Before: the key expired 60 s after the last claim: with rate 1/s and burst 100 an emptied
# bucket held 60 tokens when it vanished and read as 100 (200 starts in 62 s); with rate
# 0.01/s it held 0.6 and read as full.
@pytest.mark.parametrize(("rate", "burst"), [(1.0, 100.0), (0.01, 5.0), (0.01, 1.0),
                                             (10.0, 10.0), (50.0, 2.0)])
async def test_rate_limit_bucket_never_expires_before_a_full_refill(
    redis_url: str, queue_name: str, rate: float, burst: float
) -> None:
    async with Queue(queue_name, redis_url=redis_url) as q:
        await q.ensure_groups()
        await q.add_bulk([{"i": i} for i in range(int(burst) + 5)])
        w = Worker(q, cancelling_handler, rate_limit=rate, burst=burst, name="claimer")
        got = len(await w.claim_now(int(burst) + 5))
        assert got == int(burst)  # the whole burst, and not one more
        tokens, full = await _bucket_full_at_expiry(q, rate, burst)
        assert tokens >= full, f"the bucket vanishes holding {tokens:.2f} of {full} tokens"
        assert await w.claim_now(5) == []  # rate limited now: the refusal rewrites the key
        tokens, full = await _bucket_full_at_expiry(q, rate, burst)
        assert tokens >= full, f"the bucket vanishes holding {tokens:.2f} of {full} tokens"
        # and the key does go away once full (memory stays bounded)
        assert await q.redis.pttl(q.keys.limiter) <= burst / rate * 1000 + 1000


# The same bucket, taken by a partitioned queue's workers through take_tokens (its claims
# run in other slots): before, it too expired a minute after its last use.
@pytest.mark.parametrize(("rate", "burst"), [(1.0, 100.0), (0.01, 5.0)])
async def test_partitioned_queue_bucket_never_expires_before_a_full_refill(
    redis_url: str, queue_name: str, rate: float, burst: float
) -> None:
    async with Queue(queue_name, redis_url=redis_url, partitions=3) as q:
        await q.connect()
        limiter = q.keys.limiter  # the queue's home slot holds the queue-wide bucket
        granted, _ = await q.scripts("take_tokens", [limiter], [rate, burst, 1000, 0])
        assert granted == int(burst)
        tokens, full = await _bucket_full_at_expiry(q, rate, burst)
        assert tokens >= full, f"the bucket vanishes holding {tokens:.2f} of {full} tokens"
        granted, wait = await q.scripts("take_tokens", [limiter], [rate, burst, 5, 0])
        assert granted == 0 and wait > 0
        tokens, full = await _bucket_full_at_expiry(q, rate, burst)
        assert tokens >= full, f"the bucket vanishes holding {tokens:.2f} of {full} tokens"


async def test_rate_limit_window_bound_holds_across_a_real_expiry(
    redis_url: str, queue_name: str
) -> None:
    """At most burst + rate x W starts in any window W, with the key expiring for real in
    the middle (rate 4/s, burst 4: it lives 2 s after the last claim)."""
    rate, burst = 4.0, 4.0
    async with Queue(queue_name, redis_url=redis_url) as q:
        await q.ensure_groups()
        await q.add_bulk([{"i": i} for i in range(200)])
        w = Worker(q, cancelling_handler, rate_limit=rate, burst=burst, name="claimer")
        starts: list[tuple[float, int]] = []

        async def claim() -> None:
            got = len(await w.claim_now(100))
            # the claim's own Redis time, as it wrote it into the bucket (ms)
            ts = await q.redis.hget(q.keys.limiter, "ts")
            assert ts is not None
            starts.append((float(ts) / 1000, got))

        async def claim_for(seconds: float) -> None:
            with anyio.move_on_after(seconds):
                while True:
                    await claim()
                    await anyio.sleep(0.01)

        await claim_for(0.6)
        # idle until Redis drops the bucket, then claim again
        async def bucket_gone() -> bool:
            return await q.redis.exists(q.keys.limiter) == 0

        await wait_until(bucket_gone, timeout=5, message="the bucket key to expire")
        await claim_for(0.6)
        counts = [n for _, n in starts]
        assert counts[0] == 4 and sum(counts) >= 8
        for i in range(len(starts)):
            for j in range(i, len(starts)):
                window = starts[j][0] - starts[i][0]
                n = sum(c for _, c in starts[i:j + 1])
                assert n <= burst + rate * window + 1e-6, (i, j, n, window)


# -- 4. QueueDefaults(failed_ttl_s=0), and every field checked ------------------------------
# Before: SET ... PX 0 failed mid-script: cancel() raised although the job was gone, and
# a dead-lettered job got no failed count, record, events or 'dead' hook.

async def test_failed_ttl_zero_keeps_no_record_but_counts_events_and_hooks(
    redis_url: str, queue_name: str
) -> None:
    defaults = QueueDefaults(failed_ttl_s=0, completed_ttl_s=0)
    async with Queue(queue_name, redis_url=redis_url, defaults=defaults) as q:
        doomed = await q.add({"fail": True}, JobOptions(attempts=1))
        cancelled = await q.add({"never": True}, JobOptions(delay=3600))
        assert await q.cancel(cancelled.job_id) is True
        assert await q.get_job(cancelled.job_id) is None  # no record kept

        async def handler(job: Job) -> None:
            raise RuntimeError("no luck")

        dead: list[str] = []
        w = Worker(q, handler, rate_limit=None)
        w.on("dead", lambda e: dead.append(e.job_id))
        async with running(w):
            await wait_until(lambda: dead, timeout=5, message="the dead hook")
        assert dead == [doomed.job_id]
        c = await q.counts()
        assert (c["failed"], c["cancelled"], c["dead"], c["waiting"], c["delayed"]) == (1, 1, 1, 0, 0)
        assert await q.get_job(doomed.job_id) is None
        names = {(e.name, e.job_id) for e in await q.read_events()}
        assert {("cancelled", cancelled.job_id), ("failed", doomed.job_id),
                ("dead", doomed.job_id)} <= names
        [letter] = await q.dead_letters()
        assert (letter.job_id, letter.error) == (doomed.job_id, "RuntimeError: no luck")
        assert await q.replay_dead(doomed.job_id) == 1  # found without its record


@pytest.mark.parametrize(("field", "value"), [
    ("attempts", 0), ("attempts", -1), ("attempts", 2.5), ("attempts", True),
    ("backoff_s", -1.0), ("backoff_s", math.inf),
    ("completed_ttl_s", -1.0), ("completed_ttl_s", math.nan),
    ("failed_ttl_s", -0.001), ("failed_ttl_s", math.inf),
    ("max_payload_bytes", 0), ("max_payload_bytes", 2**40),
    ("dead_letter_max", 0), ("events_max", -1), ("events_max", "100"),
    ("completed_index_max", -1), ("completed_index_max", 1.5),
    ("index_live_s", -1.0), ("index_live_s", math.inf),
])
def test_queue_defaults_refuse_bad_values_at_construction(field: str, value: Any) -> None:
    with pytest.raises(ConfigError, match=f"QueueDefaults.{field}") as info:
        QueueDefaults(**{field: value})
    assert "\n" not in str(info.value)


def test_queue_defaults_accept_zero_ttls_and_events_off() -> None:
    d = QueueDefaults(completed_ttl_s=0, failed_ttl_s=0, events_max=0, backoff_s=0)
    assert (d.completed_ttl_ms, d.failed_ttl_ms) == (0, 0)
    assert QueueDefaults(failed_ttl_s=0.0001).failed_ttl_ms == 1  # never rounded to "none"


# -- 5. nonsensical Worker arguments --------------------------------------------------------
# Before: Worker(burst=0.5) was accepted and never ran a job; inf/NaN durations, a heartbeat
# slower than the visibility timeout and the rest were accepted too.

@pytest.mark.parametrize(("kwargs", "names"), [
    ({"burst": 0.5}, "burst"), ({"burst": 0}, "burst"), ({"burst": math.nan}, "burst"),
    ({"concurrency": 0}, "concurrency"), ({"concurrency": 2.5}, "concurrency"),
    ({"rate_limit": 0}, "rate_limit"), ({"rate_limit": -1.0}, "rate_limit"),
    ({"rate_limit": math.inf}, "rate_limit"), ({"rate_limit": 1e-12}, "rate_limit"),
    ({"visibility_timeout": 0}, "visibility_timeout"),
    ({"visibility_timeout": math.nan}, "visibility_timeout"),
    ({"heartbeat_interval": 30.0}, "heartbeat_interval"),
    ({"heartbeat_interval": -1.0}, "heartbeat_interval"),
    ({"reclaim_interval": 0}, "reclaim_interval"),
    ({"max_stalled": 0}, "max_stalled"), ({"shutdown_grace": -1}, "shutdown_grace"),
    ({"max_retry_delay": math.inf}, "max_retry_delay"),
    ({"consumer_prune_after": -5}, "consumer_prune_after"),
    ({"name": ""}, "name"), ({"job_timeout": 0}, "job_timeout"),
    ({"job_timeout": math.inf}, "job_timeout"),
])
def test_worker_refuses_nonsensical_arguments(kwargs: dict[str, Any], names: str) -> None:
    q = Queue("anything", redis_url="redis://127.0.0.1:1/0")  # never connected
    with pytest.raises(ConfigError, match=names) as info:
        Worker(q, cancelling_handler, **kwargs)
    assert "\n" not in str(info.value)
    assert isinstance(info.value, ValueError)  # what Worker raised before, for callers


# -- 6. add_bulk keeps payloads intact -------------------------------------------------------
# Before: add_bulk took ("a", None) for a (payload, options) pair and delivered 'a'.

async def test_add_bulk_delivers_the_same_payload_as_add(redis_url: str, queue_name: str) -> None:
    values: list[Any] = [("a", None), (1, 2), ("x", {"k": 1}), ["a", None], (None, None),
                         ("only",), {"d": 1}]
    async with Queue(queue_name, redis_url=redis_url) as q:
        singles = [await q.add(v) for v in values]
        bulk = await q.add_bulk(values)
        # a (payload, JobOptions) pair is still a pair: its options apply
        [paired] = await q.add_bulk([(("p", None), JobOptions(job_id="paired", priority="high"))])
        assert paired.job_id == "paired"
        got: dict[str, Any] = {}

        async def handler(job: Job) -> None:
            got[job.id] = job.data

        async with running(Worker(q, handler, rate_limit=None)):
            await wait_until(lambda: len(got) == 2 * len(values) + 1, timeout=5)
        for single, many in zip(singles, bulk, strict=True):
            assert got[single.job_id] == got[many.job_id]
        assert [got[r.job_id] for r in bulk] == [["a", None], [1, 2], ["x", {"k": 1}],
                                                  ["a", None], [None, None], ["only"], {"d": 1}]
        assert got["paired"] == ["p", None]


# -- 7. reporting and validation details ----------------------------------------------------
# Before: get_job read only the stall count kept in the entry's meta, which take-overs in
# place do not touch: a job whose worker died twice showed stalls 0 (and after a failed
# retry the in-place take-overs were forgotten).

async def test_job_info_counts_take_overs_in_place(redis_url: str, queue_name: str) -> None:
    async with Queue(queue_name, redis_url=redis_url) as q:
        await q.ensure_groups()
        ref = await q.add({"x": 1}, JobOptions(attempts=2, backoff=Backoff(base=0.01)))
        for ghost in ("ghost0", "ghost1"):  # two workers take the job and die
            w = Worker(q, cancelling_handler, rate_limit=None, visibility_timeout=0.05,
                       name=ghost)
            await q.redis.delete(q.keys.reclaim_lock)
            assert [j.id for j in await w.claim_now(1)] == [ref.job_id]
            await anyio.sleep(0.08)
        info = await q.get_job(ref.job_id)
        assert info is not None and info.state is JobState.ACTIVE and info.stalls == 1
        seen: list[tuple[int, int, int | None]] = []

        async def handler(job: Job) -> None:
            running_info = await q.get_job(job.id)
            seen.append((job.attempt, job.stalls, running_info.stalls if running_info else None))
            if job.attempt == 1:
                raise RuntimeError("fail once")

        # one slot: the worker cannot take its own running entry over as well; vt 0.5 s:
        # it takes ghost1's entry over once that is idle 0.5 s, and a load spike cannot
        # make its own running entry look stalled
        async with running(Worker(q, handler, concurrency=1, rate_limit=None,
                                  visibility_timeout=0.5, reclaim_interval=0.05)):
            await wait_until(lambda: len(seen) == 1, timeout=5)
            delayed = await q.get_job(ref.job_id)
            await wait_until(lambda: len(seen) == 2, timeout=5)
        assert seen == [(1, 2, 2), (2, 2, 2)]
        # stalls survive the retry: delayed (or already waiting again) it still shows 2
        assert delayed is not None and delayed.stalls == 2


@pytest.mark.parametrize("delay", [math.inf, -math.inf, math.nan, 1e17, MAX_DELAY_S + 1,
                                   timedelta(days=365 * 11), "10"])
async def test_absurd_delays_are_clear_errors(redis_url: str, queue_name: str, delay: Any) -> None:
    # Before: inf raised a raw OverflowError from round(), NaN a ValueError, 1e17 was
    # accepted and get_job reported a due time in 1970.
    async with Queue(queue_name, redis_url=redis_url) as q:
        with pytest.raises(ConfigError, match="delay") as info:
            await q.add({}, JobOptions(delay=delay))
        assert "\n" not in str(info.value)
        assert (await q.counts())["delayed"] == 0


async def test_the_longest_delay_is_reported_correctly(redis_url: str, queue_name: str) -> None:
    async with Queue(queue_name, redis_url=redis_url) as q:
        ref = await q.add({}, JobOptions(delay=MAX_DELAY_S))
        info = await q.get_job(ref.job_id)
        assert info is not None and info.state is JobState.DELAYED and info.due_at is not None
        expected = datetime.now(UTC) + timedelta(seconds=MAX_DELAY_S)
        assert abs((info.due_at - expected).total_seconds()) < 60
