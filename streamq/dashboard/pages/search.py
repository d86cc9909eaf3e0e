"""Search by job id across the shown queues: one hit opens the job's page."""

from __future__ import annotations

from aiohttp import web

from ...errors import ConfigError, JobIdError
from ...keys import check_job_id
from ..render import esc, link, mask, page, q_path, table
from ..state import dashboard_of

routes = web.RouteTableDef()


@routes.get("/search")
async def search(request: web.Request) -> web.StreamResponse:
    dash = dashboard_of(request)
    job_id = request.query.get("id", "").strip()
    try:
        check_job_id(job_id)
    except (ConfigError, JobIdError) as exc:
        return page(request, "search", f"<h1>Search</h1><p class=error>{mask(exc)}</p>",
                    status=400)
    hits = []
    for name in await dash.names():
        q = await dash.queue(name)
        info = await q.get_job(job_id)
        if info is not None:
            hits.append((name, info))
    if len(hits) == 1:
        raise web.HTTPSeeOther(q_path(hits[0][0], "jobs", job_id))
    if not hits:
        body = (f"<h1>Search</h1><p class=empty>No job <span class=mono>{mask(job_id)}</span> in "
                "any queue shown here (unknown, or its record expired).</p>")
        return page(request, "search", body, status=404)
    rows = [[link(q_path(name, "jobs", job_id), esc(name)), esc(info.state.value)]
            for name, info in hits]
    body = (f"<h1>Job <span class=mono>{mask(job_id)}</span> in {len(hits)} queues</h1>"
            + table(["queue", "state"], rows))
    return page(request, "search", body)


__all__ = ["routes"]
