"""Provider breakers: the SMS providers' circuit breakers kept in Redis, per queue: state,
errors counted, when it opened and why, when the next probe may go; each provider's rate
limit and token bucket; the latest breaker transitions. Operators may close an open
breaker by hand (CSRF-checked and written to the events stream by ``act``).

Which providers: those with a breaker hash (found by a SCAN, ``Dashboard.breakers_found``,
kept 30 s) and the ones this dashboard's own environment configures for a channel's queue
(the SMS package's ``SMS_PROVIDERS`` / ``STREAMQ_PROVIDER``, declared through the
``streamq.downstreams`` entry point: the engine does not import the channel): a provider
that never failed has no hash and is closed. The breaker policy and rate limits shown
come from this dashboard's environment (the workers' may differ: the page says so).
"""

from __future__ import annotations

import os
from typing import Any

from aiohttp import web

from ...breakers import (
    BreakerStatus,
    DownstreamSettings,
    close_breaker,
    downstream_settings,
    read_breakers,
)
from ...errors import ConfigError, StreamqError
from ...events import QueueEvent, parse_events
from ...job import ms_to_dt
from ...keys import check_downstream_name
from ...queue import Queue
from ..render import action_form, ago, esc, fmt_time, link, mask, page, q_path, table, when
from ..state import dashboard_of
from .actions import act

routes = web.RouteTableDef()

RECENT = 20
"""Breaker transitions listed per queue (from the newest SCAN_EVENTS entries)."""
SCAN_EVENTS = 1000
STATE_LABEL = {"closed": "closed", "open": "open", "half_open": "half-open"}
STATE_CLASS = {"closed": "st-completed", "open": "st-failed", "half_open": "st-delayed"}


def _next(b: BreakerStatus) -> str:
    if b.state == "open" and b.open_until:
        return f"probe from {when(b.open_until)}"
    if b.state == "half_open" and b.probe_until:
        return f"a probe is out; its lease ends {when(b.probe_until)}"
    return "-"


def _errors(b: BreakerStatus) -> str:
    if b.state != "closed":
        return "-"
    if not b.errors:
        return '<span class=num data-breaker-errors="0">0</span>'
    return (f'<span class=num data-breaker-errors="{esc(b.errors)}">{esc(b.errors)}</span> '
            f"<span class=ago>since {esc(ago(b.window_start))}</span>")


def _limit(b: BreakerStatus, conf: DownstreamSettings | None) -> str:
    rate = conf.limits.get(b.downstream) if conf else None
    text = f"{rate:g}/s" if rate else "none set here"
    if b.tokens is not None:
        text += (f'<br><span class=hint>bucket: {b.tokens:.1f} token(s) at '
                 f"{esc(fmt_time(b.tokens_at))}</span>")
    return text


def _row(request: web.Request, q: Queue, b: BreakerStatus,
         conf: DownstreamSettings | None) -> list[str]:
    label = STATE_LABEL.get(b.state, b.state)
    badge = (f'<span class="badge {STATE_CLASS.get(b.state, "")}" '
             f'data-breaker="{esc(q.name)}:{esc(b.downstream)}">{esc(label)}</span>')
    if not b.stored:
        badge += " <span class=hint>(never failed)</span>"
    why = "-"
    if b.state != "closed":
        kind = "credentials refused" if b.kind == "config" else "errors in a row"
        why = f"{esc(kind)}: <span class=error>{mask(b.why or '-')}</span>"
    opened = when(b.since) if b.state != "closed" else (
        f"closed {esc(ago(b.since))}" if b.since else "-")
    action = "-"
    if b.state != "closed":
        action = action_form(request, "/breakers/close", "close breaker",
                             fields={"queue": q.name, "provider": b.downstream},
                             confirm=f"Close the breaker of {b.downstream} on {q.name} now? "
                             "Messages go to it again at once.")
    return [f"<b>{esc(b.downstream)}</b>", badge, _errors(b), opened, _next(b), why,
            _limit(b, conf), action]


async def _recent(q: Queue) -> list[QueueEvent]:
    """The newest breaker transitions and closes by hand (only those entries are parsed:
    the others are mostly batch entries of up to 100 jobs each)."""
    entries: Any = await q.redis.xrevrange(q.keys.events, count=SCAN_EVENTS)
    wanted = [e for e in entries or [] if e[1].get(b"ev") == b"breaker" or (
        e[1].get(b"ev") == b"action" and e[1].get(b"act") == b"close_breaker")]
    return parse_events([(q.keys.events, wanted[:RECENT])])


def _event_row(e: QueueEvent) -> list[str]:
    f = e.fields or {}
    ms = e.id.split("-", 1)[0]
    if e.name == "action":
        what = f"closed by hand by {esc(f.get('actor', '?'))}"
        who = e.job_id
    else:
        what = STATE_LABEL.get(f.get("state", ""), f.get("state", ""))
        if f.get("kind") == "manual":
            what += " (by hand)"
        elif f.get("kind"):
            what += f" ({'credentials refused' if f['kind'] == 'config' else 'errors'})"
        who = f.get("provider", "")
    return [when(ms_to_dt(ms)), f"<b>{esc(who)}</b>", esc(what),
            f"<span class=error>{mask(e.error or '')}</span>"]


@routes.get("/breakers")
async def breakers_page(request: web.Request) -> web.StreamResponse:
    dash = dashboard_of(request)
    shown = await dash.names()
    found = await dash.breakers_found()
    try:
        channels = {c.queue: c for c in downstream_settings(os.environ, found)}
    except ConfigError as exc:  # a broken channel plugin: the breakers still show
        channels, problem = {}, str(exc)
    else:
        problem = ""
    sections = []
    for name in shown:
        conf = channels.get(name)
        names = list(found.get(name, []))
        if conf is not None:
            names = [*conf.names, *(n for n in names if n not in conf.names)]
        if not names:
            continue
        q = await dash.queue(name)
        statuses = await read_breakers(q, names)
        rows = [_row(request, q, b, conf) for b in statuses]
        try:
            recent = [_event_row(e) for e in await _recent(q)]
        except StreamqError:
            recent = []
        policy = ""
        if conf is not None and conf.policy:
            policy = (f"<p class=hint>Breaker policy in this dashboard's environment: "
                      f"{esc(conf.policy)}; the workers' own settings decide, and may differ. "
                      "Rate limits likewise.</p>")
        if conf is not None and conf.problem:
            policy += f"<p class=error>This dashboard's settings: {mask(conf.problem)}</p>"
        sections.append(
            f"<section class=breakers><h2>{link(q_path(name), esc(name))}</h2>{policy}"
            + table(["provider", "state", "errors counted", "opened / last change", "next probe",
                     "why", "rate limit", ""], rows, cls="breakers")
            + "<h3>Latest transitions</h3>"
            + table(["when", "provider", "became", "reason"], recent, cls="breaker-events",
                    empty="none in the events stream")
            + "</section>")
    policy = f"<p class=error>{mask(problem)}</p>" if problem else ""
    body = ("<h1>Provider breakers</h1><p class=hint>Each SMS provider has a circuit breaker "
            "kept in Redis, shared by every worker of the queue: <b>closed</b> (messages go "
            "through), <b>open</b> (its cool-down: messages fail over or wait), "
            "<b>half-open</b> (one message probes it; success closes it). Providers are found "
            "once they have failed at least once (looked for at most every 30 s), plus the "
            "ones this dashboard's SMS_PROVIDERS names. Times in UTC.</p>" + policy
            + ("".join(sections) or "<p class=empty>No provider breakers: no provider of a "
               "shown queue has failed yet, and this dashboard's environment names none.</p>"))
    return page(request, "provider breakers", body)


@routes.post("/breakers/close")
async def close(request: web.Request) -> web.StreamResponse:
    dash = dashboard_of(request)
    form = await request.post()
    q = await dash.queue(str(form.get("queue", "")))
    provider = str(form.get("provider", ""))
    try:
        check_downstream_name(provider)
    except ConfigError as exc:
        raise web.HTTPBadRequest(text=f"{exc}\n") from None

    async def run() -> int:
        return int(await close_breaker(q, provider))

    return await act(request, q, "close_breaker", provider, run, "/breakers",
                     lambda n: f"closed the breaker of {provider} on {q.name}" if n else
                     f"the breaker of {provider} on {q.name} was closed already")


__all__ = ["routes"]
