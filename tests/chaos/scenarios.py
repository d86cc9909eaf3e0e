"""T1 (SIGKILL chaos) and T2 (Redis kill -9 and restart) as functions of their size.

The CI tests (``tests/chaos/test_t1_sigkill.py``, ``test_t2_redis_restart.py``) and the
soak (``python -m benchmarks.soak``) run the same code; only the config differs.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio

from streamq import JobOptions, Queue
from streamq.devredis import RedisProcess, start_redis_server
from streamq.keys import QueueKeys
from tests.chaos.harness import (
    Fault,
    Figures,
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
from tests.support.ledger import read_ledger


@dataclass
class Report:
    figures: Figures
    invariants: list[str]
    duration: float
    logs: str
    extra: dict[str, Any] = field(default_factory=dict)

    def lines(self) -> list[str]:
        out = self.figures.lines()
        out.append(f"duration (s)               {self.duration:.1f}")
        for k, v in self.extra.items():
            out.append(f"{k:<27}{v}")
        out.append("end-state invariants       " + ("all hold" if not self.invariants
                                                     else "; ".join(self.invariants)))
        return out


async def _drained(q: Queue) -> bool:
    try:
        c = await q.counts()
    except Exception:
        return False
    return c["waiting"] == 0 and c["active"] == 0 and c["delayed"] == 0


# -- T1 ------------------------------------------------------------------------------------------
@dataclass
class CrashConfig:
    jobs: int = 3000
    workers: int = 2
    concurrency: int = 5
    kill_every: float = 2.0
    restart_after: float = 0.5
    vt: float = 3.0
    reclaim_interval: float = 1.0
    sleep_min: float = 0.005
    sleep_max: float = 0.05
    add_rate: float | None = 1000.0
    ack_first: bool = False
    """Negative control: a handler that acknowledges before it works (loses jobs)."""
    max_kills: int | None = None
    drain_timeout: float = 120.0
    seed: int = 1
    queue: str = "chaos"


async def run_crash(cfg: CrashConfig, workdir: Path) -> Report:
    """Workers SIGKILLed every ``kill_every`` s and restarted; producer adding throughout."""
    workdir.mkdir(parents=True, exist_ok=True)
    ledger = workdir / "ledger"
    ledger.mkdir(exist_ok=True)
    server = start_redis_server(directory=workdir / "redis")
    r = redis_client(server.url)
    q = Queue(cfg.queue, redis_url=server.url)
    args = ["--concurrency", str(cfg.concurrency), "--vt", str(cfg.vt),
            "--reclaim-interval", str(cfg.reclaim_interval),
            "--sleep", str(cfg.sleep_min), "--sleep-max", str(cfg.sleep_max)]
    if cfg.ack_first:
        args.append("--ack-first")
    pool = WorkerPool(server.url, cfg.queue, ledger, args, cfg.workers)
    rng = random.Random(cfg.seed)
    faults: list[Fault] = []
    producer = Producer(q)
    t0 = time.monotonic()
    try:
        await q.connect()
        await q.ensure_groups()
        await pool.start()

        async def restart(slot: int) -> None:
            await anyio.sleep(cfg.restart_after)
            await pool.respawn(slot)

        async with anyio.create_task_group() as tg:
            tg.start_soon(lambda: producer.run(cfg.jobs, rate=cfg.add_rate))
            while cfg.max_kills is None or len(faults) < cfg.max_kills:
                await anyio.sleep(cfg.kill_every)
                c = await q.counts()
                if producer.done and c["waiting"] == 0:
                    break
                alive = pool.alive()
                if not alive:
                    continue
                slot = rng.choice(alive)
                faults.append(await pool.sigkill(slot, r, q.keys))
                tg.start_soon(restart, slot)
        await poll(lambda: producer.done, cfg.drain_timeout, 0.05, "the producer")
        await poll(lambda: _drained(q), cfg.drain_timeout, 0.05, "the queue to drain")
        duration = time.monotonic() - t0
        await pool.stop_all()
        dead = await dead_job_ids(r, q.keys)
        figures = check(attempts=producer.attempts, ok=producer.ok, unknown=producer.unknown,
                        ledger=ledger, dead=dead, faults=faults)
        invariants = await end_state(r, q, producer.ok)
        return Report(figures, invariants, duration, pool.logs(),
                      {"kills": len(faults), "workers": cfg.workers})
    finally:
        pool.kill_all()
        await q.close()
        await r.aclose()
        server.stop()


# -- T2 ------------------------------------------------------------------------------------------
@dataclass
class RedisRestartConfig:
    jobs: int = 3000
    workers: int = 2
    concurrency: int = 5
    kills: int = 1
    first_kill_at: float = 4.0
    kill_spacing: float = 10.0
    downtime: float = 1.0
    appendonly: bool = True
    appendfsync: str = "always"
    vt: float = 3.0
    reclaim_interval: float = 1.0
    sleep_min: float = 0.005
    sleep_max: float = 0.05
    delayed: int = 50
    """Jobs added delayed before the first kill, due after the last restart."""
    drain_timeout: float = 120.0
    queue: str = "chaos"
    supervise: bool = True
    """Restart a worker process that exited (as systemd would); exits are counted."""


async def run_redis_restart(cfg: RedisRestartConfig, workdir: Path) -> Report:
    """Redis killed with SIGKILL ``kills`` times and restarted on the same port and dir
    after ``downtime``; workers and a producer run throughout."""
    workdir.mkdir(parents=True, exist_ok=True)
    ledger = workdir / "ledger"
    ledger.mkdir(exist_ok=True)
    server: RedisProcess = start_redis_server(
        directory=workdir / "redis", appendonly=cfg.appendonly, appendfsync=cfg.appendfsync)
    r = redis_client(server.url)
    q = Queue(cfg.queue, redis_url=server.url)
    args = ["--concurrency", str(cfg.concurrency), "--vt", str(cfg.vt),
            "--reclaim-interval", str(cfg.reclaim_interval),
            "--sleep", str(cfg.sleep_min), "--sleep-max", str(cfg.sleep_max)]
    pool = WorkerPool(server.url, cfg.queue, ledger, args, cfg.workers)
    last_kill_at = cfg.first_kill_at + (cfg.kills - 1) * cfg.kill_spacing
    rate = cfg.jobs / (last_kill_at + 4.0)
    producer = Producer(q)
    delayed = Producer(q, prefix="d")
    faults: list[Fault] = []
    resume: list[float] = []
    crashes: list[int] = []
    t0 = time.monotonic()

    async def supervise() -> None:
        while True:
            await anyio.sleep(0.2)
            for slot, proc in list(pool.procs.items()):
                if proc.poll() is not None:
                    crashes.append(proc.returncode)
                    await pool.respawn(slot)

    try:
        await q.connect()
        await q.ensure_groups()
        await pool.start()
        due_in = last_kill_at + cfg.downtime + 3.0
        await delayed.run(cfg.delayed, batch=50,
                          options=lambda i: JobOptions(job_id=i, delay=due_in))
        async with anyio.create_task_group() as sup:
            if cfg.supervise:
                sup.start_soon(supervise)
            await _redis_chaos(cfg, server, r, q.keys, pool, producer, rate, faults, resume, ledger, t0)
            await poll(lambda: _drained(q), cfg.drain_timeout, 0.05, "the queue to drain")
            sup.cancel_scope.cancel()
        duration = time.monotonic() - t0
        alive = [p.pid for p in pool.procs.values() if p.poll() is None]
        await pool.stop_all()
        dead = await dead_job_ids(r, q.keys)
        attempts = producer.attempts | delayed.attempts
        ok = producer.ok | delayed.ok
        figures = check(attempts=attempts, ok=ok, unknown=producer.unknown | delayed.unknown,
                        ledger=ledger, dead=dead, faults=faults)
        invariants = await end_state(r, q, ok) if cfg.appendonly else []
        return Report(figures, invariants, duration, pool.logs(), {
            "redis kills": len(faults),
            "resume after PING (s)": ", ".join(f"{x:.2f}" for x in resume),
            "producer errors": dict(producer.errors),
            "workers alive at the end": f"{len(alive)} of {cfg.workers}",
            "worker exits (restarted)": len(crashes),
        })
    finally:
        pool.kill_all()
        await q.close()
        await r.aclose()
        server.stop()


async def _redis_chaos(cfg: RedisRestartConfig, server: RedisProcess, r: Any, keys: QueueKeys,
                       pool: WorkerPool, producer: Producer, rate: float, faults: list[Fault],
                       resume: list[float], ledger: Path, t0: float) -> None:
    async with anyio.create_task_group() as tg:
        tg.start_soon(lambda: producer.run(cfg.jobs, rate=rate))
        for n in range(cfg.kills):
            at = t0 + cfg.first_kill_at + n * cfg.kill_spacing
            await anyio.sleep(max(0.0, at - time.monotonic()))
            held = await pending_of(r, keys)
            t_kill = now()
            await anyio.to_thread.run_sync(server.kill)
            await anyio.sleep(cfg.downtime)
            await anyio.to_thread.run_sync(server.start)
            t_ping = now()
            await r.connection_pool.disconnect()  # the test's own client: no stale sockets
            pids = tuple(p.pid for p in pool.procs.values() if p.poll() is None)
            faults.append(Fault("redis-kill", t_kill, pids, len(held), healed_at=t_ping))
            resume.append(await _resumed_after(ledger, producer, t_ping, deadline=30.0))


async def _resumed_after(ledger: Path, producer: Producer, t_ping: float, deadline: float) -> float:
    """Seconds from Redis answering PING to the first new job start in any worker and (if
    it is still adding) the producer's first successful add."""

    def first_start() -> float | None:
        ts = [t for _, _, _, t in read_ledger(ledger).starts if t > t_ping]
        return min(ts) if ts else None

    started = await poll(first_start, deadline, 0.05, "a job start after the Redis restart")
    worst = started - t_ping
    if not producer.done:
        await poll(lambda: producer.done or producer.last_ok_at > t_ping, deadline, 0.05,
                   "an add after the Redis restart")
        if producer.last_ok_at > t_ping:
            added = min(t for t in producer.ok_times if t > t_ping)
            worst = max(worst, added - t_ping)
    return worst
