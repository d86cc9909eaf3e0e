"""``GET /live?queue=a&queue=b``: server-sent events for the pages (see hub.py).

Messages: ``counts`` (a queue's counts and rates), ``events`` (a batch of its events),
``resync`` (this client fell behind and its backlog was dropped: re-read), ``problem``
(Redis trouble). A comment line every ``HEARTBEAT_S`` keeps proxies from closing an idle
stream; a client that does not take a write within ``WRITE_TIMEOUT_S`` is dropped, and
one that disconnects is noticed within ``CHECK_S``.
"""

from __future__ import annotations

import time

import anyio
import structlog
from aiohttp import web

from ..hub import sse
from ..state import dashboard_of

routes = web.RouteTableDef()
log = structlog.get_logger("streamq.dashboard")

HEARTBEAT_S = 15.0
CHECK_S = 0.5
"""How often an idle stream checks that its client is still there."""
WRITE_TIMEOUT_S = 30.0
MAX_QUEUES = 50


@routes.get("/live")
async def live(request: web.Request) -> web.StreamResponse:
    dash = dashboard_of(request)
    names = list(dict.fromkeys(request.query.getall("queue", [])))[:MAX_QUEUES]
    if not names:
        raise web.HTTPBadRequest(text="name at least one queue: /live?queue=NAME\n")
    queues = [await dash.queue(n) for n in names]
    if len(dash.hub.subscribers) >= dash.config.max_sse_clients:
        raise web.HTTPServiceUnavailable(text="too many live clients; try again later\n")
    first = [sse("counts", {"queue": q.name, "counts": await dash.counts(q),
                            "rates": dash.meter(q.name).rates()}) for q in queues]
    sub = await dash.hub.subscribe(queues, dash.config.sse_buffer)  # Redis down: 503 here
    response = web.StreamResponse(headers={
        "Content-Type": "text/event-stream", "Cache-Control": "no-store",
        "X-Accel-Buffering": "no"})
    try:
        await response.prepare(request)
        await response.write(("retry: 2000\n\n" + "".join(first)).encode())
        last_write = time.monotonic()
        while True:
            batch = await sub.next_batch(CHECK_S)
            if not batch:
                transport = request.transport
                if transport is None or transport.is_closing():
                    break  # the client went away
                if time.monotonic() - last_write < HEARTBEAT_S:
                    continue
            data = "".join(batch) if batch else ": keep-alive\n\n"
            with anyio.fail_after(WRITE_TIMEOUT_S):
                await response.write(data.encode())
            last_write = time.monotonic()
    except (ConnectionResetError, TimeoutError):
        pass  # the client went away, or stopped reading
    finally:
        dash.hub.unsubscribe(sub)
    return response


__all__ = ["routes"]
