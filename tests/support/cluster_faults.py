"""A fault during a drain on a local Redis Cluster: producers keep adding, two worker
processes keep draining a 3-partition queue (its partitions on three masters), and
one partition's master is SIGKILLed (``failover``) or its slot is moved to another
master (``migrate``). Then the figures.

* lost: adds that returned (the producer got its JobRef) whose job never ran to its end;
* duplicated: jobs run to their end more than once, next to ``in_flight``, the jobs the
  workers had started and not finished when the fault began, and ``concurrency``;
* add_errors: exceptions ``add`` raised to the producers (each is retried with the same
  job id, so it is not lost: an add is idempotent while the job is live), by type;
* recovery_s: from the fault's start until the partition it hit took an add again (the
  first add to that partition returning after the fault began); max_add_s: the slowest
  add of the run;
* troubles: what the producers' cluster client rode out past redis-py's own redirect
  handling (TryAgainError, ConnectionError... counts); ``server_errors``: the error
  replies the nodes sent during the run (TRYAGAIN, ASK, MOVED...: INFO errorstats), i.e.
  what the clients met and retried rather than raised.

Used by tests/cluster/test_cluster_faults.py (CI size) and by hand at larger sizes.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread

from streamq import JobOptions, Queue
from streamq.routing import partition_of
from tests.support.cluster import LocalCluster
from tests.support.ledger import read_ledger
from tests.support.util import spawn_ledger_worker, wait_until


@dataclass
class FaultConfig:
    fault: str = "failover"  # or "migrate"
    producers: int = 6
    add_interval: float = 0.02  # per producer: ~300 adds/s in all
    before_s: float = 2.0  # adding before the fault
    after_s: float = 4.0  # adding after the partition took adds again
    workers: int = 2
    concurrency: int = 10
    job_s: float = 0.02
    vt: float = 4.0
    migrate_batch: int = 10
    migrate_pause_s: float = 0.02
    drain_timeout: float = 90.0


@dataclass
class FaultReport:
    fault: str
    added: int = 0
    ran: int = 0
    lost: list[str] = field(default_factory=list)
    duplicated: dict[str, int] = field(default_factory=dict)
    in_flight: int = 0
    concurrency: int = 0
    add_errors: Counter[str] = field(default_factory=Counter)
    recovery_s: float = 0.0
    max_add_s: float = 0.0
    troubles: Counter[str] = field(default_factory=Counter)
    server_errors: Counter[str] = field(default_factory=Counter)
    fault_s: float = 0.0
    drain_s: float = 0.0
    detail: str = ""

    def lines(self) -> list[str]:
        return [
            f"cluster {self.fault}: {self.added} adds returned, {self.ran} ran; lost "
            f"{len(self.lost)}, duplicated {len(self.duplicated)} (in flight at the fault "
            f"{self.in_flight}, concurrency {self.concurrency})",
            f"  add errors seen by producers: {dict(self.add_errors) or 0}; recovery "
            f"{self.recovery_s:.2f}s; slowest add {self.max_add_s:.2f}s; the fault took "
            f"{self.fault_s:.2f}s; drained {self.drain_s:.1f}s after the last add",
            f"  ridden out by the producers' client: {dict(self.troubles) or 0}; error "
            f"replies of the nodes meanwhile: {dict(self.server_errors) or 0}",
            f"  {self.detail}",
        ]


async def run_fault(cluster: LocalCluster, queue: str, tmp: Path, cfg: FaultConfig
                    ) -> FaultReport:
    report = FaultReport(cfg.fault, concurrency=cfg.workers * cfg.concurrency)
    ledger = tmp / "ledger"
    ledger.mkdir()
    returned: dict[str, float] = {}  # job id -> when its add returned
    adds: list[tuple[str, int, float, float]] = []  # id, partition, started, returned
    stop_adding = anyio.Event()
    fault_at: list[float] = []  # monotonic
    fault_wall: list[float] = []  # the ledger's clock
    errors_before = await anyio.to_thread.run_sync(cluster.error_replies)
    async with Queue(queue, redis_url=cluster.url, partitions=3) as q:
        await q.connect()
        await q.ensure_groups()
        target = q.layout.keys(1)  # the partition the fault hits
        victim = cluster.master_of_key(target.prefix)
        procs = [spawn_ledger_worker(cluster.url, queue, ledger, "--concurrency",
                                     str(cfg.concurrency), "--sleep", str(cfg.job_s),
                                     "--vt", str(cfg.vt), "--reclaim-interval", "1")
                 for _ in range(cfg.workers)]
        try:
            async def produce(n: int) -> None:
                i = 0
                while not stop_adding.is_set():
                    job_id = f"p{n}-{i}"
                    started = time.monotonic()
                    while True:  # an add that raised is tried again: same id, idempotent
                        try:
                            await q.add({"n": n, "i": i}, JobOptions(job_id=job_id))
                            break
                        except Exception as exc:
                            report.add_errors[type(exc).__name__] += 1
                            await anyio.sleep(0.05)
                    done = time.monotonic()
                    returned[job_id] = done
                    adds.append((job_id, partition_of(job_id, 3), started, done))
                    i += 1
                    await anyio.sleep(cfg.add_interval)

            async def fault() -> None:
                await anyio.sleep(cfg.before_s)
                fault_at.append(time.monotonic())
                fault_wall.append(time.time())
                if cfg.fault == "failover":
                    cluster.kill(victim)
                    new = await anyio.to_thread.run_sync(cluster.wait_failover, victim, 60.0)
                    report.detail = (f"SIGKILLed master 127.0.0.1:{victim.port} (partition 1);"
                                     f" its replica 127.0.0.1:{new.port} took over")
                else:
                    others = [m for m in cluster.masters() if m.port != victim.port]
                    dest = others[0]

                    def pause() -> None:
                        time.sleep(cfg.migrate_pause_s)

                    moved = await anyio.to_thread.run_sync(
                        lambda: cluster.move_slot(slot_of(target.prefix), dest,
                                                  cfg.migrate_batch, pause))
                    report.detail = (f"moved slot {slot_of(target.prefix)} (partition 1, "
                                     f"{moved} keys) from 127.0.0.1:{victim.port} to "
                                     f"127.0.0.1:{dest.port} in batches of "
                                     f"{cfg.migrate_batch}")
                report.fault_s = time.monotonic() - fault_at[0]
                # keep adding for a while after the partition is back
                await wait_until(lambda: any(p == 1 and r > report.fault_s + fault_at[0]
                                             for _, p, _, r in adds), 60, 0.05,
                                 "an add to the partition after the fault")
                await anyio.sleep(cfg.after_s)
                stop_adding.set()

            async with anyio.create_task_group() as tg:
                for n in range(cfg.producers):
                    tg.start_soon(produce, n)
                tg.start_soon(fault)
            last_add = time.monotonic()
            want = set(returned)

            def finished() -> bool:
                return want <= read_ledger(ledger).done

            try:
                await wait_until(finished, cfg.drain_timeout, 0.2, "every returned add to run")
            except AssertionError:
                raise AssertionError(await _diagnose(q, want, ledger)) from None
            report.drain_s = time.monotonic() - last_add
        finally:
            for p in procs:
                p.terminate()
            for p in procs:
                try:
                    p.wait(30)
                except Exception:
                    p.kill()
                    p.wait(10)
        client: Any = q.redis
        report.troubles = Counter(getattr(client, "troubles", {}))
    # (a killed node's counts are gone with it: the failover's figures are the client's)
    report.server_errors = await anyio.to_thread.run_sync(cluster.error_replies) - errors_before
    view = read_ledger(ledger)
    t0 = fault_at[0]
    report.added = len(returned)
    report.ran = len(view.done)
    report.lost = sorted(set(returned) - view.done)
    report.duplicated = view.duplicated
    started_before = Counter(j for j, _, _, t in view.starts if t <= fault_wall[0])
    ended_before = Counter(j for j, _, t in view.ends if t <= fault_wall[0])
    report.in_flight = sum((started_before - ended_before).values())
    after = [r for _, p, s, r in adds if p == 1 and s >= t0]
    report.recovery_s = (min(after) - t0) if after else float("nan")
    report.max_add_s = max((r - s for _, _, s, r in adds), default=0.0)
    return report


async def _diagnose(q: Queue, want: set[str], ledger: Path) -> str:
    """Why the drain did not finish: the missing jobs, their states, the workers' logs."""
    missing = sorted(want - read_ledger(ledger).done)
    states = []
    for job_id in missing[:10]:
        info = await q.get_job(job_id)
        states.append(f"{job_id}(p{partition_of(job_id, 3)}): "
                      f"{info.state.value if info else None}")
    logs = " | ".join(p.read_text()[-1500:] for p in sorted(ledger.glob("worker-*.err")))
    return (f"{len(missing)} returned adds never ran: {states}; counts per partition "
            f"{await q.partition_counts()}; worker logs: {logs}")


def slot_of(key: str) -> int:
    from redis.crc import key_slot

    return key_slot(key.encode())


__all__ = ["FaultConfig", "FaultReport", "run_fault"]
