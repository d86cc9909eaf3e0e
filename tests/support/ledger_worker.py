"""A worker process for crash and shutdown tests: each job sleeps, then is recorded.

    python -m tests.support.ledger_worker --redis-url URL --queue NAME --ledger DIR
        [--sleep 0.2] [--sleep-max 0] [--concurrency 5] [--rate-limit 0] [--vt 30]
        [--grace 30] [--max-stalled 3]

Payloads are ``{"sleep": seconds}`` maps (optional) or anything. SIGTERM/SIGINT stop
it gracefully; a second signal stops it at once.
"""

from __future__ import annotations

import argparse
import logging
import random
import signal
import sys
from typing import Any

import anyio
import structlog

from streamq import Job, Queue, Worker
from tests.support.ledger import LedgerWriter


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--redis-url", required=True)
    p.add_argument("--queue", required=True)
    p.add_argument("--ledger", required=True)
    p.add_argument("--sleep", type=float, default=0.0)
    p.add_argument("--sleep-max", type=float, default=0.0)
    p.add_argument("--concurrency", type=int, default=5)
    p.add_argument("--rate-limit", type=float, default=0.0)
    p.add_argument("--burst", type=float, default=None)
    p.add_argument("--vt", type=float, default=30.0)
    p.add_argument("--reclaim-interval", type=float, default=None)
    p.add_argument("--grace", type=float, default=30.0)
    p.add_argument("--max-stalled", type=int, default=3)
    a = p.parse_args(argv)
    # logs to stderr (a file the test chose), warnings and up: stdout carries only "ready"
    structlog.configure(
        wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING),
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
    )
    ledger = LedgerWriter(a.ledger)

    async def handler(job: Job) -> None:
        ledger.start(job.id, job.attempt)
        data: Any = job.data
        delay = a.sleep
        if a.sleep_max > a.sleep:
            delay = random.uniform(a.sleep, a.sleep_max)
        if isinstance(data, dict) and "sleep" in data:
            delay = float(data["sleep"])
        if delay:
            await anyio.sleep(delay)
        ledger.end(job.id)

    async def run() -> None:
        queue = Queue(a.queue, redis_url=a.redis_url)
        worker = Worker(queue, handler, concurrency=a.concurrency,
                        rate_limit=a.rate_limit or None, burst=a.burst,
                        visibility_timeout=a.vt, reclaim_interval=a.reclaim_interval,
                        shutdown_grace=a.grace, max_stalled=a.max_stalled)
        signals = 0

        async def watch() -> None:
            nonlocal signals
            with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as received:
                async for _ in received:
                    signals += 1
                    worker.stop(immediate=signals > 1)

        async with anyio.create_task_group() as tg:
            tg.start_soon(watch)
            print("ready", flush=True)
            await worker.run()
            tg.cancel_scope.cancel()
        await queue.close()

    anyio.run(run)
    ledger.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
