"""``python -m benchmarks.partitions [--configs 1,3,3r] [--jobs 20000] [--one 2000]
[--rounds 3] [--concurrency 50] [--json out.json]``

streamq alone, over queue configurations side by side, on one private redis-server
(persistence off), in alternating rounds (each configuration once per round, Redis
flushed before each): ``enqueue_one`` (``add`` awaited one by one), ``enqueue_bulk``
(one ``add_bulk`` of ``--jobs``) and ``drain`` (one worker process, the benchmark probe as
its handler, no-op jobs, ``--concurrency``). A configuration is a partition count,
with ``r`` for a worker with a rate limit too high to bind (1e9 jobs/s): that measures
what the limiter itself costs (one-partition claims take tokens in the same call;
partitioned workers take them from the home slot in a call of their own).

CPU per job is measured too, less sensitive than rates to other load on the machine:
the producer's own CPU while enqueuing, the worker process's CPU from its first job to
its last (``time.process_time`` in the probe), and Redis's (``INFO cpu``, user + sys)
during each phase, in microseconds per job.

Prints medians (min-max) and each figure as a ratio to the first configuration's. Only
a one-partition configuration runs on a streamq without partitions, so the same file
measures an older tree too (copy it there: before/after on the same machine).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import time
from collections.abc import Sequence
from typing import Any

from .common import payloads, redis_cpu, run_async
from .peers.streamq import StreamqSystem
from .procs import WorkerProcess

HIGH_RATE = 1e9


def parse_config(text: str) -> tuple[int, float | None]:
    limited = text.endswith("r")
    n = int(text[:-1] if limited else text)
    if n < 1:
        raise ValueError(f"partition count must be >= 1: {text!r}")
    return n, (HIGH_RATE if limited else None)


def set_env(n: int, rate: float | None) -> None:
    os.environ["STREAMQ_PARTITIONS"] = str(n)
    if rate is None:
        os.environ.pop("STREAMQ_BENCH_RATE_LIMIT", None)
    else:
        os.environ["STREAMQ_BENCH_RATE_LIMIT"] = repr(rate)


async def one_round(url: str, admin: Any, n: int, rate: float | None, args: argparse.Namespace
                    ) -> dict[str, float]:
    set_env(n, rate)
    await admin.flushall()
    system = StreamqSystem(url)
    await system.start()
    try:
        one_jobs = payloads(args.one)
        cpu0, rcpu0 = time.process_time(), await redis_cpu(admin)
        one = await system.enqueue_timed(one_jobs, bulk=False)
        cpu1, rcpu1 = time.process_time(), await redis_cpu(admin)
        await system.stop()
        await admin.flushall()
        await system.start()
        bulk_jobs = payloads(args.jobs)
        cpu2, rcpu2 = time.process_time(), await redis_cpu(admin)
        bulk = await system.enqueue_timed(bulk_jobs, bulk=True)
        cpu3, rcpu3 = time.process_time(), await redis_cpu(admin)
    finally:
        await system.stop()
    proc = WorkerProcess(system.worker_command("noop", args.concurrency, args.jobs, 60.0))
    await proc.start()
    try:
        await proc.ready(60.0)
        rcpu4 = await redis_cpu(admin)
        r = await proc.result(150.0)
        rcpu5 = await redis_cpu(admin)
    finally:
        await proc.stop()
    us = 1e6
    return {"enqueue_one": args.one / one, "enqueue_bulk": args.jobs / bulk,
            "drain": r["count"] / r["elapsed_s"],
            "one_client_us": (cpu1 - cpu0) * us / args.one,
            "one_redis_us": (rcpu1 - rcpu0) * us / args.one,
            "bulk_client_us": (cpu3 - cpu2) * us / args.jobs,
            "bulk_redis_us": (rcpu3 - rcpu2) * us / args.jobs,
            "drain_worker_us": r.get("cpu_s", 0.0) * us / max(1, r["count"]),
            "drain_redis_us": (rcpu5 - rcpu4) * us / max(1, r["count"])}



async def run(args: argparse.Namespace) -> dict[str, Any]:
    from redis.asyncio import Redis

    from streamq.devredis import start_redis_server

    configs = [c.strip() for c in args.configs.split(",") if c.strip()]
    parsed = {c: parse_config(c) for c in configs}
    server = await asyncio.to_thread(start_redis_server)
    admin = Redis.from_url(server.url)
    results: dict[str, dict[str, list[float]]] = {c: {} for c in configs}
    t0 = time.monotonic()
    try:
        for rnd in range(1, args.rounds + 1):
            for c in configs:
                n, rate = parsed[c]
                values = await one_round(server.url, admin, n, rate, args)
                for k, v in values.items():
                    results[c].setdefault(k, []).append(v)
                shown = ", ".join(f"{k} {values[k]:,.0f}/s" for k in RATES)
                print(f"[{time.monotonic() - t0:5.0f}s] round {rnd} config {c}: {shown}",
                      file=sys.stderr, flush=True)
    finally:
        await admin.aclose()
        await asyncio.to_thread(server.stop)
    return {"configs": configs, "jobs": args.jobs, "one": args.one, "rounds": args.rounds,
            "concurrency": args.concurrency, "loadavg_end": os.getloadavg()[0],
            "results": results}


RATES = ("enqueue_one", "enqueue_bulk", "drain")
CPU = ("one_client_us", "one_redis_us", "bulk_client_us", "bulk_redis_us", "drain_worker_us",
       "drain_redis_us")


def table(doc: dict[str, Any]) -> str:
    configs: list[str] = doc["configs"]
    base = doc["results"][configs[0]]
    out = []
    for keys, unit, fmt in ((RATES, "jobs/s", "{:,.0f}"), (CPU, "us/job", "{:,.1f}")):
        lines = ["| config | " + " | ".join(f"{k} ({unit}) | ratio" for k in keys) + " |",
                 "|---" * (1 + 2 * len(keys)) + "|"]
        for c in configs:
            cells = []
            for k in keys:
                vals = doc["results"][c][k]
                med = statistics.median(vals)
                cells.append(fmt.format(med) + " (" + fmt.format(min(vals)) + "-"
                             + fmt.format(max(vals)) + ")")
                ref = statistics.median(base[k])
                cells.append(f"{med / ref:.2f}" if ref else "-")
            n, rate = parse_config(c)
            label = f"N={n}" + (" + rate limit" if rate else "")
            lines.append(f"| {label} | " + " | ".join(cells) + " |")
        out.append("\n".join(lines))
    return "\n\n".join(out)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.partitions", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--configs", default="1,3,3r",
                   help="comma-separated partition counts, 'r' = with a non-binding rate limit")
    p.add_argument("--jobs", type=int, default=20_000)
    p.add_argument("--one", type=int, default=2_000, help="jobs added one by one")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--concurrency", type=int, default=50)
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)
    try:
        for c in args.configs.split(","):
            parse_config(c.strip())
    except ValueError as exc:
        p.error(str(exc))
    doc = run_async(run(args))
    print(table(doc))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(doc, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
