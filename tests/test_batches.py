"""Batch handlers (SPEC 9.3): lists of jobs of one level, per-job outcomes, the fill wait,
the rate limit counting jobs, heartbeats over a long batch, shutdown, and a SIGKILL
mid-batch taken over by another worker with nothing lost."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import anyio
import pytest

from streamq import (
    BatchOptions,
    ConfigError,
    Job,
    JobOptions,
    JobState,
    PermanentError,
    Queue,
    RetryAfter,
    Worker,
    WorkerEvent,
)
from streamq.priority import level_of
from tests.support.ledger import read_ledger
from tests.support.util import ROOT, running, spawn_ledger_worker, wait_until


async def _count(q: Queue, state: str, n: int) -> bool:
    return (await q.counts())[state] == n


@pytest.mark.parametrize("bad", [
    {"size": 0}, {"size": 10_001}, {"size": True}, {"size": 2.5}, {"max_wait": -1},
    {"max_wait": 61}, {"max_wait": float("nan")}, {"max_wait": "0.1"}])
def test_bad_batch_options_are_one_clear_line(bad: dict[str, Any]) -> None:
    with pytest.raises(ConfigError, match="batch") as e:
        BatchOptions(**bad)
    assert "\n" not in str(e.value)


async def test_batch_must_be_batch_options_and_wait_less_than_the_lease(
        redis_url: str, queue_name: str) -> None:
    async def handler(jobs: list[Job]) -> None:
        return None

    async with Queue(queue_name, redis_url=redis_url) as q:
        with pytest.raises(ConfigError, match="BatchOptions"):
            Worker(q, handler, batch=100)  # type: ignore[arg-type]
        with pytest.raises(ConfigError, match="visibility_timeout"):
            Worker(q, handler, batch=BatchOptions(max_wait=6), visibility_timeout=10)
        w = Worker(q, handler, concurrency=3, batch=BatchOptions(size=20))
        assert w.slots == 60 and w.in_flight == 0


async def test_a_backlog_makes_full_batches_and_results_are_stored(
        redis_url: str, queue_name: str) -> None:
    async with Queue(queue_name, redis_url=redis_url) as q:
        refs = await q.add_bulk([{"i": i} for i in range(250)])
        sizes: list[int] = []

        async def handler(jobs: list[Job]) -> dict[str, Any]:
            sizes.append(len(jobs))
            return {job.id: {"twice": job.data["i"] * 2} for job in jobs}

        completed: list[WorkerEvent] = []
        w = Worker(q, handler, concurrency=1, rate_limit=None,
                   batch=BatchOptions(size=100, max_wait=0.05))
        w.on("completed", completed.append)
        async with running(w):
            await wait_until(lambda: _count(q, "completed", 250), 60, message="250 completed")
        assert sizes == [100, 100, 50]
        info = await q.get_job(refs[123].job_id)
        assert info is not None and info.state is JobState.COMPLETED
        assert info.result == {"twice": 246} and info.attempts == 1
        assert len(completed) == 250 and {e.job_id for e in completed} == {r.job_id for r in refs}


async def test_each_job_has_its_own_outcome(redis_url: str, queue_name: str) -> None:
    """An exception value fails that job alone: retried by its own attempts (RetryAfter
    after its delay), PermanentError dead-lettered at once; the others succeed; a job the
    mapping leaves out succeeds with no result."""
    async with Queue(queue_name, redis_url=redis_url) as q:
        opts = JobOptions(attempts=3, backoff=0.05)
        await q.add_bulk([({"k": k}, JobOptions(job_id=k, attempts=3, backoff=0.05))
                          for k in ("ok", "flaky", "later", "bad", "silent")])
        assert opts.attempts == 3
        calls: list[tuple[str, int]] = []

        async def handler(jobs: list[Job]) -> dict[str, Any]:
            out: dict[str, Any] = {}
            for job in jobs:
                calls.append((job.id, job.attempt))
                if job.id == "ok":
                    out[job.id] = "fine"
                elif job.id == "flaky":
                    out[job.id] = ValueError("boom") if job.attempt < 3 else "third time"
                elif job.id == "later":
                    out[job.id] = RetryAfter(0.2) if job.attempt == 1 else "after a wait"
                elif job.id == "bad":
                    out[job.id] = PermanentError("no such recipient")
            return out

        async with running(Worker(q, handler, concurrency=1, rate_limit=None,
                                  batch=BatchOptions(size=10, max_wait=0.01))):
            await wait_until(lambda: _count(q, "completed", 4), 60, message="4 completed")
            await wait_until(lambda: _count(q, "failed", 1), 60, message="1 dead")
        results = {k: await q.get_job(k) for k in ("ok", "flaky", "later", "bad", "silent")}
        assert results["ok"] is not None and results["ok"].result == "fine"
        flaky = results["flaky"]
        assert flaky is not None and flaky.result == "third time" and flaky.attempts == 3
        later = results["later"]
        assert later is not None and later.result == "after a wait" and later.attempts == 2
        bad = results["bad"]
        assert bad is not None and bad.state is JobState.FAILED
        assert bad.error == "no such recipient" and bad.attempts == 1
        silent = results["silent"]
        assert silent is not None and silent.state is JobState.COMPLETED and silent.result is None
        assert [a for j, a in calls if j == "bad"] == [1]
        assert [a for j, a in calls if j == "ok"] == [1]
        dead = await q.dead_letters()
        assert [d.job_id for d in dead] == ["bad"]


async def test_an_exception_from_the_handler_is_every_jobs_outcome(
        redis_url: str, queue_name: str) -> None:
    async with Queue(queue_name, redis_url=redis_url) as q:
        await q.add_bulk([({"i": i}, JobOptions(attempts=2, backoff=0.05)) for i in range(6)])
        calls = 0

        async def handler(jobs: list[Job]) -> None:
            nonlocal calls
            calls += 1
            if all(job.attempt == 1 for job in jobs):
                raise ConnectionError("provider down")
            if len(jobs) != 6:
                raise PermanentError("not retried")

        async with running(Worker(q, handler, concurrency=1, rate_limit=None,
                                  batch=BatchOptions(size=6, max_wait=1.0))):
            await wait_until(lambda: _count(q, "completed", 6), 60)
        assert calls == 2
        assert (await q.counts())["failed"] == 0


async def test_a_returned_non_mapping_fails_the_batch(redis_url: str, queue_name: str) -> None:
    async with Queue(queue_name, redis_url=redis_url) as q:
        await q.add_bulk([({"i": i}, JobOptions(attempts=1)) for i in range(3)])

        async def handler(jobs: list[Job]) -> list[int]:
            return [1, 2, 3]

        async with running(Worker(q, handler, rate_limit=None,  # type: ignore[arg-type]
                                  batch=BatchOptions(size=3, max_wait=1.0))):
            await wait_until(lambda: _count(q, "failed", 3), 60)
        dead = await q.dead_letters()
        assert {d.error for d in dead} == {
            "TypeError: the batch handler returned a list: return None or a dict of job id "
            "-> result or exception"}


async def test_a_batch_waits_at_most_max_wait_to_fill(redis_url: str, queue_name: str) -> None:
    """Three jobs and room for 100: the batch goes once max_wait has passed since its
    first job was taken (not sooner, since more could come); a batch that fills goes at
    once, without waiting for max_wait."""
    async with Queue(queue_name, redis_url=redis_url) as q:
        started: list[tuple[float, int]] = []

        async def handler(jobs: list[Job]) -> None:
            started.append((time.monotonic(), len(jobs)))

        w = Worker(q, handler, concurrency=1, rate_limit=None,
                   batch=BatchOptions(size=100, max_wait=0.4))
        async with running(w):
            await wait_until(lambda: w.healthy, 30)
            t0 = time.monotonic()
            await q.add_bulk([{"i": i} for i in range(3)])
            await wait_until(lambda: started, 60)
        assert started[0][1] == 3
        assert started[0][0] - t0 >= 0.4

    async with Queue(queue_name + "f", redis_url=redis_url) as q:
        started.clear()
        w = Worker(q, handler, concurrency=1, rate_limit=None,
                   batch=BatchOptions(size=7, max_wait=30.0), visibility_timeout=120)
        async with running(w):
            await wait_until(lambda: w.healthy, 30)
            await q.add_bulk([{"i": i} for i in range(3)])
            await wait_until(lambda: _count(q, "active", 3), 30, message="3 claimed")
            t0 = time.monotonic()
            await q.add_bulk([{"i": i} for i in range(3, 7)])
            await wait_until(lambda: started, 30)
        assert started[0][1] == 7
        assert started[0][0] - t0 < 30.0  # full: it did not wait out max_wait


async def test_max_wait_zero_takes_what_is_there(redis_url: str, queue_name: str) -> None:
    async with Queue(queue_name, redis_url=redis_url) as q:
        sizes: list[int] = []

        async def handler(jobs: list[Job]) -> None:
            sizes.append(len(jobs))

        async with running(Worker(q, handler, concurrency=1, rate_limit=None,
                                  batch=BatchOptions(size=50, max_wait=0))):
            await q.add({"i": 1})
            await wait_until(lambda: sizes, 30)
        assert sizes == [1]


async def test_a_batch_never_mixes_levels_and_urgent_batches_go_first(
        redis_url: str, queue_name: str) -> None:
    async with Queue(queue_name, redis_url=redis_url) as q:
        await q.pause()
        levels: list[Any] = [7, "high", 5, 2, 9, "normal"] * 15
        await q.add_bulk([({"p": p}, JobOptions(priority=p)) for p in levels])
        batches: list[list[int]] = []

        async def handler(jobs: list[Job]) -> None:
            batches.append([level_of(job.data["p"]) for job in jobs])

        async with running(Worker(q, handler, concurrency=1, rate_limit=None,
                                  batch=BatchOptions(size=20, max_wait=0.01))):
            await q.resume()
            await wait_until(lambda: sum(map(len, batches)) == len(levels), 60)
        assert all(len(set(b)) == 1 for b in batches), batches
        order = [b[0] for b in batches]
        assert order == sorted(order)
        assert [len(b) for b in batches if b[0] == 2] == [20, 10]  # "high" and 2: one level


async def test_the_rate_limit_takes_one_token_per_job(redis_url: str, queue_name: str) -> None:
    """20 jobs/s with a burst of 20: 100 jobs in batches of up to 50 take about 4 s (one
    token per job), not the instant two batches would take with a token per batch."""
    async with Queue(queue_name, redis_url=redis_url) as q:
        await q.add_bulk([{"i": i} for i in range(100)])
        seen: list[tuple[float, int]] = []

        async def handler(jobs: list[Job]) -> None:
            seen.append((time.monotonic(), len(jobs)))

        t0 = time.monotonic()
        async with running(Worker(q, handler, concurrency=1, rate_limit=20.0, burst=20,
                                  batch=BatchOptions(size=50, max_wait=0.05))):
            await wait_until(lambda: sum(n for _, n in seen) == 100, 60)
        elapsed = seen[-1][0] - t0
        assert elapsed >= (100 - 20) / 20 * 0.9, (elapsed, seen)
        # in no window did more jobs start than the bucket allows (burst + rate x window,
        # the window widened by the fill wait and some scheduling: tokens are taken when
        # a job is claimed, and a batch starts up to max_wait after its first claim)
        for i, (ti, _) in enumerate(seen):
            for tj, _ in seen[i:]:
                started = sum(n for t, n in seen if ti <= t <= tj)
                assert started <= 20 + 20 * (tj - ti + 0.05 + 0.2) + 1, (started, tj - ti)


async def test_heartbeats_keep_a_long_batch(redis_url: str, queue_name: str) -> None:
    """A batch running four visibility timeouts is not taken over by a second worker."""
    async with Queue(queue_name, redis_url=redis_url) as q:
        await q.add_bulk([{"i": i} for i in range(5)])
        runs: list[str] = []

        async def slow(jobs: list[Job]) -> None:
            runs.extend(job.id for job in jobs)
            await anyio.sleep(2.0)

        async def other(job: Job) -> None:
            runs.append(job.id)

        a = Worker(q, slow, rate_limit=None, visibility_timeout=0.5, reclaim_interval=0.1,
                   batch=BatchOptions(size=5, max_wait=0.1))
        b = Worker(q, other, rate_limit=None, visibility_timeout=0.5, reclaim_interval=0.1)
        stalled: list[WorkerEvent] = []
        b.on("stalled", stalled.append)
        async with running(a):
            await wait_until(lambda: len(runs) == 5, 30)
            async with running(b):
                await wait_until(lambda: _count(q, "completed", 5), 30)
        assert len(runs) == 5 and stalled == []


async def test_progress_from_a_batch_handler(redis_url: str, queue_name: str) -> None:
    async with Queue(queue_name, redis_url=redis_url) as q:
        refs = await q.add_bulk([{"i": i} for i in range(3)])

        async def handler(jobs: list[Job]) -> None:
            for n, job in enumerate(jobs):
                await job.progress({"sent": n})

        async with running(Worker(q, handler, rate_limit=None,
                                  batch=BatchOptions(size=3, max_wait=1.0))):
            await wait_until(lambda: _count(q, "completed", 3), 30)
        infos = [await q.get_job(r.job_id) for r in refs]
        assert sorted(i.progress["sent"] for i in infos if i is not None) == [0, 1, 2]


async def test_a_bad_payload_is_dead_lettered_alone(redis_url: str, queue_name: str) -> None:
    async with Queue(queue_name, redis_url=redis_url) as q:
        await q.ensure_groups()
        await q.add_bulk([{"i": i} for i in range(4)])
        await q.redis.xadd(q.keys.lanes[1], {"j": "bad1", "d": b"\xc1 not msgpack",
                                             "m": "3|0|0|0||"})
        got: list[str] = []

        async def handler(jobs: list[Job]) -> None:
            got.extend(job.id for job in jobs)

        async with running(Worker(q, handler, rate_limit=None,
                                  batch=BatchOptions(size=10, max_wait=0.2))):
            await wait_until(lambda: _count(q, "completed", 4), 30)
            await wait_until(lambda: _count(q, "failed", 1), 30)
        assert len(got) == 4 and "bad1" not in got
        [dead] = await q.dead_letters()
        assert dead.job_id == "bad1" and "decode" in (dead.error or "")


async def test_a_filling_batch_is_handed_back_at_shutdown(redis_url: str, queue_name: str) -> None:
    async with Queue(queue_name, redis_url=redis_url) as q:
        calls: list[int] = []

        async def handler(jobs: list[Job]) -> None:
            calls.append(len(jobs))

        w = Worker(q, handler, rate_limit=None, visibility_timeout=120,
                   batch=BatchOptions(size=100, max_wait=50.0))
        async with running(w):
            await q.add_bulk([{"i": i} for i in range(3)])
            await wait_until(lambda: _count(q, "active", 3), 30, message="3 claimed")
            t0 = time.monotonic()
        assert time.monotonic() - t0 < 10  # not the 50 s fill wait
        assert calls == []
        c = await q.counts()
        assert (c["waiting"], c["active"]) == (3, 0)


def _stop(proc: subprocess.Popen[str]) -> None:
    if proc.poll() is None:
        proc.kill()
    proc.wait(timeout=10)


async def test_sigkill_mid_batch_the_batch_is_taken_over_nothing_lost(
        redis_url: str, queue_name: str, tmp_path: Path) -> None:
    """A worker process dies (SIGKILL) while its batch runs: the batch's entries were in
    its pending list all along, so another worker takes them over; every job completes,
    the killed batch's jobs once each, as a stall."""
    async with Queue(queue_name, redis_url=redis_url) as q:
        refs = await q.add_bulk([{"sleep": 60} for _ in range(30)])
        victim = spawn_ledger_worker(redis_url, queue_name, tmp_path, "--batch", "10",
                                     "--max-wait", "0.05", "--concurrency", "1", "--vt", "0.5")
        try:
            await wait_until(lambda: len(read_ledger(tmp_path).starts) == 10, 30,
                             message="a batch of 10 running in the victim")
            victim.send_signal(signal.SIGKILL)
            victim.wait(timeout=10)
        finally:
            _stop(victim)
        view = read_ledger(tmp_path)
        killed = {s[0] for s in view.starts}
        assert len(killed) == 10 and view.ends == []
        c = await q.counts()
        assert (c["active"], c["waiting"]) == (10, 20)  # the batch: still pending, not lost
        done: list[str] = []

        async def handler(jobs: list[Job]) -> None:
            done.extend(job.id for job in jobs)

        w = Worker(q, handler, rate_limit=None, visibility_timeout=0.5, reclaim_interval=0.1,
                   batch=BatchOptions(size=10, max_wait=0.05))
        stalled: list[WorkerEvent] = []
        w.on("stalled", stalled.append)
        async with running(w):
            await wait_until(lambda: _count(q, "completed", 30), 60, message="30 completed")
        assert sorted(done) == sorted(r.job_id for r in refs)  # each once, none lost
        assert {e.job_id for e in stalled} == killed and {e.stalls for e in stalled} == {1}
        c = await q.counts()
        assert (c["active"], c["waiting"], c["failed"]) == (0, 0, 0)


async def cli_batch(jobs: list[Job]) -> dict[str, Any]:
    """The batch handler the worker command line loads in the test below."""
    return {job.id: len(jobs) for job in jobs}


async def test_the_worker_command_line_runs_a_batch_handler(
        redis_url: str, queue_name: str, tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("STREAMQ_", "REDIS_"))}
    env.update(PYTHONPATH=str(ROOT), REDIS_URL=redis_url)
    bad = subprocess.run([sys.executable, "-m", "streamq.worker", "--batch-size", "5",
                          "--batch-max-wait", "61"],
                         cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "Traceback" not in bad.stderr
    assert "--batch-max-wait" in bad.stderr.strip().splitlines()[-1]
    async with Queue(queue_name, redis_url=redis_url) as q:
        refs = await q.add_bulk([{"i": i} for i in range(25)])
        log = tmp_path / "worker.log"
        with open(log, "wb") as out:
            proc = subprocess.Popen(
                [sys.executable, "-m", "streamq.worker", "--queue", queue_name, "--handler",
                 "tests.test_batches:cli_batch", "--batch-size", "10", "--batch-max-wait", "0.2",
                 "--rate-limit", "0", "--log-format", "json"],
                cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
        try:
            await wait_until(lambda: _count(q, "completed", 25), 60, message="25 completed")
        finally:
            proc.send_signal(signal.SIGTERM)
            code = await anyio.to_thread.run_sync(lambda: proc.wait(timeout=30))
        assert code == 0, log.read_text()
        results = [(await q.get_job(r.job_id)) for r in refs]
        assert sorted({i.result for i in results if i is not None}) == [5, 10]
        assert '"batch": "10 jobs, 0.2s fill wait"' in log.read_text()


async def test_batches_on_a_partitioned_queue(redis_url: str, queue_name: str) -> None:
    async with Queue(queue_name, redis_url=redis_url, partitions=3) as q:
        refs = await q.add_bulk([{"i": i} for i in range(90)])
        sizes: list[int] = []

        async def handler(jobs: list[Job]) -> dict[str, Any]:
            sizes.append(len(jobs))
            return {job.id: job.partition for job in jobs}

        async with running(Worker(q, handler, concurrency=2, rate_limit=50.0, burst=50,
                                  batch=BatchOptions(size=20, max_wait=0.05))):
            await wait_until(lambda: _count(q, "completed", 90), 60)
        assert sum(sizes) == 90 and max(sizes) <= 20
        parts = {(await q.get_job(r.job_id)).result for r in refs}  # type: ignore[union-attr]
        assert parts == {0, 1, 2}


async def test_flow_jobs_in_batches(redis_url: str, queue_name: str) -> None:
    from streamq import FlowJob

    async with Queue(queue_name, redis_url=redis_url) as q:
        await q.add_flow(FlowJob(data={"role": "parent"}, options=JobOptions(job_id="parent"),
                                 children=[FlowJob(data={"n": n}, options=JobOptions(
                                     job_id=f"child{n}")) for n in range(4)]),
                         on_child_failure="fail")
        seen: dict[str, Any] = {}

        async def handler(jobs: list[Job]) -> dict[str, Any]:
            out: dict[str, Any] = {}
            for job in jobs:
                if job.id == "parent":
                    seen["children"] = await job.children_results()
                    out[job.id] = "parent done"
                else:
                    out[job.id] = job.data["n"] * 10
            return out

        async with running(Worker(q, handler, rate_limit=None,
                                  batch=BatchOptions(size=10, max_wait=0.05))):
            await wait_until(lambda: _count(q, "completed", 5), 60)
        assert seen["children"] == {f"child{n}": n * 10 for n in range(4)}
        parent = await q.get_job("parent")
        assert parent is not None and parent.result == "parent done"


async def test_a_batch_runs_under_its_jobs_shortest_timeout(
        redis_url: str, queue_name: str) -> None:
    async with Queue(queue_name, redis_url=redis_url) as q:
        await q.add_bulk([({"i": 0}, JobOptions(job_id="short", timeout=0.3, attempts=1)),
                          ({"i": 1}, JobOptions(job_id="long", timeout=60, attempts=1))])

        async def handler(jobs: list[Job]) -> None:
            await anyio.sleep(30)

        t0 = time.monotonic()
        async with running(Worker(q, handler, rate_limit=None,
                                  batch=BatchOptions(size=2, max_wait=5.0))):
            await wait_until(lambda: _count(q, "failed", 2), 30)
        assert time.monotonic() - t0 < 25
        errors = {d.job_id: d.error for d in await q.dead_letters()}
        assert errors == {"short": "timed out after 0.3s", "long": "timed out after 0.3s"}


async def test_a_batch_cut_at_the_grace_deadline_is_handed_back_whole(
        redis_url: str, queue_name: str) -> None:
    async with Queue(queue_name, redis_url=redis_url) as q:
        await q.add_bulk([{"i": i} for i in range(4)])
        started = anyio.Event()

        async def handler(jobs: list[Job]) -> None:
            started.set()
            await anyio.sleep(60)

        w = Worker(q, handler, rate_limit=None, shutdown_grace=0.3,
                   batch=BatchOptions(size=4, max_wait=1.0))
        async with running(w):
            await started.wait()
        c = await q.counts()
        assert (c["waiting"], c["active"], c["completed"], c["failed"]) == (4, 0, 0, 0)
