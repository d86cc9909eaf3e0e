"""SalumSMSProvider against the stand-in on loopback: request shape and error classification."""

from __future__ import annotations

import email.utils
import json
import socket
import time

import pytest
import structlog

from streamq.sms.providers import (
    ProviderConfigError,
    ProviderError,
    ProviderLowCredit,
    ProviderPermanentError,
    ProviderTransientError,
    ProviderUnreachable,
    SalumSMSProvider,
)
from streamq.sms.providers.salum import parse_retry_after
from streamq.sms.standin import Behaviour, SalumStandin

from .conftest import API_KEY, PARTNER_ID, SHORTCODE

TO = "+254712345678"


async def send_error(provider: SalumSMSProvider, key: str = "job-1") -> ProviderError:
    with pytest.raises(ProviderError) as info:
        await provider.send(TO, "Your order shipped", idempotency_key=key)
    err = info.value
    # Never a secret or a full number in what a dead letter would store.
    for text in (str(err), repr(err)):
        assert API_KEY not in text
        assert "254712345678" not in text
    return err


async def test_success_request_shape(standin: SalumStandin, salum: SalumSMSProvider) -> None:
    result = await salum.send(TO, "Habari Wanjiku! 🎉", idempotency_key="job-42")
    assert result.provider == "salum"
    assert result.message_id is not None and result.message_id.isdigit()
    assert result.status == "Success"
    [req] = standin.received
    assert req.body == {
        "apikey": API_KEY,
        "partnerID": PARTNER_ID,
        "message": "Habari Wanjiku! 🎉",
        "shortcode": SHORTCODE,
        "mobile": "254712345678",  # digits, no '+'
        "clientsmsid": "job-42",  # the job id as idempotency key
    }


async def test_one_pooled_session_is_reused(
    standin: SalumStandin, salum: SalumSMSProvider
) -> None:
    for i in range(3):
        await salum.send(TO, "hi", idempotency_key=f"k{i}")
    session = salum._session
    assert session is not None and not session.closed
    await salum.send(TO, "hi", idempotency_key="k4")
    assert salum._session is session
    await salum.aclose()
    assert session.closed
    assert len(standin.received) == 4


@pytest.mark.parametrize("code", [1001, 1002, 1003])
@pytest.mark.parametrize("top_level", [False, True])
async def test_permanent_codes(
    standin: SalumStandin, salum: SalumSMSProvider, code: int, top_level: bool
) -> None:
    standin.set_mode(Behaviour.error_code(code, top_level=top_level))
    err = await send_error(salum)
    assert type(err) is ProviderPermanentError
    assert err.code == code
    assert str(code) in str(err)
    assert len(standin.received) == 1


@pytest.mark.parametrize(("code", "setting"), [(1006, "SALUM_API_KEY"), (4091, "SALUM_PARTNER_ID"),
                                               (4092, "SALUM_API_KEY")])
@pytest.mark.parametrize("top_level", [False, True])
async def test_credential_codes_are_configuration_errors_not_permanent(
    standin: SalumStandin, salum: SalumSMSProvider, code: int, setting: str, top_level: bool
) -> None:
    # about the provider account, not the message: the message must not be dead-lettered
    standin.set_mode(Behaviour.error_code(code, top_level=top_level))
    err = await send_error(salum)
    assert type(err) is ProviderConfigError
    assert not isinstance(err, ProviderPermanentError | ProviderTransientError)
    assert err.code == code and str(code) in str(err) and setting in str(err)


async def test_low_credit_is_permanent_and_loud(
    standin: SalumStandin, salum: SalumSMSProvider
) -> None:
    standin.set_mode("1004")
    with structlog.testing.capture_logs() as logs:
        err = await send_error(salum)
    assert isinstance(err, ProviderLowCredit) and isinstance(err, ProviderPermanentError)
    assert "low credit" in str(err)
    [entry] = [e for e in logs if e["log_level"] == "error"]
    assert "low credit" in entry["hint"]
    assert API_KEY not in str(logs)


@pytest.mark.parametrize(("code", "retry_after"), [(1005, None), (1007, None), (4090, 300.0)])
@pytest.mark.parametrize("top_level", [False, True])
async def test_transient_codes(
    standin: SalumStandin,
    salum: SalumSMSProvider,
    code: int,
    retry_after: float | None,
    top_level: bool,
) -> None:
    standin.set_mode(Behaviour.error_code(code, top_level=top_level))
    err = await send_error(salum)
    assert isinstance(err, ProviderTransientError)
    assert err.code == code and err.retry_after == retry_after


@pytest.mark.parametrize("status", [500, 502, 503, 504])
async def test_http_5xx_is_transient(
    standin: SalumStandin, salum: SalumSMSProvider, status: int
) -> None:
    standin.set_mode(Behaviour.http(status))
    err = await send_error(salum)
    assert isinstance(err, ProviderTransientError)
    assert f"HTTP {status}" in str(err) and err.retry_after is None


async def test_429_retry_after_seconds(standin: SalumStandin, salum: SalumSMSProvider) -> None:
    standin.set_mode(Behaviour.http(429, retry_after="2"))
    err = await send_error(salum)
    assert isinstance(err, ProviderTransientError) and err.retry_after == 2.0
    assert "429" in str(err)


async def test_429_retry_after_http_date(standin: SalumStandin, salum: SalumSMSProvider) -> None:
    when = time.time() + 30
    standin.set_mode(Behaviour.http(429, retry_after=email.utils.formatdate(when, usegmt=True)))
    err = await send_error(salum)
    assert isinstance(err, ProviderTransientError) and err.retry_after is not None
    assert 28.0 <= err.retry_after <= 30.0  # HTTP-dates have whole seconds


async def test_429_without_header_uses_backoff(
    standin: SalumStandin, salum: SalumSMSProvider
) -> None:
    standin.set_mode(Behaviour.http(429))
    err = await send_error(salum)
    assert isinstance(err, ProviderTransientError) and err.retry_after is None


async def test_503_with_retry_after_is_honoured(
    standin: SalumStandin, salum: SalumSMSProvider
) -> None:
    standin.set_mode(Behaviour.http(503, retry_after="7"))
    err = await send_error(salum)
    assert isinstance(err, ProviderTransientError) and err.retry_after == 7.0


@pytest.mark.parametrize("status", [400, 404, 405, 422])
async def test_other_4xx_is_permanent(
    standin: SalumStandin, salum: SalumSMSProvider, status: int
) -> None:
    standin.set_mode(Behaviour.http(status))
    err = await send_error(salum)
    assert type(err) is ProviderPermanentError and err.code == status
    assert f"HTTP {status}" in str(err)


@pytest.mark.parametrize("status", [401, 403])
async def test_auth_failure_names_the_setting_not_the_key(
    standin: SalumStandin, salum: SalumSMSProvider, status: int
) -> None:
    standin.set_mode(Behaviour.http(status))
    err = await send_error(salum)
    assert type(err) is ProviderConfigError
    assert "check SALUM_API_KEY" in str(err)


async def test_wrong_key_is_invalid_credentials_not_retried(standin: SalumStandin) -> None:
    wrong = "sk-wrong-key-9999"
    provider = SalumSMSProvider(standin.url, wrong, PARTNER_ID, SHORTCODE, timeout_total=1.0)
    try:
        err = await send_error(provider)
    finally:
        await provider.aclose()
    assert type(err) is ProviderConfigError and err.code == 1006
    assert wrong not in str(err)
    assert "SALUM_API_KEY" in str(err)


async def test_garbage_2xx_is_not_retried(standin: SalumStandin, salum: SalumSMSProvider) -> None:
    standin.set_mode("garbage")
    err = await send_error(salum)
    assert type(err) is ProviderPermanentError
    assert "unparseable 2xx response" in str(err)
    assert len(standin.received) == 1


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"[]",
        b'{"responses": []}',
        b'{"responses": [{"response-description": "no code"}]}',
        b'{"something": "else"}',
        b"\xff\xfe not utf-8",
        b'{"responses": [{"respose-code": 200}]}' + b" " * 70_000,  # beyond the reply cap
    ],
)
async def test_malformed_2xx_bodies(
    standin: SalumStandin, salum: SalumSMSProvider, body: bytes
) -> None:
    standin.set_mode(Behaviour(status=200, code=None, body=body))
    err = await send_error(salum)
    assert type(err) is ProviderPermanentError
    assert "unparseable 2xx response" in str(err)


async def test_correctly_spelled_code_and_string_values_are_accepted(
    standin: SalumStandin, salum: SalumSMSProvider
) -> None:
    body = {"responses": [{"response-code": "200", "response-description": "Success",
                           "mobile": "254712345678", "messageid": 123456789012, "networkid": 1}]}
    standin.set_mode(Behaviour(status=200, code=None, body=json.dumps(body).encode()))
    result = await salum.send(TO, "hi", idempotency_key="k")
    assert result.message_id == "123456789012"  # a long numeric id is kept whole


async def test_unknown_code_is_permanent(standin: SalumStandin, salum: SalumSMSProvider) -> None:
    body = json.dumps({"responses": [{"respose-code": 1999, "response-description": "?"}]})
    standin.set_mode(Behaviour(status=200, code=None, body=body.encode()))
    err = await send_error(salum)
    assert type(err) is ProviderPermanentError and err.code == 1999


async def test_provider_text_is_scrubbed(standin: SalumStandin, salum: SalumSMSProvider) -> None:
    # A gateway description that echoes the number and the key must not carry them on.
    body = json.dumps({"response-code": 1003,
                       "response-description": f"Invalid mobile 254712345678 (key {API_KEY})"})
    standin.set_mode(Behaviour(status=200, code=None, body=body.encode()))
    err = await send_error(salum)
    assert "2547****678" in str(err) and "***" in str(err)


async def test_timeout_is_transient_and_retries_keep_the_key(standin: SalumStandin) -> None:
    provider = SalumSMSProvider(standin.url, API_KEY, PARTNER_ID, SHORTCODE,
                                timeout_total=0.3, timeout_connect=0.3)
    standin.set_mode(Behaviour.slow(0.6))  # twice the timeout
    try:
        for _ in range(2):
            err = await send_error(provider, key="job-7")
            assert isinstance(err, ProviderTransientError) and "timed out" in str(err)
            assert not isinstance(err, ProviderUnreachable), "a read timeout is ambiguous"
    finally:
        await provider.aclose()
    assert [r.body["clientsmsid"] for r in standin.received if r.body] == ["job-7", "job-7"]


async def test_reply_just_inside_the_timeout_succeeds(standin: SalumStandin) -> None:
    provider = SalumSMSProvider(standin.url, API_KEY, PARTNER_ID, SHORTCODE,
                                timeout_total=0.5, timeout_connect=0.3)
    standin.set_mode(Behaviour.slow(0.3))
    try:
        result = await provider.send(TO, "hi", idempotency_key="k")
    finally:
        await provider.aclose()
    assert result.status == "Success"


async def test_connection_reset_is_transient(
    standin: SalumStandin, salum: SalumSMSProvider
) -> None:
    standin.set_mode("disconnect")
    err = await send_error(salum)
    assert isinstance(err, ProviderTransientError)
    assert not isinstance(err, ProviderUnreachable), "the request went out: it may have sent"
    assert "connection error" in str(err)


async def test_connection_refused_is_transient_and_names_the_url() -> None:
    with socket.socket() as sock:  # a port that was free a moment ago and is now closed
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    url = f"http://127.0.0.1:{port}/api/services/sendsms/?token=abc"
    provider = SalumSMSProvider(url, API_KEY, PARTNER_ID, SHORTCODE, timeout_connect=0.3)
    try:
        err = await send_error(provider)
    finally:
        await provider.aclose()
    assert isinstance(err, ProviderUnreachable), "refused: provably not sent"
    assert f"Salum unreachable at http://127.0.0.1:{port}/api/services/sendsms/" in str(err)
    assert "token" not in str(err)  # the query string is not shown


def test_repr_hides_the_key() -> None:
    provider = SalumSMSProvider("https://sms.example/api/", API_KEY, PARTNER_ID, SHORTCODE)
    assert API_KEY not in repr(provider)


@pytest.mark.parametrize(
    ("value", "expected"),
    [(None, None), ("", None), ("0", 0.0), ("120", 120.0), ("soon", None), ("-5", None),
     ("Wed, 21 Oct 2015 07:28:00 GMT", 0.0)],  # a date in the past: retry now
)
def test_parse_retry_after(value: str | None, expected: float | None) -> None:
    assert parse_retry_after(value) == expected


def test_parse_retry_after_date() -> None:
    now = 1_700_000_000.0
    header = email.utils.formatdate(now + 90, usegmt=True)
    assert parse_retry_after(header, now=now) == pytest.approx(90.0, abs=1.0)


async def test_connect_timeout_is_unreachable_not_ambiguous() -> None:
    """A connect timeout means no request went out: provably not sent (failover may
    follow), unlike a timeout waiting for the reply."""
    with socket.socket() as listener:  # a backlog of 1 that nobody accepts from
        listener.bind(("127.0.0.1", 0))
        listener.listen(0)
        port = listener.getsockname()[1]
        fillers = []
        try:
            for _ in range(8):  # fill the accept queue, so further connects hang
                c = socket.socket()
                c.setblocking(False)
                c.connect_ex(("127.0.0.1", port))
                fillers.append(c)
            provider = SalumSMSProvider(f"http://127.0.0.1:{port}/api/", API_KEY, PARTNER_ID,
                                        SHORTCODE, timeout_total=2.0, timeout_connect=0.2)
            try:
                err = await send_error(provider)
            finally:
                await provider.aclose()
        finally:
            for c in fillers:
                c.close()
    assert isinstance(err, ProviderUnreachable), repr(err)
    assert "no connection within 0.2s" in str(err)
