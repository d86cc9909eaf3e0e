"""One job: its state, attempts, error, timestamps, payload (numbers masked), its events
still in the stream, and what an operator may do with it (cancel, replay)."""

from __future__ import annotations

from typing import Any

import msgspec
from aiohttp import web

from ...breakers import PIN_STATES, route_pin
from ...errors import ConfigError, JobIdError
from ...job import JobInfo, JobState
from ...keys import check_job_id
from ...redact import redact_text
from ..render import action_form, esc, fmt_time, mask, masked_payload, page, q_path, table, when
from ..state import dashboard_of
from .actions import act
from .flow import flow_section

routes = web.RouteTableDef()
JOB = "{job_id:[^/]+}"
"""A job id segment: aiohttp's default ``[^{}/]+`` would refuse the ``{tag}`` ids may carry."""
WHERE = {"lane": "its lane entry", "delayed": "the delayed set", "dead": "its dead letter",
         "flow": "its flow, while it waits for its children"}


def _job_id(request: web.Request) -> str:
    job_id = request.match_info["job_id"]
    try:
        return check_job_id(job_id)
    except (ConfigError, JobIdError) as exc:
        raise web.HTTPBadRequest(text=f"{exc}\n") from None


def info_json(info: JobInfo) -> dict[str, Any]:
    return {"id": redact_text(info.id), "state": info.state.value, "attempts": info.attempts,
            "max_attempts": info.max_attempts, "error": redact_text(info.error or "") or None,
            "created_at": fmt_time(info.created_at), "finished_at": fmt_time(info.finished_at),
            "due_at": fmt_time(info.due_at), "priority": info.priority, "stalls": info.stalls,
            "type": info.job_type, "progress": _masked(info.progress),
            "result": _masked(info.result), "result_error": info.result_error,
            "pending_children": info.pending_children}


def _masked(value: Any) -> Any:
    """A progress value or result as the page shows it (numbers masked, secrets hidden)."""
    if value is None or isinstance(value, float | int):
        return value
    shown = masked_payload(value)
    try:
        return msgspec.json.decode(shown)
    except msgspec.DecodeError:  # "<... that cannot be shown>"
        return shown


def _field(name: str, value: str, key: str = "") -> str:
    attr = f' data-job-field="{esc(key)}"' if key else ""
    return f"<dt>{esc(name)}</dt><dd{attr}>{value}</dd>"


def _progress_html(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float | int):
        pct = max(0.0, min(100.0, float(value) * 100))
        return (f'<progress max="100" value="{pct:.0f}"></progress> '
                f"<span class=mono>{pct:.0f}%</span>")
    return f"<span class=mono>{esc(masked_payload(value))}</span>"


@routes.get("/q/{queue}/jobs/" + JOB)
async def job_page(request: web.Request) -> web.StreamResponse:
    dash = dashboard_of(request)
    q = await dash.queue(request.match_info["queue"])
    job_id = _job_id(request)
    info = await q.get_job(job_id)
    if info is None:
        body = (f"<h1>Job <span class=mono>{mask(job_id)}</span></h1><p class=empty>No such job in "
                f"queue {esc(q.name)}: unknown, or its record expired (completed jobs are kept "
                f"{q.defaults.completed_ttl_s / 3600:g} h, failed ones "
                f"{q.defaults.failed_ttl_s / 86400:g} days).</p>")
        return page(request, "job not found", body, queue=q.name, status=404)
    facts = "".join([
        _field("state", f'<span class="badge st-{esc(info.state.value)}">{esc(info.state.value)}'
               "</span>", "state"),
        _field("type", esc(info.job_type or "-")),
        _field("priority", esc(info.priority or "-")),
        _field("failed attempts", esc(info.attempts), "attempts"),
        _field("max attempts", esc(info.max_attempts)),
        _field("stalls", esc(info.stalls)),
        _field("created", when(info.created_at)),
        _field("due", when(info.due_at)),
        _field("finished", when(info.finished_at), "finished_at"),
        _field("error", f"<span class=error>{mask(info.error or '-')}</span>", "error"),
        _field("progress", _progress_html(info.progress), "progress"),
    ])
    pin = await route_pin(q, job_id)
    if pin is not None:
        facts += _field("SMS provider", f"<b>{esc(pin[0])}</b> <span class=hint>({esc(pin[1])}: "
                        f"{esc(PIN_STATES.get(pin[1], ''))})</span>", "provider")
    if info.pending_children is not None:
        facts += _field("children not finished", esc(info.pending_children), "pending_children")
    if info.state is JobState.COMPLETED:
        if info.result_error is not None:
            result = f"<p class=hint>Not kept: {mask(info.result_error)}</p>"
        elif info.result is None:
            result = "<p class=hint>The handler returned nothing (None).</p>"
        else:
            result = ("<p class=hint>The handler's return value; phone numbers masked, message "
                      f"texts and codes hidden.</p><pre class=payload data-job-field=result>"
                      f"{esc(masked_payload(info.result))}</pre>")
        facts_tail = f"<h2>Result</h2>{result}"
    else:
        facts_tail = ""
    facts_tail += await flow_section(request, q, job_id)
    payload = await q.job_payload(job_id)
    if payload is None:
        shown = ("<p class=hint>No payload is kept for a job in this state (completed and "
                 "cancelled jobs keep their facts only).</p>")
    else:
        where = WHERE.get(payload.where, payload.where)
        sealed = (f" (encrypted at rest with key {esc(payload.sealed_with)})"
                  if payload.sealed_with else "")
        shown = (f"<p class=hint>{esc(payload.size)} bytes{sealed}, from {esc(where)}; phone "
                 "numbers masked, message texts and codes hidden.</p>"
                 f"<pre class=payload>{esc(masked_payload(payload.data, payload.reason))}</pre>")
    events = await q.job_events(job_id)
    ev_rows = [[esc(e.name), esc(e.attempt or "-"), mask(e.error or ""),
                esc(" ".join(f"{k}={v}" for k, v in (e.fields or {}).items())),
                esc(e.id)] for e in events]
    actions = []
    base = q_path(q.name, "jobs", job_id)
    if info.state in (JobState.WAITING, JobState.DELAYED):
        actions.append(action_form(request, base + "/cancel", "cancel job",
                                   confirm="Cancel this job? It will never run."))
    if info.state is JobState.FAILED:
        actions.append(action_form(request, base + "/replay", "replay job"))
    body = (f'<h1>Job <span class=mono>{mask(job_id)}</span> {" ".join(actions)}</h1>'
            f"<dl class=facts>{facts}</dl>{facts_tail}<h2>Payload</h2>{shown}"
            "<h2>Events</h2><p class=hint>What the queue's events stream still holds for this "
            "job (it keeps the newest entries only).</p>"
            + table(["event", "attempt", "error", "details", "entry"], ev_rows, cls="events",
                    empty="no events left in the stream for this job"))
    return page(request, f"job {job_id}", body, queue=q.name, live=[q.name],
                data={"job": job_id, "queue": q.name})


@routes.get("/api/q/{queue}/jobs/" + JOB)
async def job_json(request: web.Request) -> web.StreamResponse:
    q = await dashboard_of(request).queue(request.match_info["queue"])
    info = await q.get_job(_job_id(request))
    if info is None:
        return web.json_response({"error": "not found"}, status=404)
    return web.json_response(info_json(info), headers={"Cache-Control": "no-store"})


@routes.post("/q/{queue}/jobs/" + JOB + "/cancel")
async def cancel(request: web.Request) -> web.StreamResponse:
    q = await dashboard_of(request).queue(request.match_info["queue"])
    job_id = _job_id(request)

    async def run() -> int:
        return 1 if await q.cancel(job_id) else 0

    return await act(request, q, "cancel", job_id, run, q_path(q.name, "jobs", job_id),
                     lambda n: "job cancelled" if n else
                     "not cancelled: the job is running, finished or unknown")


@routes.post("/q/{queue}/jobs/" + JOB + "/replay")
async def replay(request: web.Request) -> web.StreamResponse:
    q = await dashboard_of(request).queue(request.match_info["queue"])
    job_id = _job_id(request)
    return await act(request, q, "replay", job_id, lambda: q.replay_dead(job_id),
                     q_path(q.name, "jobs", job_id),
                     lambda n: "job replayed with fresh attempts" if n else
                     "not replayed: no dead letter for this job (replayed or purged already, "
                     "or the job is live again)")


__all__ = ["info_json", "routes"]
