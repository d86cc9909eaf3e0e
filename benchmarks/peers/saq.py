"""SAQ: ``Queue.enqueue`` and a ``saq.Worker`` process (``concurrency`` as given).

SAQ has no bulk enqueue (``map`` waits for results): "bulk" is ``enqueue`` calls run
concurrently, 100 at a time. A delayed job is ``scheduled`` at a whole epoch second
(SAQ's unit), which SAQ's scheduler polls for once a second by default.
"""

from __future__ import annotations

import asyncio
import math
import time
from typing import Any

from ..common import Probe, WorkerArgs
from .base import System, Unavailable

CONCURRENT = 100


class SaqSystem(System):
    name = "saq"
    label = "SAQ"
    bulk_note = "no bulk API: 100 concurrent enqueue calls"

    @classmethod
    def check(cls) -> None:
        try:
            import saq  # noqa: F401
        except ImportError as exc:
            raise Unavailable(f"saq is not installed ({exc}); pip install -e '.[bench]'") from None

    @classmethod
    def version(cls) -> str:
        from importlib.metadata import version

        return version("saq")

    async def open(self) -> None:
        from saq import Queue

        self.q = Queue.from_url(self.url, name=self.queue)
        await self.q.connect()

    async def close(self) -> None:
        await self.q.disconnect()

    async def add(self, payload: dict[str, Any]) -> None:
        await self.q.enqueue("noop", payload=payload)

    async def add_bulk(self, payloads: list[dict[str, Any]]) -> None:
        for start in range(0, len(payloads), CONCURRENT):
            await asyncio.gather(*(self.add(p) for p in payloads[start : start + CONCURRENT]))

    async def add_delayed(self, payload: dict[str, Any], delay_s: float) -> float:
        due = math.ceil(time.time() + delay_s)  # SAQ schedules at whole seconds
        payload["due"] = due
        await self.q.enqueue("noop", payload=payload, scheduled=due)
        return float(due)


async def start_worker(args: WorkerArgs, probe: Probe) -> None:
    from saq import Queue, Worker

    async def noop(ctx: dict[str, Any], *, payload: dict[str, Any]) -> None:
        await probe.handle(payload)

    queue = Queue.from_url(args.url, name=args.queue)
    worker = Worker(queue, functions=[("noop", noop)], concurrency=args.concurrency)  # type: ignore[list-item]
    probe.tasks.append(asyncio.get_running_loop().create_task(worker.start()))
    await asyncio.sleep(0.2)  # SAQ has no "started" hook
