"""Run the dashboard in the test's event loop on a free loopback port."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import aiohttp
from aiohttp import web

from streamq.dashboard.app import create_app
from streamq.dashboard.config import DashboardConfig
from streamq.dashboard.state import Dashboard

VIEWER = "viewer-test-token-0123456789abcdef"
OPERATOR = "operator-test-token-0123456789abcdef"
TOKENS = {"STREAMQ_DASHBOARD_TOKENS": f"viewer:{VIEWER},operator:{OPERATOR}"}


BUILD_OPTIONS = ("session_hours", "allowed_origins", "secure_cookies", "rescan_s")


@dataclass
class Running:
    url: str
    dashboard: Dashboard

    @property
    def origin(self) -> str:
        return self.url


@asynccontextmanager
async def running_dashboard(redis_url: str, *, queues: Sequence[str] = (),
                            env: Mapping[str, str] = TOKENS, insecure_local: bool = False,
                            clock: Callable[[], float] | None = None,
                            **options: Any) -> AsyncIterator[Running]:
    built = {k: options.pop(k) for k in BUILD_OPTIONS if k in options}
    config = DashboardConfig.build(env=env, host="127.0.0.1", port=0, queues=queues,
                                   insecure_local=insecure_local, **built)
    config = dataclasses.replace(config, **options)  # sse_buffer, page_size, ...
    dash = Dashboard(config, redis_url, **({"wall_clock": clock} if clock else {}))
    runner = web.AppRunner(create_app(dash))
    await runner.setup()
    try:
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = runner.addresses[0][1]
        yield Running(f"http://127.0.0.1:{port}", dash)
    finally:
        await runner.cleanup()


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def login(session: aiohttp.ClientSession, base: str, token: str) -> str:
    """Log in through the form; returns the CSRF token of the session's pages."""
    async with session.post(base + "/login", data={"token": token, "next": "/"},
                            headers={"Origin": base}, allow_redirects=False) as r:
        assert r.status == 303, await r.text()
    return await csrf_of(session, base)


async def csrf_of(session: aiohttp.ClientSession, base: str, path: str = "/") -> str:
    async with session.get(base + path, headers={"Accept": "text/html"}) as r:
        text = await r.text()
        assert r.status == 200, text
    marker = 'name=csrf-token content="'
    start = text.index(marker) + len(marker)
    return text[start:text.index('"', start)]
