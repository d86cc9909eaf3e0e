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
    args = p.parse_args()
    try:
        import uvloop
    except ImportError:
        asyncio.run(main(args))
    else:
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            runner.run(main(args))
