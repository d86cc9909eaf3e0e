"""MockSMSProvider, the provider factory, and the stand-in's own switches."""

from __future__ import annotations

import io
import json
import re
import signal
import subprocess
import sys
import time

import aiohttp
import anyio
import pytest
import structlog
from anyio.streams.text import TextReceiveStream

from streamq.errors import ConfigError
from streamq.sms.providers import (
    MockSMSProvider,
    ProviderTransientError,
    SalumSMSProvider,
    SMSProvider,
    provider_from_settings,
)
from streamq.sms.standin import Behaviour, SalumStandin, main

from .conftest import API_KEY

TO = "+254712345678"


async def test_mock_records_logs_masked_and_prints() -> None:
    out = io.StringIO()
    mock = MockSMSProvider(stream=out)
    assert isinstance(mock, SMSProvider)
    with structlog.testing.capture_logs() as logs:
        result = await mock.send(TO, "Your code is 123456", idempotency_key="job-1")
    assert result.provider == "mock" and result.message_id
    [sent] = mock.sent
    assert (sent.to, sent.message, sent.idempotency_key) == (TO, "Your code is 123456", "job-1")
    assert sent.message_id == result.message_id
    # the print-out shows the text (its purpose) but not the full number
    printed = out.getvalue()
    assert "Your code is 123456" in printed and "+2547****678" in printed and TO not in printed
    # the log line shows neither
    assert logs and "123456" not in str(logs) and TO not in str(logs)
    assert logs[0]["to"] == "+2547****678"


async def test_mock_echo_off(capsys: pytest.CaptureFixture[str]) -> None:
    mock = MockSMSProvider(echo=False)
    await mock.send(TO, "hello", idempotency_key="k")
    assert "hello" not in capsys.readouterr().out  # (structlog's default may print the log)
    assert len(mock.sent) == 1


async def test_mock_failure_rate_is_seeded_and_transient() -> None:
    async def run() -> list[bool]:
        mock = MockSMSProvider(failure_rate=0.5, seed=7, echo=False)
        outcomes = []
        for i in range(40):
            try:
                await mock.send(TO, "x", idempotency_key=str(i))
                outcomes.append(True)
            except ProviderTransientError:
                outcomes.append(False)
        assert mock.failures == outcomes.count(False) == 40 - len(mock.sent)
        return outcomes

    first, second = await run(), await run()
    assert first == second  # same seed, same failures
    assert 5 < first.count(False) < 35
    always = MockSMSProvider(failure_rate=1.0, echo=False)
    with pytest.raises(ProviderTransientError, match="injected"):
        await always.send(TO, "x", idempotency_key="k")


async def test_mock_latency() -> None:
    mock = MockSMSProvider(latency=0.05, echo=False)
    start = time.monotonic()
    await mock.send(TO, "x", idempotency_key="k")
    assert time.monotonic() - start >= 0.045  # (timers may fire a clock tick early)


def test_mock_rejects_bad_knobs() -> None:
    with pytest.raises(ValueError, match="failure_rate"):
        MockSMSProvider(failure_rate=1.5)
    with pytest.raises(ValueError, match="latency"):
        MockSMSProvider(latency=-1)


# -- factory ---------------------------------------------------------------------------------

SALUM_ENV = {
    "SALUM_API_KEY": API_KEY,
    "SALUM_PARTNER_ID": "4711",
    "SALUM_SHORTCODE": "STREAMQ",
}


def test_factory_defaults_to_mock() -> None:
    assert isinstance(provider_from_settings(env={}), MockSMSProvider)
    provider = provider_from_settings(env={"STREAMQ_MOCK_LATENCY": "0.2",
                                           "STREAMQ_MOCK_FAILURE_RATE": "0.1"})
    assert isinstance(provider, MockSMSProvider)
    assert (provider.latency, provider.failure_rate) == (0.2, 0.1)


def test_factory_builds_salum() -> None:
    provider = provider_from_settings(env={"STREAMQ_PROVIDER": "salum", **SALUM_ENV})
    assert isinstance(provider, SalumSMSProvider)
    assert provider.api_url == "https://sms.salum.co.ke/api/services/sendsms/"
    custom = provider_from_settings(
        "salum", env={**SALUM_ENV, "SALUM_API_URL": "http://127.0.0.1:8089/x/"}
    )
    assert isinstance(custom, SalumSMSProvider) and custom.api_url == "http://127.0.0.1:8089/x/"


def test_factory_argument_beats_env() -> None:
    env = {"STREAMQ_PROVIDER": "salum"}
    assert isinstance(provider_from_settings("mock", env=env), MockSMSProvider)


def test_factory_reads_os_environ(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STREAMQ_PROVIDER", "salum")
    for var, value in SALUM_ENV.items():
        monkeypatch.setenv(var, value)
    assert isinstance(provider_from_settings(), SalumSMSProvider)


@pytest.mark.parametrize("missing", sorted(SALUM_ENV))
def test_factory_names_the_missing_variable(missing: str) -> None:
    env = {k: v for k, v in SALUM_ENV.items() if k != missing}
    with pytest.raises(ConfigError) as info:
        provider_from_settings("salum", env=env)
    assert missing in str(info.value)
    assert API_KEY not in str(info.value)


@pytest.mark.parametrize(
    ("env", "var"),
    [
        ({**SALUM_ENV, "SALUM_API_URL": "ftp://x"}, "SALUM_API_URL"),
        ({**SALUM_ENV, "SALUM_TIMEOUT": "soon"}, "SALUM_TIMEOUT"),
        ({**SALUM_ENV, "SALUM_CONNECT_TIMEOUT": "-1"}, "SALUM_CONNECT_TIMEOUT"),
    ],
)
def test_factory_names_the_bad_variable(env: dict[str, str], var: str) -> None:
    with pytest.raises(ConfigError, match=var):
        provider_from_settings("salum", env=env)


def test_factory_unknown_provider() -> None:
    with pytest.raises(ConfigError, match=r"unknown provider 'twilio': use one of mock, salum"):
        provider_from_settings(env={"STREAMQ_PROVIDER": "twilio"})
    with pytest.raises(ConfigError, match="STREAMQ_MOCK_FAILURE_RATE"):
        provider_from_settings("mock", env={"STREAMQ_MOCK_FAILURE_RATE": "2"})


# -- the stand-in itself ---------------------------------------------------------------------

async def post(url: str, body: object) -> tuple[int, object]:
    """POST JSON; the reply parsed as JSON, or its text when it is not JSON."""
    async with aiohttp.ClientSession() as session, session.post(url, json=body) as resp:
        text = await resp.text()
    try:
        return resp.status, json.loads(text)
    except ValueError:
        return resp.status, text


GOOD = {"apikey": API_KEY, "partnerID": "4711", "message": "hi", "shortcode": "SQ",
        "mobile": "254712345678"}


@pytest.mark.parametrize(
    ("change", "code"),
    [
        ({"apikey": ""}, 4092),
        ({"partnerID": ""}, 4091),
        ({"apikey": "nope"}, 1006),
        ({"partnerID": "1"}, 1006),
        ({"shortcode": ""}, 1001),
        ({"mobile": "+254712345678"}, 1003),
        ({"mobile": "0712"}, 1003),
    ],
)
async def test_standin_checks_requests_like_the_gateway(
    standin: SalumStandin, change: dict[str, str], code: int
) -> None:
    status, doc = await post(standin.url, {**GOOD, **change})
    assert status == 200 and isinstance(doc, dict)
    entry = doc["responses"][0] if "responses" in doc else doc
    assert entry.get("respose-code", entry.get("response-code")) == code


async def test_standin_script_then_mode_and_control_endpoints(standin: SalumStandin) -> None:
    status, reply = await post(standin.base_url + "/_standin/mode",
                               {"script": ["http503", "1005"], "mode": "ok"})
    assert status == 200 and reply == {"ok": True, "scripted": 2}
    statuses = [(await post(standin.url, GOOD))[0] for _ in range(2)]
    assert statuses == [503, 200]
    _, third = await post(standin.url, GOOD)
    assert isinstance(third, dict) and third["responses"][0]["respose-code"] == 200
    status, error = await post(standin.base_url + "/_standin/mode", {"mode": "fax"})
    assert status == 400 and "unknown stand-in mode" in str(error)
    url = standin.base_url + "/_standin/received"
    async with aiohttp.ClientSession() as session, session.get(url) as resp:
        shown = await resp.json()
    assert len(shown) == 3
    assert shown[0]["body"]["apikey"] == "***" and shown[0]["body"]["mobile"] == "2547****678"
    assert API_KEY not in str(shown)
    reqs = await standin.wait_for_requests(3, within=1.0)
    assert [r.at for r in reqs] == sorted(r.at for r in reqs)


async def test_standin_wait_times_out(standin: SalumStandin) -> None:
    with pytest.raises(TimeoutError):
        await standin.wait_for_requests(1, within=0.05)


async def test_standin_records_concurrency(standin: SalumStandin) -> None:
    standin.set_mode(Behaviour.slow(0.2))
    async with anyio.create_task_group() as tg:
        for _ in range(3):
            tg.start_soon(post, standin.url, GOOD)
    assert standin.max_concurrent == 3


@pytest.mark.parametrize(
    ("spec", "behaviour"),
    [
        ("ok", Behaviour()),
        ("1004", Behaviour(code=1004)),
        ("1006", Behaviour(code=1006, top_level=True)),
        ("1003-top", Behaviour(code=1003, top_level=True)),
        ("http503", Behaviour(status=503, code=None)),
        ("http429:2", Behaviour(status=429, code=None, retry_after="2")),
        ("slow:1.5", Behaviour(delay=1.5)),
        ("disconnect", Behaviour(disconnect=True)),
    ],
)
def test_behaviour_parse(spec: str, behaviour: Behaviour) -> None:
    assert Behaviour.parse(spec) == behaviour


@pytest.mark.parametrize("spec", ["fax", "1234", "httpXYZ", "slow:soon", "200"])
def test_behaviour_parse_rejects(spec: str) -> None:
    with pytest.raises(ValueError, match="unknown stand-in mode"):
        Behaviour.parse(spec)


def test_standin_cli_rejects_a_bad_mode(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["--mode", "fax"])
    assert info.value.code == 2
    assert "unknown stand-in mode" in capsys.readouterr().err


async def test_standin_command_serves_and_stops_on_sigterm() -> None:
    """``python -m streamq.sms.standin`` as documented: serves, masks, exits 0 on SIGTERM."""
    proc = await anyio.open_process(
        [sys.executable, "-m", "streamq.sms.standin", "--port", "0", "--api-key", API_KEY],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )
    try:
        assert proc.stdout is not None
        lines = TextReceiveStream(proc.stdout)
        buffer = ""
        with anyio.fail_after(10):
            while "export SALUM_API_URL=" not in buffer:
                buffer += await lines.receive()
        url = re.search(r"export SALUM_API_URL=(\S+)", buffer)
        assert url is not None
        provider = SalumSMSProvider(url.group(1), API_KEY, "4711", "SQ", timeout_total=2.0)
        try:
            result = await provider.send(TO, "Your code is 554433", idempotency_key="job-9")
        finally:
            await provider.aclose()
        assert result.status == "Success"
        with anyio.fail_after(10):
            while "clientsmsid=job-9" not in buffer:
                buffer += await lines.receive()
        assert "+254712345678" not in buffer and "254712345678" not in buffer
        assert "554433" not in buffer and API_KEY not in buffer  # no --show-text
        proc.send_signal(signal.SIGTERM)
        with anyio.fail_after(10):
            assert await proc.wait() == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        await proc.aclose()
