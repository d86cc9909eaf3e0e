"""What the completed-jobs index costs the drain: the same drain with the index on and off.

    python -m benchmarks.completed_index [--jobs 20000] [--rounds 5] [--concurrency 50]

The completed index (``QueueKeys.completed_index``, a capped sorted set written by
``lua/complete.lua``) lets the dashboard list completed jobs. This drains N pre-filled
no-op jobs with one in-process worker, alternating ``completed_index_max=10000`` (the
default) and ``0`` (no index) round after round on one private Redis, and reports the
median drain rate and the Redis CPU time per job (``INFO cpu``, which the client side's
noise does not touch) of each, with their ratio. Nothing is asserted.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from typing import Any

import anyio

from streamq import Job, Queue, QueueDefaults, Worker, WorkerEvent
from streamq.devredis import start_redis_server

from .common import payloads


async def redis_cpu(q: Queue) -> float:
    info: Any = await q.redis.info("cpu")
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


async def drain_once(url: str, name: str, n: int, index_max: int, concurrency: int
                     ) -> tuple[float, float]:
    """(jobs/s, Redis CPU microseconds per job) of one drain."""
    q = Queue(name, redis_url=url, defaults=QueueDefaults(completed_index_max=index_max))
    await q.ensure_groups()
    data = payloads(n)
    await q.add_bulk(data)
    done = anyio.Event()
    recorded = 0

    async def handler(job: Job) -> None:
        return None

    def on_completed(event: WorkerEvent) -> None:  # after the complete script recorded it
        nonlocal recorded
        recorded += 1
        if recorded == n:
            done.set()

    worker = Worker(q, handler, concurrency=concurrency, rate_limit=None)
    worker.on("completed", on_completed)
    cpu0 = await redis_cpu(q)
    t0 = time.perf_counter()
    async with anyio.create_task_group() as tg:
        tg.start_soon(worker.run)
        await done.wait()
        t1 = time.perf_counter()
        await worker.close()
    cpu1 = await redis_cpu(q)
    await q.redis.flushall()
    await q.close()
    return n / (t1 - t0), (cpu1 - cpu0) / n * 1e6


async def main(n: int, rounds: int, concurrency: int) -> None:
    with start_redis_server() as proc:
        results: dict[str, list[tuple[float, float]]] = {"index on": [], "index off": []}
        for r in range(rounds):
            for label, index_max in (("index on", 10_000), ("index off", 0)):
                rate, cpu = await drain_once(proc.url, f"bench{r}{index_max}", n, index_max,
                                             concurrency)
                results[label].append((rate, cpu))
                print(f"round {r + 1} {label}: {rate:,.0f} jobs/s, Redis {cpu:.1f} us/job",
                      file=sys.stderr)
        med = {k: (statistics.median(x[0] for x in v), statistics.median(x[1] for x in v))
               for k, v in results.items()}
        on, off = med["index on"], med["index off"]
        print(f"| N={n:,}, concurrency {concurrency}, {rounds} rounds | drain (jobs/s) | "
              "Redis CPU per job (us) |")
        print("|---|---|---|")
        print(f"| index on (10,000) | {on[0]:,.0f} | {on[1]:.1f} |")
        print(f"| index off | {off[0]:,.0f} | {off[1]:.1f} |")
        print(f"| on / off | {on[0] / off[0]:.3f} | {on[1] / off[1]:.3f} |")


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--jobs", type=int, default=20_000)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--concurrency", type=int, default=50)
    a = p.parse_args()
    anyio.run(main, a.jobs, a.rounds, a.concurrency)
