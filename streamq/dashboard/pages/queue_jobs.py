"""A queue's jobs by state, a page at a time (``Queue.list_jobs`` cursors), its counts
(live), pause/resume, and the latest events as they happen."""

from __future__ import annotations

from aiohttp import web

from ...errors import ConfigError
from ...job import JobState
from ...listing import LISTABLE, MAX_PAGE, ListedJob
from ..render import action_form, esc, link, mask, page, q_path, table, when, with_query
from ..state import dashboard_of
from .actions import act
from .overview import count_cell

routes = web.RouteTableDef()

STATES = ("waiting", "active", "delayed", "completed", "failed", "cancelled")


def job_link(queue: str, job_id: str) -> str:
    return link(q_path(queue, "jobs", job_id), mask(job_id), "mono")


def _attempts(j: ListedJob) -> str:
    return esc(f"{j.info.attempts}/{j.info.max_attempts}" if j.info.max_attempts else "-")


def rows_for(state: JobState, queue: str, jobs: list[ListedJob]) -> tuple[list[str], list[list[str]]]:
    def common(j: ListedJob) -> list[str]:
        return [job_link(queue, j.info.id), esc(j.info.job_type or "-")]

    if state is JobState.WAITING:
        return (["job", "type", "priority", "failed/max attempts", "created"],
                [[*common(j), esc(j.info.priority or "-"), _attempts(j), when(j.info.created_at)]
                 for j in jobs])
    if state is JobState.ACTIVE:
        return (["job", "type", "worker", "since claim or heartbeat", "deliveries", "created"],
                [[*common(j), esc(j.worker or "-"),
                  esc("-" if j.idle_s is None else f"{j.idle_s:.1f}s"), esc(j.deliveries or "-"),
                  when(j.info.created_at)] for j in jobs])
    if state is JobState.DELAYED:
        return (["job", "type", "due", "failed/max attempts", "last error"],
                [[*common(j), when(j.info.due_at), _attempts(j), mask(j.info.error or "")]
                 for j in jobs])
    if state is JobState.COMPLETED:
        return (["job", "type", "finished", "attempt", "note"],
                [[*common(j), when(j.info.finished_at), esc(j.info.attempts or "-"),
                  esc(j.note or "")] for j in jobs])
    return (["job", "type", "failed at", "attempts", "error"],
            [[*common(j), when(j.info.finished_at), _attempts(j), mask(j.info.error or "")]
             for j in jobs])


PARTITION_COLUMNS = ("waiting", "active", "delayed", "failed", "dead", "completed", "cancelled")


def partition_table(queue: str, parts: list[dict[str, int]]) -> str:
    """Each partition's counts (``Queue.partition_counts``), as read for this page: is the
    load even, is one partition's backlog growing?"""
    rows = [[f"<span class=num>{p}</span>",
             *(f'<span class=num data-partition-count="{esc(queue)}:{p}:{esc(s)}">'
               f"{esc(c.get(s, 0))}</span>" for s in PARTITION_COLUMNS)]
            for p, c in enumerate(parts)]
    return ("<details class=partitions open><summary>Partitions: this queue is spread over "
            f"{len(parts)} (each its own Redis hash tag); the counts above are their sums</summary>"
            + table(["partition", *PARTITION_COLUMNS], rows, cls="partitions")
            + "<p class=hint>Each partition's counts as read for this page (the totals above "
            "update live).</p></details>")


@routes.get("/q/{queue}")
async def queue_page(request: web.Request) -> web.StreamResponse:
    dash = dashboard_of(request)
    q = await dash.queue(request.match_info["queue"])
    state_name = request.query.get("state", "waiting")
    if state_name not in STATES:
        raise web.HTTPBadRequest(text=f"state must be one of {', '.join(STATES)}\n")
    state = JobState(state_name)
    cursor = request.query.get("cursor") or None
    try:
        limit = int(request.query.get("limit", dash.config.page_size))
    except ValueError:
        raise web.HTTPBadRequest(text="limit must be a number\n") from None
    limit = max(1, min(limit, MAX_PAGE))
    counts, parts = await dash.counts_by_partition(q)
    base = q_path(q.name)
    tabs = "".join(
        link(with_query(base, state=s), f"{esc(s)} {count_cell(q.name, s, counts.get(s, 0))}",
             "state active" if s == state_name else "state") for s in STATES)
    paused = bool(counts.get("paused"))
    control = (action_form(request, base + "/resume", "resume") if paused
               else action_form(request, base + "/pause", "pause"))
    head = (f'<h1>{esc(q.name)} <span class="badge {"paused" if paused else "running"}" '
            f'data-paused="{esc(q.name)}">{"paused" if paused else "running"}</span> {control}</h1>'
            f"<nav class=states>{tabs}</nav>")
    if state in LISTABLE:
        try:
            page_ = await q.list_jobs(state, cursor=cursor, limit=limit)
        except ConfigError as exc:
            raise web.HTTPBadRequest(text=f"{exc}\n") from None
        headers, rows = rows_for(state, q.name, page_.jobs)
        listing = table(headers, rows, cls="jobs", empty=f"no {state_name} jobs")
        pager = []
        if cursor:
            pager.append(link(with_query(base, state=state_name, limit=limit), "« first page"))
        if page_.next_cursor:
            pager.append(link(with_query(base, state=state_name, cursor=page_.next_cursor,
                                         limit=limit), "next page »", "next"))
        listing += f'<nav class=pager>{" ".join(pager)}</nav>'
        if state is JobState.COMPLETED:
            listing += (f"<p class=hint>The newest {q.defaults.completed_index_max:,} completed "
                        "jobs are listed; records expire after "
                        f"{q.defaults.completed_ttl_s / 3600:g} h.</p>")
    else:
        listing = ("<p class=empty>Cancelled jobs are counted, not listed (no index keeps them); "
                   "find one by its id with the search box.</p>")
    if parts:
        head += partition_table(q.name, parts)
    live = (f'<section class=live><h2>Latest events</h2><ol id=live-events '
            f'data-queue="{esc(q.name)}"></ol></section>')
    return page(request, q.name, head + listing + live, queue=q.name, tab="Jobs", live=[q.name])


@routes.post("/q/{queue}/pause")
async def pause(request: web.Request) -> web.StreamResponse:
    q = await dashboard_of(request).queue(request.match_info["queue"])

    async def run() -> int:
        await q.pause()
        return 1

    return await act(request, q, "pause", "*", run, q_path(q.name),
                     lambda n: f"queue {q.name} paused: workers take no new jobs")


@routes.post("/q/{queue}/resume")
async def resume(request: web.Request) -> web.StreamResponse:
    q = await dashboard_of(request).queue(request.match_info["queue"])

    async def run() -> int:
        await q.resume()
        return 1

    return await act(request, q, "resume", "*", run, q_path(q.name),
                     lambda n: f"queue {q.name} resumed")


__all__ = ["routes"]
