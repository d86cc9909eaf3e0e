"""``python -m benchmarks run [--quick] [--only NAME,...] [--rounds 3] [--jobs 20000] [--json out.json]
[--partitions N]``, ``python -m benchmarks profile`` (the streamq worker's drain under py-spy),
``python -m benchmarks.partitions`` (streamq alone over partition counts, side by side) and
``python -m benchmarks.cluster_scaleout`` (one queue on a local 3-master Redis Cluster over
partition counts: each master's share of the work).

Starts its own redis-server (persistence off) on a free loopback port and measures
streamq, each installed peer and the raw Redis Streams floor side by side. Progress
goes to stderr; the markdown table to stdout (and ``--md``), the full figures to
``--json``, a chart to ``--png`` when matplotlib is installed. Exits 1 if any
workload crashed; it asserts nothing about speed.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence

from .common import run_async
from .peers import SYSTEMS
from .report import chart, markdown, notes
from .runner import WORKLOADS, Bench, Config, Progress


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)
    r = sub.add_parser("run", help="run the benchmark suite")
    r.add_argument("--quick", action="store_true",
                   help="small N, streamq and raw only, 1 round (CI: keeps the code alive)")
    r.add_argument("--only", default="",
                   help="comma-separated systems and/or workloads: "
                   f"systems {', '.join(SYSTEMS)}; workloads {', '.join(WORKLOADS)}")
    r.add_argument("--rounds", type=int, default=None, help="alternating rounds (default 3)")
    r.add_argument("--jobs", type=int, default=None, help="N for drains and bulk enqueue "
                   "(default 20000; quick 2000)")
    r.add_argument("--cap", type=float, default=None,
                   help="seconds a drain may run after its first job (slow peers; default 15)")
    r.add_argument("--partitions", type=int, default=None,
                   help="run streamq on a queue of N partitions (its producer and workers)")
    r.add_argument("--json", default=None, help="write the full figures here")
    r.add_argument("--md", default=None, help="write the markdown table here")
    r.add_argument("--png", default=None, help="write a chart here (needs matplotlib)")
    rp = sub.add_parser("report", help="render a saved --json run again as markdown (and --png)")
    rp.add_argument("json_file")
    rp.add_argument("--png", default=None)
    pr = sub.add_parser("profile", help="profile the streamq worker's drain with py-spy")
    pr.add_argument("--jobs", type=int, default=200_000)
    pr.add_argument("--concurrency", type=int, default=50)
    pr.add_argument("--rate", type=int, default=1000, help="py-spy samples per second")
    pr.add_argument("--out", default=None, help="folder for the flame graph and stacks")
    pr.add_argument("--native", action="store_true", help="include C frames (py-spy --native)")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "report":
        with open(args.json_file) as f:
            saved = json.load(f)
        print(markdown(saved) + "\n\n" + notes(saved))
        if args.png and not chart(saved, args.png):
            print("no chart: matplotlib is not installed", file=sys.stderr)
        return 0
    if args.command == "profile":
        from .profile import main as profile_main

        return profile_main(args.jobs, args.concurrency, args.rate, args.out, args.native)
    if args.partitions is not None:
        if args.partitions < 1:
            print("benchmarks: --partitions must be >= 1", file=sys.stderr)
            return 2
        os.environ["STREAMQ_PARTITIONS"] = str(args.partitions)  # the workers inherit it
    cfg = Config.make(quick=args.quick, rounds=args.rounds, jobs=args.jobs)
    if args.cap is not None:
        cfg.cap_s = args.cap
    if cfg.rounds < 1 or cfg.jobs < 10:
        print("benchmarks: --rounds must be >= 1 and --jobs >= 10", file=sys.stderr)
        return 2
    if args.only:
        wanted = [w.strip() for w in args.only.split(",") if w.strip()]
        unknown = [w for w in wanted if w not in SYSTEMS and w not in WORKLOADS]
        if unknown:
            print(f"benchmarks: unknown --only name(s) {unknown}: systems are "
                  f"{list(SYSTEMS)}, workloads {list(WORKLOADS)}", file=sys.stderr)
            return 2
        if any(w in SYSTEMS for w in wanted):
            cfg.systems = [s for s in SYSTEMS if s in wanted]
        if any(w in WORKLOADS for w in wanted):
            cfg.workloads = [w for w in WORKLOADS if w in wanted]
    progress = Progress()
    bench = Bench(cfg, progress)
    try:
        run_async(bench.run())
    except KeyboardInterrupt:
        print("benchmarks: interrupted", file=sys.stderr)
        return 130
    doc = bench.summary()
    table = markdown(doc) + "\n\n" + notes(doc) + "\n"
    print(table)
    if args.md:
        with open(args.md, "w") as f:
            f.write(table)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(doc, f, indent=1)
    if args.png:
        if chart(doc, args.png):
            progress(f"chart written to {args.png}")
        else:
            progress("no chart: matplotlib is not installed")
    if bench.errors:
        progress(f"{len(bench.errors)} workload run(s) crashed: see ERROR lines above")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
