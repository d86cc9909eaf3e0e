"""BullMQ's Python port: ``Queue.add`` / ``addBulk`` and a ``bullmq.Worker`` process.

Job records are kept as BullMQ keeps them by default (no ``removeOnComplete``).
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from ..common import Probe, WorkerArgs
from .base import System, Unavailable

BULK_CHUNK = 1000


class BullmqSystem(System):
    name = "bullmq"
    label = "BullMQ (Python)"
    bulk_note = "Queue.addBulk, 1,000 per call"

    @classmethod
    def check(cls) -> None:
        try:
            import bullmq  # noqa: F401
        except ImportError as exc:
            raise Unavailable(f"bullmq is not installed ({exc}); pip install -e '.[bench]'") from None

    @classmethod
    def version(cls) -> str:
        from importlib.metadata import version

        return version("bullmq")

    async def open(self) -> None:
        from bullmq import Queue

        self.q = Queue(self.queue, {"connection": self.url})

    async def close(self) -> None:
        await self.q.close()

    async def add(self, payload: dict[str, Any]) -> None:
        await self.q.add("noop", payload)

    async def add_bulk(self, payloads: list[dict[str, Any]]) -> None:
        for start in range(0, len(payloads), BULK_CHUNK):
            await self.q.addBulk([{"name": "noop", "data": p}
                                  for p in payloads[start : start + BULK_CHUNK]])

    async def add_delayed(self, payload: dict[str, Any], delay_s: float) -> float:
        due = time.time() + delay_s
        payload["due"] = due
        await self.q.add("noop", payload, {"delay": round(delay_s * 1000)})
        return due


async def start_worker(args: WorkerArgs, probe: Probe) -> None:
    from bullmq import Worker

    async def process(job: Any, token: str) -> None:
        await probe.handle(job.data)

    worker = Worker(args.queue, process, {"connection": args.url, "concurrency": args.concurrency})
    probe.tasks.append(worker)
    await asyncio.sleep(0.2)  # the worker starts itself (autorun); no "started" hook
