"""Dashboard page timings with 100,000 jobs in each listed state (hand-run).

    python -m benchmarks.dashboard_pages [--jobs 100000] [--repeat 5] [--pages all|states|new]

One private Redis, one queue per state, each filled with N jobs the way production
fills it: waiting (``add_bulk``), active (claimed by a consumer of the group, as a
worker's claim does, and held), delayed (``add_bulk`` with a delay), completed and
failed (drained by an in-process worker that returns or raises ``PermanentError``;
the completed queue keeps an index of N). The dashboard runs in-process; each page is
fetched over loopback HTTP ``--repeat`` times with a viewer token and the median is
reported: the first page of the state, the next page (its cursor), a page 90% deep
(its cursor found by walking the listing), a job's page, and per queue kind the dead
letters or workers page; plus the overview of all five queues. Nothing is asserted.

``--pages new`` (in ``all`` too) times the pages added with flows, breakers, phone search
and partitions, at realistic sizes: a flow of 1,000 children (900 completed by a worker,
100 delayed) and one of 10,000 jobs (the most one flow may hold) with their root's, a
delayed child's and a completed child's pages; an encrypted SMS queue of N jobs over 4
partitions indexed by number, searched for a number that has 20 jobs and for one that
has none; a queue of N waiting jobs over 8 partitions (the queue page with its
partition table); the breakers page with two providers' breakers, with its SCAN for
breaker hashes (every view) and without it (the 30 s cache), over the keyspace the run
built (its size is printed).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import re
import statistics
import sys
import time
from typing import Any

import aiohttp
import anyio

from streamq import (
    FlowJob,
    Job,
    JobOptions,
    PermanentError,
    Queue,
    QueueDefaults,
    Worker,
    WorkerEvent,
)
from streamq.crypto import KEYS_ENV, KeyRing
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


async def timed(s: aiohttp.ClientSession, url: str, repeat: int,
                form: dict[str, str] | None = None, ok: tuple[int, ...] = (200,)
                ) -> tuple[float, str]:
    """Median ms of ``repeat`` GETs (a POST of ``form`` when given) of ``url``."""
    times = []
    text = ""
    for _ in range(repeat):
        t0 = time.perf_counter()
        headers = {"Authorization": f"Bearer {VIEWER}", "Accept": "text/html"}
        call = s.get(url, headers=headers) if form is None else s.post(url, data=form,
                                                                       headers=headers)
        async with call as r:
            text = await r.text()
            if r.status not in ok:
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


BENCH_KEYS = "bk1:" + "QkVOQ0gtS0VZLWJlbmNobWFyay1rZXktMzItYnl0ZXM="  # 32 bytes, demo only
SEARCHED = "+254799000001"
"""The number with 20 jobs in the indexed queue."""


async def fill_new(url: str, n: int) -> dict[str, Any]:
    """The queues of the new pages (see the module's doc)."""
    from streamq.sms.breaker import BreakerPolicy, Breakers
    from streamq.sms.privacy import phone_terms

    out: dict[str, Any] = {}
    t0 = time.perf_counter()
    # flows: 1,000 children on another queue (900 completed, 100 delayed), and 10,000
    reports, kids = Queue("bench-flows", redis_url=url), Queue("bench-flowkids", redis_url=url)
    await reports.ensure_groups()
    await kids.ensure_groups()
    await reports.add_flow(FlowJob(data={"report": 1}, options=JobOptions(job_id="flow-1k"),
                                   children=[FlowJob(data={"i": i}, queue=kids, options=JobOptions(
                                       job_id=f"k1k-{i}", delay=3600 if i >= 900 else 0))
                                       for i in range(1000)]), on_child_failure="continue")
    await drain(kids, 900, fail=False)
    await reports.add_flow(FlowJob(data={"report": 2}, options=JobOptions(job_id="flow-10k"),
                                   children=[FlowJob(data={"i": i}, options=JobOptions(
                                       job_id=f"k10k-{i}")) for i in range(9_999)]),
                           on_child_failure="fail")
    print(f"filled flows in {time.perf_counter() - t0:.1f}s", file=sys.stderr)
    # an encrypted SMS queue indexed by number, over 4 partitions
    t0 = time.perf_counter()
    sms = Queue("bench-sms", redis_url=url, partitions=4, encrypt=True,
                keyring=KeyRing.parse(BENCH_KEYS), blind_index=phone_terms)
    await sms.ensure_groups()
    numbers = [f"+2547{10000000 + i:08d}" for i in range(n - 20)] + [SEARCHED] * 20
    for start in range(0, n, 10_000):
        await sms.add_bulk([{"type": "otp", "id": f"p{i}", "timestamp": 1_767_225_600_000,
                             "recipient": {"phone_number": numbers[i]}, "code": "482913"}
                            for i in range(start, min(n, start + 10_000))])
    print(f"filled the indexed SMS queue: {n:,} in {time.perf_counter() - t0:.1f}s",
          file=sys.stderr)
    # a queue over 8 partitions
    t0 = time.perf_counter()
    part = Queue("bench-part", redis_url=url, partitions=8)
    await part.ensure_groups()
    await part.add_bulk(payloads(n))
    print(f"filled the partitioned queue: {n:,} in {time.perf_counter() - t0:.1f}s",
          file=sys.stderr)
    breakers = Breakers(sms, BreakerPolicy(errors=1, cooldown_s=3600))
    await breakers.failure("salum", "error", "connect timeout")
    await breakers.failure("africastalking", "config", "401 credentials refused")
    out.update(flows=reports.name, kids=kids.name, sms=sms.name, part=part.name,
               dbsize=int(await part.redis.dbsize()))
    for q in (reports, kids, sms, part):
        await q.close()
    return out


async def time_new(s: aiohttp.ClientSession, base: str, nocache: str, made: dict[str, Any],
                   repeat: int) -> list[tuple[str, float, str]]:
    f, k, part = made["flows"], made["kids"], made["part"]
    rows: list[tuple[str, float, str]] = []

    async def one(label: str, url: str, note: str = "", **kw: Any) -> None:
        rows.append((label, (await timed(s, url, repeat, **kw))[0], note))

    await one("flow of 1,000: the root's page", f"{base}/q/{f}/jobs/flow-1k",
              "tree of 1,001 jobs, 300 states read")
    await one("flow of 1,000: a delayed child's page", f"{base}/q/{k}/jobs/k1k-950",
              "found by its entry's link")
    await one("flow of 1,000: a completed child's page", f"{base}/q/{k}/jobs/k1k-10"
              f"?parent={f}/0/flow-1k", "found by the parent named in its link")
    await one("flow of 10,000 (the most): the root's page", f"{base}/q/{f}/jobs/flow-10k",
              "tree of 10,000 jobs, 300 states read")
    await one("flow of 10,000: a child's page", f"{base}/q/{f}/jobs/k10k-9998")
    await one("a job page outside any flow", f"{base}/q/{part}/jobs/"
              + re.findall(r'/jobs/([^"]+)" class="mono"',
                           (await timed(s, f"{base}/q/{part}?limit=1", 1))[1])[0],
              "the flow_link read included")
    await one("phone search: 20 jobs", f"{base}/search", f"{made['sms_n']:,} jobs indexed, 4 "
              "partitions, every shown queue searched", form={"q": SEARCHED})
    await one("phone search: no jobs", f"{base}/search", form={"q": "+254799999999"},
              ok=(404,))
    await one("queue page over 8 partitions", f"{base}/q/{part}",
              f"{made['sms_n']:,} waiting; with its partition table")
    await one("breakers page, SCAN cached", f"{base}/breakers", "2 breakers")
    await one("breakers page with its SCAN", f"{nocache}/breakers",
              f"SCAN of {made['dbsize']:,} keys")
    return rows


async def main(n: int, repeat: int, pages: str = "all") -> None:
    from aiohttp import web

    from streamq.dashboard.app import create_app
    from streamq.dashboard.config import DashboardConfig
    from streamq.dashboard.state import Dashboard

    configure_logging("console", "error")  # not a line per dead-lettered job
    os.environ[KEYS_ENV] = BENCH_KEYS  # the dashboard opens the indexed queue with them
    with start_redis_server() as proc:
        qs = await fill(proc.url, n) if pages in ("all", "states") else {}
        made = await fill_new(proc.url, n) if pages in ("all", "new") else {}
        made["sms_n"] = n
        config = DashboardConfig.build(env=ENV, host="127.0.0.1", port=0)
        runners = []
        for cfg in (config, dataclasses.replace(config, breaker_scan_s=0)):
            runner = web.AppRunner(create_app(Dashboard(cfg, proc.url)), access_log=None)
            await runner.setup()
            await web.TCPSite(runner, "127.0.0.1", 0).start()
            runners.append(runner)
        base, nocache = (f"http://127.0.0.1:{r.addresses[0][1]}" for r in runners)
        rows = []
        new_rows: list[tuple[str, float, str]] = []
        overview = 0.0
        async with aiohttp.ClientSession() as s:
            if made.get("flows"):
                new_rows = await time_new(s, base, nocache, made, repeat)
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
        for runner in runners:
            await runner.cleanup()
        for q in qs.values():
            await q.close()

    def ms(v: float | None) -> str:
        return "-" if v is None else f"{v:.1f}"

    if rows:
        print(f"| state ({n:,} jobs in it) | queue page (ms) | next page (ms) | page at 90% "
              "depth (ms) | job page (ms) | other |")
        print("|---|---|---|---|---|---|")
        for state, first, nxt, deep, _walk_s, job_ms, extra in rows:
            print(f"| {state} | {ms(first)} | {ms(nxt)} | {ms(deep)} | {ms(job_ms)} | {extra} |")
        print(f"\nOverview of the five queues: {overview:.1f} ms. Median of {repeat} fetches "
              "over loopback HTTP, dashboard and Redis on this machine. Walking 90% of a "
              "listing 500 at a time: " + ", ".join(f"{r[0]} {r[4]:.1f}s" for r in rows) + ".")
    if new_rows:
        print("\n| page | ms | what |")
        print("|---|---|---|")
        for label, took, note in new_rows:
            print(f"| {label} | {took:.1f} | {note} |")
        print(f"\nMedian of {repeat} fetches over loopback HTTP; the Redis holds "
              f"{made['dbsize']:,} keys.")


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--jobs", type=int, default=100_000)
    p.add_argument("--repeat", type=int, default=5)
    p.add_argument("--pages", choices=("all", "states", "new"), default="all",
                   help="states: the pages of the five states; new: flows, breakers, phone "
                   "search, partitions; all: both")
    a = p.parse_args()
    anyio.run(main, a.jobs, a.repeat, a.pages)
