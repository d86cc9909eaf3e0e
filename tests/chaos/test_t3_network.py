"""T3: connection faults through the loopback proxy (tests/chaos/proxy.py).

T3a churn: workers and a producer through the proxy while a random toxic hits every 3 s
for 1 s: nothing lost, duplicates within what was held, a lost ``add`` reply does not
enqueue twice. T3b half-open: a blackholed link is noticed and survived; a healthy link
with blocking reads never times out. T3c: a cancellation storm on redis-py (the
CVE-2023-28859 class) never hands a reply to the wrong caller, for plain GETs and for the
engine's own Lua calls.
"""

from __future__ import annotations

import random
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import pytest
from structlog.testing import capture_logs

from streamq import Job, JobOptions, Queue, RedisUnavailable, Worker
from streamq.devredis import RedisProcess, start_redis_server
from streamq.settings import make_redis
from tests.chaos.harness import (
    Fault,
    Producer,
    WorkerPool,
    check,
    dead_job_ids,
    end_state,
    now,
    pending_of,
    poll,
    redis_client,
)
from tests.chaos.proxy import Proxy
from tests.support.ledger import read_ledger

pytestmark = pytest.mark.chaos

TOXICS = ("latency", "blackhole", "reset", "limit_data", "slicer", "down")


@asynccontextmanager
async def proxied(tmp_path: Path) -> AsyncIterator[tuple[RedisProcess, Proxy, Any]]:
    server = start_redis_server(directory=tmp_path / "redis")
    proxy = await Proxy("127.0.0.1", server.port, lifetime=240).start()
    r = redis_client(server.url)
    try:
        yield server, proxy, r
    finally:
        await proxy.stop()
        await r.aclose()
        server.stop()


async def apply(proxy: Proxy, toxic: str, rng: random.Random) -> None:
    if toxic == "latency":
        proxy.latency(100, jitter=50)
    elif toxic == "blackhole":
        proxy.blackhole()
    elif toxic == "reset":
        proxy.reset_peers(new_too=True)
    elif toxic == "limit_data":
        proxy.limit_data(rng.randint(0, 2000))
    elif toxic == "slicer":
        proxy.slicer(7, 0.0005)
    elif toxic == "down":
        await proxy.down()


async def _drained(q: Queue) -> bool:
    c = await q.counts()
    return c["waiting"] == 0 and c["active"] == 0 and c["delayed"] == 0


@pytest.mark.timeout(150)
async def test_t3a_churn_loses_nothing(tmp_path: Path) -> None:
    jobs = 2000
    rng = random.Random(3)
    async with proxied(tmp_path) as (server, proxy, r):
        ledger = tmp_path / "ledger"
        ledger.mkdir()
        direct = Queue("churn", redis_url=server.url)
        via = Queue("churn", redis_url=proxy.url)
        pool = WorkerPool(proxy.url, "churn", ledger, ["--vt", "3", "--reclaim-interval", "1",
                                                       "--sleep", "0.005", "--sleep-max", "0.03"], 2)
        producer = Producer(via)
        faults: list[Fault] = []
        order = list(TOXICS)
        rng.shuffle(order)
        try:
            await direct.connect()
            await direct.ensure_groups()
            await pool.start()
            async with anyio.create_task_group() as tg:
                tg.start_soon(lambda: producer.run(jobs, rate=250))
                for toxic in order:
                    await anyio.sleep(2.0)
                    fault = Fault(toxic, now())
                    await apply(proxy, toxic, rng)
                    held = 0
                    for _ in range(10):  # 1 s of toxic; the most entries held is the budget
                        held = max(held, len(await pending_of(r, direct.keys)))
                        await anyio.sleep(0.1)
                    proxy.heal()
                    await proxy.up()
                    fault.pel, fault.healed_at = held, now()
                    faults.append(fault)
            await poll(lambda: _drained(direct), 90, 0.1, "the queue to drain")
            await pool.stop_all()
            figures = check(attempts=producer.attempts, ok=producer.ok, unknown=producer.unknown,
                            ledger=ledger, dead=await dead_job_ids(r, direct.keys), faults=faults)
            print("\n".join(figures.lines()), f"proxy connections {proxy.accepted}", sep="\n")
            assert figures.problems() == []
            assert figures.completed == jobs and figures.dead == 0
            assert await end_state(r, direct, producer.ok) == []
            assert "Traceback" not in pool.logs()
        finally:
            pool.kill_all()
            await direct.close()
            await via.close()


@pytest.mark.timeout(30)
async def test_t3a_lost_add_reply_does_not_enqueue_twice(tmp_path: Path) -> None:
    async with proxied(tmp_path) as (server, proxy, r):
        via = Queue("once", redis_url=proxy.url)
        direct = Queue("once", redis_url=server.url)
        try:
            await via.connect()
            # a new queue's partition count is stored by its first write: done before the
            # fault, so that the call whose reply is lost is the add itself
            await via.partition_count(store=True)
            calls_before = await _evalsha_calls(r)
            proxy.limit_data(0)  # the next reply on every connection is lost
            with pytest.raises(RedisUnavailable):
                await via.add({"n": 1}, JobOptions(job_id="once"))
            assert await _evalsha_calls(r) > calls_before, "the add never reached Redis"
            proxy.heal()
            ref = await via.add({"n": 1}, JobOptions(job_id="once"))  # the caller's retry
            assert ref.job_id == "once"
            assert sum([await r.xlen(lane) for lane in direct.keys.lanes]) == 1
            ran: list[str] = []

            async def handler(job: Job) -> None:
                ran.append(job.id)

            worker = Worker(direct, handler, rate_limit=None)
            async with anyio.create_task_group() as tg:
                tg.start_soon(worker.run)
                await poll(lambda: ran, 10, message="the job to run")
                await poll(lambda: _drained(direct), 5)
                await worker.close()
            assert ran == ["once"]
        finally:
            await via.close()
            await direct.close()


@pytest.mark.timeout(30)
async def test_t3a_negative_control_retry_without_job_id_enqueues_twice(tmp_path: Path) -> None:
    """The dedup above rests on the client-chosen id: a caller that retries a lost add
    without one creates a second job, and the lane count shows it."""
    async with proxied(tmp_path) as (server, proxy, r):
        via = Queue("twice", redis_url=proxy.url)
        direct = Queue("twice", redis_url=server.url)
        try:
            await via.connect()
            await via.partition_count(store=True)  # as above: the lost reply is the add's
            proxy.limit_data(0)
            with pytest.raises(RedisUnavailable):
                await via.add({"n": 1})
            proxy.heal()
            await via.add({"n": 1})
            assert sum([await r.xlen(lane) for lane in direct.keys.lanes]) == 2
        finally:
            await via.close()
            await direct.close()


@pytest.mark.timeout(60)
async def test_t3a_negative_control_churn_checker_reports_loss(tmp_path: Path) -> None:
    """The churn harness against a deliberately broken worker (acknowledges before it
    works) that dies while a toxic is on: the checker must report the loss."""
    async with proxied(tmp_path) as (server, proxy, r):
        ledger = tmp_path / "ledger"
        ledger.mkdir()
        direct = Queue("broken", redis_url=server.url)
        via = Queue("broken", redis_url=proxy.url)
        pool = WorkerPool(proxy.url, "broken", ledger, ["--vt", "3", "--ack-first", "--sleep",
                                                        "0.2", "--sleep-max", "0.3"], 2)
        producer = Producer(via)
        try:
            await direct.connect()
            await direct.ensure_groups()
            await pool.start()
            await producer.run(60, batch=20)
            await poll(lambda: len(read_ledger(ledger).starts) >= 12, 20, message="work")
            proxy.latency(100, jitter=50)
            fault = await pool.sigkill(0, r, direct.keys)
            proxy.heal()
            await poll(lambda: _drained(direct), 60, 0.1, "the queue to drain")
            await pool.stop_all()
            figures = check(attempts=producer.attempts, ok=producer.ok,
                            unknown=producer.unknown, ledger=ledger, faults=[fault])
            assert figures.lost and any("lost" in p for p in figures.problems())
            assert len(figures.lost) <= figures.in_flight
        finally:
            pool.kill_all()
            await direct.close()
            await via.close()


async def _evalsha_calls(r: Any) -> int:
    stats = await r.info("commandstats")
    return int(stats.get("cmdstat_evalsha", {}).get("calls", 0))


@pytest.mark.timeout(30)
async def test_t3b_healthy_link_with_blocking_reads_never_times_out(tmp_path: Path) -> None:
    """redis-py 8's 5 s socket-timeout regression: an idle worker blocks in XREAD (up to
    2 s at a time) through a slow but healthy link for 6 s without a single error."""
    async with proxied(tmp_path) as (_server, proxy, _r):
        proxy.latency(5)
        q = Queue("idle", redis_url=proxy.url)
        ran: list[str] = []

        async def handler(job: Job) -> None:
            ran.append(job.id)

        worker = Worker(q, handler, rate_limit=None)
        try:
            with capture_logs() as logs:
                async with anyio.create_task_group() as tg:
                    tg.start_soon(worker.run)
                    await anyio.sleep(6.0)
                    await q.add(None, JobOptions(job_id="late"))
                    await poll(lambda: ran, 5, message="the job after the idle spell")
                    await worker.close()
            errors = [e for e in logs if e.get("log_level") in ("error", "warning")]
            assert errors == []
        finally:
            await q.close()


async def _run_blackholed(tmp_path: Path, blackhole_s: float | None) -> tuple[float | None, float]:
    """An in-process worker through the proxy; blackhole the link (for ``blackhole_s``, or
    until the worker reports it, at most 10 s) while a job is added; return (seconds until
    the worker reported Redis unreachable, None if not within the blackhole; seconds from
    heal to the job's start)."""
    async with proxied(tmp_path) as (server, proxy, _r):
        q = Queue("half", redis_url=proxy.url)
        direct = Queue("half", redis_url=server.url)
        starts: list[float] = []

        async def handler(job: Job) -> None:
            starts.append(time.monotonic())

        worker = Worker(q, handler, rate_limit=None, visibility_timeout=3.0)
        detected: float | None = None
        try:
            with capture_logs() as logs:
                async with anyio.create_task_group() as tg:
                    tg.start_soon(worker.run)
                    await direct.add(None, JobOptions(job_id="before"))
                    await poll(lambda: starts, 10, message="the first job")
                    await anyio.sleep(0.3)  # parked in its blocking XREAD
                    t0 = time.monotonic()
                    proxy.blackhole()
                    # new work arrives during the blackhole: the reply that would wake the
                    # worker is lost with it
                    await direct.add(None, JobOptions(job_id="after"))
                    deadline = t0 + (blackhole_s or 10.0)
                    while time.monotonic() < deadline:
                        if detected is None and any(
                                "unreachable" in str(e.get("event")) for e in logs):
                            detected = time.monotonic() - t0
                            if blackhole_s is None:
                                break
                        await anyio.sleep(0.05)
                    proxy.heal()
                    healed = time.monotonic()
                    with anyio.move_on_after(5.5 if blackhole_s else 0):
                        await poll(lambda: len(starts) >= 2, 6, message="the job after heal")
                    resumed = (starts[1] - healed) if len(starts) >= 2 else float("inf")
                    worker.stop(immediate=True)
                    await proxy.down()  # cut the hung sockets so the worker can stop
                    await worker.close()
            return detected, resumed
        finally:
            await q.close()
            await direct.close()


@pytest.mark.timeout(60)
async def test_t3b_half_open_link_is_reported_within_10s(tmp_path: Path) -> None:
    detected, _ = await _run_blackholed(tmp_path, None)
    assert detected is not None and detected <= 10.0, detected


@pytest.mark.timeout(60)
async def test_t3b_worker_resumes_within_5s_after_the_link_heals(tmp_path: Path) -> None:
    """The reply that would have woken the idle worker is lost in a 2 s blackhole; the
    worker still starts the job within 5 s of the heal."""
    _, resumed = await _run_blackholed(tmp_path, 2.0)
    assert resumed <= 5.0, resumed


@pytest.mark.timeout(60)
async def test_t3c_cancellation_storm_never_mixes_up_replies(tmp_path: Path) -> None:
    n = 1000
    rng = random.Random(11)
    async with proxied(tmp_path) as (_server, proxy, r):
        await r.mset({f"k{i:05d}": f"v{i:05d}" for i in range(n)})
        proxy.latency(1)
        client = make_redis(proxy.url)
        wrong: list[tuple[int, Any]] = []
        cancelled = 0
        try:
            for i in range(n):
                with anyio.move_on_after(rng.uniform(0, 0.002)) as scope:
                    v = await client.get(f"k{i:05d}")
                    if v != f"v{i:05d}".encode():
                        wrong.append((i, v))
                cancelled += scope.cancelled_caught
            for i in range(n):
                v = await client.get(f"k{i:05d}")
                if v != f"v{i:05d}".encode():
                    wrong.append((i, v))
            assert cancelled > n // 10, "the storm did not cancel enough calls to mean anything"
            assert wrong == []

            # the same through the engine's Lua calls: job i has max_attempts i
            q = Queue("storm", redis_url=proxy.url)
            m = 200
            await q.add_bulk([(None, JobOptions(job_id=f"s{i:04d}", attempts=i + 1))
                              for i in range(m)])
            for i in range(m):
                with anyio.move_on_after(rng.uniform(0, 0.002)):
                    info = await q.get_job(f"s{i:04d}")
                    if info is not None and info.max_attempts != i + 1:
                        wrong.append((i, info))
            for i in range(m):
                info = await q.get_job(f"s{i:04d}")
                if info is None or info.max_attempts != i + 1:
                    wrong.append((i, info))
            await q.close()
            assert wrong == []
        finally:
            await client.aclose()
