"""``python -m benchmarks.batches [--jobs 20000] [--rounds 5] [--concurrency 50]
[--sleep 0.02] [--json out.json]``

A batch handler against a handler of one job, at the same ``--concurrency``, on one
private redis-server (persistence off), in alternating rounds (Redis flushed before
each): ``--jobs`` pre-filled jobs drained by one worker process
(``benchmarks/drain_worker.py``, no rate limit):

- **no-op**: the handler returns at once: what the engine itself costs per job
  (claims, runners, the batched completion);
- **I/O**: every handler call awaits ``--sleep`` seconds, one request: per job for the
  plain handler, per batch for the batch handler (a bulk endpoint, e.g. many SMS in one
  call).

Batch sizes 10 and 100 (``max_wait`` 0.05 s). Rates (jobs/s), CPU per job of the
worker and of Redis; medians (min-max), ratios to the plain handler of the same kind.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from collections.abc import Sequence
from typing import Any

from .common import run_async
from .priorities import ROOT, Config, run_configs, table


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.batches", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--jobs", type=int, default=20_000)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--concurrency", type=int, default=50)
    p.add_argument("--sleep", type=float, default=0.02)
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)
    docs: dict[str, Any] = {}
    for kind, sleep in (("no-op", 0.0), (f"I/O {args.sleep * 1000:g} ms per call", args.sleep)):
        extra = ["--sleep", str(sleep)]
        configs: list[Config] = [
            ("one job per call", ROOT, extra),
            ("batches of 10", ROOT, [*extra, "--batch", "10", "--max-wait", "0.05"]),
            ("batches of 100", ROOT, [*extra, "--batch", "100", "--max-wait", "0.05"]),
        ]
        doc = run_async(run_configs(configs, args))
        docs[kind] = doc
        print(table(doc, f"drain, {kind}"))
        print()
    if args.json:
        with open(args.json, "w") as f:
            json.dump(docs, f, indent=1)
    return 0 if all(statistics.median(d["drain"][c]["drain"]) > 0
                    for d in docs.values() for c in d["configs"]) else 1


if __name__ == "__main__":
    sys.exit(main())
