"""taskiq with taskiq-redis's Redis Streams broker (``RedisStreamBroker``).

Producer: ``task.kiq(payload)``; no bulk API, so "bulk" is ``kiq`` calls run
concurrently, 100 at a time. Worker: taskiq's receiver run programmatically in one
process (``run_receiver_task``, ``max_async_tasks`` = concurrency), as ``taskiq worker``
runs it in each of its processes. The consumer group reads from ``0`` (not taskiq's
default ``$``) so that jobs added before the worker starts are seen. The broker has no
delayed jobs of its own (they need taskiq's separate scheduler process).
"""

from __future__ import annotations

import asyncio
from typing import Any

from ..common import Probe, WorkerArgs
from .base import System, Unavailable

CONCURRENT = 100


def make_broker(url: str, queue: str, probe: Probe | None = None) -> tuple[Any, Any]:
    from taskiq_redis import RedisStreamBroker

    broker = RedisStreamBroker(url, queue_name=queue, consumer_id="0")

    @broker.task(task_name="noop")
    async def noop(payload: dict[str, Any]) -> None:
        if probe is not None:
            await probe.handle(payload)

    return broker, noop


class TaskiqSystem(System):
    name = "taskiq"
    label = "taskiq-redis (streams)"
    bulk_note = "no bulk API: 100 concurrent kiq calls"
    unsupported = {"delayed": "no delayed jobs in the broker (needs taskiq's scheduler)"}

    @classmethod
    def check(cls) -> None:
        try:
            import taskiq  # noqa: F401
            import taskiq_redis  # noqa: F401
        except ImportError as exc:
            raise Unavailable(f"taskiq/taskiq-redis not installed ({exc}); "
                              "pip install -e '.[bench]'") from None

    @classmethod
    def version(cls) -> str:
        from importlib.metadata import version

        return f"taskiq {version('taskiq')}, taskiq-redis {version('taskiq-redis')}"

    async def open(self) -> None:
        self.broker, self.task = make_broker(self.url, self.queue)
        await self.broker.startup()  # creates the consumer group

    async def close(self) -> None:
        await self.broker.shutdown()

    async def add(self, payload: dict[str, Any]) -> None:
        await self.task.kiq(payload)

    async def add_bulk(self, payloads: list[dict[str, Any]]) -> None:
        for start in range(0, len(payloads), CONCURRENT):
            await asyncio.gather(*(self.add(p) for p in payloads[start : start + CONCURRENT]))


async def start_worker(args: WorkerArgs, probe: Probe) -> None:
    from taskiq.api import run_receiver_task

    broker, _ = make_broker(args.url, args.queue, probe)
    await broker.startup()
    probe.tasks.append(asyncio.get_running_loop().create_task(
        run_receiver_task(broker, max_async_tasks=args.concurrency, run_startup=False)))
    await asyncio.sleep(0.1)
