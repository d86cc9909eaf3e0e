"""``python -m benchmarks.priorities --baseline DIR [--jobs 20000] [--rounds 5]
[--concurrency 50] [--json out.json]``

What ten priority lanes cost a worker's claim, on one private redis-server (persistence
off): ``--jobs`` no-op jobs pre-filled and drained by one worker process
(``benchmarks/drain_worker.py``, concurrency ``--concurrency``, no rate limit), side by
side in alternating rounds (Redis flushed before each):

- **before**: the engine in ``--baseline DIR`` (a checkout from before ten levels, e.g.
  ``git archive 76ae76e | tar -x -C /tmp/before``): all jobs "normal", then spread over
  "high"/"normal"/"low";
- **after**: this checkout, the same two, and jobs spread over all ten levels.

Each process pre-fills with its own engine (its own key layout). Rates (jobs/s, first
handler start to the last return), CPU per job of the worker process and of Redis
(``INFO cpu`` between the end of the pre-fill and the result). Prints medians (min-max);
ratios are to the first configuration. With ``--baseline`` it then runs
``benchmarks/claim_ab.py``: the claim script of both engines, call by call (less
sensitive to a busy machine than a drain's rate).
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

from .common import run_async
from .procs import drain_in_tree

ROOT = Path(__file__).resolve().parents[1]
WORKER = Path(__file__).resolve().parent / "drain_worker.py"




async def drain_round(url: str, admin: Any, tree: Path, extra: Sequence[str], jobs: int,
                      concurrency: int) -> dict[str, float]:
    """One pre-fill and drain by a worker process importing the engine in ``tree``."""
    await admin.flushall()
    return await drain_in_tree(
        [sys.executable, str(WORKER), "--url", url, "--n", str(jobs),
         "--concurrency", str(concurrency), *extra], tree, admin, ready_s=300.0,
        result_s=600.0)


Config = tuple[str, Path, list[str]]


async def run_configs(configs: list[Config], args: argparse.Namespace) -> dict[str, Any]:
    from redis.asyncio import Redis

    from streamq.devredis import start_redis_server

    server = await asyncio.to_thread(start_redis_server)
    admin = Redis.from_url(server.url)
    drains: dict[str, dict[str, list[float]]] = {c[0]: {} for c in configs}
    t0 = time.monotonic()
    try:
        for rnd in range(1, args.rounds + 1):
            order = configs if rnd % 2 else list(reversed(configs))
            for label, tree, extra in order:
                values = await drain_round(server.url, admin, tree, extra, args.jobs,
                                           args.concurrency)
                for k, v in values.items():
                    drains[label].setdefault(k, []).append(v)
                print(f"[{time.monotonic() - t0:5.0f}s] round {rnd} {label}: "
                      f"{values['drain']:,.0f} jobs/s, worker {values['worker_us']:.1f} us/job, "
                      f"Redis {values['redis_us']:.1f} us/job", file=sys.stderr, flush=True)
    finally:
        await admin.aclose()
        await asyncio.to_thread(server.stop)
    return {"configs": [c[0] for c in configs], "jobs": args.jobs, "rounds": args.rounds,
            "concurrency": args.concurrency, "loadavg_end": os.getloadavg()[0],
            "drain": drains}


def _cell(vals: list[float], fmt: str) -> str:
    return (fmt.format(statistics.median(vals)) + " (" + fmt.format(min(vals)) + "-"
            + fmt.format(max(vals)) + ")")


def table(doc: dict[str, Any], title: str) -> str:
    configs: list[str] = doc["configs"]
    base = doc["drain"][configs[0]]
    lines = [f"| {title}, concurrency {doc['concurrency']}, {doc['jobs']:,} jobs | jobs/s | ratio "
             "| worker us/job | ratio | Redis us/job | ratio |",
             "|---|---|---|---|---|---|---|"]
    for c in configs:
        row = [c]
        for k, fmt in (("drain", "{:,.0f}"), ("worker_us", "{:.1f}"), ("redis_us", "{:.1f}")):
            vals = doc["drain"][c][k]
            row += [_cell(vals, fmt), f"{statistics.median(vals) / statistics.median(base[k]):.2f}"]
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.priorities", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--baseline", default=None, help="a checkout of the engine before ten levels")
    p.add_argument("--jobs", type=int, default=20_000)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--concurrency", type=int, default=50)
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)
    configs: list[Config] = []
    if args.baseline:
        before = Path(args.baseline)
        configs += [("before: all normal", before, ["--levels", "normal"]),
                    ("before: high/normal/low", before, ["--levels", "three"])]
    configs += [("after: all normal", ROOT, ["--levels", "normal"]),
                ("after: high/normal/low", ROOT, ["--levels", "three"]),
                ("after: levels 1-10", ROOT, ["--levels", "ten"])]
    doc = run_async(run_configs(configs, args))
    print(table(doc, "drain no-op"))
    if args.baseline:
        from . import claim_ab

        ab = argparse.Namespace(baseline=args.baseline, jobs=args.jobs,
                                count=args.concurrency, rounds=3, layouts="normal,three,ten")
        doc["claim_ab"] = run_async(claim_ab.run(ab))
        print()
        print(claim_ab.table(doc["claim_ab"]))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(doc, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
