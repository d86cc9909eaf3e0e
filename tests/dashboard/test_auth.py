"""Dashboard auth over real HTTP (no browser): tokens, sessions, roles, CSRF, the
events-stream audit, refusal to start without tokens, and no token in any log."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import aiohttp
import pytest
from yarl import URL

from streamq import ConfigError, JobOptions, PermanentError, Queue, Worker
from streamq.dashboard.auth import COOKIE
from streamq.dashboard.config import DashboardConfig, parse_tokens
from streamq.devredis import free_port
from tests.support.dashboard import OPERATOR, TOKENS, VIEWER, bearer, csrf_of, login, running_dashboard
from tests.support.util import ROOT, running, wait_until


def jar() -> aiohttp.CookieJar:
    return aiohttp.CookieJar(unsafe=True)  # cookies for 127.0.0.1


async def dead_job(q: Queue) -> str:
    ref = await q.add({"to": "+254712345678"}, JobOptions(attempts=1))

    async def fail(job: object) -> None:
        raise PermanentError("1003 invalid mobile +254712345678")

    async with running(Worker(q, fail, rate_limit=None)):
        await wait_until(lambda: _dead(q), 10, 0.02, "a dead letter")
    return ref.job_id


async def _dead(q: Queue) -> bool:
    return bool((await q.counts())["dead"])


async def actions(q: Queue) -> list[tuple[str, str, str, str]]:
    return [((e.fields or {}).get("act", ""), (e.fields or {}).get("actor", ""), e.job_id,
             (e.fields or {}).get("n", "")) for e in await q.read_events() if e.name == "action"]


async def test_no_token_is_401_and_a_browser_gets_the_login_form(
        redis_url: str, queue_name: str) -> None:
    async with Queue(queue_name, redis_url=redis_url) as q, running_dashboard(redis_url) as d, \
            aiohttp.ClientSession(cookie_jar=jar()) as s:
        await q.add({"a": 1})
        for path in ("/", f"/q/{queue_name}", "/api/counts", f"/live?queue={queue_name}"):
            async with s.get(d.url + path) as r:
                assert r.status == 401, path
                assert r.headers["WWW-Authenticate"].startswith("Bearer")
        async with s.get(d.url + "/", headers={"Accept": "text/html"}) as r:
            assert r.status == 401 and "name=token" in await r.text()
        async with s.get(d.url + "/", headers={"Authorization": "Bearer wrong-token-0123456789"}) as r:
            assert r.status == 401
        async with s.post(d.url + f"/q/{queue_name}/pause") as r:
            assert r.status == 401
        async with s.get(d.url + "/healthz") as r, s.get(d.url + "/static/app.js") as js:
            assert r.status == 200 and js.status == 200
        assert not await q.is_paused()


async def test_a_viewer_can_look_but_gets_403_for_every_action(
        redis_url: str, queue_name: str) -> None:
    async with Queue(queue_name, redis_url=redis_url) as q:
        job_id = await dead_job(q)
        waiting = await q.add({"a": 1})
        async with running_dashboard(redis_url) as d, aiohttp.ClientSession(cookie_jar=jar()) as s:
            async with s.get(d.url + f"/q/{queue_name}/dead", headers=bearer(VIEWER)) as r:
                assert r.status == 200 and job_id in await r.text()
            token = await login(s, d.url, VIEWER)
            posts = [(f"/q/{queue_name}/dead/replay", {"job_id": job_id}),
                     (f"/q/{queue_name}/dead/replay", {"all": "1"}),
                     (f"/q/{queue_name}/dead/purge", {}), (f"/q/{queue_name}/pause", {}),
                     (f"/q/{queue_name}/resume", {}),
                     (f"/q/{queue_name}/jobs/{waiting.job_id}/cancel", {}),
                     (f"/q/{queue_name}/jobs/{job_id}/replay", {})]
            for path, form in posts:
                for headers in (bearer(VIEWER), {"Origin": d.url}):  # token, then cookie
                    async with s.post(d.url + path, data={**form, "csrf": token}, headers=headers,
                                      allow_redirects=False) as r:
                        assert r.status == 403, (path, headers)
                        assert "viewer role can look, not act" in await r.text()
        counts = await q.counts()
        assert counts["dead"] == 1 and counts["waiting"] == 1 and not counts["paused"]
        assert await actions(q) == []


async def test_an_operator_replays_and_the_action_is_in_the_events_stream(
        redis_url: str, queue_name: str) -> None:
    async with Queue(queue_name, redis_url=redis_url) as q:
        job_id = await dead_job(q)
        async with running_dashboard(redis_url) as d, aiohttp.ClientSession(cookie_jar=jar()) as s:
            token = await login(s, d.url, OPERATOR)
            async with s.post(d.url + f"/q/{queue_name}/dead/replay",
                              data={"job_id": job_id, "csrf": token}, headers={"Origin": d.url},
                              allow_redirects=False) as r:
                assert r.status == 303, await r.text()
                assert "replayed+1" in r.headers["Location"]
            # a script with the operator token: no cookie, no CSRF token needed
            async with aiohttp.ClientSession() as plain, plain.post(
                    d.url + f"/q/{queue_name}/pause",
                    headers={**bearer(OPERATOR), "Accept": "application/json"}) as r:
                assert r.status == 200 and (await r.json())["ok"] is True
        assert (await q.counts())["waiting"] == 1 and await q.is_paused()
        assert await actions(q) == [("replay", "operator", job_id, "1"),
                                    ("pause", "operator", "*", "1")]


async def test_csrf_refusals(redis_url: str, queue_name: str) -> None:
    async with Queue(queue_name, redis_url=redis_url) as q:
        await q.add({"a": 1})
        async with running_dashboard(redis_url) as d, aiohttp.ClientSession(cookie_jar=jar()) as s:
            token = await login(s, d.url, OPERATOR)
            path = d.url + f"/q/{queue_name}/pause"
            cases = [
                ({"csrf": token}, {}),  # no Origin, no Referer
                ({"csrf": token}, {"Origin": "http://evil.example"}),
                ({"csrf": token}, {"Referer": "http://evil.example/page"}),
                ({"csrf": token}, {"Origin": "null"}),
                ({}, {"Origin": d.url}),  # no token
                ({"csrf": "x" * 32}, {"Origin": d.url}),  # a wrong token
            ]
            for form, headers in cases:
                async with s.post(path, data=form, headers=headers, allow_redirects=False) as r:
                    assert r.status == 403, (form, headers)
                    assert "CSRF" in await r.text()
            # a token of another session does not pass either
            async with aiohttp.ClientSession(cookie_jar=jar()) as other:
                other_token = await login(other, d.url, OPERATOR)
            assert other_token != token
            async with s.post(path, data={"csrf": other_token}, headers={"Origin": d.url},
                              allow_redirects=False) as r:
                assert r.status == 403
            assert not await q.is_paused() and await actions(q) == []
            # the header form works, with the Referer when no Origin is sent
            async with s.post(path, headers={"X-CSRF-Token": token, "Referer": d.url + "/x"},
                              allow_redirects=False) as r:
                assert r.status == 303
            assert await q.is_paused()
            # a login posted from a foreign page is refused (login CSRF)
            async with s.post(d.url + "/login", data={"token": OPERATOR},
                              headers={"Origin": "http://evil.example"}) as r:
                assert r.status == 403


async def test_the_session_cookie_is_strict_signed_and_expires(redis_url: str) -> None:
    now = [1_000_000.0]
    async with running_dashboard(redis_url, clock=lambda: now[0], session_hours=1.0) as d, \
            aiohttp.ClientSession(cookie_jar=jar()) as s:
        async with s.post(d.url + "/login", data={"token": "not-a-valid-token-at-all"},
                          headers={"Origin": d.url}) as r:
            assert r.status == 401 and "not valid" in await r.text()
        async with s.post(d.url + "/login", data={"token": OPERATOR, "next": "//evil.example/"},
                          headers={"Origin": d.url}, allow_redirects=False) as r:
            assert r.status == 303 and r.headers["Location"] == "/"
            cookie = r.headers["Set-Cookie"]
        assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Path=/" in cookie
        value = s.cookie_jar.filter_cookies(URL(d.url))[COOKIE].value
        async with s.get(d.url + "/api/counts") as r:
            assert r.status == 200
        # tampered: another role in the payload, same signature
        payload, sig = value.split(".")
        import base64
        import json
        body = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
        body["r"] = "operator" if body["r"] == "viewer" else "viewer"
        forged = base64.urlsafe_b64encode(json.dumps(body).encode()).rstrip(b"=").decode()
        async with aiohttp.ClientSession(cookies={COOKIE: forged + "." + sig}) as f, \
                f.get(d.url + "/api/counts") as r:
            assert r.status == 401
        now[0] += 3601  # past session_hours
        async with s.get(d.url + "/api/counts") as r:
            assert r.status == 401
    # a session of a token that is no longer configured is void
    async with running_dashboard(redis_url, env={"STREAMQ_DASHBOARD_TOKENS": f"operator:{OPERATOR}",
                                                 "STREAMQ_DASHBOARD_SECRET": "s" * 20}) as d1, \
            aiohttp.ClientSession(cookie_jar=jar()) as s1:
        await login(s1, d1.url, OPERATOR)
        kept = s1.cookie_jar.filter_cookies(URL(d1.url))[COOKIE].value
    env2 = {"STREAMQ_DASHBOARD_TOKENS": "operator:another-operator-token-0123",
            "STREAMQ_DASHBOARD_SECRET": "s" * 20}
    async with running_dashboard(redis_url, env=env2) as d2, \
            aiohttp.ClientSession(cookies={COOKIE: kept}) as s2, s2.get(d2.url + "/api/counts") as r:
        assert r.status == 401


async def test_logout_clears_the_session(redis_url: str) -> None:
    async with running_dashboard(redis_url) as d, aiohttp.ClientSession(cookie_jar=jar()) as s:
        token = await login(s, d.url, VIEWER)  # a viewer may log out
        async with s.post(d.url + "/logout", data={"csrf": token}, headers={"Origin": d.url},
                          allow_redirects=False) as r:
            assert r.status == 303 and r.headers["Location"] == "/login"
        async with s.get(d.url + "/api/counts") as r:
            assert r.status == 401


def test_tokens_are_required_and_checked() -> None:
    with pytest.raises(ConfigError, match="refusing to start without STREAMQ_DASHBOARD_TOKENS"):
        DashboardConfig.build(env={})
    twice = "viewer:" + "a" * 20 + ",operator:" + "a" * 20
    for bad in ("admin:" + "x" * 20, "viewer:short", "viewer", twice):
        with pytest.raises(ConfigError) as e:
            parse_tokens(bad)
        assert "x" * 20 not in str(e.value) and "a" * 20 not in str(e.value)
    assert DashboardConfig.build(env={}, insecure_local=True).host == "127.0.0.1"
    with pytest.raises(ConfigError, match=r"binds 127\.0\.0\.1 only"):
        DashboardConfig.build(env={}, insecure_local=True, host="0.0.0.0")
    with pytest.raises(ConfigError, match="insecure-local"):
        DashboardConfig.build(env=TOKENS, insecure_local=True)


async def test_insecure_local_acts_as_local_with_csrf_still_checked(
        redis_url: str, queue_name: str) -> None:
    async with Queue(queue_name, redis_url=redis_url) as q:
        await q.add({"a": 1})
        async with running_dashboard(redis_url, env={}, insecure_local=True) as d, \
                aiohttp.ClientSession(cookie_jar=jar()) as s:
            token = await csrf_of(s, d.url)  # the first page sets the session
            path = d.url + f"/q/{queue_name}/pause"
            async with s.post(path, data={"csrf": token}, allow_redirects=False) as r:
                assert r.status == 403  # no Origin: refused even without auth
            async with s.post(path, data={"csrf": token}, headers={"Origin": d.url},
                              allow_redirects=False) as r:
                assert r.status == 303
        assert await q.is_paused()
        assert await actions(q) == [("pause", "local", "*", "1")]


def test_the_command_refuses_to_start_without_tokens_and_never_logs_them(
        redis_url: str, tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("STREAMQ_", "REDIS_"))}
    env.update(PYTHONPATH=str(ROOT), REDIS_URL=redis_url)
    r = subprocess.run([sys.executable, "-m", "streamq", "dashboard"], env=env, cwd=ROOT,
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 2 and r.stderr.count("\n") == 1
    assert "refusing to start without STREAMQ_DASHBOARD_TOKENS" in r.stderr
    port = free_port()
    log = tmp_path / "dash.log"
    with open(log, "w") as out:
        proc = subprocess.Popen([sys.executable, "-m", "streamq", "dashboard", "--port", str(port),
                                 "--host", "127.0.0.1"], env={**env, **TOKENS}, cwd=ROOT,
                                stdout=out, stderr=subprocess.STDOUT)
    try:
        import urllib.error
        import urllib.request

        def get(path: str, headers: dict[str, str]) -> int:
            req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", headers=headers)
            try:
                with urllib.request.urlopen(req, timeout=5) as resp:
                    return int(resp.status)
            except urllib.error.HTTPError as exc:
                return int(exc.code)
            except OSError:
                return 0

        import time
        deadline = time.monotonic() + 20
        while get("/healthz", {}) != 200:
            assert time.monotonic() < deadline, log.read_text()
            assert proc.poll() is None, log.read_text()
            time.sleep(0.05)
        assert get("/", bearer(OPERATOR)) == 200
        assert get("/", bearer("wrong" + OPERATOR)) == 401
        data = f"token={OPERATOR}".encode()
        req = urllib.request.Request(f"http://127.0.0.1:{port}/login", data=data,
                                     headers={"Origin": f"http://127.0.0.1:{port}"})
        with pytest.raises(urllib.error.HTTPError):  # 303 to / then 401 (no cookie jar)
            urllib.request.urlopen(req, timeout=5)
    finally:
        proc.send_signal(signal.SIGINT)
        assert proc.wait(20) == 0
    text = log.read_text()
    assert "streamq dashboard on http://127.0.0.1" in text
    assert re.search(r"dashboard.request .*path=/healthz.*status=200", text), text
    assert re.search(r"dashboard.request .*status=401", text), text
    assert OPERATOR not in text and VIEWER not in text
    assert not re.search(r"operator-test-token", text)
