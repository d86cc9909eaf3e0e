"""Dashboard page timings with 100,000 jobs in each listed state (hand-run).

    python -m benchmarks.dashboard_pages [--jobs 100000] [--repeat 5]

One private Redis, one queue per state, each filled with N jobs the way production
fills it: waiting (``add_bulk``), active (claimed by a consumer of the group, as a
worker's claim does, and held), delayed (``add_bulk`` with a delay), completed and
failed (drained by an in-process worker that returns or raises ``PermanentError``;
the completed queue keeps an index of N). The dashboard runs in-process; each page is
fetched over loopback HTTP ``--repeat`` times with a viewer token and the median is
reported: the first page of the state, the next page (its cursor), a page 90% deep
(its cursor found by walking the listing), a job's page, and per queue kind the dead
letters or workers page; plus the overview of all five queues. Nothing is asserted.
"""

from __future__ import annotations

import argparse
import re
import statistics
import sys
import time
from typing import Any

import aiohttp
import anyio

from streamq import Job, JobOptions, PermanentError, Queue, QueueDefaults, Worker, WorkerEvent
from streamq.devredis import start_redis_server
from streamq.keys import GROUP
from streamq.logs import configure_logging

from .common import payloads

VIEWER = "viewer-bench-token-0123456789"
ENV = {"STREAMQ_DASHBOARD_TOKENS": f"viewer:{VIEWER},operator:operator-bench-token-0123456789"}


async def drain(q: Queue, n: int, fail: bool) -> None:
    done = anyio.Event()
    seen = 0

    async def handler(job: Job) -> None:
        if fail:
            raise PermanentError("provider said 1003 invalid mobile")

    def count(event: WorkerEvent) -> None:
        nonlocal seen
        seen += 1
        if seen == n:
            done.set()

    worker = Worker(q, handler, concurrency=200, rate_limit=None)
    worker.on("dead" if fail else "completed", count)
    async with anyio.create_task_group() as tg:
        tg.start_soon(worker.run)
        await done.wait()
        await worker.close()


async def fill(url: str, n: int) -> dict[str, Queue]:
    qs = {s: Queue(f"bench-{s}", redis_url=url,
                   defaults=QueueDefaults(completed_index_max=n, dead_letter_max=n))
          for s in ("waiting", "active", "delayed", "completed", "failed")}
    data = payloads(n)
    for state, q in qs.items():
        t0 = time.perf_counter()
        await q.ensure_groups()
        if state == "delayed":
            await q.add_bulk([(d, JobOptions(delay=3600)) for d in data])
        else:
            await q.add_bulk([(d, JobOptions(attempts=1)) for d in data])
        if state == "active":
            got = 0
            while got < n:  # what a worker's claim does: read as a consumer of the group
                r: Any = await q.redis.xreadgroup(GROUP, "bench-holder", {q.keys.lanes[1]: ">"},
                                                  count=10_000)
                got += len(r[0][1]) if r else 0
        elif state in ("completed", "failed"):
            await drain(q, n, fail=state == "failed")
        counts = await q.counts()
        print(f"filled {state}: {counts[state]:,} in {time.perf_counter() - t0:.1f}s",
              file=sys.stderr)
    return qs


async def timed(s: aiohttp.ClientSession, url: str, repeat: int) -> tuple[float, str]:
    times = []
    text = ""
    for _ in range(repeat):
        t0 = time.perf_counter()
        async with s.get(url, headers={"Authorization": f"Bearer {VIEWER}"}) as r:
            text = await r.text()
            if r.status != 200:
                raise RuntimeError(f"{url}: HTTP {r.status}: {text[:200]}")
        times.append((time.perf_counter() - t0) * 1000)
    return statistics.median(times), text


async def deep_cursor(q: Queue, state: str, depth: int) -> str | None:
    cursor = None
    walked = 0
    while walked < depth:
        page = await q.list_jobs(state, cursor=cursor, limit=500)
        walked += len(page.jobs)
        cursor = page.next_cursor
        if cursor is None:
            break
    return cursor


async def main(n: int, repeat: int) -> None:
    from aiohttp import web

    from streamq.dashboard.app import create_app
    from streamq.dashboard.config import DashboardConfig
    from streamq.dashboard.state import Dashboard

    configure_logging("console", "error")  # not a line per dead-lettered job
    with start_redis_server() as proc:
        qs = await fill(proc.url, n)
        dash = Dashboard(DashboardConfig.build(env=ENV, host="127.0.0.1", port=0), proc.url)
        runner = web.AppRunner(create_app(dash), access_log=None)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        base = f"http://127.0.0.1:{runner.addresses[0][1]}"
        rows = []
        async with aiohttp.ClientSession() as s:
            for state, q in qs.items():
                url = f"{base}/q/{q.name}?state={state}"
                first, html = await timed(s, url, repeat)
                m = re.search(r'href="([^"]*cursor=[^"]+)" class="next"', html)
                nxt = (await timed(s, base + m.group(1).replace("&amp;", "&"), repeat))[0] if m else None
                t0 = time.perf_counter()
                cursor = await deep_cursor(q, state, int(n * 0.9))
                walk_s = time.perf_counter() - t0
                deep = (await timed(s, url + "&cursor=" + cursor, repeat))[0] if cursor else None
                job = re.search(r'<td><a href="(/q/[^"]+/jobs/[^"]+)" class="mono">', html)
                job_ms = (await timed(s, base + job.group(1), repeat))[0] if job else None
                extra = ""
                if state == "failed":
                    took = (await timed(s, f"{base}/q/{q.name}/dead", repeat))[0]
                    extra = f"dead letters page {took:.1f} ms"
                if state == "active":
                    took = (await timed(s, f"{base}/q/{q.name}/workers", repeat))[0]
                    extra = f"workers page {took:.1f} ms"
                rows.append((state, first, nxt, deep, walk_s, job_ms, extra))
            overview = (await timed(s, base + "/", repeat))[0]
        await runner.cleanup()
        for q in qs.values():
            await q.close()

    def ms(v: float | None) -> str:
        return "-" if v is None else f"{v:.1f}"

    print(f"| state ({n:,} jobs in it) | queue page (ms) | next page (ms) | page at 90% depth (ms) "
          "| job page (ms) | other |")
    print("|---|---|---|---|---|---|")
    for state, first, nxt, deep, _walk_s, job_ms, extra in rows:
        print(f"| {state} | {ms(first)} | {ms(nxt)} | {ms(deep)} | {ms(job_ms)} | {extra} |")
    print(f"\nOverview of the five queues: {overview:.1f} ms. Median of {repeat} fetches over "
          "loopback HTTP, dashboard and Redis on this machine. Walking 90% of a listing "
          "500 at a time: " + ", ".join(f"{r[0]} {r[4]:.1f}s" for r in rows) + ".")


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--jobs", type=int, default=100_000)
    p.add_argument("--repeat", type=int, default=5)
    a = p.parse_args()
    anyio.run(main, a.jobs, a.repeat)
