"""T11: backpressure under ``maxmemory`` with ``noeviction``.

A producer flood fills Redis; ``add`` then raises ``QueueFull`` within 1 s (no hang, no
retry storm) while the workers keep draining (their transitions are ``allow-oom``); once
memory is below the limit adds succeed again; no acknowledged add is lost.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from streamq import JobOptions, Queue, QueueFull
from streamq.devredis import start_redis_server
from tests.chaos.harness import WorkerPool, check, poll, redis_client

pytestmark = pytest.mark.chaos

PAYLOAD = b"p" * 2048


@pytest.mark.timeout(90)
async def test_t11_full_redis_refuses_adds_fast_while_workers_drain(tmp_path: Path) -> None:
    server = start_redis_server(directory=tmp_path / "redis", extra_args=[
        "--maxmemory", "12mb", "--maxmemory-policy", "noeviction"])
    r = redis_client(server.url)
    q = Queue("full", redis_url=server.url)
    ledger = tmp_path / "ledger"
    ledger.mkdir()
    pool = WorkerPool(server.url, "full", ledger, ["--concurrency", "10", "--sleep", "0.002"], 1)
    attempts: set[str] = set()
    ok: set[str] = set()
    refused: set[str] = set()
    refusals: list[float] = []
    try:
        await q.connect()
        await q.ensure_groups()
        await pool.start()
        n = 0

        async def add_chunk(size: int) -> bool:
            nonlocal n
            ids = [f"f{n + i:06d}" for i in range(size)]
            n += size
            attempts.update(ids)
            t0 = time.monotonic()
            try:
                await q.add_bulk([({"b": PAYLOAD}, JobOptions(job_id=i)) for i in ids])
            except QueueFull as exc:
                refusals.append(time.monotonic() - t0)
                refused.update(ids)
                assert "maxmemory" in str(exc)
                return False
            ok.update(ids)
            return True

        # flood until Redis refuses
        deadline = time.monotonic() + 30
        while await add_chunk(200):
            assert time.monotonic() < deadline, "Redis never filled up"
        c_full = await q.counts()
        # while it is full: every add is refused fast, and the worker keeps draining
        for _ in range(5):
            await add_chunk(1)
        assert refusals and max(refusals) <= 1.0, refusals
        await poll(lambda: _completed_more_than(q, c_full["completed"] + 100), 15, 0.05,
                   "the worker to drain a full Redis")
        # below the limit again: adds succeed
        await poll(lambda: add_chunk(1), 30, 0.1, "an add to succeed after the drain")
        await poll(lambda: _drained(q), 60, 0.1, "the queue to drain")
        assert pool.procs[0].poll() is None, "the worker died under OOM"
    finally:
        await pool.stop_all()
        pool.kill_all()
    figures = check(attempts=attempts, ok=ok, unknown=refused, ledger=ledger)
    assert figures.problems() == [], figures.lines()
    # every acknowledged add ran (refused ones are single scripts: all or nothing)
    assert figures.completed == len(ok)
    # negative control: a producer that ignores QueueFull believes its refused adds are in;
    # the checker must call them lost (they were never stored, so they never ran)
    careless = check(attempts=attempts, ok=ok | refused, unknown=set(), ledger=ledger)
    assert careless.lost == refused and any("lost" in p for p in careless.problems())
    assert "Traceback" not in pool.logs()
    await q.close()
    await r.aclose()
    server.stop()


async def _completed_more_than(q: Queue, n: int) -> bool:
    return (await q.counts())["completed"] >= n


async def _drained(q: Queue) -> bool:
    c = await q.counts()
    return c["waiting"] == 0 and c["active"] == 0
