"""Live workers: the consumers of the queue's group, with the jobs each holds."""

from __future__ import annotations

from aiohttp import web

from ..render import esc, page, table
from ..state import dashboard_of

routes = web.RouteTableDef()


def _secs(s: float | None) -> str:
    return "-" if s is None else f"{s:.1f}s ago"


@routes.get("/q/{queue}/workers")
async def workers_page(request: web.Request) -> web.StreamResponse:
    q = await dashboard_of(request).queue(request.match_info["queue"])
    workers = await q.workers()
    rows = [[f"<span class=mono>{esc(w.name)}</span>", f"<span class=num>{esc(w.pending)}</span>",
             esc(_secs(w.idle_s)), esc(_secs(w.active_s))] for w in workers]
    body = ("<h1>Workers</h1><p class=hint>Consumers of the queue's group: a worker appears once "
            "it has read from the queue, and is removed by the workers' upkeep after an hour "
            "without reading and with nothing held. 'Jobs held' are claimed and not yet "
            "finished; 'last took a job' needs Redis 7.2.</p>"
            + table(["worker", "jobs held", "last read", "last took a job"], rows,
                    cls="workers", empty="no worker has read from this queue"))
    return page(request, f"{q.name} workers", body, queue=q.name, tab="Workers")


__all__ = ["routes"]
