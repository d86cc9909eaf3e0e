"""Per-job timeout: ``JobOptions(timeout=...)`` and ``Worker(job_timeout=...)``.

A timed-out attempt is cut (its handler cancelled), fails with "timed out after N s" and is
retried or dead-lettered like any failure; its heartbeats stop; a shutdown cut is not a
timeout. The timeout travels with the job through every transition that rebuilds its entry.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import anyio
import pytest

from streamq import (
    Backoff,
    ConfigError,
    Defer,
    Job,
    JobOptions,
    JobState,
    Queue,
    Worker,
    WorkerEvent,
)
from streamq.keys import GROUP
from tests.support.util import ROOT, running, wait_until


async def _count(q: Queue, state: str) -> int:
    return (await q.counts())[state]


async def _has(q: Queue, state: str, n: int) -> bool:
    return (await q.counts())[state] == n


async def test_a_timed_out_attempt_is_cut_and_dead_lettered(redis_url: str, queue_name: str) -> None:
    async with Queue(queue_name, redis_url=redis_url) as q:
        ref = await q.add({"x": 1}, JobOptions(timeout=0.2, attempts=1))
        cleanup: list[str] = []
        events: list[WorkerEvent] = []

        async def handler(job: Job) -> None:
            assert job.timeout == 0.2
            try:
                await anyio.sleep(30)
            finally:
                cleanup.append("cancelled")  # the handler is cut, its cleanup runs

        w = Worker(q, handler, rate_limit=None)
        for name in ("failed", "dead", "completed"):
            w.on(name, events.append)  # type: ignore[arg-type]
        t0 = time.monotonic()
        async with running(w):
            await wait_until(lambda: _count(q, "dead"), timeout=5)
        assert time.monotonic() - t0 < 10  # far below the handler's 30 s: it was cut
        assert cleanup == ["cancelled"]
        assert [(e.name, e.error) for e in events] == [("failed", "timed out after 0.2s"),
                                                       ("dead", "timed out after 0.2s")]
        assert events[0].run_s is not None and 0.15 < events[0].run_s < 5
        info = await q.get_job(ref.job_id)
        assert info is not None and info.state is JobState.FAILED
        assert (info.attempts, info.error) == (1, "timed out after 0.2s")


async def test_timed_out_attempts_are_retried_and_the_retry_can_succeed(
    redis_url: str, queue_name: str
) -> None:
    async with Queue(queue_name, redis_url=redis_url) as q:
        ref = await q.add({}, JobOptions(timeout=timedelta(milliseconds=150), attempts=3,
                                         backoff=Backoff(base=0.01)))
        runs: list[tuple[int, float | None]] = []
        retrying: list[str | None] = []

        async def handler(job: Job) -> str:
            runs.append((job.attempt, job.timeout))
            if job.attempt < 3:
                await anyio.sleep(30)
            return "done"

        w = Worker(q, handler, rate_limit=None)
        w.on("retrying", lambda e: retrying.append(e.error))
        async with running(w):
            await wait_until(lambda: _count(q, "completed"), timeout=5)
        # the timeout rode along through retry -> delayed -> promotion
        assert runs == [(1, 0.15), (2, 0.15), (3, 0.15)]
        assert retrying == ["timed out after 0.15s"] * 2
        info = await q.get_job(ref.job_id)
        assert info is not None and info.state is JobState.COMPLETED and info.attempts == 3


async def test_a_handler_that_returns_after_the_cut_has_finished(
    redis_url: str, queue_name: str
) -> None:
    """A handler that catches the cancellation and returns has done its work: its result
    counts (as with anyio's move_on_after and asyncio.timeout)."""
    async with Queue(queue_name, redis_url=redis_url) as q:
        ref = await q.add({}, JobOptions(timeout=0.1, attempts=1))
        results: list[Any] = []

        async def handler(job: Job) -> str:
            try:
                await anyio.sleep(30)
            except anyio.get_cancelled_exc_class():
                return "partial"
            return "full"

        w = Worker(q, handler, rate_limit=None)
        w.on("completed", lambda e: results.append(e.result))
        async with running(w):
            await wait_until(lambda: results, timeout=5)
            # and the worker is not left cancelled: it goes on with the next job
            await q.add({}, JobOptions(timeout=0.1))
            await wait_until(lambda: len(results) == 2, timeout=5)
        assert results == ["partial", "partial"]
        info = await q.get_job(ref.job_id)
        assert info is not None and info.state is JobState.COMPLETED


async def test_worker_default_applies_only_to_jobs_without_their_own(
    redis_url: str, queue_name: str
) -> None:
    async with Queue(queue_name, redis_url=redis_url) as q:
        plain = await q.add({"sleep": 0.5}, JobOptions(attempts=1))
        patient = await q.add({"sleep": 0.5}, JobOptions(attempts=1, timeout=5))
        quick = await q.add({"sleep": 0.0}, JobOptions(attempts=1))
        seen: dict[str, float | None] = {}

        async def handler(job: Job) -> None:
            seen[job.id] = job.timeout
            await anyio.sleep(job.data["sleep"])

        async with running(Worker(q, handler, rate_limit=None, job_timeout=0.2)):
            await wait_until(lambda: _count(q, "dead"), timeout=5)
            await wait_until(lambda: _has(q, "completed", 2), timeout=5)
        assert seen == {plain.job_id: 0.2, patient.job_id: 5.0, quick.job_id: 0.2}
        info = await q.get_job(plain.job_id)
        assert info is not None and info.state is JobState.FAILED
        assert info.error == "timed out after 0.2s"
        for ref in (patient, quick):
            info = await q.get_job(ref.job_id)
            assert info is not None and info.state is JobState.COMPLETED


async def test_no_timeout_means_no_limit(redis_url: str, queue_name: str) -> None:
    async with Queue(queue_name, redis_url=redis_url) as q:
        await q.add({})
        seen: list[float | None] = []

        async def handler(job: Job) -> None:
            seen.append(job.timeout)
            await anyio.sleep(0.3)

        async with running(Worker(q, handler, rate_limit=None)):
            await wait_until(lambda: _count(q, "completed"), timeout=5)
        assert seen == [None]


async def test_timeout_longer_than_the_visibility_timeout_runs_each_attempt_once(
    redis_url: str, queue_name: str
) -> None:
    """Heartbeats keep the entry until the timeout cuts the attempt: no second worker
    takes it over meanwhile, and each attempt runs exactly once."""
    async with Queue(queue_name, redis_url=redis_url) as q:
        ref = await q.add({}, JobOptions(timeout=1.2, attempts=2, backoff=Backoff(base=0.01)))
        runs: list[tuple[int, str]] = []
        stalled: list[str] = []

        def make(name: str) -> Any:
            async def handler(job: Job) -> None:
                runs.append((job.attempt, name))
                await anyio.sleep(30)
            return handler

        workers = [Worker(q, make(n), rate_limit=None, visibility_timeout=0.5,
                          reclaim_interval=0.05, name=n) for n in ("w1", "w2")]
        for w in workers:
            w.on("stalled", lambda e: stalled.append(e.job_id))
        async with running(workers[0]), running(workers[1]):
            await wait_until(lambda: _count(q, "dead"), timeout=8)
        assert sorted(a for a, _ in runs) == [1, 2]
        assert stalled == []
        info = await q.get_job(ref.job_id)
        assert info is not None and (info.attempts, info.stalls) == (2, 0)
        assert info.error == "timed out after 1.2s"


async def test_heartbeats_stop_for_an_attempt_past_its_timeout(
    redis_url: str, queue_name: str
) -> None:
    """A handler that shields itself from the cut keeps running, but its entry is no longer
    kept claimed: another worker takes it over after the visibility timeout."""
    async with Queue(queue_name, redis_url=redis_url) as q:
        await q.ensure_groups()
        ref = await q.add({}, JobOptions(timeout=0.2))
        release = anyio.Event()
        stubborn_started = anyio.Event()
        taken_over: list[int] = []

        async def stubborn(job: Job) -> None:
            stubborn_started.set()
            with anyio.CancelScope(shield=True):
                await release.wait()

        async def other(job: Job) -> None:
            taken_over.append(job.stalls)

        # one slot: w1 cannot take its own silent entry over itself
        w1 = Worker(q, stubborn, concurrency=1, rate_limit=None, visibility_timeout=0.3,
                    name="w1")
        async with running(w1):
            try:
                await stubborn_started.wait()
                w2 = Worker(q, other, rate_limit=None, visibility_timeout=0.3,
                            reclaim_interval=0.05, name="w2")
                async with running(w2):
                    await wait_until(lambda: taken_over, timeout=5, message="the take-over")
            finally:
                release.set()  # let the stubborn handler end, so w1 can stop
        assert taken_over == [1]
        info = await q.get_job(ref.job_id)
        assert info is not None and info.state is JobState.COMPLETED


async def test_an_immediate_stop_is_not_a_timeout(redis_url: str, queue_name: str) -> None:
    """Stopped while an attempt runs (its timeout not yet reached): the job is handed
    back without using an attempt, and a worker started later runs it with its timeout."""
    async with Queue(queue_name, redis_url=redis_url) as q:
        ref = await q.add({}, JobOptions(timeout=5, attempts=1))
        started = anyio.Event()
        failures: list[str | None] = []

        async def hang(job: Job) -> None:
            started.set()
            await anyio.sleep(30)

        w = Worker(q, hang, rate_limit=None)
        w.on("failed", lambda e: failures.append(e.error))
        async with anyio.create_task_group() as tg:
            tg.start_soon(w.run)
            await started.wait()
            w.stop(immediate=True)
        assert failures == []
        info = await q.get_job(ref.job_id)
        assert info is not None and info.state is JobState.WAITING
        assert (info.attempts, info.error) == (0, None)
        # handed back with its timeout (release rebuilds the entry)
        seen: list[tuple[int, float | None]] = []

        async def record(job: Job) -> None:
            seen.append((job.attempt, job.timeout))

        async with running(Worker(q, record, rate_limit=None)):
            await wait_until(lambda: _count(q, "completed"), timeout=5)
        assert seen == [(1, 5.0)]


async def test_grace_cut_before_the_timeout_hands_the_job_back(
    redis_url: str, queue_name: str
) -> None:
    async with Queue(queue_name, redis_url=redis_url) as q:
        ref = await q.add({}, JobOptions(timeout=30, attempts=1))
        started = anyio.Event()

        async def hang(job: Job) -> None:
            started.set()
            await anyio.sleep(30)

        w = Worker(q, hang, rate_limit=None, shutdown_grace=0.2)
        t0 = time.monotonic()
        async with anyio.create_task_group() as tg:
            tg.start_soon(w.run)
            await started.wait()
            await w.close()
        assert time.monotonic() - t0 < 10  # the 0.2 s grace, not the 30 s timeout
        info = await q.get_job(ref.job_id)
        assert info is not None and info.state is JobState.WAITING
        assert (info.attempts, info.error) == (0, None)


async def test_timeout_during_the_grace_period_is_a_failed_attempt(
    redis_url: str, queue_name: str
) -> None:
    """Shutdown while an attempt runs that times out within the grace period: the timeout
    cuts it (a failed attempt, retry scheduled), and the worker stops at once after it."""
    async with Queue(queue_name, redis_url=redis_url) as q:
        ref = await q.add({}, JobOptions(timeout=0.4, attempts=2, backoff=Backoff(base=0.05)))
        started = anyio.Event()

        async def hang(job: Job) -> None:
            started.set()
            await anyio.sleep(30)

        retrying: list[str | None] = []
        w = Worker(q, hang, rate_limit=None, shutdown_grace=30)
        w.on("retrying", lambda e: retrying.append(e.error))
        t0 = time.monotonic()
        async with anyio.create_task_group() as tg:
            tg.start_soon(w.run)
            await started.wait()
            await w.close()
        assert time.monotonic() - t0 < 10  # not the 30 s grace
        assert retrying == ["timed out after 0.4s"]
        info = await q.get_job(ref.job_id)
        assert info is not None and info.state in (JobState.DELAYED, JobState.WAITING)
        assert (info.attempts, info.error) == (1, "timed out after 0.4s")


async def test_timeout_survives_dead_letter_and_replay(redis_url: str, queue_name: str) -> None:
    async with Queue(queue_name, redis_url=redis_url) as q:
        await q.add({}, JobOptions(timeout=0.1, attempts=1))
        seen: list[float | None] = []

        async def handler(job: Job) -> None:
            seen.append(job.timeout)
            await anyio.sleep(30)

        async with running(Worker(q, handler, rate_limit=None, job_timeout=7)):
            await wait_until(lambda: _has(q, "dead", 1), timeout=5)
            assert await q.replay_dead() == 1
            await wait_until(lambda: len(seen) == 2, timeout=5)
            await wait_until(lambda: _has(q, "dead", 1), timeout=5)
        assert seen == [0.1, 0.1]


async def test_entries_without_a_timeout_written_by_an_older_version_still_run(
    redis_url: str, queue_name: str
) -> None:
    """Entries as the previous version wrote them (b holds the backoff only, with or
    without cap and jitter) run with the worker's default timeout."""
    async with Queue(queue_name, redis_url=redis_url) as q:
        await q.ensure_groups()
        lane = q.keys.lanes[1]
        payload = q.codec.encode({"v": 1})
        await q.redis.xadd(lane, {"j": "old1", "d": payload, "m": "3|0|0|0|2000|"})
        await q.redis.xadd(lane, {"j": "old2", "d": payload, "m": "3|0|0|0|2000:5000:j|"})
        seen: dict[str, tuple[float | None, float, float | None]] = {}

        async def handler(job: Job) -> None:
            seen[job.id] = (job.timeout, job.backoff.base, job.backoff.cap)

        async with running(Worker(q, handler, rate_limit=None, job_timeout=3)):
            await wait_until(lambda: len(seen) == 2, timeout=5)
        assert seen == {"old1": (3.0, 2.0, None), "old2": (3.0, 2.0, 5.0)}
        pending = await q.redis.xpending(lane, GROUP)
        assert pending["pending"] == 0


@pytest.mark.parametrize("timeout", [0, -1, float("inf"), float("nan"), 1e12, "5"])
def test_bad_timeouts_are_clear_errors(timeout: Any) -> None:
    with pytest.raises(ConfigError, match="timeout"):
        JobOptions(timeout=timeout)


def test_the_documented_example_runs(redis_url: str, tmp_path: Path) -> None:
    """docs/jobs.md opens with a complete script: run it as a user would."""
    text = (ROOT / "docs" / "jobs.md").read_text()
    code = text.split("```python\n", 1)[1].split("```", 1)[0]
    script = tmp_path / "example.py"
    script.write_text(code)
    env = dict(os.environ, REDIS_URL=redis_url, PYTHONPATH=str(ROOT))
    r = subprocess.run([sys.executable, str(script)], cwd=tmp_path, env=env,
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip().splitlines()[-1] == (
        "['completed', 'completed', 'completed', 'dead: timed out after 0.2s']")


async def test_timeout_survives_a_defer(redis_url: str, queue_name: str) -> None:
    """Defer (not now, no attempt used) rebuilds the entry in the delayed set: the job's
    own timeout goes with it."""
    async with Queue(queue_name, redis_url=redis_url) as q:
        ref = await q.add({}, JobOptions(timeout=0.15, attempts=1))
        seen: list[tuple[int, float | None]] = []

        async def handler(job: Job) -> None:
            seen.append((job.attempt, job.timeout))
            if len(seen) == 1:
                raise Defer(0.01, "not now")
            await anyio.sleep(30)

        async with running(Worker(q, handler, rate_limit=None, job_timeout=9)):
            await wait_until(lambda: _count(q, "dead"), timeout=5)
        assert seen == [(1, 0.15), (1, 0.15)]
        info = await q.get_job(ref.job_id)
        assert info is not None and info.error == "timed out after 0.15s"


async def test_timeouts_on_a_partitioned_queue(redis_url: str, queue_name: str) -> None:
    """Each partition's entries carry their jobs' timeouts; the worker's default applies
    to the others, whichever partition they live in."""
    async with Queue(queue_name, redis_url=redis_url, partitions=3) as q:
        own = [await q.add({"i": i}, JobOptions(timeout=0.1, attempts=1, job_id=f"own{i}"))
               for i in range(6)]
        plain = [await q.add({"i": i}, JobOptions(attempts=1, job_id=f"plain{i}"))
                 for i in range(6)]
        seen: dict[str, tuple[int, float | None]] = {}

        async def handler(job: Job) -> None:
            seen[job.id] = (job.partition, job.timeout)
            if job.id.startswith("own"):
                await anyio.sleep(30)

        async with running(Worker(q, handler, rate_limit=None, job_timeout=4)):
            await wait_until(lambda: _has(q, "dead", 6), timeout=10)
            await wait_until(lambda: _has(q, "completed", 6), timeout=10)
        assert {t for _, t in seen.values()} == {0.1, 4.0}
        assert {seen[r.job_id][1] for r in own} == {0.1}
        assert {seen[r.job_id][1] for r in plain} == {4.0}
        assert len({p for p, _ in seen.values()}) > 1  # they did spread over partitions
        for r in own:
            info = await q.get_job(r.job_id)
            assert info is not None and info.error == "timed out after 0.1s"


async def test_the_worker_command_line_takes_a_default_job_timeout(
    redis_url: str, queue_name: str
) -> None:
    env = dict(os.environ, REDIS_URL=redis_url, PYTHONPATH=str(ROOT), STREAMQ_JOB_TIMEOUT="0.3")
    async with Queue(queue_name, redis_url=redis_url) as q:
        ref = await q.add({"ok": "hang"}, JobOptions(attempts=1))
        proc = subprocess.Popen(
            [sys.executable, "-m", "streamq.worker", "--queue", queue_name, "--rate-limit", "0",
             "--handler", "tests.support.jobs:check", "--log-level", "warning"],
            cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            await wait_until(lambda: _count(q, "dead"), timeout=20, message="the cut job")
        finally:
            proc.terminate()
            assert proc.wait(timeout=20) == 0
        info = await q.get_job(ref.job_id)
        assert info is not None and info.error is not None
        assert "timed out after 0.3s" in info.error
