"""The small interface every system under test implements (streamq, the raw floor, peers).

A ``System`` is the producer side, used in the benchmark process itself, plus the
command line of its worker process. Python systems run their worker with
``python -m benchmarks.worker SYSTEM ...``, which calls the module's ``start_worker``.
"""

from __future__ import annotations

import asyncio
import sys
import time
from typing import Any, ClassVar

from ..common import Mode, WorkerArgs


class Unavailable(Exception):
    """The system cannot run here (not installed, no node...): it is skipped with this reason."""


class System:
    name: ClassVar[str] = "?"
    label: ClassVar[str] = "?"
    kind: ClassVar[str] = "peer"  # "streamq", "raw" or "peer"
    #: workloads this system cannot run, with the reason shown in the report
    unsupported: ClassVar[dict[str, str]] = {}
    #: how the "bulk" enqueue figure is obtained, shown in the report's notes
    bulk_note: ClassVar[str] = ""

    def __init__(self, url: str, queue: str = "bench") -> None:
        self.url = url
        self.queue = queue
        self.is_open = False

    @classmethod
    def check(cls) -> None:
        """Raise Unavailable with the reason when the system cannot run here."""

    @classmethod
    def version(cls) -> str:
        return ""

    async def open(self) -> None:
        """Connect the producer side (after a FLUSHALL: create groups etc. here)."""

    async def close(self) -> None:
        pass

    async def start(self) -> None:
        await self.open()
        self.is_open = True

    async def stop(self) -> None:
        if self.is_open:
            self.is_open = False
            await self.close()

    # -- producing ------------------------------------------------------------------------
    async def add(self, payload: dict[str, Any]) -> None:
        raise NotImplementedError

    async def add_bulk(self, payloads: list[dict[str, Any]]) -> None:
        raise NotImplementedError

    async def add_delayed(self, payload: dict[str, Any], delay_s: float) -> float:
        """Add a job due in ``delay_s``; return its due time (wall clock, s)."""
        raise NotImplementedError

    async def enqueue_timed(self, payloads: list[dict[str, Any]], bulk: bool) -> float:
        """Seconds to add ``payloads`` one by one (each awaited) or in bulk."""
        t0 = time.perf_counter()
        if bulk:
            await self.add_bulk(payloads)
        else:
            for p in payloads:
                await self.add(p)
        return time.perf_counter() - t0

    async def fill(self, payloads: list[dict[str, Any]]) -> None:
        await self.add_bulk(payloads)

    async def produce_steady(self, payloads: list[dict[str, Any]], rate: float) -> None:
        """Offer ``payloads`` at ``rate`` jobs/s, each stamped ``t`` (wall clock) as it goes."""
        t0 = time.perf_counter()
        for i, p in enumerate(payloads):
            wait = t0 + i / rate - time.perf_counter()
            if wait > 0:
                await asyncio.sleep(wait)
            p["t"] = time.time()
            await self.add(p)

    async def produce_delayed(self, payloads: list[dict[str, Any]], delays: list[float]) -> None:
        for p, d in zip(payloads, delays, strict=True):
            p["due"] = await self.add_delayed(p, d)

    # -- the worker process ------------------------------------------------------------------
    def worker_command(self, mode: Mode, concurrency: int, n: int, cap_s: float) -> list[str]:
        args = WorkerArgs(self.name, self.url, self.queue, mode, concurrency, n, cap_s)
        return [sys.executable, "-m", "benchmarks.worker", self.name, *args.argv()]

    def worker_env(self) -> dict[str, str]:
        return {}
