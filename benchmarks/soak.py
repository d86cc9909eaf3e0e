"""Soak runs of the chaos scenarios, printing the checker's figures (docs/reliability.md).

    python -m benchmarks.soak --scenario crash --jobs 50000 --workers 4 --kill-every 2
    python -m benchmarks.soak --scenario redis-restart --jobs 20000 --kills 3

``crash`` (T1): ledger workers SIGKILLed every ``--kill-every`` s and restarted 0.5 s
later, a producer adding at ``--rate`` jobs/s, vt 3 s, reclaim sweep every 1 s.
``redis-restart`` (T2): Redis (AOF, ``appendfsync always``) killed with SIGKILL
``--kills`` times, 10 s apart, and restarted after 1 s; producer adding throughout.

The code is the CI tests' own (``tests/chaos/scenarios.py``); only the sizes differ. Run
from the repository root. Exit status 0 when every guarantee held, 1 otherwise.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import anyio

from tests.chaos.scenarios import CrashConfig, RedisRestartConfig, Report, run_crash, run_redis_restart


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.soak", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--scenario", choices=("crash", "redis-restart"), required=True)
    p.add_argument("--jobs", type=int, default=None)
    p.add_argument("--workers", type=int, default=None)
    p.add_argument("--concurrency", type=int, default=5)
    p.add_argument("--kill-every", type=float, default=2.0, help="crash: seconds between kills")
    p.add_argument("--kills", type=int, default=3, help="redis-restart: Redis kills")
    p.add_argument("--rate", type=float, default=1000.0, help="crash: producer jobs/s")
    p.add_argument("--appendfsync", default="always", help="redis-restart: always|everysec")
    p.add_argument("--keep", action="store_true", help="keep the work directory (ledgers, logs)")
    a = p.parse_args(argv)

    workdir = Path(tempfile.mkdtemp(prefix=f"streamq-soak-{a.scenario}-"))
    print(f"soak {a.scenario}: work directory {workdir}", flush=True)
    report: Report
    if a.scenario == "crash":
        cfg = CrashConfig(jobs=a.jobs or 50_000, workers=a.workers or 4,
                          concurrency=a.concurrency, kill_every=a.kill_every, add_rate=a.rate,
                          drain_timeout=600.0)
        report = anyio.run(run_crash, cfg, workdir)
        bound = cfg.vt + cfg.reclaim_interval + 1.0
        dup_budget = report.figures.pel_at_faults
    else:
        rcfg = RedisRestartConfig(jobs=a.jobs or 20_000, workers=a.workers or 4,
                                  concurrency=a.concurrency, kills=a.kills, first_kill_at=5.0,
                                  kill_spacing=10.0, appendfsync=a.appendfsync,
                                  drain_timeout=600.0)
        report = anyio.run(run_redis_restart, rcfg, workdir)
        bound = None
        dup_budget = report.figures.pel_at_faults
    for line in report.lines():
        print(line)
    problems = report.figures.problems(dup_budget=dup_budget) + report.invariants
    f = report.figures
    if bound is not None and f.reclaim_latency and max(f.reclaim_latency.values()) > bound:
        problems.append(f"longest reclaim latency (kill -> next start) "
                        f"{max(f.reclaim_latency.values()):.2f}s > vt + sweep + 1 = {bound:.1f}s")
    if "Traceback" in report.logs:
        problems.append("a worker printed a traceback (see the work directory)")
    print("verdict                    " + ("PASS" if not problems else "FAIL: " + "; ".join(problems)))
    if not a.keep and not problems:
        import shutil

        shutil.rmtree(workdir, ignore_errors=True)
    return 0 if not problems else 1


if __name__ == "__main__":
    sys.exit(main())
