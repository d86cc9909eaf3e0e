"""``python benchmarks/drain_worker.py --url URL --n N [--levels normal|three|ten]
[--concurrency 50] [--batch SIZE --max-wait S] [--sleep S]``

One streamq process for ``benchmarks/priorities.py`` and ``benchmarks/batches.py``: it
pre-fills N no-op jobs with its own engine (so a checkout with another key layout writes
its own), prints ``READY``, drains them with one worker and prints ``RESULT {json}``:
count, elapsed_s (first handler start to N-th return), cpu_s (the process's CPU over the
same span) and which streamq it imported. Run by path with the engine's checkout first on
``PYTHONPATH``; ``--levels normal`` and ``three`` use only priority names, which every
version of the engine takes; ``ten`` and ``--batch`` need priorities 1-10 and batches.

Priorities: ``normal`` all jobs at "normal"; ``three`` the jobs spread over "high",
"normal", "low" in turn; ``ten`` spread over levels 1-10 in turn.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
import time
from typing import Any

LEVELS: dict[str, list[Any]] = {"normal": ["normal"], "three": ["high", "normal", "low"],
                                "ten": list(range(1, 11))}


def payload(i: int) -> dict[str, Any]:
    """A NotificationSMS-shaped dict, ~300 B as msgpack (as benchmarks/common.py's)."""
    return {"type": "notification", "id": f"n-{i:08d}", "timestamp": 1_700_000_000 + i,
            "recipient": {"phone_number": f"+2547{i % 100_000_000:08d}", "name": "Wanjiku"},
            "message": "Your order 4411 has shipped and should arrive on Thursday. Reply STOP "
                       "to opt out.",
            "metadata": {"campaign": "orders", "locale": "en-KE", "attempt_hint": 1}}


async def main(a: argparse.Namespace) -> None:
    import structlog

    import streamq
    from streamq import Job, JobOptions, Queue, Worker

    structlog.configure(logger_factory=structlog.PrintLoggerFactory(sys.stderr),
                        wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    queue = Queue(a.queue, redis_url=a.url)
    await queue.connect()
    await queue.ensure_groups()
    levels = LEVELS[a.levels]
    await queue.add_bulk([(payload(i), JobOptions(priority=levels[i % len(levels)]))
                          for i in range(a.n)])
    count = 0
    first: float | None = None
    cpu_first = 0.0
    finished = asyncio.Event()
    end = cpu_end = 0.0

    def started() -> None:
        nonlocal first, cpu_first
        if first is None:
            first, cpu_first = time.perf_counter(), time.process_time()

    def returned(n: int) -> None:
        nonlocal count, end, cpu_end
        count += n
        if count >= a.n and not finished.is_set():
            end, cpu_end = time.perf_counter(), time.process_time()
            finished.set()

    async def handler(job: Job) -> None:
        started()
        if a.sleep:
            await asyncio.sleep(a.sleep)  # one request per job
        returned(1)

    async def batch_handler(jobs: list[Job]) -> None:
        started()
        if a.sleep:
            await asyncio.sleep(a.sleep)  # one request per batch (a bulk endpoint)
        returned(len(jobs))

    if a.claim_cost:
        print("READY", flush=True)
        print("RESULT " + json.dumps({**await claim_cost(queue, Worker(queue, handler,
                                                                      rate_limit=None), a),
                                      "streamq": streamq.__file__}), flush=True)
        await queue.close()
        return
    if a.batch:
        from streamq import BatchOptions  # type: ignore[attr-defined,unused-ignore]

        worker = Worker(queue, batch_handler, concurrency=a.concurrency, rate_limit=None,
                        batch=BatchOptions(size=a.batch, max_wait=a.max_wait))
    else:
        worker = Worker(queue, handler, concurrency=a.concurrency, rate_limit=None)
    print("READY", flush=True)
    task = asyncio.get_running_loop().create_task(worker.run())
    await finished.wait()
    await worker.close()
    await task
    await queue.close()
    assert first is not None
    print("RESULT " + json.dumps({"count": count, "elapsed_s": end - first,
                                  "cpu_s": cpu_end - cpu_first,
                                  "streamq": streamq.__file__}), flush=True)


async def claim_cost(queue: Any, worker: Any, a: argparse.Namespace) -> dict[str, Any]:
    """Redis time of the claim script alone (``INFO commandstats``): claims of
    ``--concurrency`` jobs until the pre-fill is taken, then as many claims on the empty
    queue (the idle path: what a woken worker pays when nothing is left)."""
    r = queue.redis

    async def evalsha_us() -> tuple[int, float]:
        info = await r.info("commandstats")
        st = info.get("cmdstat_evalsha", {"calls": 0, "usec": 0})
        return int(st["calls"]), float(st["usec"])

    await r.config_resetstat()
    calls = 0
    t0 = time.perf_counter()
    while await worker.claim_now(a.concurrency):
        calls += 1
    busy_wall = time.perf_counter() - t0
    n_busy, us_busy = await evalsha_us()
    await r.config_resetstat()
    for _ in range(max(1, calls)):
        await worker.claim_now(a.concurrency)
    n_idle, us_idle = await evalsha_us()
    return {"count": a.n, "claims": calls, "claim_us": us_busy / max(1, n_busy),
            "claim_us_per_job": us_busy / max(1, a.n), "busy_wall_s": busy_wall,
            "idle_claim_us": us_idle / max(1, n_idle)}


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("--url", required=True)
    p.add_argument("--queue", default="bench")
    p.add_argument("--n", type=int, required=True)
    p.add_argument("--levels", choices=tuple(LEVELS), default="normal")
    p.add_argument("--concurrency", type=int, default=50)
    p.add_argument("--batch", type=int, default=0, help="batch size (0: a handler per job)")
    p.add_argument("--max-wait", type=float, default=0.05)
    p.add_argument("--sleep", type=float, default=0.0,
                   help="seconds each handler call awaits (a request: per job, or per batch)")
    p.add_argument("--claim-cost", action="store_true",
                   help="time the claim script instead of draining (claim_cost)")
    args = p.parse_args()
    try:
        import uvloop
    except ImportError:
        asyncio.run(main(args))
    else:
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            runner.run(main(args))
