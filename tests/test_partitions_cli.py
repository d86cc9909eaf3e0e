"""Both command lines on partitioned queues: ``python -m streamq`` (stats, job, cancel, dead,
replay, pause, resume, purge, partitions [--grow]) and ``python -m streamq.worker
--partitions`` / ``STREAMQ_PARTITIONS``."""

from __future__ import annotations

import os
import subprocess
import sys
from typing import Any

from streamq import JobOptions, JobState, Queue, Worker
from streamq.routing import partition_of
from tests.support.util import ROOT, running, wait_until
from tests.test_cli import _dead, cli, refuse, row, run_process
from tests.test_partitions import ids_in


async def test_operator_commands_work_on_a_partitioned_queue(
    redis_url: str, queue_name: str, redis: Any
) -> None:
    async with Queue(queue_name, redis_url=redis_url, partitions=3) as q:
        dead_ids = [j for p in range(3) for j in ids_in(p, 3, "dead-", 4)]
        await q.add_bulk([({"to": "+254712345678", "i": i}, JobOptions(job_id=j))
                          for i, j in enumerate(dead_ids)])
        async with running(Worker(q, refuse, concurrency=20, rate_limit=None)):
            await wait_until(lambda: _dead(q, 12), timeout=20, message="12 dead letters")
        waiting = [ids_in(p, 3, "w-")[0] for p in range(3)]
        for job_id in waiting:
            await q.add({}, JobOptions(job_id=job_id))

        r = await cli(redis_url, queue_name, "stats")
        assert r.code == 0 and f"queue {queue_name} (running, 3 partitions)" in r.out
        assert row(r.out, "waiting")[1] == "3" and row(r.out, "dead")[1] == "12"
        assert "waiting 1 / 1 / 1" in r.out

        r = await cli(redis_url, queue_name, "partitions")
        assert r.code == 0 and f"queue {queue_name}: 3 partitions (stored in Redis)" in r.out
        assert row(r.out, "0")[:3] == ["0", "(home)", "{" + queue_name + "}"]
        assert row(r.out, "2")[1] == "{" + queue_name + "~2}"
        # columns from the end: ... waiting active delayed failed dead completed
        per = [[int(x) for x in row(r.out, str(p))[-6:]] for p in range(3)]
        assert [w for w, *_ in per] == [1, 1, 1]
        assert sum(x[4] for x in per) == 12 and sum(x[5] for x in per) == 0
        assert [x[4] for x in per] == [
            sum(1 for j in dead_ids if partition_of(j, 3) == p) for p in range(3)]

        r = await cli(redis_url, queue_name, "job", waiting[2])
        assert r.code == 0 and "waiting" in r.out
        r = await cli(redis_url, queue_name, "cancel", waiting[1], "--yes")
        assert r.code == 0 and f"cancelled job {waiting[1]}" in r.out

        # dead letters: listed with references that name their partition, paged exactly
        r = await cli(redis_url, queue_name, "dead", "--limit", "5")
        assert r.code == 0 and "5 shown of 12 dead letters" in r.out
        listed: list[str] = []
        after: list[str] = []
        while True:
            r = await cli(redis_url, queue_name, "dead", "--limit", "5", *after)
            refs = [line.split()[0] for line in r.out.splitlines()
                    if line[:1].isdigit() and line.split()[1] in dead_ids]
            listed += [line.split()[1] for line in r.out.splitlines()
                       if line[:1].isdigit() and line.split()[1] in dead_ids]
            if len(refs) < 5:
                break
            after = ["--after", refs[-1]]
        assert sorted(listed) == sorted(dead_ids)
        in_2 = next(j for j in dead_ids if partition_of(j, 3) == 2)
        letter = next(d for d in await q.dead_letters(100) if d.job_id == in_2)
        assert letter.ref.endswith("@2")
        r = await cli(redis_url, queue_name, "dead", "--show", letter.ref)
        assert r.code == 0 and in_2 in r.out and letter.ref in r.out

        r = await cli(redis_url, queue_name, "replay", in_2)
        assert r.code == 0
        assert (await q.get_job(in_2)).state is JobState.WAITING  # type: ignore[union-attr]
        r = await cli(redis_url, queue_name, "replay", "--all", "--yes")
        assert r.code == 0 and "replayed 11 dead letters" in r.out
        c = await q.counts()
        assert (c["dead"], c["failed"], c["waiting"]) == (0, 0, 14)

        r = await cli(redis_url, queue_name, "pause")
        assert r.code == 0
        assert [await redis.exists(q.layout.keys(p).paused) for p in range(3)] == [1, 1, 1]
        r = await cli(redis_url, queue_name, "resume")
        assert r.code == 0 and "resumed" in r.out
        assert [await redis.exists(q.layout.keys(p).paused) for p in range(3)] == [0, 0, 0]

        # growing: refused while jobs are live, then done once they are gone
        r = await cli(redis_url, queue_name, "partitions", "--grow", "4", "--yes")
        assert r.code == 2 and "14 live jobs" in r.err and r.err.count("\n") == 1
        for p in range(3):
            for lane in q.layout.keys(p).lanes:
                await redis.delete(lane)
        await q.ensure_groups()
        r = await cli(redis_url, queue_name, "partitions", "--grow", "4")
        assert r.code == 2 and "pass --yes" in r.err
        r = await cli(redis_url, queue_name, "partitions", "--grow", "4", "--yes")
        assert r.code == 0 and "grown from 3 to 4 partitions" in r.out
        r = await cli(redis_url, queue_name, "partitions")
        assert "4 partitions (stored in Redis; earlier counts 3)" in r.out
        r = await cli(redis_url, queue_name, "partitions", "--grow", "2", "--yes")
        assert r.code == 2 and "can only grow" in r.err


async def test_a_count_other_than_the_stored_one_is_refused_in_one_line(
    redis_url: str, queue_name: str
) -> None:
    async with Queue(queue_name, redis_url=redis_url, partitions=3) as q:
        await q.add({})
    r = await cli(redis_url, queue_name, "stats", "--partitions", "2")
    assert r.code == 2 and r.err.count("\n") == 1 and "has 3 partitions stored" in r.err
    p = run_process("stats", "--queue", queue_name, "--redis-url", redis_url,
                    env={"STREAMQ_PARTITIONS": "5"})
    assert p.returncode == 2 and p.stderr.count("\n") == 1, p.stderr
    assert "has 3 partitions stored" in p.stderr and "Traceback" not in p.stderr
    p = run_process("stats", "--queue", queue_name, "--redis-url", redis_url,
                    env={"STREAMQ_PARTITIONS": "3"})
    assert p.returncode == 0 and "3 partitions" in p.stdout
    # the worker's command line: flag and environment twin, one line, exit 2
    for args, env in ((["--partitions", "4"], {}), ([], {"STREAMQ_PARTITIONS": "2"})):
        w = subprocess.run(
            [sys.executable, "-m", "streamq.worker", "--queue", queue_name, "--redis-url",
             redis_url, "--handler", "tests.chaos.handlers:noop", *args],
            cwd=ROOT, capture_output=True, text=True, timeout=30,
            env=dict(os.environ, PYTHONPATH=str(ROOT), **env))
        assert w.returncode == 2, w.stderr
        last = w.stderr.strip().splitlines()[-1]
        assert last.startswith("streamq worker: ") and "has 3 partitions stored" in last
        assert "Traceback" not in w.stderr
