"""``python -m benchmarks.cluster_scaleout [--configs single,1,3,6] [--jobs 20000]
[--rounds 3] [--concurrency 50] [--quick] [--json out.json]``

Scale-out of one queue on a local Redis Cluster of 3 masters + 3 replicas
(``tests/support/cluster.py``: six redis-server processes on free loopback ports,
persistence off), over partition counts, in alternating rounds (each configuration
once per round, every master flushed before each):

- ``enqueue_bulk``: one ``add_bulk`` of ``--jobs`` (pipelined per master);
- ``drain``: those jobs drained by one worker process (``python -m benchmarks.worker
  streamq``, no-op handler, ``--concurrency``), rate from the first handler start to
  the last return, timed in the worker;
- Redis CPU per job on each master during the drain: ``INFO cpu`` (used_cpu_sys +
  used_cpu_user) on every master before and after, divided by the jobs drained.

``single`` is the same queue (1 partition) on one standalone redis-server, for the
cost of the cluster client itself. Queue names are picked so that the N partitions
spread as evenly as the masters allow (N = 3: one per master; N = 6: two each): a
queue's N hash tags land on slots at random, so a real queue's spread depends on its
name (``python -m streamq partitions`` shows it; docs/partitions.md).

This machine has 2 cores shared by six redis-servers, the worker and the benchmark, so
wall-clock rates cannot show scaling. What the table shows instead is each master's
share of the Redis work: the busiest master's CPU per job falls as 1/N of the total
(up to the 3 masters). The extrapolation, stated as such: a master's main thread
saturates at one core, so the Redis-side ceiling of one queue is ``1e6 / busiest
master's us per job`` jobs/s, assuming its CPU per job stays as measured at that rate
(pipelining usually lowers it) and that workers and the network scale out (the worker
column says how many worker cores the ceiling needs: ceiling x worker us/job / 1e6).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import statistics
import sys
import time
from collections import Counter
from collections.abc import Sequence
from typing import Any

from .common import payloads, run_async
from .peers.streamq import StreamqSystem
from .procs import WorkerProcess


def even_name(owners: dict[int, int], partitions: int, masters: int, rng: random.Random) -> str:
    """A queue name whose partitions spread as evenly as possible over the masters."""
    from redis.crc import key_slot

    from streamq.keys import QueueKeys

    want_max = -(-partitions // masters)
    want_used = min(partitions, masters)
    while True:
        name = f"bench{rng.randrange(10**9)}"
        per = Counter(owners[key_slot(QueueKeys(name, p).prefix.encode())]
                      for p in range(partitions))
        if len(per) == want_used and max(per.values()) == want_max:
            return name


def cpu_of(port: int) -> float:
    import redis

    with redis.Redis(port=port) as c:
        info = c.info("cpu")
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


def flush(port: int) -> None:
    import redis

    with redis.Redis(port=port) as c:
        if c.info("replication")["role"] == "master":
            c.flushall()


async def one_round(url: str, masters: list[int], queue: str, partitions: int,
                    args: argparse.Namespace) -> dict[str, Any]:
    os.environ["STREAMQ_PARTITIONS"] = str(partitions)
    for port in masters:
        await asyncio.to_thread(flush, port)
    system = StreamqSystem(url, queue)
    await system.start()
    try:
        bulk = await system.enqueue_timed(payloads(args.jobs), bulk=True)
    finally:
        await system.stop()
    proc = WorkerProcess(system.worker_command("noop", args.concurrency, args.jobs, 120.0))
    await proc.start()
    try:
        await proc.ready(60.0)
        before = [await asyncio.to_thread(cpu_of, p) for p in masters]
        r = await proc.result(300.0)
        after = [await asyncio.to_thread(cpu_of, p) for p in masters]
    finally:
        await proc.stop()
    n = max(1, int(r["count"]))
    per_master = [(a - b) * 1e6 / n for a, b in zip(after, before, strict=True)]
    return {"enqueue_bulk": args.jobs / bulk, "drain": r["count"] / r["elapsed_s"],
            "worker_us": r.get("cpu_s", 0.0) * 1e6 / n, "per_master_us": per_master}


async def run(args: argparse.Namespace) -> dict[str, Any]:
    from streamq.devredis import start_redis_server
    from tests.support.cluster import start_cluster

    configs = [c.strip() for c in args.configs.split(",") if c.strip()]
    rng = random.Random(args.seed)
    cluster = await asyncio.to_thread(start_cluster)
    single = await asyncio.to_thread(start_redis_server) if "single" in configs else None
    results: dict[str, dict[str, list[Any]]] = {c: {} for c in configs}
    t0 = time.monotonic()
    try:
        owners = cluster.slot_owners()
        master_ports = sorted(set(owners.values()))
        for rnd in range(1, args.rounds + 1):
            for c in configs:
                if c == "single":
                    assert single is not None
                    url, ports, n = single.url, [single.port], 1
                else:
                    url, ports, n = cluster.url, master_ports, int(c)
                name = even_name(owners, n, len(master_ports), rng) if c != "single" else (
                    f"bench{rng.randrange(10**9)}")
                values = await one_round(url, ports, name, n, args)
                for k, v in values.items():
                    results[c].setdefault(k, []).append(v)
                print(f"[{time.monotonic() - t0:5.0f}s] round {rnd} config {c}: drain "
                      f"{values['drain']:,.0f}/s, Redis us/job per master "
                      + "/".join(f"{x:.1f}" for x in values["per_master_us"]),
                      file=sys.stderr, flush=True)
    finally:
        await asyncio.to_thread(cluster.stop)
        if single is not None:
            await asyncio.to_thread(single.stop)
    return {"configs": configs, "jobs": args.jobs, "rounds": args.rounds,
            "concurrency": args.concurrency, "masters": len(master_ports),
            "cpus": os.cpu_count(), "loadavg_end": os.getloadavg()[0], "results": results}


def _med(values: list[float]) -> float:
    return statistics.median(values)


def table(doc: dict[str, Any]) -> str:
    lines = ["| config | drain (jobs/s) | enqueue_bulk (jobs/s) | Redis us/job, all masters | "
             "per master us/job | busiest master's share | Redis ceiling (jobs/s) | "
             "worker us/job | worker cores at the ceiling |",
             "|---" * 9 + "|"]
    for c in doc["configs"]:
        r = doc["results"][c]
        per = [_med([row[i] for row in r["per_master_us"]])
               for i in range(len(r["per_master_us"][0]))]
        total = sum(per)
        busiest = max(per)
        ceiling = 1e6 / busiest if busiest > 0 else float("inf")
        worker = _med(r["worker_us"])
        label = "single Redis, N=1" if c == "single" else f"cluster, N={c}"
        lines.append(
            f"| {label} | {_med(r['drain']):,.0f} ({min(r['drain']):,.0f}-{max(r['drain']):,.0f})"
            f" | {_med(r['enqueue_bulk']):,.0f} | {total:.1f} | "
            + " / ".join(f"{x:.1f}" for x in sorted(per, reverse=True))
            + f" | {busiest / total:.2f} | {ceiling:,.0f} | {worker:.1f} | "
            f"{ceiling * worker / 1e6:.1f} |")
    return "\n".join(lines)


def notes(doc: dict[str, Any]) -> str:
    return (f"{doc['jobs']:,} no-op jobs, one worker process at concurrency "
            f"{doc['concurrency']}, medians of {doc['rounds']} alternating rounds (min-max for "
            f"the drain); {doc['masters']} masters + 3 replicas on {doc['cpus']} cores, load "
            f"{doc['loadavg_end']:.1f} at the end. Per master: the median CPU per job of "
            "each master during the drain, busiest first. Ceiling = 1e6 / busiest master's "
            "us/job: the drain rate at which that master's main thread would use a whole "
            "core, an extrapolation from CPU per job, not a measured rate.")


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.cluster_scaleout", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--configs", default="single,1,3,6",
                   help="comma-separated: single (one standalone Redis) and partition counts")
    p.add_argument("--jobs", type=int, default=20_000)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--concurrency", type=int, default=50)
    p.add_argument("--seed", type=int, default=1, help="for the queue names")
    p.add_argument("--quick", action="store_true", help="2,000 jobs, 1 round (keeps the code alive)")
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)
    if args.quick:
        args.jobs, args.rounds = 2_000, 1
    for c in args.configs.split(","):
        c = c.strip()
        if c != "single" and not (c.isdigit() and 1 <= int(c) <= 128):
            p.error(f"a config is 'single' or a partition count from 1 to 128, not {c!r}")
    doc = run_async(run(args))
    print(table(doc) + "\n\n" + notes(doc))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(doc, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
