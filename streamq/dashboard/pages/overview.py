"""The overview: every shown queue with its counts per state and its rates."""

from __future__ import annotations

from aiohttp import web

from ...errors import StreamqError
from ..render import esc, link, page, q_path, table
from ..state import dashboard_of

routes = web.RouteTableDef()

COLUMNS = ("waiting", "active", "delayed", "failed", "dead", "completed", "cancelled")
RATES = (("in", "in/s"), ("done", "done/s"), ("failed", "failed/s"))


def count_cell(queue: str, state: str, value: int | None) -> str:
    shown = "-" if value is None else str(value)
    return f'<span class=num data-count="{esc(queue)}:{esc(state)}">{esc(shown)}</span>'


def rate_cell(queue: str, key: str, rates: dict[str, float] | None) -> str:
    value = "-" if rates is None else f"{rates[key]:g}"
    return f'<span class=num data-rate="{esc(queue)}:{esc(key)}">{esc(value)}</span>'


@routes.get("/")
async def overview(request: web.Request) -> web.StreamResponse:
    dash = dashboard_of(request)
    names = await dash.names()
    rows = []
    for name in names:
        q = await dash.queue(name)
        try:
            c: dict[str, int] | None = await dash.counts(q)
        except StreamqError:
            c = None
        rates = dash.meter(name).rates()
        paused = bool(c and c.get("paused"))
        status = (f'<span class="badge {"paused" if paused else "running"}" '
                  f'data-paused="{esc(name)}">{"paused" if paused else "running"}</span>')
        rows.append([link(q_path(name), esc(name)), status,
                     *(count_cell(name, s, None if c is None else c.get(s, 0)) for s in COLUMNS),
                     *(rate_cell(name, k, rates) for k, _ in RATES)])
    if names:
        body = table(["queue", "", *COLUMNS, *(label for _, label in RATES)], rows, cls="overview")
        body += ('<p class=hint>completed and cancelled are totals since each queue was created; '
                 "failed counts dead letters not yet replayed. Rates are measured by this "
                 "dashboard while it is open.</p>")
    else:
        body = ("<p class=empty>No queues found yet. A queue is found once a producer has added "
                "to it or a worker has started on it, at the next rescan (<code>--rescan</code>), "
                "or at once when its page is opened by name (<code>/q/NAME</code>).</p>")
    return page(request, "Queues", "<h1>Queues</h1>" + body, live=names)


@routes.get("/api/counts")
async def api_counts(request: web.Request) -> web.StreamResponse:
    """Counts and rates of the named queues (``?queue=a&queue=b``; all shown if none)."""
    dash = dashboard_of(request)
    wanted = request.query.getall("queue", []) or await dash.names()
    out = {}
    for name in wanted:
        q = await dash.queue(name)
        out[name] = {"counts": await dash.counts(q), "rates": dash.meter(name).rates()}
    return web.json_response(out, headers={"Cache-Control": "no-store"})


__all__ = ["routes"]
