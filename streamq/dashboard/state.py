"""What the dashboard process holds: its settings, one ``Queue`` per shown queue, the
live hub, rate meters and the list of queues. Nothing here is history: every page reads
Redis afresh.

Which queues are shown: the ``--queue`` names when given (and only those); else every
queue found in Redis by a SCAN (``streamq.discovery``) at start and again every
``--rescan`` seconds, plus any existing queue asked for by name meanwhile (its page
opened by URL), so a new queue is reachable at once and listed within a rescan.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import anyio
import structlog
from aiohttp import web

from ..connection import translate_redis_errors
from ..discovery import find_breakers, find_queues
from ..errors import ConfigError
from ..keys import QueueKeys, check_queue_name
from ..queue import Queue
from ..redact import redact_text
from ..settings import make_client
from .auth import Authority
from .config import DashboardConfig
from .hub import Hub
from .rates import RateMeter

log = structlog.get_logger("streamq.dashboard")

STATE_KEY: web.AppKey[Dashboard] = web.AppKey("streamq_dashboard")


class Dashboard:
    def __init__(self, config: DashboardConfig, redis_url: str,
                 clock: Callable[[], float] = time.monotonic,
                 wall_clock: Callable[[], float] = time.time) -> None:
        self.config = config
        self.redis_url = redis_url
        self.authority = Authority(config, wall_clock)
        self.hub = Hub(self.meter)
        self._clock = clock
        self._queues: dict[str, Queue] = {}
        self._meters: dict[str, RateMeter] = {}
        self._found: set[str] = set()
        self._stopped = anyio.Event()
        self._redis: Any = None
        self._breakers: dict[str, list[str]] = {}
        self._breakers_at = float("-inf")

    @property
    def redis(self) -> Any:
        """A client for discovery (the queues use their own)."""
        if self._redis is None:
            self._redis = make_client(self.redis_url, False)
        return self._redis

    async def start(self) -> None:
        """Check that Redis answers (one clear line if not), and find the queues."""
        probe = Queue(self.config.queues[0] if self.config.queues else "streamq",
                      redis_url=self.redis_url)
        try:
            await probe.connect()
            if self._redis is None:  # discovery's client: a cluster's when the URL names one
                self._redis = make_client(self.redis_url, probe.is_cluster)
        finally:
            await probe.close()
        if not self.config.queues:
            await self.rescan()

    async def rescan(self) -> None:
        with translate_redis_errors(self.redis_url):
            found = await find_queues(self.redis)
        self._found |= set(found)
        log.info("dashboard.queues_found", queues=len(found))

    async def run(self) -> None:
        """Background work until ``stop``: the live hub, and the periodic rescan."""
        async with anyio.create_task_group() as tg:
            tg.start_soon(self.hub.run)
            if not self.config.queues and self.config.rescan_s > 0:
                tg.start_soon(self._rescan_loop)
            await self._stopped.wait()
            self.hub.stop()
            tg.cancel_scope.cancel()

    def stop(self) -> None:
        self._stopped.set()

    async def _rescan_loop(self) -> None:
        while True:
            await anyio.sleep(self.config.rescan_s)
            try:
                await self.rescan()
            except Exception as exc:  # logged; the next rescan tries again
                log.warning("dashboard.rescan_failed", error=redact_text(str(exc)))

    async def close(self) -> None:
        self.stop()
        for q in self._queues.values():
            await q.close()
        self._queues.clear()
        if self._redis is not None:
            await self._redis.aclose()
            self._redis = None

    async def names(self) -> list[str]:
        if self.config.queues:
            return list(self.config.queues)
        return sorted(self._found)

    async def queue(self, name: str) -> Queue:
        """The shown queue ``name``; 404 for an invalid, unknown or not shown one."""
        try:
            check_queue_name(name)
        except ConfigError:
            raise web.HTTPNotFound(text=f"no queue {name[:64]!r}\n") from None
        q = self._queues.get(name)
        if q is not None:
            return q
        if self.config.queues:
            if name not in self.config.queues:
                raise web.HTTPNotFound(text=f"no queue {name!r} here\n")
        elif name not in self._found:
            k = QueueKeys(name)  # not found by the last scan: does it exist now?
            with translate_redis_errors(self.redis_url):
                exists = await self.redis.exists(*k.lanes, k.delayed, k.dead, k.schedules)
            if not exists:
                raise web.HTTPNotFound(text=f"no queue {name!r} here\n")
            self._found.add(name)
        q = self._queues.get(name)
        if q is None:
            q = Queue(name, redis_url=self.redis_url)
            await q.connect()
            self._queues[name] = q
        return q

    async def breakers_found(self) -> dict[str, list[str]]:
        """The providers with a breaker hash, per queue (``discovery.find_breakers``): a
        SCAN, so its answer is kept ``config.breaker_scan_s`` seconds (30) and only redone
        when a page asks after that."""
        if self._clock() - self._breakers_at >= self.config.breaker_scan_s:
            with translate_redis_errors(self.redis_url):
                self._breakers = await find_breakers(self.redis)
            self._breakers_at = self._clock()
        return self._breakers

    def meter(self, name: str) -> RateMeter:
        m = self._meters.get(name)
        if m is None:
            m = self._meters[name] = RateMeter()
        return m

    async def counts(self, q: Queue) -> dict[str, int]:
        counts = await q.counts()
        self.meter(q.name).observe(counts, self._clock())
        return counts

    async def counts_by_partition(self, q: Queue) -> tuple[dict[str, int], list[dict[str, int]]]:
        """The queue's counts and, for a partitioned queue, each partition's (partition 0
        first; empty for a queue of one partition). One read per partition, the totals
        added up here the way ``Queue.counts`` adds them (paused: the home's flag)."""
        if await q.partition_count() == 1:
            return await self.counts(q), []
        parts = await q.partition_counts()
        total = {name: sum(p[name] for p in parts) for name in parts[0]}
        total["paused"] = parts[0]["paused"]
        self.meter(q.name).observe(total, self._clock())
        return total, parts


def dashboard_of(request: web.Request) -> Dashboard:
    return request.app[STATE_KEY]


__all__ = ["STATE_KEY", "Dashboard", "dashboard_of"]
