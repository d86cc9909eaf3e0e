"""The operator CLI, ``python -m streamq``, against a real Redis.

Most commands run in process (``main(argv, console)`` in a thread, so it has its own
event loop) with captured streams; the process-level behaviours (exit codes, one-line
errors, Ctrl-C under --watch) run ``python -m streamq`` itself.
"""

from __future__ import annotations

import io
import os
import re
import signal
import subprocess
import sys
from dataclasses import dataclass
from typing import Any

import anyio
import anyio.to_thread

from streamq import Job, JobOptions, JobState, PermanentError, Queue, Worker
from streamq.cli import build_parser, main
from streamq.cli.output import Console
from streamq.devredis import free_port
from tests.support.util import ROOT, running, wait_until

COMMANDS = ("stats", "job", "dead", "replay", "cancel", "pause", "resume", "purge", "events",
            "partitions", "schedules", "rotate-keys", "find")


class TTYInput(io.StringIO):
    """Operator input on a terminal."""

    def isatty(self) -> bool:
        return True


@dataclass
class Result:
    code: int
    out: str
    err: str


async def cli(redis_url: str, queue: str, *argv: str, answer: str | None = None) -> Result:
    out, err = io.StringIO(), io.StringIO()
    inp: io.StringIO = TTYInput(answer) if answer is not None else io.StringIO()
    console = Console(out=out, err=err, inp=inp)
    args = [*argv, "--queue", queue, "--redis-url", redis_url]
    code = await anyio.to_thread.run_sync(lambda: main(args, console))
    return Result(code, out.getvalue(), err.getvalue())


def run_process(*argv: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "streamq", *argv], cwd=ROOT, capture_output=True,
                          text=True, timeout=30, env=dict(os.environ, PYTHONPATH=str(ROOT), **(env or {})))


def row(text: str, name: str) -> list[str]:
    for line in text.splitlines():
        if line.split()[:1] == [name]:
            return line.split()
    raise AssertionError(f"no row {name!r} in:\n{text}")


async def refuse(job: Job) -> None:
    raise PermanentError(f"number refused for {job.data['to']}")


async def make_dead(q: Queue, n: int) -> list[str]:
    """``n`` dead letters, through a real worker."""
    refs = await q.add_bulk([{"to": "+254712345678", "message": "code 123456", "i": i}
                             for i in range(n)])
    w = Worker(q, refuse, concurrency=20, rate_limit=None)
    async with running(w):
        await wait_until(lambda: _dead(q, n), timeout=20, message=f"{n} dead letters")
    return [r.job_id for r in refs]


async def _dead(q: Queue, n: int) -> bool:
    return (await q.counts())["dead"] == n


# -- stats ------------------------------------------------------------------------------------


async def test_stats_shows_counts_pause_and_busy_workers(redis_url: str, queue_name: str) -> None:
    r = await cli(redis_url, queue_name, "stats")
    assert r.code == 0 and "has no data" in r.err  # a typo in --queue is pointed out
    async with Queue(queue_name, redis_url=redis_url) as q:
        await q.add_bulk([{}, {}])
        await q.add({}, JobOptions(delay=600))
        await q.pause()
        r = await cli(redis_url, queue_name, "stats")
        assert r.code == 0 and r.err == ""
        assert f"queue {queue_name} (PAUSED)" in r.out
        assert row(r.out, "waiting")[1] == "2"
        assert row(r.out, "delayed")[1] == "1"
        assert row(r.out, "completed")[1] == "0"
        assert "none took a job" in r.out

        started = anyio.Event()
        release = anyio.Event()

        async def hold(job: Job) -> None:
            started.set()
            await release.wait()

        w = Worker(q, hold, concurrency=1, rate_limit=None, name="busy-worker-1")
        async with running(w):
            try:
                await q.resume()
                await started.wait()
                r = await cli(redis_url, queue_name, "stats")
            finally:
                release.set()
        assert f"queue {queue_name} (running)" in r.out
        assert row(r.out, "waiting")[1] == "1"
        assert row(r.out, "active")[1] == "1"
        assert row(r.out, "busy-worker-1")[1] == "1"  # holding one job


def test_stats_watch_refreshes_until_ctrl_c(redis_url: str, queue_name: str) -> None:
    with subprocess.Popen(
        [sys.executable, "-m", "streamq", "stats", "--watch", "0.1", "--queue", queue_name,
         "--redis-url", redis_url],
        cwd=ROOT, env=dict(os.environ, PYTHONPATH=str(ROOT)), stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True,
    ) as proc:
        assert proc.stdout is not None
        frames = 0
        seen: list[str] = []
        for line in proc.stdout:  # blocks on the process's output, no timing assumptions
            seen.append(line)
            if line.startswith("refreshing every 0.1s"):
                frames += 1
                if frames == 2:
                    break
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=10)
    assert proc.returncode == 0, err
    assert "Traceback" not in err
    text = "".join(seen)
    assert frames == 2, text
    # the second frame compares with the first
    assert re.search(r"^state\s+jobs\s+change\s+per s", text, re.MULTILINE)


# -- jobs -------------------------------------------------------------------------------------


async def test_job_shows_every_field(redis_url: str, queue_name: str) -> None:
    async with Queue(queue_name, redis_url=redis_url) as q:
        await q.add({}, JobOptions(job_id="later-1", delay=600, priority="high", attempts=5))
    r = await cli(redis_url, queue_name, "job", "later-1")
    assert r.code == 0
    fields = {line.split()[0]: line.split(None, 1)[1] for line in r.out.splitlines()[1:] if line}
    assert fields["id"] == "later-1"
    assert fields["state"] == "delayed"
    assert fields["attempts"] == "0" and fields["max_attempts"] == "5"
    assert fields["priority"] == "high"
    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\dZ", fields["due_at"])
    assert set(fields) == {"id", "queue", "state", "attempts", "max_attempts", "priority",
                           "created_at", "due_at", "finished_at", "stalls", "error"}

    r = await cli(redis_url, queue_name, "job", "nosuchjob")
    assert (r.code, r.out) == (1, "") and "not found" in r.err
    r = await cli(redis_url, queue_name, "job", "bad id!")
    assert r.code == 2 and r.err.startswith("streamq: job_id") and r.err.count("\n") == 1


async def test_cancel_asks_and_only_cancels_waiting_jobs(redis_url: str, queue_name: str) -> None:
    async with Queue(queue_name, redis_url=redis_url) as q:
        await q.add({}, JobOptions(job_id="j1"))
        r = await cli(redis_url, queue_name, "cancel", "j1")  # no terminal, no --yes
        assert r.code == 2 and "pass --yes" in r.err
        r = await cli(redis_url, queue_name, "cancel", "j1", answer="n\n")
        assert r.code == 1 and "Cancel job j1 (waiting)" in r.err
        assert (info := await q.get_job("j1")) is not None and info.state is JobState.WAITING
        r = await cli(redis_url, queue_name, "cancel", "j1", answer="y\n")
        assert r.code == 0 and "cancelled job j1" in r.out
        assert (info := await q.get_job("j1")) is not None and info.state is JobState.CANCELLED
        r = await cli(redis_url, queue_name, "cancel", "j1", "--yes")
        assert r.code == 1 and "is cancelled: only waiting or delayed" in r.err
        r = await cli(redis_url, queue_name, "cancel", "nosuchjob", "--yes")
        assert r.code == 1 and "not found" in r.err


async def test_pause_and_resume(redis_url: str, queue_name: str) -> None:
    async with Queue(queue_name, redis_url=redis_url) as q:
        r = await cli(redis_url, queue_name, "pause")
        assert r.code == 0 and "paused" in r.out
        assert await q.is_paused()
        r = await cli(redis_url, queue_name, "resume")
        assert r.code == 0 and r.out.strip() == f"queue {queue_name} resumed"
        assert not await q.is_paused()
        r = await cli(redis_url, queue_name, "resume")
        assert "was not paused" in r.out


# -- dead letters -----------------------------------------------------------------------------


async def test_dead_lists_pages_and_shows_one_redacted(redis_url: str, queue_name: str) -> None:
    async with Queue(queue_name, redis_url=redis_url) as q:
        r = await cli(redis_url, queue_name, "dead")
        assert r.code == 0 and "no dead letters" in r.out
        ids = await make_dead(q, 5)
        letters = await q.dead_letters(10)
    r = await cli(redis_url, queue_name, "dead", "--limit", "3")
    assert r.code == 0
    lines = r.out.splitlines()
    assert lines[0].split() == ["entry", "id", "job", "id", "failed", "at", "attempts", "error"]
    first = lines[1].split()
    assert first[0] == letters[0].entry_id and first[1] == letters[0].job_id
    assert first[4] == "1"  # attempts
    assert "number refused for +2547****678" in lines[1]  # errors are shown redacted
    assert "3 shown of 5 dead letters" in r.out
    assert f"--after {letters[2].entry_id}" in r.out
    r = await cli(redis_url, queue_name, "dead", "--after", letters[2].entry_id)
    assert [ln.split()[0] for ln in r.out.splitlines()[1:3]] == [letters[3].entry_id, letters[4].entry_id]

    for wanted in (ids[0], letters[0].entry_id):
        r = await cli(redis_url, queue_name, "dead", "--show", wanted)
        assert r.code == 0
        assert row(r.out, "job")[2] == letters[0].job_id
        assert "number refused for +2547****678" in r.out
        payload = row(r.out, "payload")
        assert '"to":"+2547****678"' in payload[1] and '"message":"***"' in payload[1]
        assert "123456" not in r.out and "712345678" not in r.out
    r = await cli(redis_url, queue_name, "dead", "--show", "nosuchjob")
    assert r.code == 1 and "no dead letter" in r.err


async def test_replay_one_and_all_with_progress_then_they_complete(
    redis_url: str, queue_name: str
) -> None:
    async with Queue(queue_name, redis_url=redis_url) as q:
        ids = await make_dead(q, 250)
        r = await cli(redis_url, queue_name, "replay")
        assert r.code == 2 and "JOB_ID or --all" in r.err
        r = await cli(redis_url, queue_name, "replay", ids[0])
        assert r.code == 0 and f"replayed job {ids[0]}" in r.out
        r = await cli(redis_url, queue_name, "replay", ids[0])
        assert r.code == 1 and "nothing replayed" in r.err
        r = await cli(redis_url, queue_name, "replay", "--all")  # no terminal, no --yes
        assert r.code == 2 and "pass --yes" in r.err
        r = await cli(redis_url, queue_name, "replay", "--all", answer="no\n")
        assert r.code == 1 and "Replay all 249 dead letters" in r.err
        assert (await q.counts())["dead"] == 249
        r = await cli(redis_url, queue_name, "replay", "--all", "--batch", "100", answer="y\n")
        assert r.code == 0, r.err
        assert r.out.strip() == f"replayed 249 dead letters of queue {queue_name}"
        # (the prompt's line has no newline: the answer came from a pipe, not echoed)
        progress = re.findall(rf"replaying {queue_name}: (\d+/\d+)", r.err)
        assert progress == ["100/249", "200/249", "249/249"]
        c = await q.counts()
        assert (c["dead"], c["failed"], c["waiting"]) == (0, 0, 250)

        done: set[str] = set()

        async def ok(job: Job) -> None:
            done.add(job.id)

        async with running(Worker(q, ok, concurrency=20, rate_limit=None)):
            await wait_until(lambda: len(done) == 250, timeout=20, message="replayed jobs to run")
            await wait_until(lambda: _completed(q, 250), message="250 completions recorded")
        assert done == set(ids)
        info = await q.get_job(ids[7])
        assert info is not None and info.state is JobState.COMPLETED


async def _completed(q: Queue, n: int) -> bool:
    return (await q.counts())["completed"] == n


async def test_replay_all_stops_at_the_letters_it_started_with(redis_url: str, queue_name: str) -> None:
    """A replayed job that fails again while --all runs is not replayed again in a loop."""
    async with Queue(queue_name, redis_url=redis_url) as q:
        await make_dead(q, 40)
        w = Worker(q, refuse, concurrency=20, rate_limit=None)
        async with running(w):
            r = await cli(redis_url, queue_name, "replay", "--all", "--yes", "--batch", "5")
            assert r.code == 0
            replayed = int(r.out.split()[1])
            assert replayed == 40  # each letter once, none of the fresh ones
            await wait_until(lambda: _dead(q, 40), timeout=20, message="jobs to die again")


async def test_purge_asks_and_drops_dead_letters(redis_url: str, queue_name: str) -> None:
    async with Queue(queue_name, redis_url=redis_url) as q:
        r = await cli(redis_url, queue_name, "purge", "--yes")
        assert r.code == 0 and "nothing to purge" in r.out
        await make_dead(q, 3)
        r = await cli(redis_url, queue_name, "purge")
        assert r.code == 2 and "pass --yes" in r.err
        r = await cli(redis_url, queue_name, "purge", answer="\n")  # the default is no
        assert r.code == 1 and "Drop all 3 dead letters" in r.err
        assert (await q.counts())["dead"] == 3
        r = await cli(redis_url, queue_name, "purge", answer="y\n")
        assert r.code == 0 and r.out.strip() == f"purged 3 dead letters of queue {queue_name}"
        assert (await q.counts())["dead"] == 0


async def test_purge_completed_drops_completed_records_only(redis_url: str, queue_name: str) -> None:
    async with Queue(queue_name, redis_url=redis_url) as q:
        ok = await q.add({"ok": 1})
        await make_dead(q, 2)
        async with running(Worker(q, _noop_ok, rate_limit=None)):
            await wait_until(lambda: _done(q, ok.job_id), timeout=10)
        r = await cli(redis_url, queue_name, "purge", "--completed", "--yes")
        assert r.code == 0 and r.out.strip() == f"purged 1 completed job record of queue {queue_name}"
        assert await q.get_job(ok.job_id) is None
        assert (await q.counts())["dead"] == 2  # failed records and dead letters are kept
        for d in await q.dead_letters():
            info = await q.get_job(d.job_id)
            assert info is not None and info.state is JobState.FAILED


async def _noop_ok(job: Job) -> None:
    return None


async def _done(q: Queue, job_id: str) -> bool:
    info = await q.get_job(job_id)
    return info is not None and info.state.value == "completed"


# -- the process --------------------------------------------------------------------------------


def test_unreachable_redis_is_one_line_with_the_redacted_url() -> None:
    port = free_port()
    p = run_process("stats", "--queue", "sms", env={"REDIS_URL": f"redis://:hunter2@127.0.0.1:{port}/0"})
    assert p.returncode == 2
    assert p.stdout == ""
    assert p.stderr.startswith(f"streamq: Redis unreachable at redis://***@127.0.0.1:{port}/0")
    assert p.stderr.count("\n") == 1 and "hunter2" not in p.stderr


def test_options_before_the_command_and_env(redis_url: str, queue_name: str) -> None:
    p = run_process("--queue", queue_name, "--redis-url", redis_url, "pause")
    assert p.returncode == 0 and f"queue {queue_name} paused" in p.stdout
    p = run_process("resume", env={"REDIS_URL": redis_url, "STREAMQ_QUEUE": queue_name})
    assert p.returncode == 0 and p.stdout.strip() == f"queue {queue_name} resumed"
    # the worker's default queue when STREAMQ_QUEUE is not set
    p = run_process("pause", env={"REDIS_URL": redis_url, "STREAMQ_QUEUE": "",
                                  "STREAMQ_SMS_QUEUE": queue_name})
    assert p.returncode == 0 and f"queue {queue_name} paused" in p.stdout


def test_help_documents_every_command() -> None:
    p = run_process("--help")
    assert p.returncode == 0
    for name in [*COMMANDS, "dashboard"]:  # the dashboard runs a server, not a command
        assert re.search(rf"^\s+{name}\s+\S", p.stdout, re.MULTILINE), name
    sub: Any = next(a for a in build_parser()._actions if a.dest == "command")
    assert set(sub.choices) == {*COMMANDS, "dashboard"}
    for name, parser in sub.choices.items():
        text = parser.format_help()
        assert parser.description, name
        assert "--queue" in text and "--redis-url" in text, name
        if name in ("replay", "cancel", "purge", "partitions"):
            assert "--yes" in text, name
