"""Schedules under worker kills: an ``every`` schedule fired by several worker processes
that are SIGKILLed and restarted meanwhile; each slot must yield exactly one run.

Used by ``tests/chaos/test_schedules_kill.py`` (CI size: 20 s) and by
``python -m benchmarks.schedules`` (by hand: a minute, and the lateness of idle workers).

The schedule runs on a window of whole slots (``start_at`` .. ``end_at``), so the
expected slots are known exactly. The ledger workers (``tests.support.ledger_worker``)
write an ``S`` line when a run starts and an ``E`` line when it ends; a run's job id
names its slot. What is checked:

* fired = the distinct run ids started = the expected slots, no more, no fewer;
* the schedule's ``runs`` counter and its ``fired`` events agree;
* every run completed (lost = 0), and runs executed twice (a worker killed mid-run:
  at-least-once) stay within what the killed workers held;
* lateness: a run's first start minus its slot.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import anyio

from streamq import Queue
from streamq.devredis import start_redis_server
from streamq.schedules.model import slot_text
from tests.chaos.harness import Fault, WorkerPool, poll, redis_client
from tests.support.ledger import read_ledger


@dataclass
class ScheduleKillConfig:
    seconds: int = 20
    """Slots in the window (one a second)."""
    workers: int = 3
    kill_every: float = 2.0
    """Seconds between kills (0: no kills, for lateness with idle workers)."""
    restart_after: float = 0.5
    vt: float = 3.0
    reclaim_interval: float = 1.0
    sleep: float = 0.5
    """Each run's work (the handler sleeps): long enough for kills to hit running runs."""
    partitions: int | None = None


@dataclass
class ScheduleReport:
    expected: list[str]
    fired: list[str]
    runs_counter: int
    fired_events: int
    completed: set[str]
    duplicated: dict[str, int]
    faults: list[Fault] = field(default_factory=list)
    lateness_s: list[float] = field(default_factory=list)
    logs: str = ""

    @property
    def missing(self) -> list[str]:
        return sorted(set(self.expected) - set(self.fired))

    @property
    def unexpected(self) -> list[str]:
        return sorted(set(self.fired) - set(self.expected))

    @property
    def lost(self) -> list[str]:
        return sorted(set(self.fired) - self.completed)

    @property
    def extra_runs(self) -> int:
        return sum(n - 1 for n in self.duplicated.values())

    def percentile(self, p: float) -> float:
        v = sorted(self.lateness_s)
        return v[min(len(v) - 1, int(p * len(v)))] if v else 0.0

    def problems(self) -> list[str]:
        out = []
        if self.missing:
            out.append(f"{len(self.missing)} slots never fired: {self.missing[:5]}")
        if self.unexpected:
            out.append(f"{len(self.unexpected)} runs outside the slots: {self.unexpected[:5]}")
        if len(self.fired) != len(set(self.fired)):
            out.append("a run id started under two slots")
        if self.runs_counter != len(self.expected):
            out.append(f"runs counter {self.runs_counter}, expected {len(self.expected)}")
        if self.fired_events != len(self.expected):
            out.append(f"{self.fired_events} 'fired' events, expected {len(self.expected)}")
        if self.lost:
            out.append(f"{len(self.lost)} runs never completed: {self.lost[:5]}")
        budget = sum(f.pel for f in self.faults)
        if self.extra_runs > budget:
            out.append(f"{self.extra_runs} repeated executions exceed what killed workers "
                       f"held ({budget})")
        return out

    def lines(self) -> list[str]:
        return [
            f"slots fired vs expected    {len(set(self.fired) & set(self.expected))} of "
            f"{len(self.expected)} (missing {len(self.missing)}, outside the window "
            f"{len(self.unexpected)}); runs counter {self.runs_counter}, 'fired' events "
            f"{self.fired_events}",
            f"worker kills               {len(self.faults)} (runs held at kills: "
            f"{sum(f.pel for f in self.faults)}); runs executed twice: {self.extra_runs}",
            f"lost runs                  {len(self.lost)}",
            f"lateness (run start - slot) p50 {self.percentile(0.5) * 1000:.1f} ms, p99 "
            f"{self.percentile(0.99) * 1000:.1f} ms, max {max(self.lateness_s, default=0) * 1000:.1f}"
            f" ms over {len(self.lateness_s)} runs",
        ]


async def run_schedule_kills(cfg: ScheduleKillConfig, workdir: Path) -> ScheduleReport:
    workdir.mkdir(parents=True, exist_ok=True)
    server = start_redis_server(directory=workdir / "redis")
    r = redis_client(server.url)
    name = "sched"
    q = Queue(name, redis_url=server.url, partitions=cfg.partitions)
    ledger = workdir / "ledger"
    ledger.mkdir(exist_ok=True)
    args = ["--vt", str(cfg.vt), "--reclaim-interval", str(cfg.reclaim_interval),
            "--sleep", str(cfg.sleep), "--concurrency", "5"]
    if cfg.partitions:
        args += ["--partitions", str(cfg.partitions)]
    pool = WorkerPool(server.url, name, ledger, args, size=cfg.workers)
    faults: list[Fault] = []
    try:
        await q.connect()
        await pool.start()
        start = datetime.fromtimestamp(int(time.time()) + 2, UTC)
        end = start + timedelta(seconds=cfg.seconds - 1)
        await q.upsert_schedule("tick", every=1.0, start_at=start, end_at=end, data={})
        expected = ["{tick}@" + slot_text(round(start.timestamp() * 1000) + i * 1000)
                    for i in range(cfg.seconds)]
        if cfg.kill_every > 0:
            rng = random.Random(13)
            while time.time() < end.timestamp():
                # kill just after a slot falls due: while the workers race to fire it
                at = int(time.time() + cfg.kill_every) + rng.uniform(0.0, 0.015)
                await anyio.sleep(max(0.0, at - time.time()))
                if time.time() >= end.timestamp():
                    break
                slot = rng.choice(pool.alive())
                faults.append(await pool.sigkill(slot, r, q.keys))
                await anyio.sleep(cfg.restart_after)
                await pool.respawn(slot)
        await poll(lambda: _ended(q), cfg.seconds + 30, 0.1, "the schedule to end")
        await poll(lambda: _drained(q), 60, 0.1, "every run to finish")
        view = read_ledger(ledger)
        first_start: dict[str, float] = {}
        for job_id, _attempt, _pid, t in view.starts:
            first_start[job_id] = min(t, first_start.get(job_id, t))
        fired = sorted(first_start)
        lateness = [first_start[j] - _slot_seconds(j) for j in fired]
        s = await q.get_schedule("tick")
        events = [e for e in await q.read_events("0-0", 10_000) if e.name == "fired"]
        return ScheduleReport(
            expected=expected, fired=fired, runs_counter=s.runs if s else -1,
            fired_events=len({e.job_id for e in events}) if len(events) == len(
                {e.job_id for e in events}) else -len(events),
            completed=view.done, duplicated=view.duplicated, faults=faults,
            lateness_s=lateness, logs=pool.logs())
    finally:
        pool.kill_all()
        await q.close()
        await r.aclose()
        server.stop()


def _slot_seconds(job_id: str) -> float:
    stamp = job_id.split("}@", 1)[1].replace("Z", "+00:00")
    return datetime.fromisoformat(stamp).timestamp()


async def _ended(q: Queue) -> bool:
    s = await q.get_schedule("tick")
    return s is not None and s.next_run_at is None


async def _drained(q: Queue) -> bool:
    c = await q.counts()
    return c["waiting"] == 0 and c["active"] == 0 and c["delayed"] == 0


__all__ = ["ScheduleKillConfig", "ScheduleReport", "run_schedule_kills"]
