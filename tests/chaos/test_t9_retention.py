"""T9: retention and trimming safety.

Records expire on their TTLs (completed 2 s, failed 4 s in the test); with tiny retention
windows (a 100-entry dead-letter stream, 16-entry event stream) and 500 jobs pending,
delayed and retrying at once, nothing is lost; the dead-letter stream stays bounded and
``replay_dead`` restores a job intact; Redis memory stays flat under a steady load.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import anyio
import pytest

from streamq import Job, JobOptions, PermanentError, Queue, QueueDefaults, Worker
from streamq.devredis import start_redis_server
from tests.chaos.harness import poll, redis_client

pytestmark = pytest.mark.chaos


@pytest.mark.timeout(30)
async def test_t9_records_expire_on_their_ttls(tmp_path: Path) -> None:
    server = start_redis_server(directory=tmp_path / "redis")
    q = Queue("ttl", redis_url=server.url,
              defaults=QueueDefaults(completed_ttl_s=2.0, failed_ttl_s=4.0))
    finished: dict[str, float] = {}

    async def handler(job: Job) -> None:
        if job.id == "bad":
            raise PermanentError("no")

    worker = Worker(q, handler, rate_limit=None)
    worker.on("completed", lambda e: finished.setdefault(e.job_id, time.monotonic()))
    worker.on("dead", lambda e: finished.setdefault(e.job_id, time.monotonic()))
    try:
        await q.add(None, JobOptions(job_id="good"))
        await q.add(None, JobOptions(job_id="bad"))
        async with anyio.create_task_group() as tg:
            tg.start_soon(worker.run)
            await poll(lambda: len(finished) == 2, 10, message="both jobs to finish")
            await worker.close()
        for job_id, ttl in (("good", 2.0), ("bad", 4.0)):
            assert await q.get_job(job_id) is not None
            await poll(lambda j=job_id: _gone(q, j), ttl + 1.0, 0.02, f"{job_id}'s record to expire")
            age = time.monotonic() - finished[job_id]
            assert ttl - 0.2 <= age <= ttl + 1.0, (job_id, age)
    finally:
        await q.close()
        server.stop()


async def _gone(q: Queue, job_id: str) -> bool:
    return await q.get_job(job_id) is None


@pytest.mark.timeout(60)
async def test_t9_tiny_retention_windows_lose_no_pending_delayed_or_retrying_job(
    tmp_path: Path,
) -> None:
    server = start_redis_server(directory=tmp_path / "redis")
    r = redis_client(server.url)
    q = Queue("trim", redis_url=server.url,
              defaults=QueueDefaults(dead_letter_max=100, backoff_s=0.5))
    gate = anyio.Event()
    done: list[str] = []
    fixed: set[str] = set()

    async def handler(job: Job) -> None:
        kind = job.data["k"]
        if kind == "hold":
            await gate.wait()
        elif kind == "retry" and job.attempt == 1:
            raise RuntimeError("first attempt fails")
        elif kind == "dead" and job.id not in fixed:
            raise PermanentError("poison")
        done.append(job.id)

    worker = Worker(q, handler, concurrency=250, rate_limit=None, visibility_timeout=30)
    plan = ([("hold", 200, 0.0), ("delayed", 150, 1.0), ("retry", 150, 0.0)])
    live: set[str] = set()
    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(worker.run)
            for kind, n, delay in plan:
                items = [({"k": kind, "blob": "x" * 200}, JobOptions(job_id=f"{kind}{i:03d}",
                                                                   delay=delay or None))
                         for i in range(n)]
                live.update(o.job_id for _, o in items if o.job_id)
                await q.add_bulk(items)
            await poll(lambda: _active(q, 200), 10, 0.05, "200 jobs to be held")
            # now churn the capped streams: 300 dead letters, each with events
            await q.add_bulk([({"k": "dead"}, JobOptions(job_id=f"dead{i:03d}", attempts=1))
                              for i in range(300)])
            await poll(lambda: _failed(q, 300), 20, 0.05, "the dead letters")
            dead_len = await r.xlen(q.keys.dead)
            gate.set()
            await poll(lambda: live <= set(done), 20, 0.05, "every live job to complete")
            # a dead letter still in the stream is replayed intact
            kept = await q.dead_letters(1)
            assert kept, "the capped dead-letter stream kept nothing"
            fixed.add(kept[0].job_id)
            assert kept[0].data == {"k": "dead"}
            assert await q.replay_dead(kept[0].job_id) == 1
            await poll(lambda: kept[0].job_id in done, 10, 0.05, "the replayed job")
            await worker.close()
        assert live <= set(done), f"lost: {sorted(live - set(done))[:10]}"
        assert dead_len <= 100 + 100, f"dead-letter stream {dead_len} entries, cap 100 (~)"
        c = await q.counts()
        assert (c["waiting"], c["active"], c["delayed"]) == (0, 0, 0)
    finally:
        await q.close()
        await r.aclose()
        server.stop()


async def _active(q: Queue, n: int) -> bool:
    return (await q.counts())["active"] >= n


async def _failed(q: Queue, n: int) -> bool:
    return (await q.counts())["failed"] >= n


TTL = 1.0


@pytest.mark.timeout(60)
async def test_t9_memory_stays_flat_under_a_steady_load(tmp_path: Path) -> None:
    """300 jobs/s with completed records kept 1 s: after a warm-up, used_memory stays
    within +-15 % of its mean (CI: 9 s). Records kept without a TTL grow it ~40 % here."""
    server = start_redis_server(directory=tmp_path / "redis")
    r = redis_client(server.url)
    q = Queue("steady", redis_url=server.url,
              defaults=QueueDefaults(completed_ttl_s=TTL, failed_ttl_s=TTL))

    async def handler(job: Job) -> None:
        return None

    worker = Worker(q, handler, rate_limit=None)
    samples: list[int] = []
    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(worker.run)

            async def produce() -> None:
                i = 0
                t0 = time.monotonic()
                while time.monotonic() - t0 < 9:
                    await q.add_bulk([{"b": "y" * 500} for _ in range(10)])
                    i += 10
                    await anyio.sleep(max(0.0, t0 + i / 300 - time.monotonic()))

            tg.start_soon(produce)
            await anyio.sleep(3)  # warm-up: three TTLs of records
            for _ in range(6):
                info: dict[str, Any] = await r.info("memory")
                samples.append(int(info["used_memory"]))
                await anyio.sleep(1)
            await worker.close()
            tg.cancel_scope.cancel()
    finally:
        await q.close()
        await r.aclose()
        server.stop()
    mean = sum(samples) / len(samples)
    spread = [s / mean - 1 for s in samples]
    assert max(abs(x) for x in spread) <= 0.15, [f"{x:+.1%}" for x in spread]
