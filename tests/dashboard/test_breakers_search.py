"""The provider breakers page and the search by phone number, over HTTP (the browser
drives both in test_browser_flows_providers.py): breakers opened by the real breaker code
are shown with their state, reason (masked) and next probe; only an operator, with the
CSRF token, may close one, and that is written to the events stream with the actor. A
phone number is searched through the blind index by a POST (viewers too), shown masked,
never in a URL."""

from __future__ import annotations

import base64
import re

import aiohttp
import pytest

from streamq import Queue
from streamq.crypto import KEYS_ENV, KeyRing
from streamq.sms import SMSJob, create_otp_sms_job, create_welcome_sms_job
from streamq.sms.breaker import BreakerPolicy, Breakers
from streamq.sms.privacy import phone_terms
from tests.support.dashboard import OPERATOR, VIEWER, bearer, login, running_dashboard
from tests.test_partitions import ids_in

HTML = {"Accept": "text/html"}
KEYS = f"s1:{base64.b64encode(b's' * 32).decode()}"
A, A_NATIONAL, B, NOBODY = "+254712345678", "0712 345 678", "+254733000111", "+254700999888"


async def get(s: aiohttp.ClientSession, url: str, token: str = VIEWER) -> tuple[int, str]:
    async with s.get(url, headers={**bearer(token), **HTML}, allow_redirects=False) as r:
        return r.status, await r.text()


async def post(s: aiohttp.ClientSession, url: str, data: dict[str, str],
               headers: dict[str, str]) -> tuple[int, str, aiohttp.ClientResponse]:
    async with s.post(url, data=data, headers={**HTML, **headers}, allow_redirects=False) as r:
        return r.status, await r.text(), r


def row(html: str, provider: str) -> str:
    m = re.search(rf"<tr><td><b>{provider}</b>.*?</tr>", html, re.S)
    assert m, f"no row for {provider}"
    return m.group(0)


async def test_the_breakers_page_shows_and_closes_real_breakers(
        redis_url: str, queue_name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STREAMQ_SMS_QUEUE", queue_name)
    monkeypatch.setenv("SMS_PROVIDERS", "salum,africastalking,mock")
    monkeypatch.setenv("SALUM_RATE_LIMIT", "7")
    monkeypatch.setenv("SMS_BREAKER_ERRORS", "2")
    hidden = queue_name + "h"
    async with Queue(queue_name, redis_url=redis_url) as q, \
            Queue(hidden, redis_url=redis_url) as hq, aiohttp.ClientSession() as s:
        await q.ensure_groups()
        await hq.ensure_groups()
        breakers = Breakers(q, BreakerPolicy(errors=2, window_s=30, cooldown_s=600))
        for _ in range(2):
            await breakers.failure("salum", "error", f"connection refused calling for {A}")
        await breakers.failure("africastalking", "error", "read timeout")  # 1 of 2: closed
        await breakers.failure("custom", "config", "401 credentials refused")
        await Breakers(hq, BreakerPolicy(errors=1)).failure("salum", "error", "down")
        assert (await breakers.admit("salum", 5)).state == "open"
        async with running_dashboard(redis_url, queues=[queue_name]) as d:
            status, html = await get(s, d.url + "/breakers")
            assert status == 200, html[:300]
            salum = row(html, "salum")
            assert f'data-breaker="{queue_name}:salum">open<' in salum
            assert "errors in a row" in salum and "connection refused calling for +2547****678" in salum
            assert "probe from" in salum and "7/s" in salum and "close breaker" in salum
            at = row(html, "africastalking")
            assert ">closed<" in at and 'data-breaker-errors="1"' in at
            assert "close breaker" not in at
            assert "(never failed)" in row(html, "mock")
            custom = row(html, "custom")  # found by the SCAN, not configured here
            assert ">open<" in custom and "credentials refused" in custom
            assert hidden not in html  # a queue this dashboard does not show
            assert "opens after 2 errors in a row" in html and A not in html
            assert "712345678" not in html
            # a viewer sees the button disabled and is refused by the server
            assert re.search(r'<button type=submit disabled title="operators only">close breaker',
                             salum)
            form = {"queue": queue_name, "provider": "salum"}
            status, text, _ = await post(s, d.url + "/breakers/close", form, bearer(VIEWER))
            assert status == 403 and "can look, not act" in text
            # an operator's browser session without the CSRF token is refused too
            async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as browser:
                csrf = await login(browser, d.url, OPERATOR)
                status, text, _ = await post(browser, d.url + "/breakers/close", form,
                                             {"Origin": d.url})
                assert status == 403 and "CSRF" in text
                assert (await breakers.snapshot("salum"))["st"] == "open"
                status, _, r = await post(browser, d.url + "/breakers/close",
                                          {**form, "csrf": csrf}, {"Origin": d.url})
                assert status == 303 and r.headers["Location"].startswith("/breakers?msg=")
                status, html = await get(browser, d.url + r.headers["Location"])
                assert "closed the breaker of salum" in html
                assert ">closed<" in row(html, "salum") and "closed by hand by operator" in html
            assert (await breakers.admit("salum", 5)).state == "closed"
            events = await q.read_events()
            acts = [(e.job_id, (e.fields or {}).get("act"), (e.fields or {}).get("actor"))
                    for e in events if e.name == "action"]
            assert acts == [("salum", "close_breaker", "operator")]
            assert [(e.fields or {}).get("kind") for e in events if e.name == "breaker"
                    and (e.fields or {}).get("state") == "closed"] == ["manual"]
            # closing a closed breaker changes nothing, and says so
            status, text, _ = await post(s, d.url + "/breakers/close", form,
                                         {**bearer(OPERATOR), "Accept": "application/json"})
            assert status == 200 and "closed already" in text
            status, _, _ = await post(s, d.url + "/breakers/close",
                                      {"queue": queue_name, "provider": "Bad Name"}, bearer(OPERATOR))
            assert status == 400


async def test_search_by_phone_number_through_the_blind_index(
        redis_url: str, queue_name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(KEYS_ENV, raising=False)
    q = Queue(queue_name, redis_url=redis_url, job_type=SMSJob, partitions=2, encrypt=True,
              keyring=KeyRing.parse(KEYS), blind_index=phone_terms)
    try:
        a_jobs = [await create_otp_sms_job(recipient=A, code="4821", queue=q, job_id=job_id)
                  for job_id in (ids_in(0, 2, "a-")[0], ids_in(1, 2, "a-")[0])]
        await create_welcome_sms_job(recipient=B, user_name="Otieno", queue=q, job_id="plain-1")
        async with aiohttp.ClientSession() as s:
            async with running_dashboard(redis_url, queues=[queue_name]) as d:
                # without the keys, the index cannot be searched: one clear line
                status, text, _ = await post(s, d.url + "/search", {"q": A}, bearer(VIEWER))
                assert status == 404 and "STREAMQ_ENCRYPTION_KEYS" in text
            monkeypatch.setenv(KEYS_ENV, KEYS)
            async with running_dashboard(redis_url, queues=[queue_name]) as d:
                # a viewer finds A's jobs (national format too); masked, never in clear
                status, html, r = await post(s, d.url + "/search", {"q": A_NATIONAL}, bearer(VIEWER))
                assert status == 200, html[:300]
                assert r.url.query_string == "" and "0712****678" in html
                found = re.findall(r'/jobs/([^"]+)" class="mono"', html)
                assert sorted(found) == sorted(j.job_id for j in a_jobs)
                for secret in ("712345678", "712 345 678", "4821"):
                    assert secret not in html, secret
                status, html, _ = await post(s, d.url + "/search", {"q": NOBODY}, bearer(VIEWER))
                assert status == 404 and "no jobs of +2547****888" in html
                assert "700999888" not in html
                async with s.post(d.url + "/search", data={"q": B},
                                  headers={**bearer(VIEWER), "Accept": "application/json"}) as r:
                    body = await r.json()
                assert r.status == 200 and body["searched"] == "+2547****111"
                assert [j["state"] for j in body["jobs"]] == ["waiting"]
                # a job id typed in the same box opens the job; rubbish is a 400
                status, _, r = await post(s, d.url + "/search", {"q": "plain-1"}, bearer(VIEWER))
                assert status == 303 and r.headers["Location"] == f"/q/{queue_name}/jobs/plain-1"
                status, html, _ = await post(s, d.url + "/search", {"q": "<b>?"}, bearer(VIEWER))
                assert status == 400 and "<b>?" not in html
                # a viewer's browser session searches with the CSRF token; without it: 403
                async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as browser:
                    csrf = await login(browser, d.url, VIEWER)
                    status, html, _ = await post(browser, d.url + "/search",
                                                 {"q": A, "csrf": csrf}, {"Origin": d.url})
                    assert status == 200 and "+2547****678" in html
                    status, text, _ = await post(browser, d.url + "/search", {"q": A},
                                                 {"Origin": d.url})
                    assert status == 403 and "CSRF" in text
                # the header's box posts: nothing typed in it goes into a URL
                status, html = await get(s, d.url + "/")
                assert re.search(r'<form class=search action="/search" method=post', html)
    finally:
        await q.close()
