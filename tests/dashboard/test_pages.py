"""The dashboard's pages over HTTP (no browser): which queues are shown, bad input,
search, workers, dead-letter paging, cancel, escaping, security headers, Redis down."""

from __future__ import annotations

import re

import aiohttp
import anyio

from streamq import Job, JobOptions, PermanentError, Queue, Worker
from streamq.devredis import start_redis_server
from tests.support.dashboard import OPERATOR, VIEWER, bearer, running_dashboard
from tests.support.util import running, wait_until

HTML = {"Accept": "text/html"}


async def get(s: aiohttp.ClientSession, url: str, token: str = VIEWER,
              **kw: object) -> tuple[int, str, aiohttp.ClientResponse]:
    async with s.get(url, headers={**bearer(token), **HTML}, allow_redirects=False, **kw) as r:  # type: ignore[arg-type]
        return r.status, await r.text(), r


async def test_shown_queues_unknown_queues_and_bad_input(redis_url: str, queue_name: str) -> None:
    other = queue_name + "x"
    async with Queue(queue_name, redis_url=redis_url) as q, \
            Queue(other, redis_url=redis_url) as o, aiohttp.ClientSession() as s:
        await q.add({"a": 1})
        await o.add({"a": 1})
        async with running_dashboard(redis_url, rescan_s=0) as d:  # every queue found
            status, text, _ = await get(s, d.url + "/")
            assert status == 200 and queue_name in text and other in text
            late = queue_name + "late"  # made after the scan: reachable by name at once
            async with Queue(late, redis_url=redis_url) as lq:
                await lq.add({"a": 1})
            status, text, _ = await get(s, d.url + "/")
            assert late not in text
            status, text, _ = await get(s, d.url + f"/q/{late}")
            assert status == 200
            status, text, _ = await get(s, d.url + "/")
            assert late in text
            status, text, _ = await get(s, d.url + f"/q/{queue_name}never")
            assert status == 404
        async with running_dashboard(redis_url, queues=[queue_name]) as d:  # only --queue
            status, text, r = await get(s, d.url + "/")
            assert status == 200 and queue_name in text and other not in text
            assert "default-src 'self'" in r.headers["Content-Security-Policy"]
            assert r.headers["X-Frame-Options"] == "DENY"
            for path, code in [(f"/q/{other}", 404), ("/q/nosuchqueue", 404), ("/q/bad%20name", 404),
                               (f"/q/{queue_name}?state=sleeping", 400),
                               (f"/q/{queue_name}?state=waiting&cursor=w0.zz", 400),
                               (f"/q/{queue_name}?limit=abc", 400),
                               (f"/q/{queue_name}/jobs/nosuchjob", 404),
                               (f"/q/{queue_name}/jobs/bad%20id", 400),
                               (f"/q/{queue_name}/dead?after=notanid", 400),
                               (f"/q/{queue_name}?state=cancelled", 200)]:
                status, text, _ = await get(s, d.url + path)
                assert status == code, (path, status, text[:200])
            status, text, _ = await get(s, d.url + f"/q/{queue_name}?state=cancelled")
            assert "counted, not listed" in text
            async with s.get(d.url + f"/api/counts?queue={queue_name}", headers=bearer(VIEWER)) as r:
                body = await r.json()
                assert body[queue_name]["counts"] == await q.counts()


async def test_search_by_job_id(redis_url: str, queue_name: str) -> None:
    a, b = queue_name, queue_name + "b"
    async with Queue(a, redis_url=redis_url) as qa, Queue(b, redis_url=redis_url) as qb, \
            running_dashboard(redis_url, queues=[a, b]) as d, aiohttp.ClientSession() as s:
        one = await qa.add({"x": 1})
        await qa.add({"x": 1}, JobOptions(job_id="shared-id"))
        await qb.add({"x": 1}, JobOptions(job_id="shared-id"))
        status, _, r = await get(s, d.url + f"/search?id={one.job_id}")
        assert status == 303 and r.headers["Location"] == f"/q/{a}/jobs/{one.job_id}"
        status, text, _ = await get(s, d.url + "/search?id=shared-id")
        assert status == 200 and "in 2 queues" in text and f"/q/{b}/jobs/shared-id" in text
        status, text, _ = await get(s, d.url + "/search?id=nothing-here")
        assert status == 404 and "No job" in text
        status, text, _ = await get(s, d.url + "/search?id=<script>")
        assert status == 400 and "<script>" not in text


async def test_workers_and_dead_letter_pages(redis_url: str, queue_name: str) -> None:
    async with Queue(queue_name, redis_url=redis_url) as q, \
            running_dashboard(redis_url, queues=[queue_name], page_size=3) as d, \
            aiohttp.ClientSession() as s:
        refs = await q.add_bulk([({"i": i}, JobOptions(attempts=1)) for i in range(7)])
        release = anyio.Event()

        async def handler(job: Job) -> None:
            if job.data["i"] == 6:
                await release.wait()
                return
            raise PermanentError(f"bad number +25471234567{job.data['i']}")

        async with running(Worker(q, handler, rate_limit=None, name="dash-worker-1")):
            await wait_until(lambda: _dead(q, 6), 10, 0.02, "six dead letters")
            status, text, _ = await get(s, d.url + f"/q/{queue_name}/workers")
            assert status == 200 and "dash-worker-1" in text
            status, text, _ = await get(s, d.url + f"/q/{queue_name}?state=active")
            assert refs[6].job_id in text and "dash-worker-1" in text
            release.set()
        seen: list[str] = []
        path = f"/q/{queue_name}/dead"
        while True:
            status, text, _ = await get(s, d.url + path)
            assert status == 200 and "+25471234567" not in text and "+2547****67" in text
            seen += re.findall(r'/jobs/([a-z]+)" class="mono"', text)
            m = re.search(r'href="([^"]+)" class="next"', text)
            if not m:
                break
            path = m.group(1).replace("&amp;", "&")
        # oldest first, 3 a page, each once
        assert seen == [dl.job_id for dl in await q.dead_letters(100)]
        assert sorted(seen) == sorted(r.job_id for r in refs[:6])


async def _dead(q: Queue, n: int) -> bool:
    return (await q.counts())["dead"] == n


async def test_cancel_from_the_job_page_and_values_are_escaped(redis_url: str, queue_name: str) -> None:
    async with Queue(queue_name, redis_url=redis_url) as q, \
            running_dashboard(redis_url, queues=[queue_name]) as d, aiohttp.ClientSession() as s:
        ref = await q.add({"name": "<script>alert(1)</script>", "to": "+254712345678"},
                          JobOptions(delay=60))
        status, text, _ = await get(s, d.url + f"/q/{queue_name}/jobs/{ref.job_id}")
        assert status == 200 and "<script>alert" not in text
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in text and "+2547****678" in text
        assert "cancel job" in text
        async with s.post(d.url + f"/q/{queue_name}/jobs/{ref.job_id}/cancel",
                          headers={**bearer(OPERATOR), "Accept": "application/json"}) as r:
            assert r.status == 200 and (await r.json())["affected"] == 1
        async with s.get(d.url + f"/api/q/{queue_name}/jobs/{ref.job_id}",
                         headers=bearer(VIEWER)) as r:
            assert (await r.json())["state"] == "cancelled"
        acts = [(e.fields or {}) for e in await q.read_events() if e.name == "action"]
        assert [(f["act"], f["actor"], f["n"]) for f in acts] == [("cancel", "operator", "1")]


async def test_redis_going_away_is_a_503_with_one_line(queue_name: str) -> None:
    with start_redis_server() as proc:
        async with Queue(queue_name, redis_url=proc.url) as q:
            await q.add({"a": 1})
        async with running_dashboard(proc.url, queues=[queue_name]) as d, \
                aiohttp.ClientSession() as s:
            status, _, _ = await get(s, d.url + f"/q/{queue_name}")
            assert status == 200
            proc.stop()
            async with s.get(d.url + f"/q/{queue_name}", headers=bearer(VIEWER)) as r:
                text = await r.text()
                assert r.status == 503 and text.count("\n") == 1 and "Redis" in text, text


async def test_the_job_page_shows_progress_results_and_a_waiting_parent(
    redis_url: str, queue_name: str
) -> None:
    from streamq import FlowJob

    async with Queue(queue_name, redis_url=redis_url) as q, \
            running_dashboard(redis_url, queues=[queue_name]) as d, aiohttp.ClientSession() as s:
        await q.add({}, JobOptions(job_id="busy"))
        await q.add({}, JobOptions(job_id="paid"))
        await q.add_flow(FlowJob(data={"to": "+254712345678"}, options=JobOptions(job_id="top"),
                                 children=[FlowJob(data={}, options=JobOptions(job_id="kid",
                                                                                delay=60))]),
                         on_child_failure="fail")
        reported, finish = anyio.Event(), anyio.Event()

        async def handler(job: Job) -> object:
            if job.id == "busy":
                await job.progress(0.42)
                reported.set()
                await finish.wait()
                return None
            return {"receipt": "r-9", "to": "+254712345678", "message": "your code is 4321"}

        async with running(Worker(q, handler, rate_limit=None)):
            await reported.wait()
            await wait_until(lambda: _completed(q, "paid"), 10, 0.02, "paid to complete")
            status, text, _ = await get(s, d.url + f"/q/{queue_name}/jobs/busy")
            assert status == 200 and 'value="42"' in text and "42%" in text
            async with s.get(d.url + f"/api/q/{queue_name}/jobs/busy",
                             headers=bearer(VIEWER)) as r:
                assert (await r.json())["progress"] == 0.42
            finish.set()
        status, text, _ = await get(s, d.url + f"/q/{queue_name}/jobs/paid")
        assert status == 200 and "<h2>Result</h2>" in text and "r-9" in text
        # the result is shown as payloads are: numbers masked, message texts hidden
        assert "+254712345678" not in text and "+2547****678" in text and "4321" not in text
        async with s.get(d.url + f"/api/q/{queue_name}/jobs/paid", headers=bearer(VIEWER)) as r:
            body = await r.json()
            assert body["result"]["receipt"] == "r-9" and body["result"]["message"] == "***"
        status, text, _ = await get(s, d.url + f"/q/{queue_name}/jobs/top")
        assert status == 200 and "waiting_children" in text and "children not finished" in text
        assert "its flow, while it waits for its children" in text and "+2547****678" in text


async def _completed(q: Queue, job_id: str) -> bool:
    info = await q.get_job(job_id)
    return info is not None and info.state == "completed"


async def test_job_ids_with_braces_and_url_special_characters(redis_url: str,
                                                              queue_name: str) -> None:
    """Every character a job id may hold works in the job routes: the page, its JSON, and
    an action (aiohttp's default segment pattern refuses { and }: they 404ed)."""
    from urllib.parse import quote

    ids = ["order-{42}-sms", "a+b@c=d:e.f_g", "{tag}", "x{y}z+1"]
    async with Queue(queue_name, redis_url=redis_url) as q, \
            running_dashboard(redis_url, queues=[queue_name]) as d, aiohttp.ClientSession() as s:
        for job_id in ids:
            await q.add({"i": job_id}, JobOptions(job_id=job_id, delay=600))
        for job_id in ids:
            for path in (quote(job_id, safe=""), job_id.replace("+", "%2B")):
                status, text, _ = await get(s, d.url + f"/q/{queue_name}/jobs/{path}")
                assert status == 200, (job_id, path, status, text[:200])
                assert '<span class="badge st-delayed">delayed</span>' in text
            async with s.get(d.url + f"/api/q/{queue_name}/jobs/{quote(job_id, safe='')}",
                             headers=bearer(VIEWER)) as r:
                assert r.status == 200 and (await r.json())["id"] == job_id
            # the queue page links to it with a path that finds it again
            status, text, _ = await get(s, d.url + f"/q/{queue_name}?state=delayed")
            assert f'href="/q/{queue_name}/jobs/{quote(job_id, safe="")}"' in text
        async with s.post(d.url + f"/q/{queue_name}/jobs/{quote(ids[0], safe='')}/cancel",
                          headers={**bearer(OPERATOR), "Accept": "application/json"}) as r:
            assert r.status == 200 and (await r.json())["affected"] == 1
        info = await q.get_job(ids[0])
        assert info is not None and info.state.value == "cancelled"
