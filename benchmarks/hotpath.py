"""``python benchmarks/hotpath.py [--jobs 20000] [--rounds 5] [--job-timeout S]``

The engine's hot path alone, in one process on a private redis-server: ``add`` one by
one, ``add_bulk``, and one worker draining no-op jobs at concurrency 50 (and 5). Prints
one JSON line with the best round of each figure (best, not median: on a shared machine
other processes only ever slow a round down), and the worker's CPU time per drained job
(``drain_c50_cpu_us``: this process's CPU, which other processes' load barely moves).

To compare two trees (e.g. main and a branch) run it alternately with each on
``PYTHONPATH`` (run as a script, so the other tree needs no copy of it), several
times, on the same machine:

    for i in 1 2 3; do
      PYTHONPATH=/path/to/main python benchmarks/hotpath.py
      PYTHONPATH=.             python benchmarks/hotpath.py
    done

``--job-timeout`` gives the worker a ``job_timeout`` (trees that have per-job timeouts),
so every job runs inside its own cancel scope: the cost of the timeout itself.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import sys
import time
from collections.abc import Sequence
from typing import Any

import anyio
import structlog

from streamq import Job, Queue, Worker
from streamq.devredis import start_redis_server

PAYLOAD = {"type": "notification", "id": "n-1", "timestamp": 1732790000,
           "recipient": {"phone_number": "+254712345678", "name": "Alice"},
           "message": "x" * 90, "metadata": {"k": "v"}}


async def _drain(url: str, name: str, jobs: int, concurrency: int,
                 job_timeout: float | None) -> tuple[float, float]:
    """(jobs/s from the first handler start to the last one's, worker CPU us per job:
    this process's CPU time, less sensitive than wall time to other processes' load)."""
    async with Queue(name, redis_url=url) as q:
        for start in range(0, jobs, 5000):
            await q.add_bulk([PAYLOAD] * min(5000, jobs - start))
        done = 0
        first = last = cpu0 = cpu1 = 0.0
        finished = anyio.Event()

        async def handler(job: Job) -> None:
            nonlocal done, first, last, cpu0, cpu1
            if done == 0:
                first, cpu0 = time.perf_counter(), time.process_time()
            done += 1
            if done == jobs:
                last, cpu1 = time.perf_counter(), time.process_time()
                finished.set()

        kwargs: dict[str, Any] = {"concurrency": concurrency, "rate_limit": None}
        if job_timeout is not None:
            kwargs["job_timeout"] = job_timeout
        w = Worker(q, handler, **kwargs)
        async with anyio.create_task_group() as tg:
            tg.start_soon(w.run)
            await finished.wait()
            await w.close()
        return jobs / (last - first), (cpu1 - cpu0) / jobs * 1e6


async def _enqueue(url: str, name: str, jobs: int) -> tuple[float, float]:
    async with Queue(name, redis_url=url) as q:
        n_one = min(jobs, 2000)
        t0 = time.perf_counter()
        for _ in range(n_one):
            await q.add(PAYLOAD)
        one = n_one / (time.perf_counter() - t0)
        t0 = time.perf_counter()
        for start in range(0, jobs, 5000):
            await q.add_bulk([PAYLOAD] * min(5000, jobs - start))
        bulk = jobs / (time.perf_counter() - t0)
        return one, bulk


async def _main(jobs: int, rounds: int, job_timeout: float | None) -> dict[str, Any]:
    best: dict[str, float] = {}
    with start_redis_server() as server:
        url = server.url
        for r in range(rounds):
            one, bulk = await _enqueue(url, f"enq{r}", jobs)
            c50, c50_cpu = await _drain(url, f"d50_{r}", jobs, 50, job_timeout)
            c5, c5_cpu = await _drain(url, f"d5_{r}", jobs // 4, 5, job_timeout)
            figures = {"enqueue_one": one, "enqueue_bulk": bulk, "drain_c50": c50, "drain_c5": c5}
            for k, v in figures.items():
                best[k] = max(best.get(k, 0.0), v)
            for k, v in (("drain_c50_cpu_us", c50_cpu), ("drain_c5_cpu_us", c5_cpu)):
                best[k] = min(best.get(k, math.inf), v)
            async with Queue("x", redis_url=url) as q:
                await q.redis.flushall()  # our own private server
    return {k: round(v, 1) if k.endswith('_us') else round(v) for k, v in best.items()}


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="benchmarks/hotpath.py", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--jobs", type=int, default=20_000)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--job-timeout", type=float, default=None)
    a = p.parse_args(argv)
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    try:
        import uvloop  # noqa: F401

        options: dict[str, Any] = {"use_uvloop": True}
    except ImportError:
        options = {}
    out = anyio.run(_main, a.jobs, a.rounds, a.job_timeout, backend_options=options)
    out["job_timeout"] = a.job_timeout
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
