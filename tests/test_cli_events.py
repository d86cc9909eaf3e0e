"""``python -m streamq events``: the latest events of a queue, then (--follow) new ones."""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import anyio
import anyio.to_thread

from streamq import Job, JobOptions, PermanentError, Queue, Worker
from streamq.cli import main
from streamq.cli.output import Console
from tests.support.util import ROOT, running, wait_until


async def cli(redis_url: str, queue: str, *argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    console = Console(out=out, err=err, inp=io.StringIO())
    args = [*argv, "--queue", queue, "--redis-url", redis_url]
    code = await anyio.to_thread.run_sync(lambda: main(args, console))
    return code, out.getvalue(), err.getvalue()


async def handler(job: Job) -> None:
    if job.data == "bad":
        raise PermanentError("refused +254712345678")


async def _settled(q: Queue, done: int) -> bool:
    c = await q.counts()
    return c["completed"] + c["failed"] >= done


async def test_events_prints_the_latest_job_events_oldest_first(
    redis_url: str, queue_name: str
) -> None:
    async with Queue(queue_name, redis_url=redis_url) as q:
        code, out, err = await cli(redis_url, queue_name, "events")
        assert code == 0 and out == "" and "no events" in err
        await q.add("good", JobOptions(job_id="j-good"))
        await q.add("bad", JobOptions(job_id="j-bad"))
        async with running(Worker(q, handler, rate_limit=None)):
            await wait_until(lambda: _settled(q, 2), 10, message="both jobs")
        code, out, _ = await cli(redis_url, queue_name, "events", "--limit", "100")
        assert code == 0
        lines = out.splitlines()
        seen = [(ln.split()[2], ln.split()[3]) for ln in lines]
        for event in (("added", "j-good"), ("added", "j-bad"), ("active", "j-good"),
                      ("completed", "j-good"), ("failed", "j-bad"), ("dead", "j-bad")):
            assert event in seen, (event, out)
        assert seen.index(("added", "j-good")) < seen.index(("completed", "j-good"))
        dead = next(ln for ln in lines if ln.split()[2:4] == ["dead", "j-bad"])
        assert "attempt 1" in dead and "error: refused +2547****678" in dead
        assert "254712345678" not in out

        code, out, _ = await cli(redis_url, queue_name, "events", "--limit", "2")
        assert out.splitlines() == lines[-2:]
        code, out, _ = await cli(redis_url, queue_name, "events", "--job", "j-bad")
        assert {ln.split()[3] for ln in out.splitlines()} == {"j-bad"}
        assert [ln.split()[2] for ln in out.splitlines()] == ["added", "active", "failed", "dead"]


async def test_events_pages_back_through_batches(redis_url: str, queue_name: str) -> None:
    async with Queue(queue_name, redis_url=redis_url) as q:
        refs = await q.add_bulk(list(range(450)))  # one "added" entry per 100 jobs, and more
        code, out, _ = await cli(redis_url, queue_name, "events", "--limit", "450")
        assert code == 0
        ids = [ln.split()[3] for ln in out.splitlines()]
        assert ids == [r.job_id for r in refs]
        code, out, _ = await cli(redis_url, queue_name, "events", "--job", refs[0].job_id)
        assert len(out.splitlines()) == 1


async def test_events_follow_prints_new_events_until_ctrl_c(
    redis_url: str, queue_name: str, tmp_path: Path
) -> None:
    async with Queue(queue_name, redis_url=redis_url) as q:
        await q.add("before", JobOptions(job_id="old-1"))
        proc = subprocess.Popen(
            [sys.executable, "-m", "streamq", "events", "--follow", "--queue", queue_name,
             "--redis-url", redis_url], cwd=ROOT, env=dict(os.environ, PYTHONPATH=str(ROOT)),
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        lines: list[str] = []
        errors: list[str] = []

        def pump(stream: io.TextIOBase, into: list[str]) -> None:
            for line in stream:
                into.append(line.rstrip("\n"))

        assert proc.stdout is not None and proc.stderr is not None
        readers = [threading.Thread(target=pump, args=(proc.stdout, lines), daemon=True),
                   threading.Thread(target=pump, args=(proc.stderr, errors), daemon=True)]
        for t in readers:
            t.start()
        try:
            await wait_until(lambda: any("following" in e for e in errors), 20, 0.05,
                             "the follow to start")
            assert [ln.split()[2:4] for ln in lines] == [["added", "old-1"]]
            await q.add("after", JobOptions(job_id="new-1"))
            await q.cancel("new-1")
            await wait_until(lambda: len(lines) >= 3, 10, 0.05, "the new events")
            assert [ln.split()[2:4] for ln in lines[1:]] == [["added", "new-1"],
                                                            ["cancelled", "new-1"]]
            proc.send_signal(signal.SIGINT)
            await anyio.to_thread.run_sync(lambda: proc.wait(10))
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)
            for t in readers:
                t.join(10)
            proc.stdout.close()
            proc.stderr.close()
        assert proc.returncode == 0, errors
        assert not any("Traceback" in e for e in errors), errors
