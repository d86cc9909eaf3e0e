"""``python -m streamq dashboard``: run the dashboard until SIGINT/SIGTERM."""

from __future__ import annotations

import signal
import sys

import anyio
import structlog
from aiohttp import web
from aiohttp.abc import AbstractAccessLogger

from ..redact import redact_url
from .app import create_app
from .auth import maybe_identity
from .config import DashboardConfig
from .state import Dashboard

log = structlog.get_logger("streamq.dashboard")
SHUTDOWN_GRACE_S = 3.0


class AccessLog(AbstractAccessLogger):
    """One structlog line per request: method, path (never the query string), status,
    time, role. No headers: a token is never logged (nor accepted in a URL)."""

    def log(self, request: web.BaseRequest, response: web.StreamResponse, time: float) -> None:
        ident = maybe_identity(request)  # type: ignore[arg-type]
        log.info("dashboard.request", method=request.method, path=request.path,
                 status=response.status, ms=round(time * 1000, 1),
                 role=ident.role if ident else None)

    @property
    def enabled(self) -> bool:
        return True


async def serve(config: DashboardConfig, redis_url: str) -> None:
    """Listen on ``config.host:port`` until a stop signal; Redis must answer at start."""
    dashboard = Dashboard(config, redis_url)
    app = create_app(dashboard)
    runner = web.AppRunner(app, access_log_class=AccessLog, shutdown_timeout=SHUTDOWN_GRACE_S)
    await runner.setup()
    try:
        site = web.TCPSite(runner, config.host, config.port)
        await site.start()
        names = ", ".join(config.queues) if config.queues else "every queue found in Redis"
        auth = ("NO AUTH (--insecure-local): anyone on this machine is an operator"
                if config.insecure_local else
                f"tokens for {', '.join(sorted({t.role for t in config.tokens}))}")
        port = runner.addresses[0][1] if runner.addresses else config.port
        print(f"streamq dashboard on http://{config.host}:{port}/ for {names} at "
              f"{redact_url(redis_url)}; {auth}. Ctrl-C stops it.", file=sys.stderr, flush=True)
        log.info("dashboard.started", host=config.host, port=port, insecure_local=config.insecure_local)
        with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            async for _ in signals:
                break
    finally:
        await runner.cleanup()
        log.info("dashboard.stopped")


__all__ = ["serve"]
