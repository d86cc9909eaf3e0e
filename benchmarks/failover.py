"""A failover run with its figures: how many messages went through each provider, and
how many reached two providers (must be 0).

    python -m benchmarks.failover --jobs 2000 --workers 3 --rate 100 --outage 5

SMS workers (``--provider salum,africastalking``) against the two stand-ins on loopback
and a private Redis, while Salum refuses connections for ``--outage`` seconds, a worker
is SIGKILLed and restarted, and Salum answers a few requests too late (ambiguous
timeouts). The scenario is tests/support/failover_run.py (the CI test runs it at small
N). Exit status 0 when every message completed and none reached two providers.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from dataclasses import asdict
from pathlib import Path

import anyio

from tests.support.failover_run import FailoverConfig, run_failover


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.failover", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--jobs", type=int, default=1000)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--concurrency", type=int, default=5)
    p.add_argument("--rate", type=float, default=100.0, help="queue-wide jobs/s")
    p.add_argument("--outage", type=float, default=3.0, help="seconds Salum refuses connections")
    p.add_argument("--slow", type=int, default=3, help="Salum replies that arrive too late")
    p.add_argument("--no-kill", action="store_true", help="do not SIGKILL a worker")
    p.add_argument("--json", type=Path, default=None, help="also write the figures here")
    a = p.parse_args(argv)
    cfg = FailoverConfig(jobs=a.jobs, workers=a.workers, concurrency=a.concurrency, rate=a.rate,
                         outage_s=a.outage, slow_replies=a.slow, kill=not a.no_kill,
                         drain_timeout=max(120.0, 3 * a.jobs / a.rate))
    workdir = Path(tempfile.mkdtemp(prefix="streamq-failover-"))
    print(f"failover run: work directory {workdir}", flush=True)
    figures = anyio.run(run_failover, cfg, workdir)
    for line in figures.lines():
        print(line)
    if a.json:
        a.json.write_text(json.dumps(asdict(figures), indent=2))
    ok = figures.completed == cfg.jobs and figures.dead == 0 and figures.cross_provider == 0
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
