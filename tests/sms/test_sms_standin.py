"""The Salum stand-in tells the truth on its console and documents its control endpoints."""

from __future__ import annotations

import re
import subprocess
import sys
from typing import Any

import aiohttp
import pytest

from streamq.sms.providers import ProviderConfigError, SalumSMSProvider
from streamq.sms.standin import CONTROL_HELP, SalumStandin
from tests.sms.conftest import API_KEY, PARTNER_ID, SHORTCODE
from tests.support.util import ROOT


async def _call(method: str, url: str, doc: Any = None) -> tuple[int, Any]:
    async with aiohttp.ClientSession() as session, session.request(method, url, json=doc) as r:
        return r.status, await r.json(content_type=None) if r.content_type.endswith("json") \
            else await r.text()


async def test_console_prints_the_code_actually_sent(capsys: pytest.CaptureFixture[str]) -> None:
    async with SalumStandin(api_key=API_KEY, partner_id=PARTNER_ID, echo=True) as standin:
        wrong = SalumSMSProvider(standin.url, "not-the-key", PARTNER_ID, SHORTCODE)
        right = SalumSMSProvider(standin.url, API_KEY, PARTNER_ID, SHORTCODE)
        try:
            with pytest.raises(ProviderConfigError):  # credentials: the provider, not the message
                await wrong.send("+254712345678", "hi", idempotency_key="j1")
            await right.send("+254712345678", "hi", idempotency_key="j2")
            standin.script("http503", "1004")
            for key in ("j3", "j4"):
                with pytest.raises(Exception):  # noqa: B017 - the class is not the point here
                    await right.send("+254712345678", "hi", idempotency_key=key)
        finally:
            await wrong.aclose()
            await right.aclose()
        replies = [standin.reply_to(r) for r in standin.received]
    lines = [ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("[salum")]
    assert len(lines) == 4, lines
    assert "HTTP 200 code=1006 (Invalid credentials)" in lines[0] and "clientsmsid=j1" in lines[0]
    assert "HTTP 200 code=200 (Success)" in lines[1]
    assert "HTTP 503 (no Salum code)" in lines[2]
    assert "HTTP 200 code=1004 (Low bulk credits)" in lines[3]
    assert all("2547****678" in ln and "254712345678" not in ln for ln in lines)
    assert replies == [(200, 1006), (200, 200), (503, None), (200, 1004)]


async def test_control_endpoints_list_clear_and_reset(standin: SalumStandin) -> None:
    base = standin.base_url
    good = {"apikey": API_KEY, "partnerID": PARTNER_ID, "shortcode": SHORTCODE,
            "mobile": "254712345678", "message": "hi", "clientsmsid": "c1"}
    await _call("POST", standin.url, {**good, "apikey": "wrong"})
    await _call("POST", standin.url, good)
    status, shown = await _call("GET", base + "/_standin/received")
    assert status == 200 and [(r["status"], r["code"]) for r in shown] == [(200, 1006), (200, 200)]
    assert shown[0]["body"]["apikey"] == "***" and shown[0]["body"]["mobile"] == "2547****678"
    assert await _call("DELETE", base + "/_standin/received") == (200, {"ok": True, "cleared": 2})
    assert await _call("GET", base + "/_standin/received") == (200, [])

    await _call("POST", base + "/_standin/mode", {"mode": "1005", "script": ["http503"]})
    await _call("POST", standin.url, good)
    assert await _call("POST", base + "/_standin/reset") == (200, {"ok": True, "mode": "ok"})
    assert standin.received == [] and standin.mode.code == 200
    status, doc = await _call("POST", standin.url, good)  # the script is gone too
    assert status == 200 and doc["responses"][0]["respose-code"] == 200


async def test_every_control_endpoint_is_in_the_help(standin: SalumStandin) -> None:
    assert standin._runner is not None
    routes = {(r.method, r.resource.canonical) for r in standin._runner.app.router.routes()
              if r.resource is not None and r.resource.canonical.startswith("/_standin/")
              and r.method != "HEAD"}  # aiohttp adds HEAD to every GET
    assert len(routes) == 4
    documented = set(re.findall(r"^\s+(GET|POST|DELETE)\s+(/_standin/\S+)", CONTROL_HELP, re.M))
    assert documented == routes
    out = subprocess.run([sys.executable, "-m", "streamq.sms.standin", "--help"], cwd=ROOT,
                         capture_output=True, text=True, timeout=20).stdout
    assert CONTROL_HELP.strip().splitlines()[0] in out
    assert "DELETE /_standin/received" in out and "POST   /_standin/reset" in out
