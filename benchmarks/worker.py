"""``python -m benchmarks.worker SYSTEM --url ... --mode noop|io|latency|delayed ...``

One worker process of a Python system under test. It starts the system's own worker
(``start_worker`` in ``benchmarks/peers/SYSTEM.py``) with the probe as its handler,
prints ``READY``, then ``RESULT {json}`` after N jobs (or the time cap), and exits.
Runs on uvloop when it is installed.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import Any

from .common import MODES, Probe, WorkerArgs, run_async, run_probe_worker
from .peers import SYSTEMS, system_module


def parse(argv: Sequence[str] | None = None) -> WorkerArgs:
    p = argparse.ArgumentParser(prog="python -m benchmarks.worker")
    p.add_argument("system", choices=sorted(SYSTEMS))
    p.add_argument("--url", required=True)
    p.add_argument("--queue", default="bench")
    p.add_argument("--mode", choices=MODES, default="noop")
    p.add_argument("--concurrency", type=int, default=50)
    p.add_argument("--n", type=int, required=True)
    p.add_argument("--cap", type=float, default=60.0, help="seconds after the first job")
    a = p.parse_args(argv)
    return WorkerArgs(a.system, a.url, a.queue, a.mode, a.concurrency, a.n, a.cap)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse(argv)
    module: Any = system_module(args.system)

    async def start(probe: Probe) -> None:
        await module.start_worker(args, probe)

    run_async(run_probe_worker(args, start))
    return 0


if __name__ == "__main__":
    sys.exit(main())
