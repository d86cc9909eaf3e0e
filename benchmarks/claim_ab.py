"""The claim script of two engines, call by call, on one Redis: what more lanes cost.

``python -m benchmarks.claim_ab --baseline DIR [--jobs 20000] [--count 50] [--rounds 3]``

A drain's rate on a shared 2-core machine moves by tens of percent from run to run, more
than the claim's own cost changes; this measures that cost alone. Both engines'
``lua/claim.lua`` (with their ``lua/shared.lua``) are loaded into one private
redis-server; two queues are pre-filled with the same ``--jobs`` entries (~300 B
payloads), each in its engine's layout (before: three lanes; after: ten lanes and the
lane map); then claims of ``--count`` jobs alternate, one call of each engine in turn,
until both queues are drained, followed by as many claims of the emptied queues (the
idle path). Every call's own Redis time is read from the slow log (threshold 0 us), so
load on the machine hits both engines alike, call by call. Prints the median time per
claim call (and per job) of each engine and their ratio.

Layouts: ``normal`` (every job normal: lane ``normal`` in both), ``three`` (high, normal,
low in turn: both), ``ten`` (levels 1-10 in turn: after only; the before engine gets
``three``, its nearest).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .common import run_async

ROOT = Path(__file__).resolve().parents[1]
PAYLOAD = b"\x85" + b"x" * 300
GROUP = "workers"
OTHER = ("events", "delayed", "delayed:data", "paused", "limiter", "control", "moves",
         "lock:reclaim")


def script_source(tree: Path) -> str:
    """claim.lua as the engine's registry runs it: shebang, shared helpers, the file."""
    shared = (tree / "lua" / "shared.lua").read_text()
    shebang, _, body = (tree / "lua" / "claim.lua").read_text().partition("\n")
    return f"{shebang}\n{shared}{body}"


def layout(name: str, ten: bool) -> tuple[list[str], str | None, list[str]]:
    """(lanes by lane number, the lane map or None, the other claim keys) of a queue."""
    p = f"streamq:{{{name}}}:"
    suffixes = (["high", "normal", "low", "1", "3", "4", "6", "7", "9", "10"] if ten
                else ["high", "normal", "low"])
    return [p + "lane:" + s for s in suffixes], (p + "lanemap" if ten else None), \
        [p + o for o in OTHER]


async def prefill(r: Any, lanes: list[str], lane_map: str | None, spread: list[int],
                  jobs: int) -> None:
    """``jobs`` entries written round-robin to the lane numbers in ``spread``."""
    for lane in lanes:
        await r.xgroup_create(lane, GROUP, id="0", mkstream=True)
    for start in range(0, jobs, 1000):
        pipe = r.pipeline(transaction=False)
        for i in range(start, min(jobs, start + 1000)):
            n = spread[i % len(spread)]
            pipe.xadd(lanes[n], {"j": f"job-{i}", "d": PAYLOAD, "m": "3|0|0|0|2000|"})
        await pipe.execute()
    if lane_map is not None:
        for n in set(spread):
            await r.setbit(lane_map, n, 1)


async def run(args: argparse.Namespace) -> dict[str, Any]:
    from redis.asyncio import Redis

    from streamq.devredis import start_redis_server

    # lane numbers: 0 high, 1 normal, 2 low in both engines; 3-9 the other levels (after)
    spreads = {"normal": ([1], [1]), "three": ([0, 1, 2], [0, 1, 2]),
               "ten": ([0, 1, 2], [3, 0, 4, 5, 1, 6, 7, 2, 8, 9])}
    server = await asyncio.to_thread(start_redis_server)
    r = Redis.from_url(server.url)
    out: dict[str, Any] = {}
    try:
        for spread_name in args.layouts.split(","):
            before_spread, after_spread = spreads[spread_name]
            samples: dict[str, dict[str, list[float]]] = {
                "before": {"busy": [], "idle": []}, "after": {"busy": [], "idle": []}}
            for _ in range(args.rounds):
                await r.flushall()
                engines = []
                for label, tree, ten, spread in (("before", Path(args.baseline), False,
                                                  before_spread),
                                                 ("after", ROOT, True, after_spread)):
                    sha = await r.script_load(script_source(tree))
                    lanes, lane_map, other = layout(f"ab-{label}", ten)
                    await prefill(r, lanes, lane_map, spread, args.jobs)
                    keys = [*lanes, *([lane_map] if lane_map else []), *other]
                    engines.append((label, sha, keys))
                argv = [GROUP, "bench", args.count, 0, 1, 100, 0, 30_000, 3, 10_000, 65_536]
                await r.config_set("slowlog-log-slower-than", 0)
                await r.config_set("slowlog-max-len", 1_000_000)
                for phase in ("busy", "idle"):
                    await r.slowlog_reset()
                    calls = args.jobs // args.count + 1 if phase == "busy" else 200
                    for _ in range(calls):
                        for _label, sha, keys in engines:
                            await r.evalsha(sha, len(keys), *keys, *argv)
                    entries = await r.slowlog_get(1_000_000)
                    for e in entries:
                        cmd = e["command"]
                        text = cmd.decode() if isinstance(cmd, bytes) else str(cmd)
                        for label, sha, _keys in engines:
                            if text.startswith(f"EVALSHA {sha}"):
                                samples[label][phase].append(float(e["duration"]))
            await r.config_set("slowlog-log-slower-than", 10_000)
            out[spread_name] = samples
            b, a = samples["before"], samples["after"]
            print(f"{spread_name}: claim before {statistics.median(b['busy']):.0f} us, after "
                  f"{statistics.median(a['busy']):.0f} us; idle before "
                  f"{statistics.median(b['idle']):.0f} us, after {statistics.median(a['idle']):.0f} us",
                  file=sys.stderr, flush=True)
    finally:
        await r.aclose()
        await asyncio.to_thread(server.stop)
    return {"jobs": args.jobs, "count": args.count, "rounds": args.rounds, "layouts": out}


def table(doc: dict[str, Any]) -> str:
    names = {"normal": "all normal", "three": "high/normal/low",
             "ten": "levels 1-10 (before: high/normal/low)"}
    lines = [f"| claim.lua, {doc['count']} jobs per call, {doc['jobs']:,} jobs, Redis time per "
             "call (slow log, median) | before | after | ratio | per job before | after "
             "| idle call before | after | ratio |", "|---|---|---|---|---|---|---|---|---|"]
    for name, s in doc["layouts"].items():
        b, a = s["before"], s["after"]
        bb, ab = statistics.median(b["busy"]), statistics.median(a["busy"])
        bi, ai = statistics.median(b["idle"]), statistics.median(a["idle"])
        lines.append(f"| {names[name]} | {bb:.0f} us | {ab:.0f} us | {ab / bb:.2f} | "
                     f"{bb / doc['count']:.2f} us | {ab / doc['count']:.2f} us | {bi:.0f} us "
                     f"| {ai:.0f} us | {ai / bi:.2f} |")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.claim_ab", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--baseline", required=True, help="a checkout of the engine before ten levels")
    p.add_argument("--jobs", type=int, default=20_000)
    p.add_argument("--count", type=int, default=50)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--layouts", default="normal,three,ten")
    args = p.parse_args(argv)
    print(table(run_async(run(args))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
