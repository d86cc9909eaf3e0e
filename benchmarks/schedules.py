"""Schedules by hand: every slot exactly once under worker kills, and the lateness of a
slot with idle workers.

    python -m benchmarks.schedules                        # both, full size (~2.5 min)
    python -m benchmarks.schedules --kill-seconds 60 --workers 4
    python -m benchmarks.schedules --only lateness --idle-seconds 60

``kill``: a one-second schedule fired by ``--workers`` worker processes for
``--kill-seconds`` slots; one worker is SIGKILLed just after a slot falls due every
``--kill-every`` s and restarted 0.5 s later. Reports slots fired vs expected, runs
executed twice, lost runs. ``lateness``: the same schedule and workers with no kills
and nothing else to do; reports run start minus slot, p50/p99/max. The code is the CI
test's own (``tests/chaos/schedule_scenario.py``), at a larger size. Exit status 0 when
every slot fired exactly once, 1 otherwise.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import anyio

from tests.chaos.schedule_scenario import ScheduleKillConfig, run_schedule_kills


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.schedules", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--only", choices=("kill", "lateness"), default=None)
    p.add_argument("--workers", type=int, default=4)
    p.add_argument("--kill-seconds", type=int, default=60)
    p.add_argument("--kill-every", type=float, default=2.0)
    p.add_argument("--idle-seconds", type=int, default=60)
    p.add_argument("--partitions", type=int, default=None)
    a = p.parse_args(argv)
    ok = True
    runs = [("kill", ScheduleKillConfig(seconds=a.kill_seconds, workers=a.workers,
                                        kill_every=a.kill_every, partitions=a.partitions)),
            ("lateness", ScheduleKillConfig(seconds=a.idle_seconds, workers=a.workers,
                                            kill_every=0, sleep=0.0, partitions=a.partitions))]
    for name, cfg in runs:
        if a.only not in (None, name):
            continue
        workdir = Path(tempfile.mkdtemp(prefix=f"streamq-schedules-{name}-"))
        print(f"== {name}: {cfg.seconds} one-second slots, {cfg.workers} worker processes"
              + (f", a kill every {cfg.kill_every:g} s" if cfg.kill_every else ", idle")
              + f" (work directory {workdir})", flush=True)
        report = anyio.run(run_schedule_kills, cfg, workdir)
        print("\n".join(report.lines()))
        problems = report.problems()
        for line in problems:
            print("PROBLEM:", line)
        ok = ok and not problems
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
