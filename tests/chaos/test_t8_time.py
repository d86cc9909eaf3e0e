"""T8: delayed jobs and clocks. Due times come from Redis TIME (inside Lua): a due job starts
within 100 ms when workers are idle; backoff retries are due at base * 2**(n-1); a worker
whose wall clock is an hour off (``faketime``) changes nothing; a delay of 10 x the
visibility timeout runs exactly once (Celery #337).

``faketime`` (Debian package ``faketime``) is needed for the skew test; without it the
test is skipped.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import anyio
import pytest

from streamq import Backoff, Job, JobOptions, Queue, Worker
from streamq.devredis import start_redis_server
from tests.chaos.harness import WorkerPool, poll, redis_client
from tests.support.ledger import read_ledger

pytestmark = pytest.mark.chaos


async def _due_ms(r: object, q: Queue, ids: list[str]) -> dict[str, float]:
    scores = await r.zmscore(q.keys.delayed, ids)  # type: ignore[attr-defined]
    assert None not in scores, "a delayed job is missing from the delayed set"
    return dict(zip(ids, scores, strict=True))


async def _run_delayed(tmp_path: Path, wrapper: list[str], offset: float) -> dict[str, float]:
    """100 jobs due 1-3 s from now, one every 20 ms, plus one due after 10 x vt; two idle
    ledger workers (their wall clock shifted by ``offset`` s). Returns start - due (ms)."""
    server = start_redis_server(directory=tmp_path / "redis")
    r = redis_client(server.url)
    q = Queue("delay", redis_url=server.url)
    ledger = tmp_path / "ledger"
    ledger.mkdir()
    vt = 0.3
    pool = WorkerPool(server.url, "delay", ledger, ["--vt", str(vt), "--reclaim-interval", "0.1"],
                      2, wrapper=wrapper, env={"DONT_FAKE_MONOTONIC": "1"})
    try:
        await pool.start()
        ids = [f"d{i:03d}" for i in range(100)]
        await q.add_bulk([(None, JobOptions(job_id=j, delay=1.0 + i * 0.02))
                          for i, j in enumerate(ids)])
        await q.add(None, JobOptions(job_id="long", delay=10 * vt))
        due = await _due_ms(r, q, [*ids, "long"])
        await poll(lambda: len(read_ledger(ledger).done) >= 101, 20, 0.05, "the delayed jobs")
        await anyio.sleep(2 * vt)  # long enough for a wrong reclaim to re-run "long"
    finally:
        await pool.stop_all()
        pool.kill_all()
        await q.close()
        await r.aclose()
        server.stop()
    view = read_ledger(ledger)
    assert view.duplicated == {}
    assert [j for j, *_ in view.starts].count("long") == 1, "a delay > vt must run once"
    return {j: (t - offset) * 1000 - due[j] for j, _, _, t in view.starts}


@pytest.mark.timeout(60)
async def test_t8_due_jobs_start_within_100ms_and_a_long_delay_runs_once(tmp_path: Path) -> None:
    late = await _run_delayed(tmp_path, [], 0.0)
    assert min(late.values()) >= 0, "a job started before it was due"
    assert max(late.values()) <= 100, sorted(late.items(), key=lambda kv: -kv[1])[:5]


@pytest.mark.skipif(shutil.which("faketime") is None, reason="faketime not installed "
                    "(apt-get install -y faketime)")
@pytest.mark.parametrize("skew", ["+1h", "-1h"])
@pytest.mark.timeout(60)
async def test_t8_worker_clock_skew_changes_nothing(tmp_path: Path, skew: str) -> None:
    offset = 3600.0 if skew == "+1h" else -3600.0
    late = await _run_delayed(tmp_path, ["faketime", "-f", skew], offset)
    assert min(late.values()) >= -5, "a job started before it was due"  # 5 ms: clock reads
    assert max(late.values()) <= 100, sorted(late.items(), key=lambda kv: -kv[1])[:5]


@pytest.mark.timeout(30)
async def test_t8_backoff_retries_fall_due_at_base_times_two_to_the_n(tmp_path: Path) -> None:
    base = 0.2
    server = start_redis_server(directory=tmp_path / "redis")
    q = Queue("backoff", redis_url=server.url)
    runs: list[tuple[int, float]] = []

    async def handler(job: Job) -> None:
        runs.append((job.attempt, time.time()))
        if job.attempt < 3:
            raise RuntimeError("try again")

    worker = Worker(q, handler, rate_limit=None)
    try:
        await q.add(None, JobOptions(job_id="b", attempts=3, backoff=Backoff(base=base)))
        async with anyio.create_task_group() as tg:
            tg.start_soon(worker.run)
            await poll(lambda: len(runs) == 3, 10, message="three attempts")
            await worker.close()
    finally:
        await q.close()
        server.stop()
    gaps = [runs[i + 1][1] - runs[i][1] for i in range(2)]
    for n, gap in enumerate(gaps, 1):
        expected = base * 2 ** (n - 1)
        assert expected <= gap <= expected + 0.1, (n, gap)
