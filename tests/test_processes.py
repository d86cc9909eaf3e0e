"""Worker processes: SIGKILL mid-job, SIGTERM under load, the global rate limit."""

from __future__ import annotations

import signal
import subprocess
import time
from pathlib import Path

import anyio

from streamq import Job, JobState, Queue, Worker
from tests.support.ledger import read_ledger
from tests.support.util import running, spawn_ledger_worker, wait_until


def _stop(proc: subprocess.Popen[str]) -> None:
    if proc.poll() is None:
        proc.kill()
    proc.wait(timeout=10)


async def test_sigkill_mid_job_is_completed_by_another_worker_once(
    redis_url: str, queue_name: str, tmp_path: Path
) -> None:
    async with Queue(queue_name, redis_url=redis_url) as q:
        ref = await q.add({"sleep": 30})
        victim = spawn_ledger_worker(redis_url, queue_name, tmp_path, "--vt", "0.5")
        try:
            await wait_until(lambda: read_ledger(tmp_path).starts, timeout=10,
                             message="the job to start in the victim")
            victim.send_signal(signal.SIGKILL)
            victim.wait(timeout=10)
        finally:
            _stop(victim)
        info = await q.get_job(ref.job_id)
        assert info is not None and info.state is JobState.ACTIVE  # orphaned in the PEL
        finished: list[tuple[str, int]] = []

        async def handler(job: Job) -> None:
            finished.append((job.id, job.attempt))

        w = Worker(q, handler, rate_limit=None, visibility_timeout=0.5, reclaim_interval=0.1)
        stalled: list[int] = []
        w.on("stalled", lambda e: stalled.append(e.stalls))
        async with running(w):
            await wait_until(lambda: finished, timeout=5, message="reclaimed run")
            await wait_until(lambda: _completed(q, ref.job_id))
        # the crash did not use up an attempt; it counts as one stall
        assert finished == [(ref.job_id, 1)]
        assert stalled == [1]
        c = await q.counts()
        assert (c["completed"], c["active"], c["waiting"]) == (1, 0, 0)


async def _completed(q: Queue, job_id: str) -> bool:
    info = await q.get_job(job_id)
    return info is not None and info.state is JobState.COMPLETED


async def test_sigterm_under_load_loses_nothing_and_completes_nothing_twice(
    redis_url: str, queue_name: str, tmp_path: Path
) -> None:
    async with Queue(queue_name, redis_url=redis_url) as q:
        refs = await q.add_bulk([{} for _ in range(120)])
        a = spawn_ledger_worker(redis_url, queue_name, tmp_path, "--sleep", "0.1",
                                "--sleep-max", "0.4", "--concurrency", "5", "--grace", "10")
        b = spawn_ledger_worker(redis_url, queue_name, tmp_path, "--sleep", "0.1",
                                "--sleep-max", "0.4", "--concurrency", "5", "--grace", "10")
        try:
            await wait_until(lambda: len(read_ledger(tmp_path).ends) >= 30, timeout=20)
            in_flight_a = read_ledger(tmp_path).in_flight(a.pid)
            t_term = time.monotonic()
            a.send_signal(signal.SIGTERM)
            code = await anyio.to_thread.run_sync(lambda: a.wait(timeout=15))
            exit_after = time.monotonic() - t_term
            assert code == 0
            assert exit_after < 0.4 + 1.5  # longest job + exit overhead, far below the grace
            await wait_until(lambda: _counts(q, "completed", 120), timeout=30)
        finally:
            _stop(a)
            b.send_signal(signal.SIGTERM)
            b.wait(timeout=15)
            _stop(b)
        view = read_ledger(tmp_path)
        assert view.duplicated == {}
        assert view.done == {r.job_id for r in refs}
        # what A was running when told to stop, it finished itself
        assert len([e for e in view.ends if e[1] == a.pid]) >= in_flight_a
        assert view.in_flight(a.pid) == 0
        c = await q.counts()
        assert (c["active"], c["waiting"], c["failed"]) == (0, 0, 0)


async def _counts(q: Queue, name: str, value: int) -> bool:
    return (await q.counts())[name] == value


async def test_rate_limit_holds_across_two_worker_processes(
    redis_url: str, queue_name: str, tmp_path: Path
) -> None:
    rate = 25.0
    async with Queue(queue_name, redis_url=redis_url) as q:
        await q.add_bulk([{} for _ in range(150)])
        procs = [
            spawn_ledger_worker(redis_url, queue_name, tmp_path, "--concurrency", "20",
                                "--rate-limit", str(rate), "--burst", str(rate))
            for _ in range(2)
        ]
        try:
            await wait_until(lambda: len(read_ledger(tmp_path).starts) >= 150, timeout=30)
        finally:
            for p in procs:
                p.send_signal(signal.SIGTERM)
            for p in procs:
                p.wait(timeout=15)
                _stop(p)
        view = read_ledger(tmp_path)
        assert {pid for _, _, pid, _ in view.starts} == {p.pid for p in procs}
        times = sorted(t for _, _, _, t in view.starts)
        # after the initial burst (one second of tokens) the pace is the rate
        steady = times[int(rate):]
        measured = (len(steady) - 1) / (steady[-1] - steady[0])
        assert abs(measured - rate) / rate <= 0.10, measured
        # and no 1 s window holds more than rate + burst starts
        j = 0
        for i, t in enumerate(times):
            while times[j] < t - 1.0:
                j += 1
            assert i - j + 1 <= 2 * rate
