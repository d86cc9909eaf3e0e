"""The dashboard's schedules page: next runs, last run and its state; run now, pause and
resume for operators (CSRF-checked, written to the events stream), 403 for viewers."""

from __future__ import annotations

import time

import aiohttp

from streamq import Job, Queue, Worker
from streamq.schedules import Schedules
from tests.dashboard.test_auth import actions, jar
from tests.support.dashboard import OPERATOR, VIEWER, bearer, login, running_dashboard
from tests.support.util import running, wait_until

HTML = {"Accept": "text/html"}


async def test_the_schedules_page_shows_next_runs_and_the_last_run(
        redis_url: str, queue_name: str) -> None:
    async with Queue(queue_name, redis_url=redis_url) as q:
        await q.upsert_schedule("digest", cron="0 8 * * *", tz="Africa/Nairobi", data={"d": 1})
        await Schedules(q, clock=lambda: time.time() - 1.5).upsert("tick", every=1.0, data=1)
        seen: list[str] = []

        async def handler(job: Job) -> None:
            seen.append(job.id)

        async with running(Worker(q, handler, rate_limit=None)):
            await wait_until(lambda: seen, 10, message="a run")
            await q.pause_schedule("tick")
        async with running_dashboard(redis_url) as d, aiohttp.ClientSession() as s, s.get(
                d.url + f"/q/{queue_name}/schedules", headers={**bearer(VIEWER), **HTML}) as r:
            text = await r.text()
            assert r.status == 200, text
        assert "cron 0 8 * * * (Africa/Nairobi)" in text
        assert text.count("05:00:00Z") >= 3  # the next 3 runs: 08:00 in Nairobi
        assert "every 1s" in text and ">paused<" in text and ">active<" in text
        assert "{tick}@" in text and "completed" in text  # the last run and its state
        assert 'href="/q/' + queue_name + '/schedules"' in text  # the tab
        assert ">run now<" in text and ">resume<" in text and ">pause<" in text


async def test_operators_run_pause_and_resume_viewers_get_403(redis_url: str, queue_name: str) -> None:
    async with Queue(queue_name, redis_url=redis_url) as q:
        await q.upsert_schedule("nightly", cron="0 3 * * *", tz="Europe/Berlin", data={"n": 1})
        base = f"/q/{queue_name}/schedules"
        async with running_dashboard(redis_url) as d:
            async with aiohttp.ClientSession(cookie_jar=jar()) as s:
                token = await login(s, d.url, VIEWER)
                for path in ("/run", "/pause", "/resume"):
                    async with s.post(d.url + base + path, data={"schedule": "nightly",
                                                                 "csrf": token},
                                      headers={"Origin": d.url}, allow_redirects=False) as r:
                        assert r.status == 403, path
            assert await actions(q) == []
            async with aiohttp.ClientSession(cookie_jar=jar()) as s:
                token = await login(s, d.url, OPERATOR)
                # no CSRF token: refused
                async with s.post(d.url + base + "/run", data={"schedule": "nightly"},
                                  headers={"Origin": d.url}, allow_redirects=False) as r:
                    assert r.status == 403
                for path, msg in (("/run", "added+a+run+of+nightly"), ("/pause", "paused+nightly")):
                    async with s.post(d.url + base + path, data={"schedule": "nightly",
                                                                 "csrf": token},
                                      headers={"Origin": d.url}, allow_redirects=False) as r:
                        assert r.status == 303, await r.text()
                        assert msg in r.headers["Location"]
                s_ = await q.get_schedule("nightly")
                assert s_ is not None and s_.paused and s_.runs == 0
                assert (await q.counts())["waiting"] == 1  # the extra run
                async with s.post(d.url + base + "/resume",
                                  data={"schedule": "bad{id}", "csrf": token},
                                  headers={"Origin": d.url}, allow_redirects=False) as r:
                    assert r.status == 400
            async with aiohttp.ClientSession() as plain, plain.post(
                    d.url + base + "/resume", data={"schedule": "nightly"},
                    headers={**bearer(OPERATOR), "Accept": "application/json"}) as r:
                assert r.status == 200 and (await r.json())["ok"] is True
        s_ = await q.get_schedule("nightly")
        assert s_ is not None and not s_.paused
        assert await actions(q) == [("run_schedule", "operator", "nightly", "1"),
                                    ("pause_schedule", "operator", "nightly", "1"),
                                    ("resume_schedule", "operator", "nightly", "1")]
