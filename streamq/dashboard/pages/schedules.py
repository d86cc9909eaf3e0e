"""A queue's schedules: spec, state, next runs, the last run and its state; run now,
pause and resume (operators; CSRF-checked and written to the events stream by ``act``)."""

from __future__ import annotations

from aiohttp import web

from ...errors import ConfigError
from ...queue import Queue
from ...schedules.model import Schedule, check_schedule_id
from ..render import action_form, esc, fmt_time, page, q_path, table, when
from ..state import dashboard_of
from .actions import act
from .queue_jobs import job_link

routes = web.RouteTableDef()

UPCOMING = 3


async def _last_run(q: Queue, s: Schedule) -> str:
    if not s.last_run_id:
        return "-"
    info = await q.get_job(s.last_run_id)
    state = info.state.value if info else "expired"
    return f"{when(s.last_run_at)}<br>{job_link(q.name, s.last_run_id)} <span class=state>{esc(state)}</span>"


@routes.get("/q/{queue}/schedules")
async def schedules_page(request: web.Request) -> web.StreamResponse:
    q = await dashboard_of(request).queue(request.match_info["queue"])
    base = q_path(q.name, "schedules")
    rows = []
    for s in await q.schedules():
        nxt = "<br>".join(esc(fmt_time(t)) for t in s.upcoming(UPCOMING)) or "-"
        toggle = (action_form(request, base + "/resume", "resume", fields={"schedule": s.id})
                  if s.paused else
                  action_form(request, base + "/pause", "pause", fields={"schedule": s.id}))
        rows.append([
            f"<span class=mono>{esc(s.id)}</span>", esc(s.spec_text),
            f"<span class=state>{esc(s.state)}</span>", nxt, await _last_run(q, s),
            f"<span class=num>{esc(s.runs)}</span>", f"<span class=num>{esc(s.missed)}</span>",
            action_form(request, base + "/run", "run now", fields={"schedule": s.id},
                        confirm=f"Add one extra run of {s.id} now?") + toggle,
        ])
    body = ("<h1>Schedules</h1><p class=hint>Cron and interval schedules, fired by the queue's "
            "running workers, one run per slot. Times in UTC. 'Run now' adds an extra run "
            "with its own job id (the slots are untouched); a paused schedule fires nothing "
            "and, resumed, goes on from its next slot.</p>"
            + table(["schedule", "spec", "state", f"next runs (up to {UPCOMING})", "last run",
                     "runs", "missed", ""], rows, cls="schedules", empty="no schedules"))
    return page(request, f"{q.name} schedules", body, queue=q.name, tab="Schedules")


async def _target(request: web.Request) -> tuple[Queue, str]:
    q = await dashboard_of(request).queue(request.match_info["queue"])
    form = await request.post()
    sid = str(form.get("schedule", ""))
    try:
        check_schedule_id(sid)
    except ConfigError as exc:
        raise web.HTTPBadRequest(text=f"{exc}\n") from None
    return q, sid


@routes.post("/q/{queue}/schedules/run")
async def run_now(request: web.Request) -> web.StreamResponse:
    q, sid = await _target(request)

    async def run() -> int:
        return 0 if await q.run_schedule_now(sid) is None else 1

    return await act(request, q, "run_schedule", sid, run, q_path(q.name, "schedules"),
                     lambda n: f"added a run of {sid}" if n else f"no schedule {sid}")


@routes.post("/q/{queue}/schedules/pause")
async def pause(request: web.Request) -> web.StreamResponse:
    q, sid = await _target(request)

    async def run() -> int:
        return int(await q.pause_schedule(sid))

    return await act(request, q, "pause_schedule", sid, run, q_path(q.name, "schedules"),
                     lambda n: f"paused {sid}" if n else f"no schedule {sid}")


@routes.post("/q/{queue}/schedules/resume")
async def resume(request: web.Request) -> web.StreamResponse:
    q, sid = await _target(request)

    async def run() -> int:
        return int(await q.resume_schedule(sid))

    return await act(request, q, "resume_schedule", sid, run, q_path(q.name, "schedules"),
                     lambda n: f"resumed {sid}" if n else f"no schedule {sid}")


__all__ = ["routes"]
