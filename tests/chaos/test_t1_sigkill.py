"""T1: SIGKILL chaos. Workers are killed every 2 s mid-run and restarted; nothing is lost,
duplicates stay within what the killed workers held, every job ends terminal once."""

from __future__ import annotations

from pathlib import Path

import pytest

from streamq import JobOptions, Queue
from streamq.devredis import start_redis_server
from tests.chaos.harness import WorkerPool, poll, redis_client
from tests.chaos.scenarios import CrashConfig, run_crash
from tests.support.ledger import read_ledger

pytestmark = pytest.mark.chaos


@pytest.mark.timeout(120)
async def test_t1_sigkill_chaos_loses_nothing(tmp_path: Path) -> None:
    cfg = CrashConfig(jobs=3000, workers=2, kill_every=2.0, vt=3.0, reclaim_interval=1.0)
    report = await run_crash(cfg, tmp_path)
    print("\n".join(report.lines()))
    f = report.figures
    assert f.problems() == []
    assert report.invariants == []
    assert len(f.faults) >= 3, "the run was too short to kill anything"
    assert f.ok == cfg.jobs and f.completed == cfg.jobs and f.dead == 0
    bound = cfg.vt + cfg.reclaim_interval + 1.0
    held = {j for fault in f.faults for j in fault.pel_jobs}
    assert held, "no killed worker held a job: the chaos did not bite"
    # docs/reliability.md, T1: kill -> each held job's next S line elsewhere within vt + sweep + 1 s
    assert held <= set(f.reclaim_latency), f"never restarted: {held - set(f.reclaim_latency)}"
    assert max(f.reclaim_latency.values()) <= bound, f.reclaim_latency
    assert max(f.stalled_latency.values()) <= bound, f.stalled_latency
    assert "Traceback" not in report.logs
    assert report.duration <= 60


@pytest.mark.timeout(60)
async def test_t1_negative_control_ack_before_work_is_reported_as_loss(tmp_path: Path) -> None:
    """The same run with a handler that acknowledges before it works: the checker must
    see the jobs the killed workers were running as lost."""
    cfg = CrashConfig(jobs=400, workers=2, kill_every=1.0, max_kills=2, vt=3.0,
                      reclaim_interval=0.5, sleep_min=0.1, sleep_max=0.3, add_rate=None,
                      ack_first=True)
    report = await run_crash(cfg, tmp_path)
    print("\n".join(report.lines()))
    f = report.figures
    assert f.lost, "the checker missed the loss of a deliberately broken worker"
    assert len(f.lost) <= f.in_flight
    assert any("lost" in p for p in f.problems())


@pytest.mark.timeout(60)
async def test_t1_reclaimed_job_restarts_within_vt_plus_sweep_under_backlog(tmp_path: Path) -> None:
    """docs/reliability.md, T1: kill -> the killed worker's job starts again within vt + sweep + 1 s.
    A backlog of 60 waiting jobs (6 s of work for the survivor) must not delay it."""
    vt, sweep = 1.0, 0.2
    server = start_redis_server(directory=tmp_path / "redis")
    r = redis_client(server.url)
    q = Queue("backlog", redis_url=server.url)
    ledger = tmp_path / "ledger"
    ledger.mkdir()
    args = ["--concurrency", "1", "--vt", str(vt), "--reclaim-interval", str(sweep)]
    pool = WorkerPool(server.url, "backlog", ledger, args, size=2)
    try:
        await q.add({"sleep": 30}, JobOptions(job_id="victim"))
        await pool.respawn(0)
        await poll(lambda: read_ledger(ledger).starts, 10, message="the victim to start")
        await q.add_bulk([({"sleep": 0.1}, JobOptions(job_id=f"b{i:03d}")) for i in range(60)])
        await pool.respawn(1)
        await poll(lambda: len(read_ledger(ledger).starts) >= 3, 10, message="the survivor")
        fault = await pool.sigkill(0, r, q.keys)
        assert fault.pel_jobs == ("victim",)
        bound = vt + sweep + 1.0

        def restarted() -> float | None:
            again = [t for j, _, pid, t in read_ledger(ledger).starts
                     if j == "victim" and pid not in fault.pids]
            return again[0] if again else None

        await poll(restarted, bound + 1.0, 0.02, "the victim to start again")
        assert restarted() - fault.at <= bound
    finally:
        pool.kill_all()
        await q.close()
        await r.aclose()
        server.stop()
