"""The cost of encryption at rest: streamq with ``encrypt=True`` vs off, side by side.

    python -m benchmarks.encryption [--jobs 20000] [--rounds 3] [--modes off,on,on+index]
                                    [--partitions N]

One private redis-server (persistence off); rounds alternate the modes (off, on,
on+index, off, ...) so machine noise hits each alike; each figure is the median of the
rounds. Per mode and round, on a fresh queue:

- enqueue single: 2,000 ``add`` calls, each awaited;
- enqueue bulk: N jobs with ``add_bulk``;
- drain: the N jobs by one in-process worker, concurrency 50, no rate limit, no-op
  handler that only touches ``job.data`` (so decryption is part of the cost); timed
  from the worker's start to the N-th handler return.

Rates are wall clock; on a busy machine they swing with the load, so the client's CPU
time per job (``time.process_time``: producer and worker run in this process; Redis's
time is not in it) is reported too: it is where encryption costs, and it is steadier.

Modes: ``off`` (no keys at all: the code path every unencrypted queue takes), ``on``
(``encrypt=True``) and ``on+index`` (also a blind index of the recipient number, as the
SMS queue has). The payload is the suite's NotificationSMS-shaped dict (~300 B), sent
to 1,000 different numbers.

To compare ``off`` with another checkout (e.g. main) run the same file against it:
``PYTHONPATH=/path/to/main python benchmarks/encryption.py --modes off``.
"""

from __future__ import annotations

import argparse
import base64
import os
import statistics
import sys
import time
import uuid
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a file: make `benchmarks` importable
    sys.path.append(str(Path(__file__).resolve().parents[1]))

import anyio

from benchmarks.common import payloads, run_async
from streamq import Job, Queue, Worker
from streamq.devredis import start_redis_server

SINGLE = 2000
NUMBERS = 1000
MODES = ("off", "on", "on+index")


def phone_terms(data: Any) -> list[str]:
    return ["e164:" + data["recipient"]["phone_number"]]


def make_queue(url: str, mode: str, partitions: int = 1) -> Queue:
    name = "enc" + uuid.uuid4().hex[:8]
    # (partitions only when asked: a checkout from before partitioned queues has no option)
    part: dict[str, Any] = {"partitions": partitions} if partitions > 1 else {}
    if mode == "off":
        return Queue(name, redis_url=url, **part)
    from streamq.crypto import KeyRing

    ring = KeyRing.parse("bench:" + base64.b64encode(os.urandom(32)).decode())
    extra: dict[str, Any] = {"blind_index": phone_terms} if mode == "on+index" else {}
    return Queue(name, redis_url=url, encrypt=True, keyring=ring, **extra, **part)


async def one_round(url: str, mode: str, n: int, partitions: int = 1) -> dict[str, float]:
    data = payloads(max(n, SINGLE))
    for i, p in enumerate(data):  # 1,000 recipients, ~20 jobs each (the index has a set each)
        p["recipient"]["phone_number"] = f"+2547{i % NUMBERS:08d}"
    out: dict[str, float] = {}
    async with make_queue(url, mode, partitions) as q:
        await q.connect()
        t0, c0 = time.perf_counter(), time.process_time()
        for p in data[:SINGLE]:
            await q.add(p)
        out["enqueue_single"] = SINGLE / (time.perf_counter() - t0)
        out["enqueue_single_cpu_us"] = (time.process_time() - c0) / SINGLE * 1e6
        lanes = ([lane for k in q.layout.all_keys() for lane in k.lanes] if partitions > 1
                 else q.keys.lanes)
        await q.redis.delete(*lanes)
        t0, c0 = time.perf_counter(), time.process_time()
        await q.add_bulk(data[:n])
        out["enqueue_bulk"] = n / (time.perf_counter() - t0)
        out["enqueue_bulk_cpu_us"] = (time.process_time() - c0) / n * 1e6

        done = 0
        finished = anyio.Event()
        seen = 0

        async def handler(job: Job) -> None:
            nonlocal done, seen
            seen += len(job.data)
            done += 1
            if done >= n:
                finished.set()

        worker = Worker(q, handler, concurrency=50, rate_limit=None)
        async with anyio.create_task_group() as tg:
            t0, c0 = time.perf_counter(), time.process_time()
            tg.start_soon(worker.run)
            with anyio.fail_after(120):
                await finished.wait()
            out["drain"] = n / (time.perf_counter() - t0)
            out["drain_cpu_us"] = (time.process_time() - c0) / n * 1e6
            await worker.close()
        await q.redis.flushdb()
    return out


async def main(args: argparse.Namespace) -> int:
    modes = [m for m in args.modes.split(",") if m]
    for m in modes:
        if m not in MODES:
            print(f"unknown mode {m!r}: use {', '.join(MODES)}", file=sys.stderr)
            return 2
    import streamq
    from streamq.logs import configure_logging

    configure_logging("console", "warning")
    print(f"streamq from {Path(streamq.__file__).parent}", file=sys.stderr)
    results: dict[str, list[dict[str, float]]] = {m: [] for m in modes}
    with start_redis_server() as proc:
        for m in modes:  # warm-up, not counted: imports, script loading, first connections
            await one_round(proc.url, m, min(args.jobs, 2000), args.partitions)
        for rnd in range(args.rounds):
            for m in modes:
                res = await one_round(proc.url, m, args.jobs, args.partitions)
                results[m].append(res)
                print(f"round {rnd + 1} {m}: " + ", ".join(f"{k} {v:,.1f}"
                                                          for k, v in res.items()),
                      file=sys.stderr)
    metrics = ("enqueue_single", "enqueue_bulk", "drain", "enqueue_single_cpu_us",
               "enqueue_bulk_cpu_us", "drain_cpu_us")
    med = {m: {k: statistics.median(r[k] for r in results[m]) for k in metrics} for m in modes}
    where = f", {args.partitions} partitions" if args.partitions > 1 else ""
    head = f"| metric (median of {args.rounds} rounds, N={args.jobs:,}{where}) | "
    head += " | ".join(modes)
    ratios = "off" in modes and len(modes) > 1
    if ratios:
        head += " | " + " | ".join(f"{m} / off" for m in modes if m != "off")
    print(head + " |")
    print("|" + "---|" * (1 + len(modes) + (len(modes) - 1 if ratios else 0)))
    for k in metrics:
        unit = "client CPU us/job" if k.endswith("_cpu_us") else "jobs/s"
        row = f"| {k.removesuffix('_cpu_us')} ({unit}) | " + " | ".join(
            f"{med[m][k]:,.1f}" if unit != "jobs/s" else f"{med[m][k]:,.0f}" for m in modes)
        if ratios:
            row += " | " + " | ".join(f"{med[m][k] / med['off'][k]:.2f}" for m in modes
                                      if m != "off")
        print(row + " |")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m benchmarks.encryption", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--jobs", type=int, default=20000, help="N for bulk enqueue and drain")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--modes", default=",".join(MODES), help="comma-separated: off,on,on+index")
    p.add_argument("--partitions", type=int, default=1,
                   help="Queue(partitions=N) for every mode (default 1: the option is not passed)")
    return p


if __name__ == "__main__":
    sys.exit(run_async(main(build_parser().parse_args())))
