"""arq: ``ArqRedis.enqueue_job`` and an ``arq.worker.Worker`` process (``max_jobs`` = concurrency).

arq has no bulk API: "bulk" is ``enqueue_job`` calls run concurrently, 100 at a time.
Its worker polls (``poll_delay`` 0.5 s by default), which its latency figures show; it
keeps results (``keep_result`` 3600 s by default). Both defaults are kept: that is arq
as deployed.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from ..common import Probe, WorkerArgs
from .base import System, Unavailable

CONCURRENT = 100


class ArqSystem(System):
    name = "arq"
    label = "arq"
    bulk_note = "no bulk API: 100 concurrent enqueue_job calls"

    @classmethod
    def check(cls) -> None:
        try:
            import arq  # noqa: F401
        except ImportError as exc:
            raise Unavailable(f"arq is not installed ({exc}); pip install -e '.[bench]'") from None

    @classmethod
    def version(cls) -> str:
        from importlib.metadata import version

        return version("arq")

    async def open(self) -> None:
        from arq import create_pool
        from arq.connections import RedisSettings

        settings = RedisSettings.from_dsn(self.url)
        settings.max_connections = CONCURRENT + 10
        self.pool = await create_pool(settings)

    async def close(self) -> None:
        await self.pool.aclose()

    async def add(self, payload: dict[str, Any]) -> None:
        await self.pool.enqueue_job("noop", payload, _queue_name=self.queue)

    async def add_bulk(self, payloads: list[dict[str, Any]]) -> None:
        for start in range(0, len(payloads), CONCURRENT):
            await asyncio.gather(*(self.add(p) for p in payloads[start : start + CONCURRENT]))

    async def add_delayed(self, payload: dict[str, Any], delay_s: float) -> float:
        due = time.time() + delay_s
        payload["due"] = due
        await self.pool.enqueue_job("noop", payload, _queue_name=self.queue, _defer_by=delay_s)
        return due


async def start_worker(args: WorkerArgs, probe: Probe) -> None:
    from arq import func
    from arq.connections import RedisSettings
    from arq.worker import Worker

    async def noop(ctx: dict[str, Any], payload: dict[str, Any]) -> None:
        await probe.handle(payload)

    worker = Worker(functions=[func(noop, name="noop")], queue_name=args.queue,
                    redis_settings=RedisSettings.from_dsn(args.url), max_jobs=args.concurrency,
                    handle_signals=False)
    probe.tasks.append(asyncio.get_running_loop().create_task(worker.main()))
    await asyncio.sleep(0.2)  # arq has no "started" hook; its first poll follows at once
