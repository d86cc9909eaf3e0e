"""streamq itself: ``Queue.add`` / ``add_bulk`` and a ``Worker`` process with ``rate_limit=None``.

``STREAMQ_PARTITIONS`` (set by ``python -m benchmarks run --partitions N``) makes the
queue a partitioned one, producer and worker alike; ``STREAMQ_BENCH_RATE_LIMIT`` gives
the worker a rate limit (jobs/s; a very high one measures the limiter's own cost).
"""

from __future__ import annotations

import os
import time
from typing import Any

from ..common import Probe, WorkerArgs
from .base import System


def partitions_from_env() -> int | None:
    raw = os.environ.get("STREAMQ_PARTITIONS", "").strip()
    return int(raw) if raw else None


def rate_limit_from_env() -> float | None:
    raw = os.environ.get("STREAMQ_BENCH_RATE_LIMIT", "").strip()
    return float(raw) if raw else None


class StreamqSystem(System):
    name = "streamq"
    label = "streamq"
    kind = "streamq"
    bulk_note = "Queue.add_bulk"

    @classmethod
    def version(cls) -> str:
        import streamq

        return streamq.__version__

    async def open(self) -> None:
        from streamq import Queue

        self.q = Queue(self.queue, redis_url=self.url, partitions=partitions_from_env())
        await self.q.connect()
        await self.q.ensure_groups()

    async def close(self) -> None:
        await self.q.close()

    async def add(self, payload: dict[str, Any]) -> None:
        await self.q.add(payload)

    async def add_bulk(self, payloads: list[dict[str, Any]]) -> None:
        await self.q.add_bulk(payloads)

    async def add_delayed(self, payload: dict[str, Any], delay_s: float) -> float:
        from streamq import JobOptions

        due = time.time() + delay_s
        payload["due"] = due
        await self.q.add(payload, JobOptions(delay=delay_s))
        return due


async def start_worker(args: WorkerArgs, probe: Probe) -> None:
    import asyncio
    import logging
    import sys

    import structlog

    from streamq import Job, Queue, Worker

    # the library never configures logging; keep its few lines off stdout (our protocol)
    structlog.configure(logger_factory=structlog.PrintLoggerFactory(sys.stderr),
                        wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))

    queue = Queue(args.queue, redis_url=args.url, partitions=partitions_from_env())
    await queue.connect()

    async def handler(job: Job) -> None:
        await probe.handle(job.data)

    worker = Worker(queue, handler, concurrency=args.concurrency,
                    rate_limit=rate_limit_from_env())
    task = asyncio.get_running_loop().create_task(worker.run())
    probe.tasks.append(task)
    while not worker.healthy and not task.done():  # noqa: ASYNC110 (no start-up event to wait on)
        await asyncio.sleep(0.005)
    if task.done():
        task.result()  # raises the worker's start-up error
