"""Search across the shown queues: by job id, and by phone number through the queues'
keyed blind index (the code path of ``python -m streamq find --phone``: the channel's
``SearchTerms.to_term``, then ``blind_index.find_jobs``).

The header's box posts (``POST /search``, field ``q``), so a number typed there never
travels in a URL (browser history, proxies' logs, Referer); a POST is open to viewers
(it changes nothing) with the usual CSRF checks. The number is shown masked on the
results page and logged nowhere (the log line says how many jobs were found). One job
found by id opens its page; ``GET /search?id=`` stays for links and scripts (job ids
only).
"""

from __future__ import annotations

from typing import Any

import structlog
from aiohttp import web

from ...blind_index import SearchTerms, find_jobs, search_terms
from ...errors import ConfigError, JobIdError, StreamqError
from ...job import JobInfo
from ...keys import check_job_id
from ...redact import mask_phone, redact_text
from ..auth import identity_of
from ..render import esc, link, mask, page, q_path, table, wants_json, when
from ..state import Dashboard, dashboard_of

routes = web.RouteTableDef()
log = structlog.get_logger("streamq.dashboard")
MAX_INPUT = 200


def search_form() -> str:
    return ("<h1>Search</h1><p class=hint>A job id, or a phone number (E.164 such as "
            "+254712345678, or the national format of STREAMQ_DEFAULT_REGION): a number is "
            "looked up in the queues' keyed blind index (Redis holds only an HMAC of it) and "
            "never put in a URL. Use the box in the header.</p>")


async def _by_id(dash: Dashboard, job_id: str) -> list[tuple[str, JobInfo]]:
    hits = []
    for name in await dash.names():
        q = await dash.queue(name)
        info = await q.get_job(job_id)
        if info is not None:
            hits.append((name, info))
    return hits


async def _by_term(dash: Dashboard, term: str) -> tuple[list[tuple[str, JobInfo]], str]:
    """The jobs of ``term`` in every shown queue, and why the index could not be searched
    ('' when it was, in at least one queue: a queue opened without keys is skipped)."""
    hits: list[tuple[str, JobInfo]] = []
    problem, searched = "", 0
    for name in await dash.names():
        q = await dash.queue(name)
        try:
            hits += [(name, info) for info in await find_jobs(q, term)]
        except ConfigError as exc:  # no STREAMQ_ENCRYPTION_KEYS: no index to search
            problem = str(exc)
        else:
            searched += 1
    return hits, "" if searched else problem


def _valid_id(text: str) -> bool:
    try:
        check_job_id(text)
    except (ConfigError, JobIdError):
        return False
    return True


@routes.get("/search")
async def search(request: web.Request) -> web.StreamResponse:
    dash = dashboard_of(request)
    job_id = request.query.get("id", "").strip()
    if not job_id:
        return page(request, "search", search_form())
    try:
        check_job_id(job_id)
    except (ConfigError, JobIdError) as exc:
        return page(request, "search", f"<h1>Search</h1><p class=error>{mask(exc)}</p>",
                    status=400)
    return _id_answer(request, job_id, await _by_id(dash, job_id))


def _id_answer(request: web.Request, job_id: str,
               hits: list[tuple[str, JobInfo]]) -> web.StreamResponse:
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


@routes.post("/search")
async def search_post(request: web.Request) -> web.StreamResponse:
    """A job id or a phone number from the header's box (``q``)."""
    dash = dashboard_of(request)
    form = await request.post()
    raw = form.get("q", "")
    text = raw.strip() if isinstance(raw, str) else ""
    if not text or len(text) > MAX_INPUT:
        return page(request, "search", search_form()
                    + "<p class=error>Type a job id or a phone number.</p>", status=400)
    matched: list[tuple[SearchTerms, str]] = []
    for st in search_terms():
        try:
            matched.append((st, st.to_term(text)))
        except StreamqError:
            continue  # not a value of this kind (not a phone number)
    by_id = await _by_id(dash, text) if _valid_id(text) else []
    if not matched:
        if not _valid_id(text):
            return page(request, "search", search_form() + "<p class=error>Neither a job "
                        "id (1-128 characters of A-Z a-z 0-9 _ . : @ = + - { }) nor a phone "
                        "number.</p>", status=400)
        return _id_answer(request, text, by_id)
    # a number: its jobs through the blind index, and any job whose id it is
    st = matched[0][0]
    shown = mask_phone(text) if st.option == "phone" else "***"
    problem = ""
    found: list[tuple[str, JobInfo]] = []
    for _, term in matched:
        hits, problem = await _by_term(dash, term)
        found += hits
    ident = identity_of(request)
    log.info("dashboard.search", by=st.option, role=ident.role, found=len(found),
             by_id=len(by_id), index_searched=not problem)
    if wants_json(request):
        return web.json_response(
            {"searched": shown, "error": problem or None,
             "jobs": [_json(name, i) for name, i in found],
             "by_id": [_json(name, i) for name, i in by_id]},
            status=200 if found or by_id else 404, headers={"Cache-Control": "no-store"})
    rows = [[esc(name), link(q_path(name, "jobs", i.id), mask(i.id), "mono"),
             f'<span class="badge st-{esc(i.state.value)}">{esc(i.state.value)}</span>',
             when(i.created_at), when(i.finished_at), esc(i.attempts)] for name, i in found]
    body = (f'<h1>Jobs of <span class=mono data-searched>{esc(shown)}</span></h1>'
            "<p class=hint>Found through each queue's keyed blind index (the number itself is "
            "stored nowhere); a job whose record has expired is not listed. Oldest first per "
            "queue.</p>")
    if problem:
        body += f"<p class=error>The blind index could not be searched: {mask(problem)}</p>"
    body += table(["queue", "job", "state", "created", "finished", "failed attempts"], rows,
                  cls="found", empty=f"no jobs of {shown} in the queues shown here")
    if by_id:
        body += ("<h2>Jobs with this id</h2>" + table(
            ["queue", "state"], [[link(q_path(name, "jobs", i.id), esc(name)),
                                  esc(i.state.value)] for name, i in by_id]))
    return page(request, "search", body, status=200 if found or by_id else 404)


def _json(queue: str, info: JobInfo) -> dict[str, Any]:
    return {"queue": queue, "id": redact_text(info.id), "state": info.state.value,
            "created_at": info.created_at.isoformat() if info.created_at else None,
            "finished_at": info.finished_at.isoformat() if info.finished_at else None,
            "attempts": info.attempts}


__all__ = ["routes"]
