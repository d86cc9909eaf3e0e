"""AfricasTalkingSMSProvider against its stand-in on loopback: request shape, every
statusCode class, HTTP and transport failures, the account check, the stand-in's controls."""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp
import pytest
import structlog

from streamq.errors import ConfigError
from streamq.sms.providers import (
    ProviderConfigError,
    ProviderError,
    ProviderLowCredit,
    ProviderPermanentError,
    ProviderTransientError,
    ProviderUnreachable,
)
from streamq.sms.providers.africastalking import (
    DEFAULT_API_URL,
    SANDBOX_API_URL,
    AfricasTalkingSMSProvider,
)
from streamq.sms.standin_at import AfricasTalkingStandin
from tests.support.util import wait_until

API_KEY = "atsk_TOPSECRET_4242"
USERNAME = "streamq-app"
TO = "+254712345678"


@pytest.fixture
async def at_standin() -> AsyncIterator[AfricasTalkingStandin]:
    server = AfricasTalkingStandin(api_key=API_KEY, username=USERNAME)
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


@pytest.fixture
async def at(at_standin: AfricasTalkingStandin) -> AsyncIterator[AfricasTalkingSMSProvider]:
    provider = AfricasTalkingSMSProvider(USERNAME, API_KEY, sender_id="STREAMQ",
                                         api_url=at_standin.url, timeout_total=1.0,
                                         timeout_connect=0.3)
    try:
        yield provider
    finally:
        await provider.aclose()


async def send_error(provider: AfricasTalkingSMSProvider, key: str = "job-1") -> ProviderError:
    with pytest.raises(ProviderError) as info:
        await provider.send(TO, "Your order shipped", idempotency_key=key)
    err = info.value
    for text in (str(err), repr(err), repr(provider)):
        assert API_KEY not in text and "254712345678" not in text
    return err


async def test_request_shape(at_standin: AfricasTalkingStandin,
                             at: AfricasTalkingSMSProvider) -> None:
    result = await at.send(TO, "Habari Wanjiku! 🎉", idempotency_key="job-42")
    assert result.provider == "africastalking" and result.status == "Success"
    assert result.message_id is not None and result.message_id.startswith("ATXid_")
    [req] = at_standin.received
    assert req.form == {"username": USERNAME, "to": TO, "message": "Habari Wanjiku! 🎉",
                        "from": "STREAMQ"}
    assert req.api_key == API_KEY
    assert req.idempotency_key == "job-42"


async def test_without_sender_id_there_is_no_from(at_standin: AfricasTalkingStandin) -> None:
    provider = AfricasTalkingSMSProvider(USERNAME, API_KEY, api_url=at_standin.url)
    try:
        await provider.send(TO, "hi", idempotency_key="k")
    finally:
        await provider.aclose()
    assert "from" not in at_standin.received[0].form


@pytest.mark.parametrize("code", [100, 101, 102])
async def test_sent_codes(at_standin: AfricasTalkingStandin, at: AfricasTalkingSMSProvider,
                          code: int) -> None:
    at_standin.set_mode(str(code))
    result = await at.send(TO, "hi", idempotency_key="k")
    assert result.message_id and result.message_id.startswith("ATXid_")


@pytest.mark.parametrize("code", [401, 402, 403, 404, 406, 407, 409])
async def test_permanent_codes(at_standin: AfricasTalkingStandin, at: AfricasTalkingSMSProvider,
                               code: int) -> None:
    at_standin.set_mode(str(code))
    err = await send_error(at)
    assert type(err) is ProviderPermanentError and err.code == code
    assert f"Africa's Talking {code}" in str(err)
    assert len(at_standin.received) == 1


async def test_insufficient_balance_is_permanent_and_loud(
    at_standin: AfricasTalkingStandin, at: AfricasTalkingSMSProvider
) -> None:
    at_standin.set_mode("405")
    with structlog.testing.capture_logs() as logs:
        err = await send_error(at)
    assert isinstance(err, ProviderLowCredit) and err.code == 405
    [entry] = [e for e in logs if e["log_level"] == "error"]
    assert "top up" in entry["hint"] and API_KEY not in str(logs)


@pytest.mark.parametrize("code", [500, 501, 502])
async def test_transient_codes_are_ambiguous(at_standin: AfricasTalkingStandin,
                                             at: AfricasTalkingSMSProvider, code: int) -> None:
    at_standin.set_mode(str(code))
    err = await send_error(at)
    assert isinstance(err, ProviderTransientError) and not isinstance(err, ProviderUnreachable)
    assert err.code == code


async def test_no_recipients_is_classified_by_the_message(
    at_standin: AfricasTalkingStandin, at: AfricasTalkingSMSProvider
) -> None:
    at_standin.set_mode("empty:InvalidSenderId")
    err = await send_error(at)
    assert type(err) is ProviderPermanentError and err.code == 402
    assert "check AT_SENDER_ID" in str(err)
    at_standin.set_mode("empty:Something new")
    err = await send_error(at)
    assert type(err) is ProviderPermanentError and "no recipient" in str(err)


@pytest.mark.parametrize("status", [401, 403])
async def test_http_401_403_are_configuration_errors(
    at_standin: AfricasTalkingStandin, at: AfricasTalkingSMSProvider, status: int
) -> None:
    at_standin.set_mode(f"http{status}")
    err = await send_error(at)
    assert type(err) is ProviderConfigError and err.code == status
    assert "check AT_USERNAME and AT_API_KEY" in str(err)


@pytest.mark.parametrize(("username", "key"), [(USERNAME, "atsk_wrong"), ("someone-else", API_KEY)])
async def test_wrong_credentials_get_the_real_401(
    at_standin: AfricasTalkingStandin, username: str, key: str
) -> None:
    provider = AfricasTalkingSMSProvider(username, key, api_url=at_standin.url)
    try:
        err = await send_error(provider)
    finally:
        await provider.aclose()
    assert type(err) is ProviderConfigError and err.code == 401
    assert "The supplied authentication is invalid" in str(err) and key not in str(err)


@pytest.mark.parametrize(("mode", "retry_after"), [("http500", None), ("http503", None),
                                                   ("http504", None), ("http429:2", 2.0)])
async def test_http_5xx_and_429_are_transient(
    at_standin: AfricasTalkingStandin, at: AfricasTalkingSMSProvider, mode: str,
    retry_after: float | None
) -> None:
    at_standin.set_mode(mode)
    err = await send_error(at)
    assert isinstance(err, ProviderTransientError) and not isinstance(err, ProviderUnreachable)
    assert err.retry_after == retry_after


@pytest.mark.parametrize(("mode", "text"), [("http400", "HTTP 400"),
                                            ("http404", "check AT_API_URL"),
                                            ("garbage", "unparseable 2xx")])
async def test_other_failures_are_permanent(
    at_standin: AfricasTalkingStandin, at: AfricasTalkingSMSProvider, mode: str, text: str
) -> None:
    at_standin.set_mode(mode)
    err = await send_error(at)
    assert type(err) is ProviderPermanentError and text in str(err)


async def test_timeout_and_reset_are_ambiguous(
    at_standin: AfricasTalkingStandin, at: AfricasTalkingSMSProvider
) -> None:
    at_standin.script("slow:1.5", "disconnect")
    timed_out = await send_error(at, key="job-7")
    reset = await send_error(at, key="job-7")
    for err in (timed_out, reset):
        assert isinstance(err, ProviderTransientError) and not isinstance(err, ProviderUnreachable)
    assert "timed out" in str(timed_out) and "connection error" in str(reset)
    assert [r.idempotency_key for r in at_standin.received] == ["job-7", "job-7"]


async def test_refused_connection_is_unreachable_then_accepted_again(
    at_standin: AfricasTalkingStandin, at: AfricasTalkingSMSProvider
) -> None:
    await at.send(TO, "before", idempotency_key="a")
    await at_standin.refuse()
    err = await send_error(at)
    assert isinstance(err, ProviderUnreachable)
    assert f"Africa's Talking unreachable at {at_standin.url}/version1/messaging" in str(err)
    await at_standin.accept()
    await at.send(TO, "after", idempotency_key="b")
    assert [r.form["message"] for r in at_standin.received] == ["before", "after"]


async def test_account_check(at_standin: AfricasTalkingStandin,
                             at: AfricasTalkingSMSProvider) -> None:
    assert await at.check() == "KES 1785.50"
    wrong = AfricasTalkingSMSProvider(USERNAME, "atsk_wrong", api_url=at_standin.url)
    try:
        with pytest.raises(ProviderConfigError, match="check AT_USERNAME and AT_API_KEY"):
            await wrong.check()
    finally:
        await wrong.aclose()
    assert at_standin.received == [], "the check sends nothing"


def test_sandbox_and_live_urls_pair_with_their_usernames() -> None:
    assert AfricasTalkingSMSProvider("sandbox", API_KEY, api_url=SANDBOX_API_URL).sandbox
    assert AfricasTalkingSMSProvider(USERNAME, API_KEY).send_url == \
        DEFAULT_API_URL + "/version1/messaging"
    with pytest.raises(ConfigError, match="must be 'sandbox'"):
        AfricasTalkingSMSProvider(USERNAME, API_KEY, api_url=SANDBOX_API_URL)
    with pytest.raises(ConfigError, match="AT_USERNAME=sandbox needs"):
        AfricasTalkingSMSProvider("sandbox", API_KEY, api_url=DEFAULT_API_URL)
    with pytest.raises(ConfigError, match="AT_API_URL"):
        AfricasTalkingSMSProvider(USERNAME, API_KEY, api_url="ftp://x")


async def test_standin_control_endpoints_and_truthful_console(
    capsys: pytest.CaptureFixture[str],
) -> None:
    standin = AfricasTalkingStandin(api_key=API_KEY, echo=True)
    await standin.start()
    provider = AfricasTalkingSMSProvider(USERNAME, API_KEY, api_url=standin.url)
    try:
        async with aiohttp.ClientSession() as http:
            async def control(method: str, path: str, body: object = None) -> object:
                async with http.request(method, standin.url + path, json=body) as r:
                    assert r.status == 200, await r.text()
                    return await r.json()

            await control("POST", "/_standin/mode", {"mode": "403", "script": ["ok"]})
            await provider.send(TO, "one", idempotency_key="k1")  # scripted ok
            with pytest.raises(ProviderPermanentError):
                await provider.send(TO, "two", idempotency_key="k2")  # the mode: 403
            received = await control("GET", "/_standin/received")
            assert isinstance(received, list) and len(received) == 2
            assert received[0]["to"] == "+2547****678" and received[0]["apiKey"] == "***"
            assert "254712345678" not in str(received) and API_KEY not in str(received)
            await control("DELETE", "/_standin/received")
            assert standin.received == []
            await control("POST", "/_standin/reset")
            await control("POST", "/_standin/refuse", {"seconds": 0.5})
            await wait_until(lambda: standin.refusing, 5, message="refusing")
            with pytest.raises(ProviderUnreachable):
                await provider.send(TO, "three", idempotency_key="k3")
            await wait_until(lambda: not standin.refusing, 5, message="accepting again")
            await provider.send(TO, "four", idempotency_key="k4")
            async with http.post(standin.url + "/_standin/mode", json={"mode": "fax"}) as r:
                assert r.status == 400
    finally:
        await provider.aclose()
        await standin.stop()
    out = capsys.readouterr().out.splitlines()
    assert any("HTTP 200 statusCode=101" in line and "key=k1" in line for line in out)
    assert any("HTTP 200 statusCode=403" in line and "key=k2" in line for line in out)
    assert all("254712345678" not in line for line in out)

