"""``python -m benchmarks.workflows [--baseline DIR] [--jobs 20000] [--rounds 5]
[--concurrency 50] [--children 1000] [--flow-rounds 3] [--json out.json]``

What stored results and flows cost, on one private redis-server (persistence off):

1. **Drain with results on, flows unused**, side by side in alternating rounds (Redis
   flushed before each): ``--jobs`` pre-filled no-op jobs drained by one worker process
   (``benchmarks/workflows_worker.py``, concurrency ``--concurrency``), whose handler
   returns nothing, or a small dict like the SMS dispatcher's (provider, message id,
   encoding, segments). ``--baseline DIR`` adds the same drain by the engine in DIR (a
   checkout from before results were stored: ``git worktree add /tmp/before integ2``),
   its worker importing that engine; its handler returns the dict too (which that engine
   drops). Rates (jobs/s), and CPU per job of the worker and of Redis (``INFO cpu``).
2. **A flow of ``--children`` children** (this engine, in-process worker idle at the
   same concurrency): the time ``add_flow`` takes, the time from its return until the
   parent's handler starts (every child run and completed, the parent released), and
   the same worker draining as many plain jobs plus one (``add_bulk``; until the last
   starts) for comparison; Redis CPU of each.

Prints medians (min-max); ratios are to the first drain configuration.
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
from pathlib import Path
from typing import Any

from .common import payloads, redis_cpu, run_async
from .procs import drain_in_tree

ROOT = Path(__file__).resolve().parents[1]
WORKER = Path(__file__).resolve().parent / "workflows_worker.py"



async def drain_round(url: str, admin: Any, tree: Path, returns: str,
                      args: argparse.Namespace) -> dict[str, float]:
    from streamq import Queue

    await admin.flushall()
    async with Queue("bench", redis_url=url) as q:
        await q.ensure_groups()
        await q.add_bulk(payloads(args.jobs))
    return await drain_in_tree(
        [sys.executable, str(WORKER), "--url", url, "--n", str(args.jobs),
         "--concurrency", str(args.concurrency), "--returns", returns], tree, admin,
        ready_s=60.0, result_s=300.0)



async def flow_round(url: str, admin: Any, args: argparse.Namespace) -> dict[str, float]:
    import anyio

    from streamq import FlowJob, Job, Queue, Worker

    await admin.flushall()
    n = args.children
    out: dict[str, float] = {}
    async with Queue("flow", redis_url=url) as q:
        await q.ensure_groups()
        started: dict[str, float] = {}
        last = anyio.Event()
        expected = {"plain-last"}

        async def handler(job: Job) -> Any:
            if job.id in expected:
                started[job.id] = time.perf_counter()
                last.set()
            return {"id": job.id}

        worker = Worker(q, handler, concurrency=args.concurrency, rate_limit=None)
        async with anyio.create_task_group() as tg:
            tg.start_soon(worker.run)
            while not worker.healthy:  # noqa: ASYNC110 (no start-up event)
                await anyio.sleep(0.005)
            # plain jobs first: n + 1, until the last one starts
            c0 = await redis_cpu(admin)
            t0 = time.perf_counter()
            items = [({"i": i}, None) for i in range(n)]
            await q.add_bulk(items)
            from streamq import JobOptions

            await q.add({"i": n}, JobOptions(job_id="plain-last", priority="low"))
            await last.wait()
            out["plain_until_last_s"] = started["plain-last"] - t0
            await _idle(q)
            out["plain_redis_us"] = (await redis_cpu(admin) - c0) * 1e6 / (n + 1)
            # the flow
            last = anyio.Event()
            expected = {"parent"}
            tree = FlowJob(data={"report": True}, options=JobOptions(job_id="parent"),
                           children=[FlowJob(data={"i": i}) for i in range(n)])
            c0 = await redis_cpu(admin)
            t0 = time.perf_counter()
            await q.add_flow(tree, on_child_failure="fail")
            t1 = time.perf_counter()
            c1 = await redis_cpu(admin)
            await last.wait()
            out["add_flow_s"] = t1 - t0
            out["add_flow_redis_us"] = (c1 - c0) * 1e6 / (n + 1)
            out["until_parent_s"] = started["parent"] - t1
            await _idle(q)
            out["flow_redis_us"] = (await redis_cpu(admin) - c1) * 1e6 / (n + 1)
            await worker.close()
            tg.cancel_scope.cancel()
    return out


async def _idle(q: Any) -> None:
    while True:
        c = await q.counts()
        if not (c["waiting"] or c["active"] or c["delayed"]):
            return
        await asyncio.sleep(0.01)


async def run(args: argparse.Namespace) -> dict[str, Any]:
    from redis.asyncio import Redis

    from streamq.devredis import start_redis_server

    configs: list[tuple[str, Path, str]] = []
    if args.baseline:
        configs.append(("before (baseline), handler returns a dict", Path(args.baseline), "dict"))
    configs += [("after, handler returns None", ROOT, "none"),
                ("after, handler returns a dict (stored)", ROOT, "dict")]
    server = await asyncio.to_thread(start_redis_server)
    admin = Redis.from_url(server.url)
    drains: dict[str, dict[str, list[float]]] = {c[0]: {} for c in configs}
    flows: dict[str, list[float]] = {}
    t0 = time.monotonic()
    try:
        for rnd in range(1, args.rounds + 1):
            order = configs if rnd % 2 else list(reversed(configs))
            for label, tree, returns in order:
                values = await drain_round(server.url, admin, tree, returns, args)
                for k, v in values.items():
                    drains[label].setdefault(k, []).append(v)
                print(f"[{time.monotonic() - t0:5.0f}s] round {rnd} {label}: "
                      f"{values['drain']:,.0f} jobs/s, Redis {values['redis_us']:.1f} us/job",
                      file=sys.stderr, flush=True)
        for rnd in range(1, args.flow_rounds + 1):
            values = await flow_round(server.url, admin, args)
            for k, v in values.items():
                flows.setdefault(k, []).append(v)
            print(f"[{time.monotonic() - t0:5.0f}s] flow round {rnd}: " +
                  ", ".join(f"{k} {v:.3f}" for k, v in values.items()), file=sys.stderr,
                  flush=True)
    finally:
        await admin.aclose()
        await asyncio.to_thread(server.stop)
    return {"configs": [c[0] for c in configs], "jobs": args.jobs, "rounds": args.rounds,
            "concurrency": args.concurrency, "children": args.children,
            "loadavg_end": os.getloadavg()[0], "drain": drains, "flow": flows}


def _cell(vals: list[float], fmt: str) -> str:
    return (fmt.format(statistics.median(vals)) + " (" + fmt.format(min(vals)) + "-"
            + fmt.format(max(vals)) + ")")


def tables(doc: dict[str, Any]) -> str:
    configs: list[str] = doc["configs"]
    base = doc["drain"][configs[0]]
    lines = [f"| drain, concurrency {doc['concurrency']}, {doc['jobs']:,} jobs | jobs/s | ratio "
             "| worker us/job | ratio | Redis us/job | ratio |",
             "|---|---|---|---|---|---|---|"]
    for c in configs:
        row = [c]
        for k, fmt in (("drain", "{:,.0f}"), ("worker_us", "{:.1f}"), ("redis_us", "{:.1f}")):
            vals = doc["drain"][c][k]
            row += [_cell(vals, fmt), f"{statistics.median(vals) / statistics.median(base[k]):.2f}"]
        lines.append("| " + " | ".join(row) + " |")
    out = "\n".join(lines)
    if doc["flow"]:
        f = doc["flow"]
        n = doc["children"]
        out += "\n\n" + "\n".join([
            f"| a flow of {n:,} children (one queue) | median (min-max) |", "|---|---|",
            f"| add_flow (s) | {_cell(f['add_flow_s'], '{:.3f}')} |",
            f"| Redis CPU of add_flow (us per job) | {_cell(f['add_flow_redis_us'], '{:.1f}')} |",
            f"| add_flow returned -> parent starts (s) | {_cell(f['until_parent_s'], '{:.3f}')} |",
            f"| Redis CPU until the parent ran (us per job) | "
            f"{_cell(f['flow_redis_us'], '{:.1f}')} |",
            f"| for comparison: {n + 1:,} plain jobs, add_bulk -> last one starts (s) | "
            f"{_cell(f['plain_until_last_s'], '{:.3f}')} |",
            f"| Redis CPU of the plain jobs (us per job) | "
            f"{_cell(f['plain_redis_us'], '{:.1f}')} |"])
    return out


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.workflows", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--baseline", default=None, help="a checkout of the engine before results")
    p.add_argument("--jobs", type=int, default=20_000)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--concurrency", type=int, default=50)
    p.add_argument("--children", type=int, default=1000)
    p.add_argument("--flow-rounds", type=int, default=3)
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)
    doc = run_async(run(args))
    print(tables(doc))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(doc, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
