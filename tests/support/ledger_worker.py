"""A worker process for crash and shutdown tests: each job sleeps, then is recorded.

    python -m tests.support.ledger_worker --redis-url URL --queue NAME --ledger DIR
        [--sleep 0.2] [--sleep-max 0] [--concurrency 5] [--rate-limit 0] [--vt 30]
        [--grace 30] [--max-stalled 3]
        [--consumer NAME] [--events] [--ack-first] [--block] [--exit-on-payload]
        [--partitions N] [--batch SIZE --max-wait S]

Payloads are ``{"sleep": seconds}`` maps (optional) or anything. SIGTERM/SIGINT stop
it gracefully; a second signal stops it at once.

Options for the chaos suite (tests/chaos), all off by default:
``--consumer`` names the consumer (to read its PEL); ``--events`` writes completed,
stalled and dead hooks to an ``events-*.log`` file (tests/support/chaos_ledger.py);
``--ack-first`` is a deliberately broken handler for negative controls: it acknowledges
and deletes its own stream entry *before* the work, so a crash mid-job loses the job;
``--block`` sleeps with ``time.sleep`` (the event loop, and so the heartbeat, stalls);
``--exit-on-payload`` makes a payload ``{"exit": true}`` kill the process (``os._exit``)
after its ``S`` line. ``--batch`` runs a batch handler (BatchOptions(size, max_wait)):
``S`` lines for every job of a batch, one sleep (the longest its jobs ask for), then the
``E`` lines.
"""

from __future__ import annotations

import argparse
import logging
import os
import random
import signal
import sys
import time
from typing import Any

import anyio
import structlog

from streamq import BatchOptions, Job, Queue, Worker
from streamq.keys import GROUP
from tests.support.chaos_ledger import EventWriter
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
    p.add_argument("--consumer", default=None)
    p.add_argument("--events", action="store_true")
    p.add_argument("--ack-first", action="store_true")
    p.add_argument("--block", action="store_true")
    p.add_argument("--exit-on-payload", action="store_true")
    p.add_argument("--partitions", type=int, default=None)
    p.add_argument("--batch", type=int, default=0)
    p.add_argument("--max-wait", type=float, default=0.05)
    a = p.parse_args(argv)
    # logs to stderr (a file the test chose), warnings and up: stdout carries only "ready"
    structlog.configure(
        wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING),
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
    )
    ledger = LedgerWriter(a.ledger)
    events = EventWriter(a.ledger) if a.events else None
    queue = Queue(a.queue, redis_url=a.redis_url, partitions=a.partitions)

    async def handler(job: Job) -> None:
        # the S line first: a job counts as in flight from the moment this handler has it,
        # also in --ack-first mode, where a kill between the ack and the work loses it
        ledger.start(job.id, job.attempt)
        if a.ack_first:
            # negative control only: the job leaves Redis before its work is done. Delete,
            # then ack: a kill in between leaves an orphaned pending entry, which the next
            # take-over drops; the other order would leave a delivered entry that no one
            # ever reads again and the queue would never drain.
            lane = queue.layout.keys(job.partition).lanes[job.lane]
            await queue.redis.xdel(lane, job.entry_id)
            await queue.redis.xack(lane, GROUP, job.entry_id)
        data: Any = job.data
        if a.exit_on_payload and isinstance(data, dict) and data.get("exit"):
            os._exit(3)
        delay = a.sleep
        if a.sleep_max > a.sleep:
            delay = random.uniform(a.sleep, a.sleep_max)
        if isinstance(data, dict) and "sleep" in data:
            delay = float(data["sleep"])
        if delay:
            if a.block:
                time.sleep(delay)
            else:
                await anyio.sleep(delay)
        ledger.end(job.id)

    async def batch_handler(jobs: list[Job]) -> None:
        for job in jobs:
            ledger.start(job.id, job.attempt)
        delay = max([a.sleep] + [float(j.data["sleep"]) for j in jobs
                                 if isinstance(j.data, dict) and "sleep" in j.data])
        if delay:
            await anyio.sleep(delay)
        for job in jobs:
            ledger.end(job.id)

    async def run() -> None:
        worker = Worker(queue, batch_handler if a.batch else handler,
                        batch=BatchOptions(a.batch, a.max_wait) if a.batch else None,
                        concurrency=a.concurrency,
                        rate_limit=a.rate_limit or None, burst=a.burst,
                        visibility_timeout=a.vt, reclaim_interval=a.reclaim_interval,
                        shutdown_grace=a.grace, max_stalled=a.max_stalled, name=a.consumer)
        if events is not None:
            worker.on("completed", lambda e: events.completed(e.job_id))
            worker.on("stalled", lambda e: events.stalled(e.job_id, e.stalls))
            worker.on("dead", lambda e: events.dead(e.job_id))
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
    if events is not None:
        events.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
