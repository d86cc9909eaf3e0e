"""T13: priorities under 4 worker processes, custom job id dedup under 1,000 concurrent
adds, job id validation, Lua/RESP metacharacters as data, one Cluster slot per queue."""

from __future__ import annotations

from pathlib import Path

import anyio
import pytest
from redis.crc import key_slot

from streamq import Job, JobIdError, JobOptions, PermanentError, Queue, Worker
from streamq.devredis import start_redis_server
from tests.chaos.harness import WorkerPool, poll, redis_client
from tests.support.ledger import read_ledger

pytestmark = pytest.mark.chaos


@pytest.mark.timeout(60)
async def test_t13_waiting_high_jobs_go_before_normal_under_four_workers(tmp_path: Path) -> None:
    workers = 4
    server = start_redis_server(directory=tmp_path / "redis")
    q = Queue("prio", redis_url=server.url)
    ledger = tmp_path / "ledger"
    ledger.mkdir()
    pool = WorkerPool(server.url, "prio", ledger, ["--concurrency", "1", "--sleep", "0.01"],
                      workers)
    try:
        await q.pause()
        await q.add_bulk([(None, JobOptions(job_id=f"n{i:03d}")) for i in range(100)])
        await q.add_bulk([(None, JobOptions(job_id=f"h{i:03d}", priority="high"))
                          for i in range(40)])
        await pool.start()
        await q.resume()
        await poll(lambda: len(read_ledger(ledger).done) == 140, 30, 0.05, "all jobs")
    finally:
        await pool.stop_all()
        pool.kill_all()
        await q.close()
        server.stop()
    starts = sorted((t, j) for j, _, _, t in read_ledger(ledger).starts)
    last_high = max(t for t, j in starts if j.startswith("h"))
    early_normals = [j for t, j in starts if j.startswith("n") and t < last_high]
    # claims are atomic and take the high lane first; only start-line skew between the
    # processes may put a normal job's start before the last high job's
    assert len(early_normals) <= workers - 1, early_normals


@pytest.mark.timeout(30)
async def test_t13_a_thousand_concurrent_adds_of_one_id_make_one_job(tmp_path: Path) -> None:
    server = start_redis_server(directory=tmp_path / "redis")
    r = redis_client(server.url)
    q = Queue("dedup", redis_url=server.url)
    ran: list[str] = []

    async def handler(job: Job) -> None:
        ran.append(job.id)

    try:
        async with anyio.create_task_group() as tg:
            for i in range(1000):
                tg.start_soon(q.add, {"n": i}, JobOptions(job_id="same"))
        assert sum([await r.xlen(lane) for lane in q.keys.lanes]) == 1
        worker = Worker(q, handler, rate_limit=None)
        async with anyio.create_task_group() as tg:
            tg.start_soon(worker.run)
            await poll(lambda: ran, 10, message="the job")
            await poll(lambda: _idle(q), 5)
            await worker.close()
        assert ran == ["same"]
    finally:
        await q.close()
        await r.aclose()
        server.stop()


async def _idle(q: Queue) -> bool:
    c = await q.counts()
    return c["waiting"] == 0 and c["active"] == 0


@pytest.mark.timeout(30)
async def test_t13_job_ids_are_validated_before_redis(tmp_path: Path) -> None:
    server = start_redis_server(directory=tmp_path / "redis")
    r = redis_client(server.url)
    q = Queue("ids", redis_url=server.url)
    try:
        await q.connect()
        before = await r.dbsize()
        for bad in ("", "x" * 129, "a b", "a\r\nb", "a\x00b", "a|b", "a*b", "é",
                    "]]..redis.call('FLUSHALL')--"):
            with pytest.raises(JobIdError):
                await q.add(None, JobOptions(job_id=bad))
        assert await r.dbsize() == before
        # { } carry a routing tag (partitioned queues); the key keeps the queue's tag first
        await q.add(None, JobOptions(job_id="a{b}"))
        assert await q.cancel("a{b}")
        assert {key_slot(k) for k in await r.keys("*")} == {key_slot(b"{ids}")}
    finally:
        await q.close()
        await r.aclose()
        server.stop()


INJECTION = "]]..redis.call('FLUSHALL')--\r\n*1\r\n$8\r\nFLUSHALL\r\n\x00end"


@pytest.mark.timeout(30)
async def test_t13_lua_and_resp_metacharacters_round_trip_as_data(tmp_path: Path) -> None:
    server = start_redis_server(directory=tmp_path / "redis")
    r = redis_client(server.url)
    q = Queue("inject", redis_url=server.url)
    got: list[object] = []

    async def handler(job: Job) -> None:
        got.append(job.data)
        raise PermanentError(INJECTION)

    worker = Worker(q, handler, rate_limit=None)
    try:
        await r.set("canary", "alive")
        payload = {INJECTION: INJECTION, "bytes": INJECTION.encode()}
        await q.add(payload, JobOptions(job_id="inj"))
        async with anyio.create_task_group() as tg:
            tg.start_soon(worker.run)
            await poll(lambda: got, 10, message="the job")
            await poll(lambda: _dead(q), 10, message="its dead letter")
            await worker.close()
        assert got == [payload]
        assert await r.get("canary") == b"alive"
        (dead,) = await q.dead_letters(5)
        assert dead.data == payload
        assert "\r" not in dead.error and "\n" not in dead.error
        assert "]]..redis.call('FLUSHALL')--" in dead.error
    finally:
        await q.close()
        await r.aclose()
        server.stop()


async def _dead(q: Queue) -> bool:
    return bool(await q.dead_letters(1))


@pytest.mark.timeout(30)
async def test_t13_every_key_of_a_queue_hashes_to_one_cluster_slot(tmp_path: Path) -> None:
    server = start_redis_server(directory=tmp_path / "redis")
    r = redis_client(server.url)
    q = Queue("sms", redis_url=server.url)
    calls = 0

    async def handler(job: Job) -> None:
        nonlocal calls
        calls += 1
        if job.id == "bad":
            raise PermanentError("no")
        if job.id == "retry" and job.attempt == 1:
            raise RuntimeError("again")

    worker = Worker(q, handler, rate_limit=5.0)
    try:
        await q.add(None, JobOptions(job_id="ok", priority="low"))
        await q.add(None, JobOptions(job_id="bad", priority="high"))
        await q.add(None, JobOptions(job_id="retry", backoff=0.05))
        await q.add(None, JobOptions(job_id="later", delay=60))
        await q.add(None, JobOptions(job_id="gone", delay=60))
        await q.cancel("gone")
        async with anyio.create_task_group() as tg:
            tg.start_soon(worker.run)
            await poll(lambda: calls >= 4, 10, message="the jobs")
            await q.pause()
            await q.resume()
            await worker.close()
        keys = [k.decode() async for k in r.scan_iter(count=1000)]
        assert len(keys) >= 8
        assert all(k.startswith("streamq:{sms}:") for k in keys), keys
        assert {key_slot(k.encode()) for k in keys} == {key_slot(b"{sms}")}
    finally:
        await q.close()
        await r.aclose()
        server.stop()
