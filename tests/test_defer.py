"""Defer: "not now" without using an attempt, and the worker's fetch hold (public API only)."""

from __future__ import annotations

import anyio
import pytest
import structlog

from streamq import Defer, Job, JobOptions, JobState, Queue, QueueDefaults, Worker, WorkerEvent
from streamq.metrics import Metrics
from tests.support.util import running, wait_until


async def test_a_deferred_job_uses_no_attempt(redis_url: str, queue_name: str) -> None:
    async with Queue(queue_name, redis_url=redis_url) as q:
        # attempts=1: a single counted failure would dead-letter it
        ref = await q.add({"n": 1}, JobOptions(attempts=1, job_id="d1"))
        runs: list[int] = []

        async def handler(job: Job) -> str:
            runs.append(job.attempt)
            if len(runs) < 3:
                raise Defer(0.05, "dependency not ready")
            return "done"

        deferred: list[WorkerEvent] = []
        worker = Worker(q, handler, rate_limit=None)
        worker.on("deferred", deferred.append)
        async with running(worker):
            await wait_until(lambda: len(runs) >= 3, 10, message="the third run")
            await wait_until(lambda: _state(q, ref.job_id, JobState.COMPLETED), 10,
                             message="completion")
        info = await q.get_job(ref.job_id)
        assert info is not None and info.attempts == 1 and info.error is None
        assert runs == [1, 1, 1], "every run is attempt 1: a deferral uses none"
        assert [(e.error, e.delay) for e in deferred] == [("dependency not ready", 0.05)] * 2
        names = [e.name for e in await q.read_events(count=100) if e.job_id == "d1"]
        assert names.count("deferred") == 2 and "failed" not in names and "retrying" not in names
        assert (await q.dead_letters(10)) == []


async def test_a_deferred_job_waits_in_the_delayed_set(redis_url: str, queue_name: str) -> None:
    async with Queue(queue_name, redis_url=redis_url) as q:
        ref = await q.add({"n": 1})
        ran = anyio.Event()

        async def handler(job: Job) -> None:
            ran.set()
            raise Defer(60, "later")

        async with running(Worker(q, handler, rate_limit=None)):
            await ran.wait()
            await wait_until(lambda: _state(q, ref.job_id, JobState.DELAYED), 5,
                             message="the job to be delayed")
        info = await q.get_job(ref.job_id)
        assert info is not None and info.attempts == 0 and info.due_at is not None


async def test_hold_claims_one_probe_per_period_and_resumes(redis_url: str, queue_name: str) -> None:
    """A dependency every job needs is down: the worker stops claiming (no churn), keeps
    the backlog queued with no attempt used, reports it, and resumes on its own."""
    defaults = QueueDefaults(attempts=1)
    async with Queue(queue_name, redis_url=redis_url, defaults=defaults) as q:
        await q.add_bulk([{"i": i} for i in range(40)])
        down = True
        calls = 0
        hold_s = 0.2

        async def handler(job: Job) -> int:
            nonlocal calls
            calls += 1
            if down:
                raise Defer(hold_s, "the gateway refuses our credentials", hold=True)
            return int(job.data["i"])

        concurrency = 4
        worker = Worker(q, handler, concurrency=concurrency, rate_limit=None)
        metrics = Metrics()
        metrics.attach(worker)
        with structlog.testing.capture_logs() as logs:
            async with running(worker):
                await wait_until(lambda: worker.fetch_hold.held, 5, message="the hold")
                started = anyio.current_time()
                await wait_until(lambda: worker.fetch_hold.holds >= 8, 10,
                                 message="several hold periods")
                periods = (anyio.current_time() - started) / hold_s
                # the first claim took up to `concurrency` jobs; after that one probe per period
                assert calls <= concurrency + periods + 2, (calls, periods)
                counts = await q.counts()
                assert counts["failed"] == 0 and counts["completed"] == 0
                assert counts["waiting"] + counts["delayed"] + counts["active"] == 40
                health = await metrics.health(worker)
                assert health.ok and health.status == "degraded"
                assert "refuses our credentials" in health.as_json()["reason"]
                page, _ = await metrics.scrape()
                assert f'streamq_worker_held{{queue="{queue_name}"}} 1.0' in page.decode()

                down = False
                await wait_until(lambda: _completed(q, 40), 10, message="all 40 jobs")
                assert not worker.fetch_hold.held
        assert (await metrics.health(worker)).status != "degraded"
        dead = await q.dead_letters(10)
        assert dead == []
        events = [e["event"] for e in logs]
        assert events.count("worker.held") == 1, "loud once per episode"
        assert events.count("worker.hold_released") == 1
        assert events.count("worker.still_held") <= 1  # at most one per log_every (60 s)


async def test_only_the_probe_releases_a_hold(redis_url: str, queue_name: str) -> None:
    """A job that was already running when the hold began and then completes must not
    lift the hold: it says nothing about the dependency."""
    async with Queue(queue_name, redis_url=redis_url) as q:
        await q.add({"kind": "slow"}, JobOptions(priority="high"))
        slow_started = anyio.Event()
        let_slow_finish = anyio.Event()
        probes = 0

        async def handler(job: Job) -> str:
            nonlocal probes
            if job.data["kind"] == "slow":
                slow_started.set()
                await let_slow_finish.wait()
                return "slow done"
            probes += 1
            raise Defer(30, "down", hold=True)

        worker = Worker(q, handler, concurrency=2, rate_limit=None)
        async with running(worker):
            await slow_started.wait()
            await q.add({"kind": "needs-dependency"})
            await wait_until(lambda: worker.fetch_hold.held, 5, message="the hold")
            let_slow_finish.set()
            await wait_until(lambda: _completed(q, 1), 5, message="the slow job")
            assert worker.fetch_hold.held
            assert probes == 1
            await q.add({"kind": "needs-dependency"})
            await anyio.sleep(0.3)
            assert probes == 1, "held: the new job is not claimed"
            worker.fetch_hold.release()  # an operator (or a test) may end it by hand
            await wait_until(lambda: probes >= 2, 5, message="a claim after the release")


@pytest.mark.parametrize("hold", [False, True])
async def test_defer_delay_is_capped_by_max_retry_delay(
    redis_url: str, queue_name: str, hold: bool
) -> None:
    async with Queue(queue_name, redis_url=redis_url) as q:
        await q.add({"n": 1})
        runs = 0

        async def handler(job: Job) -> None:
            nonlocal runs
            runs += 1
            if runs == 1:
                raise Defer(86400, "a day", hold=hold)

        worker = Worker(q, handler, rate_limit=None, max_retry_delay=0.1)
        async with running(worker):
            await wait_until(lambda: _completed(q, 1), 5, message="the capped rerun")
        assert runs == 2


async def _state(q: Queue, job_id: str, state: JobState) -> bool:
    info = await q.get_job(job_id)
    return info is not None and info.state is state


async def _completed(q: Queue, n: int) -> bool:
    return (await q.counts())["completed"] >= n


def test_the_readme_example_runs_as_written(redis_url: str) -> None:
    import os
    import re
    import subprocess
    import sys

    from tests.support.util import ROOT

    readme = (ROOT / "README.md").read_text()
    code = re.search(r"<!-- example: defer -->\n```python\n(.*?)```", readme, re.S)
    assert code is not None
    r = subprocess.run([sys.executable, "-c", code.group(1)], cwd=ROOT, capture_output=True,
                       text=True, timeout=60, env=dict(os.environ, REDIS_URL=redis_url))
    assert r.returncode == 0, r.stderr
    lines = [ln for ln in r.stdout.splitlines() if ln.startswith(("held:", "sent "))]
    assert lines == ["held: True - gateway down", *(f"sent {n} attempt 1" for n in range(3))]
