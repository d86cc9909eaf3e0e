"""The aiohttp application: middlewares, the pages' routes, static files, lifecycle."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from importlib import resources
from pathlib import Path

from aiohttp import web

from ..errors import ConfigError, JobIdError, PayloadError, QueueFull, RedisUnavailable, StreamqError
from ..redact import redact_text
from .auth import make_middleware, maybe_identity
from .pages import PAGES
from .pages.login import login_form
from .render import esc, page
from .state import STATE_KEY, Dashboard


def static_dir() -> Path:
    return Path(str(resources.files("streamq.dashboard").joinpath("static")))


async def _login_page(request: web.Request) -> web.StreamResponse:
    return login_form(request)


@web.middleware
async def errors_middleware(request: web.Request, handler: object) -> web.StreamResponse:
    """streamq's errors while serving a page: one line, not a traceback. Bad input (a
    malformed id, cursor or setting) is 400, Redis trouble 503."""
    try:
        return await handler(request)  # type: ignore[operator, no-any-return]
    except StreamqError as exc:
        text = redact_text(str(exc))
        status = 503 if isinstance(exc, RedisUnavailable | QueueFull) else (
            400 if isinstance(exc, ConfigError | JobIdError | PayloadError) else 500)
        if "text/html" in request.headers.get("Accept", "") and maybe_identity(request):
            title = "Unavailable" if status == 503 else "Error"
            return page(request, title.lower(), f"<h1>{title}</h1><p class=error>{esc(text)}</p>",
                        status=status)
        return web.Response(status=status, text=text + "\n")


def create_app(dashboard: Dashboard) -> web.Application:
    """The dashboard as an aiohttp app (for embedding or tests); ``serve`` runs it."""
    app = web.Application(middlewares=[errors_middleware,
                                       make_middleware(dashboard.authority, _login_page)],
                          client_max_size=64 * 1024)
    app[STATE_KEY] = dashboard
    for module in PAGES:
        app.router.add_routes(module.routes)
    app.router.add_static("/static/", static_dir(), append_version=False)
    app.cleanup_ctx.append(_lifecycle)
    return app


async def _lifecycle(app: web.Application) -> AsyncIterator[None]:
    """Start: check Redis and find the queues, then run the background work (the live hub
    and the rescans: one anyio task group, in a task of the server's loop). Stop: end it,
    then close the Redis clients."""
    dashboard = app[STATE_KEY]
    await dashboard.start()
    background = asyncio.get_running_loop().create_task(dashboard.run())
    try:
        yield
    finally:
        dashboard.stop()
        await background
        await dashboard.close()


__all__ = ["create_app", "static_dir"]
