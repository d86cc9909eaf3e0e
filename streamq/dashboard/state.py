"""What the dashboard process holds: its settings, one ``Queue`` per shown queue, the
live hub and rate meters. Nothing here is history: every page reads Redis afresh.

Which queues are shown: the ``--queue`` names when given (and only those), else every
name in the queue registry (``streamq.registry``: a set each ``Queue`` writes its name
to on first use), re-read every ``NAMES_TTL_S``. ``--discover`` runs one SCAN at start
to register queues that were used before the registry existed.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import structlog
from aiohttp import web

from ..connection import translate_redis_errors
from ..errors import ConfigError
from ..keys import check_queue_name
from ..queue import Queue
from ..registry import discover, known_queues
from ..settings import make_redis
from .auth import Authority
from .config import DashboardConfig
from .hub import Hub
from .rates import RateMeter

log = structlog.get_logger("streamq.dashboard")

NAMES_TTL_S = 5.0
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
        self._names: tuple[float, list[str]] | None = None
        self._redis: Any = None

    @property
    def redis(self) -> Any:
        """A client for the registry (the queues use their own)."""
        if self._redis is None:
            self._redis = make_redis(self.redis_url)
        return self._redis

    async def start(self) -> None:
        """Check that Redis answers (one clear line if not), and run discovery if asked."""
        probe = Queue(self.config.queues[0] if self.config.queues else "streamq",
                      redis_url=self.redis_url)
        try:
            await probe.connect()
        finally:
            await probe.close()
        if self.config.discover:
            with translate_redis_errors(self.redis_url):
                found = await discover(self.redis)
            log.info("dashboard.discovered", queues=len(found))

    async def close(self) -> None:
        self.hub.stop()
        for q in self._queues.values():
            await q.close()
        self._queues.clear()
        if self._redis is not None:
            await self._redis.aclose()
            self._redis = None

    async def names(self) -> list[str]:
        if self.config.queues:
            return list(self.config.queues)
        now = self._clock()
        if self._names is None or now - self._names[0] > NAMES_TTL_S:
            with translate_redis_errors(self.redis_url):
                self._names = (now, await known_queues(self.redis))
        return list(self._names[1])

    async def queue(self, name: str) -> Queue:
        """The shown queue ``name``; 404 for an invalid or unknown (not shown) one."""
        try:
            check_queue_name(name)
        except ConfigError:
            raise web.HTTPNotFound(text=f"no queue {name[:64]!r}\n") from None
        q = self._queues.get(name)
        if q is not None:
            return q
        if name not in await self.names():
            self._names = None  # it may have been registered since the last read
            if name not in await self.names():
                raise web.HTTPNotFound(text=f"no queue {name!r} here\n")
        q = self._queues.get(name)
        if q is None:
            q = Queue(name, redis_url=self.redis_url)
            await q.connect()
            self._queues[name] = q
        return q

    def meter(self, name: str) -> RateMeter:
        m = self._meters.get(name)
        if m is None:
            m = self._meters[name] = RateMeter()
        return m

    async def counts(self, q: Queue) -> dict[str, int]:
        counts = await q.counts()
        self.meter(q.name).observe(counts, self._clock())
        return counts


def dashboard_of(request: web.Request) -> Dashboard:
    return request.app[STATE_KEY]


__all__ = ["STATE_KEY", "Dashboard", "dashboard_of"]
