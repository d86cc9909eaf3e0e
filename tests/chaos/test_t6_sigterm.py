"""T6: graceful shutdown under load (SIGTERM) and its variants.

A stops fetching at once, finishes what it runs, hands back what it fetched but did not
start, exits 0 soon after its last job; nothing is lost and nothing completes twice. A
job longer than the grace period is cut and handed back (B re-runs it at once); a second
signal stops at once; an idle worker blocked in XREAD exits within 1 s.
"""

from __future__ import annotations

import signal
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import pytest

from streamq import JobOptions, Queue
from streamq.devredis import start_redis_server
from tests.chaos.harness import (
    WorkerPool,
    job_ids_of_entries,
    now,
    pending_of,
    poll,
    redis_client,
    wait_exit,
)
from tests.support.ledger import read_ledger

pytestmark = pytest.mark.chaos


@dataclass
class Env:
    url: str
    q: Queue
    r: Any
    ledger: Path


@asynccontextmanager
async def env(tmp_path: Path, name: str) -> AsyncIterator[Env]:
    server = start_redis_server(directory=tmp_path / "redis")
    r = redis_client(server.url)
    q = Queue(name, redis_url=server.url)
    ledger = tmp_path / "ledger"
    ledger.mkdir()
    try:
        yield Env(server.url, q, r, ledger)
    finally:
        await q.close()
        await r.aclose()
        server.stop()


def exited_at(proc: object, timeout: float) -> float:
    wait_exit(proc, timeout)
    return now()


@pytest.mark.timeout(90)
async def test_t6_sigterm_under_load_finishes_hands_back_and_duplicates_nothing(
    tmp_path: Path,
) -> None:
    n = 150
    async with env(tmp_path, "term") as e:
        pool = WorkerPool(e.url, "term", e.ledger, ["--concurrency", "5", "--grace", "10",
                                                   "--sleep", "0.2", "--sleep-max", "0.8",
                                                   "--vt", "30"], size=2)
        try:
            refs = await e.q.add_bulk([(None, JobOptions(job_id=f"t{i:04d}")) for i in range(n)])
            await pool.start()
            await poll(lambda: len(read_ledger(e.ledger).ends) >= n // 4, 30, message="progress")
            a = pool.procs[0]
            a_consumer = pool.consumer_of[a.pid]
            a.send_signal(signal.SIGTERM)
            t_term = now()
            running_at_term = {j for j, _, pid, t in read_ledger(e.ledger).starts
                               if pid == a.pid} - {j for j, pid, _ in read_ledger(e.ledger).ends
                                                   if pid == a.pid}
            # fetched-but-unstarted jobs are handed back at once: within 1 s, A holds
            # nothing it has not started
            await anyio.sleep(1.0)
            held = await pending_of(e.r, e.q.keys, [a_consumer])
            started_by_a = {j for j, _, pid, _ in read_ledger(e.ledger).starts if pid == a.pid}
            held_jobs = set(await job_ids_of_entries(e.r, held))
            assert held_jobs <= started_by_a, f"A still holds unstarted {held_jobs - started_by_a}"
            t_exit = await anyio.to_thread.run_sync(lambda: exited_at(a, 15))
            assert a.returncode == 0
            await poll(lambda: len(read_ledger(e.ledger).done) >= n, 60, 0.05, "all jobs")
        finally:
            await pool.stop_all()
            pool.kill_all()
        view = read_ledger(e.ledger)
        assert view.duplicated == {}
        assert view.done == {ref.job_id for ref in refs}
        a_starts_after = [t for _, _, pid, t in view.starts if pid == a.pid and t > t_term + 0.05]
        assert a_starts_after == [], "A started jobs after SIGTERM"
        a_ends = {j: t for j, pid, t in view.ends if pid == a.pid}
        assert running_at_term <= set(a_ends), "A did not finish what it was running"
        last = max(a_ends.values())
        assert t_exit - last <= 1.0, f"A exited {t_exit - last:.2f}s after its last job"
        assert t_exit - t_term <= 10 + 1
        c = await e.q.counts()
        assert (c["completed"], c["active"], c["waiting"], c["failed"]) == (n, 0, 0, 0)


@pytest.mark.timeout(60)
async def test_t6_job_longer_than_grace_is_cut_handed_back_and_rerun_at_once(
    tmp_path: Path,
) -> None:
    grace = 1.0
    async with env(tmp_path, "long") as e:
        pool = WorkerPool(e.url, "long", e.ledger, ["--concurrency", "2", "--grace", str(grace),
                                                   "--vt", "30"], size=2)
        try:
            await pool.respawn(0)
            await e.q.add({"sleep": 4.0}, JobOptions(job_id="long"))
            await poll(lambda: read_ledger(e.ledger).starts, 10, message="A to start the job")
            await pool.respawn(1)
            a = pool.procs[0]
            a.send_signal(signal.SIGTERM)
            t_term = now()
            t_exit = await anyio.to_thread.run_sync(lambda: exited_at(a, 15))
            assert a.returncode == 0
            assert t_exit - t_term <= grace + 1.0

            def rerun() -> float | None:
                s = [t for j, _, pid, t in read_ledger(e.ledger).starts if pid != a.pid]
                return s[0] if s else None

            await poll(rerun, 5, 0.02, "B to re-run the cut job")
            assert rerun() - t_term <= grace + 1.0, "handed back, not left for the vt (30 s)"
            await poll(lambda: read_ledger(e.ledger).done, 10, message="B to finish it")
        finally:
            await pool.stop_all()
            pool.kill_all()
        view = read_ledger(e.ledger)
        assert [j for j, *_ in view.starts] == ["long", "long"]  # interrupted once, re-run once
        assert [pid for _, pid, _ in view.ends] == [pool.procs[1].pid]
        c = await e.q.counts()
        assert (c["completed"], c["active"], c["waiting"]) == (1, 0, 0)


@pytest.mark.timeout(60)
async def test_t6_second_sigterm_stops_at_once(tmp_path: Path) -> None:
    async with env(tmp_path, "twice") as e:
        pool = WorkerPool(e.url, "twice", e.ledger, ["--grace", "4", "--vt", "30"], size=1)
        try:
            await pool.respawn(0)
            await e.q.add({"sleep": 20.0}, JobOptions(job_id="long"))
            await poll(lambda: read_ledger(e.ledger).starts, 10, message="the job to start")
            a = pool.procs[0]
            a.send_signal(signal.SIGTERM)
            await anyio.sleep(0.3)
            a.send_signal(signal.SIGTERM)
            t_second = now()
            t_exit = await anyio.to_thread.run_sync(lambda: exited_at(a, 15))
            assert t_exit - t_second <= 1.0, f"exited {t_exit - t_second:.1f}s after the 2nd signal"
            held = await pending_of(e.r, e.q.keys)
            assert held == [], "the cut job was not handed back"
        finally:
            pool.kill_all()


@pytest.mark.timeout(30)
async def test_t6_sigterm_while_idle_in_xread_exits_within_a_second(tmp_path: Path) -> None:
    async with env(tmp_path, "idle") as e:
        pool = WorkerPool(e.url, "idle", e.ledger, [], size=1)
        try:
            await pool.respawn(0)
            await e.q.add(None, JobOptions(job_id="one"))
            await poll(lambda: read_ledger(e.ledger).done, 10, message="the worker to work")
            await anyio.sleep(0.5)  # now blocked in XREAD (block up to 2 s)
            a = pool.procs[0]
            t0 = time.monotonic()
            a.send_signal(signal.SIGTERM)
            await anyio.to_thread.run_sync(lambda: wait_exit(a, 10))
            assert time.monotonic() - t0 <= 1.0
            assert a.returncode == 0
        finally:
            pool.kill_all()
