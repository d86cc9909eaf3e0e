"""Running an operator action: do it, write it to the events stream with the actor's
role, log it (never a token), answer with a redirect (forms) or JSON (scripts)."""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable

import structlog
from aiohttp import web

from ...audit import record_action
from ...errors import StreamqError
from ...queue import Queue
from ...redact import redact_text
from ..auth import identity_of
from ..render import wants_json, with_query

log = structlog.get_logger("streamq.dashboard")


async def act(request: web.Request, q: Queue, action: str, target: str,
              run: Callable[[], Awaitable[int]], back: str,
              describe: Callable[[int], str]) -> web.StreamResponse:
    ident = identity_of(request)
    try:
        affected = await run()
    except StreamqError as exc:
        error = redact_text(str(exc))
        with contextlib.suppress(StreamqError):  # Redis is the problem: the error says so
            await record_action(q, action, ident.actor, target, 0, error)
        log.warning("dashboard.action_failed", queue=q.name, action=action, actor=ident.actor,
                    target=redact_text(target), error=error)
        if wants_json(request):
            return web.json_response({"ok": False, "error": error}, status=503)
        raise web.HTTPSeeOther(with_query(back, msg=f"{action} failed: {error}")) from None
    await record_action(q, action, ident.actor, target, affected)
    log.info("dashboard.action", queue=q.name, action=action, actor=ident.actor,
             target=redact_text(target), affected=affected)
    text = describe(affected)
    if wants_json(request):
        return web.json_response({"ok": True, "affected": affected, "message": text})
    raise web.HTTPSeeOther(with_query(back, msg=text))


__all__ = ["act"]
