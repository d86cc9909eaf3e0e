"""T2: Redis killed with SIGKILL mid-run and restarted on the same port and directory.

With AOF ``appendfsync always`` nothing acknowledged is lost, the script cache loss
(NOSCRIPT) costs no job, and workers and producer resume within 5 s. The negative
control runs the same with ``appendonly no``: Redis comes back empty, the checker must
report the loss, and the workers must recreate the consumer group, say so loudly once,
and keep running (no crash loop).
"""

from __future__ import annotations

import re
from pathlib import Path

import anyio
import pytest
from structlog.testing import capture_logs

from streamq import Job, JobOptions, Queue, Worker
from streamq.devredis import start_redis_server
from tests.chaos.harness import poll, redis_client
from tests.chaos.scenarios import RedisRestartConfig, run_redis_restart

pytestmark = pytest.mark.chaos


@pytest.mark.timeout(120)
async def test_t2_redis_kill9_with_aof_always_loses_nothing(tmp_path: Path) -> None:
    cfg = RedisRestartConfig(jobs=3000, workers=2, kills=1, downtime=1.0)
    report = await run_redis_restart(cfg, tmp_path)
    print("\n".join(report.lines()))
    f = report.figures
    assert f.problems(dup_budget=f.pel_at_faults) == []
    assert report.invariants == []
    assert f.ok == cfg.jobs + cfg.delayed
    # adds that raised during the outage were retried with the same id: each ran once
    assert f.recovered.isdisjoint(f.duplicated)
    assert f.completed == f.ok and f.dead == 0, "a job failed across the restart (NOSCRIPT?)"
    resume = [float(x) for x in report.extra["resume after PING (s)"].split(", ")]
    assert max(resume) <= 5.0, resume
    assert report.extra["worker exits (restarted)"] == 0
    assert "Traceback" not in report.logs


@pytest.mark.timeout(120)
async def test_t2_negative_control_appendonly_no_reports_loss_and_recreates_group(
    tmp_path: Path,
) -> None:
    cfg = RedisRestartConfig(jobs=1500, workers=2, kills=1, downtime=0.5, appendonly=False,
                             delayed=20)
    report = await run_redis_restart(cfg, tmp_path)
    print("\n".join(report.lines()))
    f = report.figures
    assert f.lost, "Redis restarted empty, yet the checker saw no loss"
    # the delayed jobs lived only in the lost memory
    assert {f"d{i:06d}" for i in range(cfg.delayed)} <= f.lost
    loud = [line for line in report.logs.splitlines()
            if re.search(r"consumer group missing", line)]
    assert loud, "no worker said that the consumer group was gone"


@pytest.mark.timeout(30)
async def test_t2_worker_survives_data_loss_while_a_job_awaits_its_ack(tmp_path: Path) -> None:
    """Redis forgets everything (FLUSHALL stands in for a restart without persistence)
    while a job runs. Its completion then meets NOGROUP. The worker must treat the claim
    as lost, recreate the group (one loud line) and go on with new work."""
    server = start_redis_server(directory=tmp_path / "redis")
    flusher = redis_client(server.url)
    q = Queue("nogroup", redis_url=server.url)
    ran: list[str] = []
    crashed: list[BaseException] = []

    async def handler(job: Job) -> None:
        ran.append(job.id)
        if job.id == "first":
            await flusher.flushall()

    worker = Worker(q, handler, rate_limit=None, visibility_timeout=5.0)

    async def run() -> None:
        try:
            await worker.run()
        except BaseException as exc:  # the finding is that it raises at all
            crashed.append(exc)

    try:
        with capture_logs() as logs:
            async with anyio.create_task_group() as tg:
                tg.start_soon(run)
                await q.add({}, JobOptions(job_id="first"))
                await poll(lambda: "first" in ran, 10, message="the first job to run")
                await poll(lambda: crashed or not worker.healthy or worker.processed, 5)
                await q.add({}, JobOptions(job_id="second"))
                await poll(lambda: "second" in ran or crashed, 10, message="the second job")
                await worker.close()
        assert crashed == [], f"the worker died: {crashed!r}"
        assert "second" in ran
        loud = [e for e in logs if "consumer group missing" in str(e.get("event"))]
        assert len(loud) == 1, logs
    finally:
        await q.close()
        await flusher.aclose()
        server.stop()
