"""Job progress: fenced by ownership, throttled without losing the last value, per attempt."""

from __future__ import annotations

import io
import math
from typing import Any

import anyio
import pytest
import structlog

from streamq import Job, JobOptions, JobState, LeaseLost, PayloadError, Queue, QueueDefaults, Worker
from streamq.cli import main as cli_main
from streamq.cli.output import Console
from streamq.keys import GROUP
from tests.support.util import running, wait_until


async def _info(q: Queue, job_id: str) -> Any:
    return await q.get_job(job_id)


async def _progress_events(q: Queue, job_id: str) -> list[str]:
    return [e.fields["p"] for e in await q.job_events(job_id)
            if e.name == "progress" and e.fields]


async def _take_over(q: Queue, job_id: str, new_owner: str) -> Job:
    """Do what another worker's claim does to a silent worker's entry (XCLAIM to itself;
    here without waiting for the entry to idle), and return the job as it would see it."""
    for lane_no, lane in enumerate(q.keys.lanes):
        for p in await q.redis.xpending_range(lane, GROUP, min="-", max="+", count=10):
            entry_id = p["message_id"].decode()
            entry = await q.redis.xrange(lane, entry_id, entry_id)
            if entry and entry[0][1][b"j"].decode() == job_id:
                await q.redis.xclaim(lane, GROUP, new_owner, 0, [entry_id])
                return Job(job_id, {}, 1, 3, q.name, "normal", 0, 0, lane=lane_no,
                           entry_id=entry_id)
    raise AssertionError(f"{job_id} is not pending")


async def test_a_worker_whose_job_was_taken_over_gets_lease_lost(
    redis_url: str, queue_name: str
) -> None:
    # no throttle: every call writes, so the loss shows on the call that finds it
    async with Queue(queue_name, redis_url=redis_url,
                     defaults=QueueDefaults(progress_interval_s=0)) as q:
        await q.add({}, JobOptions(job_id="p1"))
        started, resume = anyio.Event(), anyio.Event()
        outcome: list[BaseException | float] = []

        async def slow(job: Job) -> None:
            await job.progress(0.25)  # owned: written
            started.set()
            await resume.wait()
            try:
                await job.progress(0.5)
                outcome.append(0.5)
            except LeaseLost as exc:
                outcome.append(exc)
                raise

        b = Worker(q, slow, rate_limit=None, name="taker")
        async with running(Worker(q, slow, rate_limit=None)):
            await started.wait()
            info = await q.get_job("p1")
            assert info is not None and info.state is JobState.ACTIVE and info.progress == 0.25
            taken = await _take_over(q, "p1", b.consumer)
            resume.set()
            await wait_until(lambda: outcome, 5, message="A's progress call")
            assert isinstance(outcome[0], LeaseLost), outcome
            # A's write was refused: the stored value is still the one A wrote while owner
            info = await q.get_job("p1")
            assert info is not None and info.progress == 0.25
            # the new owner's writes go through
            taken.runtime = b.runtime
            await taken.progress(0.75)
            info = await q.get_job("p1")
            assert info is not None and info.state is JobState.ACTIVE and info.progress == 0.75
        assert await _progress_events(q, "p1") == ["0.25", "0.75"]


async def test_a_heartbeat_that_finds_the_claim_gone_makes_the_next_call_raise(
    redis_url: str, queue_name: str
) -> None:
    """Throttled (no write due), the call still raises: the heartbeat marked the job."""
    async with Queue(queue_name, redis_url=redis_url,
                     defaults=QueueDefaults(progress_interval_s=60)) as q:
        await q.add({}, JobOptions(job_id="h1"))
        started, resume = anyio.Event(), anyio.Event()
        outcome: list[BaseException | None] = []

        async def slow(job: Job) -> None:
            await job.progress(0.1)
            started.set()
            await resume.wait()
            try:
                await job.progress(0.9)
                outcome.append(None)
            except LeaseLost as exc:
                outcome.append(exc)

        with structlog.testing.capture_logs() as logs:
            async with running(Worker(q, slow, rate_limit=None, heartbeat_interval=0.05)):
                await started.wait()
                await _take_over(q, "h1", "thief")
                await wait_until(lambda: any(
                    e["event"] == "job.lost_claim" and e.get("transition") == "heartbeat"
                    for e in logs), 10, 0.02, "the heartbeat to notice")
                resume.set()
                await wait_until(lambda: outcome, 5, message="the progress call")
                assert isinstance(outcome[0], LeaseLost)
                # raised without a round trip: no write was refused by the fence
                assert not [e for e in logs if e.get("transition") == "progress"]


async def test_progress_is_throttled_and_the_last_value_is_kept(
    redis_url: str, queue_name: str
) -> None:
    interval = 1.0
    defaults = QueueDefaults(progress_interval_s=interval)
    async with Queue(queue_name, redis_url=redis_url, defaults=defaults) as q:
        await q.add({}, JobOptions(job_id="t1"))
        reported, finish = anyio.Event(), anyio.Event()

        async def handler(job: Job) -> str:
            for i in range(1, 101):
                await job.progress(i / 100)
            reported.set()
            await finish.wait()
            await job.progress({"stage": "upload", "done": 3})
            return "ok"

        worker = Worker(q, handler, rate_limit=None)
        async with running(worker):
            await reported.wait()
            # 100 calls within the interval: one write (the first value); the rest waits
            assert worker.runtime.board.writes == 1
            assert await _progress_events(q, "t1") == ["0.01"]
            # the newest waiting value goes out at the next interval, the job still running
            await wait_until(lambda: _has_progress(q, "t1", 1.0), interval * 3, 0.02,
                             "the last value after the interval")
            info = await q.get_job("t1")
            assert info is not None and info.state is JobState.ACTIVE
            assert worker.runtime.board.writes == 2
            # a value reported right before the job ends is written before it completes
            finish.set()
            await wait_until(lambda: _state(q, "t1", JobState.COMPLETED), 5,
                             message="completion")
        info = await q.get_job("t1")
        assert info is not None and info.result == "ok"
        assert info.progress == {"stage": "upload", "done": 3}
        assert await _progress_events(q, "t1") == ["0.01", "1.0", '{"stage":"upload","done":3}']
        assert worker.runtime.board.writes == 3


async def _has_progress(q: Queue, job_id: str, value: Any) -> bool:
    info = await q.get_job(job_id)
    return info is not None and info.progress == value


async def _state(q: Queue, job_id: str, state: JobState) -> bool:
    info = await q.get_job(job_id)
    return info is not None and info.state is state


async def test_progress_is_reset_per_attempt(redis_url: str, queue_name: str) -> None:
    async with Queue(queue_name, redis_url=redis_url) as q:
        await q.add({}, JobOptions(job_id="r1", attempts=2, backoff=0.01))
        second, go = anyio.Event(), anyio.Event()

        async def handler(job: Job) -> None:
            if job.attempt == 1:
                await job.progress(0.8)
                raise RuntimeError("first attempt fails")
            second.set()
            await go.wait()
            await job.progress(0.1)

        async with running(Worker(q, handler, rate_limit=None)):
            await second.wait()
            info = await q.get_job("r1")
            assert info is not None and info.state is JobState.ACTIVE and info.attempts == 1
            assert info.progress is None, "attempt 2 shows none of attempt 1's progress"
            go.set()
            await wait_until(lambda: _state(q, "r1", JobState.COMPLETED), 5,
                             message="completion")
        info = await q.get_job("r1")
        assert info is not None and info.progress == 0.1
        assert await _progress_events(q, "r1") == ["0.8", "0.1"]


async def test_a_failed_job_keeps_its_last_progress(redis_url: str, queue_name: str) -> None:
    async with Queue(queue_name, redis_url=redis_url,
                     defaults=QueueDefaults(progress_interval_s=60)) as q:
        await q.add({}, JobOptions(job_id="f1", attempts=1))

        async def handler(job: Job) -> None:
            await job.progress(0.1)
            await job.progress(0.6)  # waits for the interval: written when the job fails
            raise RuntimeError("gave up at 60%")

        async with running(Worker(q, handler, rate_limit=None)):
            await wait_until(lambda: _state(q, "f1", JobState.FAILED), 5, message="failure")
        info = await q.get_job("f1")
        assert info is not None and info.progress == 0.6 and info.error is not None


async def test_bad_progress_values_are_refused(redis_url: str, queue_name: str) -> None:
    async with Queue(queue_name, redis_url=redis_url) as q:
        await q.add({}, JobOptions(job_id="v1"))
        errors: list[str] = []

        async def handler(job: Job) -> None:
            for bad in (1.5, -0.1, math.nan, True, "half", [0.5], {"big": "x" * 2000}, {1: 2}):
                try:
                    await job.progress(bad)  # type: ignore[arg-type]
                except PayloadError as exc:
                    errors.append(str(exc))
            await job.progress(1)  # an int 0 or 1 is a number in [0, 1]

        async with running(Worker(q, handler, rate_limit=None)):
            await wait_until(lambda: _state(q, "v1", JobState.COMPLETED), 5, message="done")
        assert len(errors) == 8, errors
        assert any("exceeds limit 1024 B" in e for e in errors)
        info = await q.get_job("v1")
        assert info is not None and info.progress == 1.0
    with pytest.raises(RuntimeError, match="inside a worker"):
        await Job("x", None, 1, 1, "q", "normal", 0, 0).progress(0.5)


async def test_the_cli_shows_progress_of_an_active_job(redis_url: str, queue_name: str) -> None:
    async with Queue(queue_name, redis_url=redis_url) as q:
        await q.add({}, JobOptions(job_id="c1"))
        reported, finish = anyio.Event(), anyio.Event()

        async def handler(job: Job) -> None:
            await job.progress({"rows": 120, "of": 400})
            reported.set()
            await finish.wait()

        async with running(Worker(q, handler, rate_limit=None)):
            await reported.wait()

            def show() -> str:
                out, err = io.StringIO(), io.StringIO()
                code = cli_main(["job", "c1", "--queue", queue_name, "--redis-url", redis_url],
                                Console(out=out, err=err))
                assert code == 0, err.getvalue()
                return out.getvalue()

            text = await anyio.to_thread.run_sync(show)
            finish.set()
        assert "active" in text and '{"rows":120,"of":400}' in text
