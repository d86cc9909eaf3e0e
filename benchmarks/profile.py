"""``python -m benchmarks profile``: where the streamq worker process spends its CPU.

Starts a private redis-server, pre-fills N no-op jobs, runs the benchmark's streamq
worker (``python -m benchmarks.worker streamq``) under ``py-spy record`` and prints the
hottest functions: self time (the function itself) and inclusive time (with what it
calls), each as a share of the worker's non-idle samples. Also writes a flame graph
(SVG) and the collapsed stacks, for a closer look.
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import sys
import tempfile
from collections import Counter
from pathlib import Path
from typing import Any

from .common import payloads
from .peers import system_class
from .procs import WorkerProcess

_LINE = re.compile(r":\d+\)$")
# stacks of the worker's start-up (imports, connecting), left out of the table
STARTUP = ("_find_and_load", "start_worker ")


def _frame_name(frame: str) -> str:
    """``handle (benchmarks/common.py:123)`` -> ``handle (benchmarks/common.py)``."""
    frame = _LINE.sub(")", frame.strip())
    for marker in ("site-packages/", "lib/python3."):
        if marker in frame:
            head, _, tail = frame.partition("(")
            tail = tail.split(marker, 1)[-1]
            if marker == "lib/python3.":
                tail = "stdlib " + tail.split("/", 1)[-1]
            frame = f"{head}({tail}"
    main = str(Path.cwd()) + "/"
    return frame.replace(main, "")


def hotspots(collapsed: str, top: int = 25) -> str:
    """A table of self and inclusive time from py-spy's raw (collapsed) output."""
    own: Counter[str] = Counter()
    incl: Counter[str] = Counter()
    total = startup = 0
    for line in collapsed.splitlines():
        stack, _, count_s = line.rpartition(" ")
        if not stack or not count_s.isdigit():
            continue
        count = int(count_s)
        frames = [_frame_name(f) for f in stack.split(";")]
        frames = [f for f in frames if not f.startswith("process ") and not f.startswith("thread ")]
        if not frames or any(f.startswith(STARTUP) for f in frames):
            startup += count
            continue
        total += count
        own[frames[-1]] += count
        for f in set(frames):
            incl[f] += count
    if total == 0:
        return "no samples"
    out = [f"{total} samples of the running worker (CPU, idle excluded; {startup} start-up "
           "samples left out)", "", "self time:", "| % | function |", "|---|---|"]
    out += [f"| {100 * c / total:.1f} | `{f}` |" for f, c in own.most_common(top)]
    out += ["", "inclusive time:", "| % | function |", "|---|---|"]
    out += [f"| {100 * c / total:.1f} | `{f}` |" for f, c in incl.most_common(top)]
    return "\n".join(out)


def commandstats(before: dict[str, Any], after: dict[str, Any], jobs: int) -> str:
    """Redis calls per job and time per call, by command, from two ``INFO commandstats``."""
    rows = []
    for key, a in after.items():
        b = before.get(key, {"calls": 0, "usec": 0})
        calls = int(a["calls"]) - int(b["calls"])
        usec = int(a["usec"]) - int(b["usec"])
        if calls > 0 and key != "cmdstat_info":
            rows.append((usec, key.removeprefix("cmdstat_"), calls))
    out = ["| command | calls | calls per job | us per call | Redis CPU us per job |",
           "|---|---|---|---|---|"]
    for usec, name, calls in sorted(rows, reverse=True):
        out.append(f"| {name} | {calls} | {calls / jobs:.3f} | {usec / calls:.1f} | {usec / jobs:.2f} |")
    return "\n".join(out)


async def profile(jobs: int, concurrency: int, rate: int, out_dir: Path, native: bool) -> str:
    from redis.asyncio import Redis

    from streamq.devredis import start_redis_server

    pyspy = shutil.which("py-spy")
    if pyspy is None:
        raise SystemExit("py-spy is not installed: pip install py-spy")
    server = await asyncio.to_thread(start_redis_server)
    admin = Redis.from_url(server.url)
    try:
        system = system_class("streamq")(server.url)
        raw = out_dir / "streamq-worker.collapsed.txt"
        argv = system.worker_command("noop", concurrency, jobs, 120.0)
        for fmt, path in (("raw", raw), ("flamegraph", out_dir / "streamq-worker.svg")):
            await admin.flushall()  # the flame graph is a second, identical run
            await system.start()
            await system.fill(payloads(jobs))
            await system.stop()
            before = await admin.info("commandstats")
            proc = WorkerProcess([pyspy, "record", "--rate", str(rate), "--format", fmt,
                                  "--output", str(path),
                                  *(["--native"] if native else ["--nonblocking"]), "--", *argv])
            await proc.start()
            try:
                await proc.ready(60)
                result = await proc.result(300)
                assert proc.proc is not None
                await asyncio.wait_for(proc.proc.wait(), 60)  # py-spy writes its file on exit
            finally:
                await proc.stop()
            if fmt == "raw":
                stats = commandstats(before, await admin.info("commandstats"), jobs)
            print(f"[profile] {fmt}: drained {result['count']} jobs at "
                  f"{result['count'] / result['elapsed_s']:,.0f} jobs/s under py-spy -> {path}",
                  file=sys.stderr)
    finally:
        await admin.aclose()
        await asyncio.to_thread(server.stop)
    return hotspots(raw.read_text()) + "\n\nRedis commands during the drain:\n" + stats


def main(jobs: int, concurrency: int, rate: int, out_dir: str | None, native: bool = False) -> int:
    from .common import run_async

    target = Path(out_dir) if out_dir else Path(tempfile.mkdtemp(prefix="streamq-profile-"))
    target.mkdir(parents=True, exist_ok=True)
    table = run_async(profile(jobs, concurrency, rate, target, native))
    print(f"streamq worker, drain of {jobs} no-op jobs at concurrency {concurrency} "
          f"(py-spy {rate} Hz; files in {target})\n")
    print(table)
    return 0 if os.path.exists(target) else 1
