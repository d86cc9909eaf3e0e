"""Dead letters: oldest first (``Queue.dead_letters`` pages), each with its error and
masked payload; replay one, replay all, purge all."""

from __future__ import annotations

from aiohttp import web

from ...errors import ConfigError, JobIdError
from ...keys import check_job_id
from ...listing import MAX_PAGE, decode_payload
from ..render import action_form, esc, link, mask, masked_payload, page, q_path, table, when, with_query
from ..state import dashboard_of
from .actions import act
from .queue_jobs import job_link

routes = web.RouteTableDef()

PREVIEW_CHARS = 160


@routes.get("/q/{queue}/dead")
async def dead_page(request: web.Request) -> web.StreamResponse:
    dash = dashboard_of(request)
    q = await dash.queue(request.match_info["queue"])
    after = request.query.get("after", "")
    try:
        limit = max(1, min(int(request.query.get("limit", dash.config.page_size)), MAX_PAGE))
    except ValueError:
        raise web.HTTPBadRequest(text="limit must be a number\n") from None
    try:
        letters = await q.dead_letters(limit + 1, after=("(" + after) if after else "-")
    except Exception as exc:  # a malformed ?after= is a ResponseError from XRANGE
        if "Invalid stream ID" in str(exc) or isinstance(exc, ConfigError):
            raise web.HTTPBadRequest(text="after must be a dead letter's entry id\n") from None
        raise
    more = len(letters) > limit
    letters = letters[:limit]
    counts = await dash.counts(q)
    base = q_path(q.name, "dead")
    rows = []
    for d in letters:
        # a payload left as bytes: say why (e.g. encrypted, and no key for it here)
        reason = decode_payload(q.codec, d.data, d.job_id)[2] if isinstance(d.data, bytes) else ""
        preview = masked_payload(d.data, reason).replace("\n", " ")
        if len(preview) > PREVIEW_CHARS:
            preview = preview[: PREVIEW_CHARS - 1] + "…"
        rows.append([
            esc(d.entry_id), job_link(q.name, d.job_id), when(d.failed_at), esc(d.attempts),
            f"<span class=error>{mask(d.error)}</span>", f"<code>{esc(preview)}</code>",
            action_form(request, base + "/replay", "replay", fields={"job_id": d.job_id}),
        ])
    pager = []
    if after:
        pager.append(link(with_query(base, limit=limit), "« first page"))
    if more and letters:
        pager.append(link(with_query(base, after=letters[-1].entry_id, limit=limit),
                          "next page »", "next"))
    total = counts.get("dead", 0)
    bulk = ""
    if total:
        bulk = (action_form(request, base + "/replay", "replay all", fields={"all": "1"},
                            confirm=f"Replay every dead letter of {q.name}?") +
                action_form(request, base + "/purge", "purge all", cls="danger",
                            confirm=f"Drop every dead letter of {q.name}? They cannot be "
                            "replayed afterwards."))
    body = (f'<h1>Dead letters <span class=num data-count="{esc(q.name)}:dead">{esc(total)}'
            f"</span> {bulk}</h1>"
            "<p class=hint>Oldest first. Phone numbers masked, message texts and codes hidden. "
            "Replay puts a job back to work with fresh attempts.</p>"
            + table(["entry", "job", "failed at", "attempts", "error", "payload", ""], rows,
                    cls="dead", empty="no dead letters")
            + f'<nav class=pager>{" ".join(pager)}</nav>')
    return page(request, f"{q.name} dead letters", body, queue=q.name, tab="Dead letters",
                live=[q.name])


@routes.post("/q/{queue}/dead/replay")
async def replay(request: web.Request) -> web.StreamResponse:
    q = await dashboard_of(request).queue(request.match_info["queue"])
    form = await request.post()
    everything = form.get("all") == "1"
    job_id = str(form.get("job_id", ""))
    if not everything:
        try:
            check_job_id(job_id)
        except (ConfigError, JobIdError) as exc:
            raise web.HTTPBadRequest(text=f"{exc}\n") from None
    target = "*" if everything else job_id
    return await act(request, q, "replay", target,
                     lambda: q.replay_dead(None if everything else job_id),
                     q_path(q.name, "dead"), lambda n: f"replayed {n} job(s)")


@routes.post("/q/{queue}/dead/purge")
async def purge(request: web.Request) -> web.StreamResponse:
    q = await dashboard_of(request).queue(request.match_info["queue"])
    return await act(request, q, "purge", "*", q.purge_dead, q_path(q.name, "dead"),
                     lambda n: f"purged {n} dead letter(s)")


__all__ = ["routes"]
