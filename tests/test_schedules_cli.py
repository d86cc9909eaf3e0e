"""``python -m streamq schedules``: the list with next and last runs, --next, --run-now,
--pause/--resume, --remove (asks first), unknown ids and bad ids."""

from __future__ import annotations

import time

from streamq import Job, JobOptions, Queue, Worker
from streamq.schedules import Schedules
from tests.support.util import running, wait_until
from tests.test_cli import cli, row, run_process


async def test_schedules_lists_next_and_last_runs_with_the_last_runs_state(
        redis_url: str, queue_name: str) -> None:
    async with Queue(queue_name, redis_url=redis_url) as q:
        r = await cli(redis_url, queue_name, "schedules")
        assert r.code == 0 and f"queue {queue_name} has no schedules" in r.out
        await q.upsert_schedule("digest", cron="0 8 * * *", tz="Africa/Nairobi", data={"d": 1})
        await Schedules(q, clock=lambda: time.time() - 2.5).upsert("tick", every=1.0, data=1)
        await q.upsert_schedule("held", every=60.0, data=1, paused=True)
        done: list[str] = []

        async def handler(job: Job) -> None:
            done.append(job.id)

        async with running(Worker(q, handler, rate_limit=None)):
            await wait_until(lambda: done, 10, message="a run of tick")
            await q.pause_schedule("tick")
        await wait_until(lambda: _last_completed(q, "tick"), 10, message="the run completed")
        r = await cli(redis_url, queue_name, "schedules", "--next", "3")
        assert r.code == 0, r.err
        digest = row(r.out, "digest")
        assert digest[1:5] == ["cron", "0", "8", "*"] and "(Africa/Nairobi)" in digest
        assert "active" in digest and digest[-2:] == ["0", "0"]
        assert any(c.endswith("05:00:00Z") for c in digest)  # 08:00 in Nairobi, in UTC
        tick = row(r.out, "tick")
        assert tick[1:3] == ["every", "1s"] and "paused" in tick and "completed" in tick
        assert int(tick[-1]) >= 1  # slots missed before the worker started
        assert "paused" in row(r.out, "held")
        assert "digest: next 3 slots" in r.out
        assert r.out.count("05:00:00Z") >= 3
        assert "3 schedules (times UTC)" in r.out


async def _last_completed(q: Queue, sid: str) -> bool:
    s = await q.get_schedule(sid)
    if s is None or s.last_run_id is None:
        return False
    info = await q.get_job(s.last_run_id)
    return info is not None and info.state.value == "completed"


async def test_run_now_pause_resume_and_remove(redis_url: str, queue_name: str) -> None:
    async with Queue(queue_name, redis_url=redis_url) as q:
        await q.upsert_schedule("report", cron="0 3 * * 1", tz="Europe/Berlin", data={"r": 1},
                                options=JobOptions(priority="high"))
        r = await cli(redis_url, queue_name, "schedules", "--run-now", "report")
        assert r.code == 0, r.err
        job_id = r.out.split("added run ", 1)[1].split()[0]
        assert job_id.startswith("{report}@now-")
        info = await q.get_job(job_id)
        assert info is not None and info.state.value == "waiting" and info.priority == "high"

        r = await cli(redis_url, queue_name, "schedules", "--pause", "report")
        assert r.code == 0 and "schedule report of queue" in r.out and "paused" in r.out
        s = await q.get_schedule("report")
        assert s is not None and s.paused
        r = await cli(redis_url, queue_name, "schedules", "--resume", "report")
        assert r.code == 0 and "resumed" in r.out
        s = await q.get_schedule("report")
        assert s is not None and not s.paused

        r = await cli(redis_url, queue_name, "schedules", "--remove", "report", answer="n\n")
        assert r.code == 1 and "not removed" in r.err
        assert await q.get_schedule("report") is not None
        r = await cli(redis_url, queue_name, "schedules", "--remove", "report", "--yes")
        assert r.code == 0 and "removed schedule report" in r.out
        assert await q.get_schedule("report") is None

        for flag in ("--run-now", "--pause", "--resume", "--remove"):
            r = await cli(redis_url, queue_name, "schedules", flag, "nope", "--yes")
            assert r.code == 1 and "no schedule nope" in r.err, (flag, r)


def test_a_bad_schedule_id_is_one_line_with_exit_code_2(redis_url: str, queue_name: str) -> None:
    p = run_process("schedules", "--queue", queue_name, "--redis-url", redis_url,
                    "--run-now", "bad{id}")
    assert p.returncode == 2
    assert p.stderr.strip().startswith("streamq: schedule id 'bad{id}' is invalid")
    assert "Traceback" not in p.stderr and len(p.stderr.strip().splitlines()) == 1
