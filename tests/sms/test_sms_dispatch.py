"""The SMS handler: routing, OTP expiry, provider error mapping, and what it logs."""

from __future__ import annotations

import re
import time
from typing import Any

import pytest
import structlog

from streamq import Job, PermanentError, RetryAfter
from streamq.sms import (
    OTPSMS,
    MockSMSProvider,
    NotificationSMS,
    Recipient,
    SalumSMSProvider,
    SMSJob,
    WelcomeSMS,
    make_sms_handler,
    render_notification_sms,
    render_otp_sms,
    render_welcome_sms,
)
from streamq.sms.providers import (
    ProviderLowCredit,
    ProviderPermanentError,
    ProviderTransientError,
    SendResult,
)
from streamq.sms.standin import SalumStandin

NUMBER = "+254712345678"
TO = Recipient(phone_number=NUMBER, name="Wanjiku")
NOW_MS = 1_700_000_000_000
CODE = "90417263"


def make_job(data: object, *, job_id: str = "jobabcdef", attempt: int = 1) -> Job:
    return Job(
        id=job_id, data=data, attempt=attempt, max_attempts=3, queue_name="sms",
        priority="normal", created_ms=NOW_MS, enqueued_ms=NOW_MS,
    )


def jobs() -> list[SMSJob]:
    return [
        WelcomeSMS(id="w1", timestamp=NOW_MS, recipient=TO, user_name="Wanjiku"),
        OTPSMS(id="o1", timestamp=NOW_MS, recipient=TO, code=CODE, expiry_minutes=10),
        NotificationSMS(id="n1", timestamp=NOW_MS, recipient=TO, message="Mzigo wako umetumwa 📦"),
    ]


def clock_at(ms: int) -> Any:
    return lambda: ms / 1000


class FailingProvider:
    """Raises the given error on every send, counting the calls."""

    name = "failing"

    def __init__(self, error: Exception) -> None:
        self.error = error
        self.calls = 0

    async def send(self, to: str, message: str, *, idempotency_key: str) -> SendResult:
        self.calls += 1
        raise self.error

    async def aclose(self) -> None:
        pass


async def test_routes_each_type_to_its_template() -> None:
    mock = MockSMSProvider(echo=False)
    handle = make_sms_handler(mock, clock=clock_at(NOW_MS + 1000))
    results = [await handle(make_job(data, job_id=f"job{i}")) for i, data in enumerate(jobs())]
    welcome, otp, note = jobs()
    assert isinstance(welcome, WelcomeSMS) and isinstance(otp, OTPSMS)
    assert isinstance(note, NotificationSMS)
    assert [s.message for s in mock.sent] == [
        render_welcome_sms(welcome).message,
        render_otp_sms(otp).message,
        render_notification_sms(note).message,
    ]
    assert [s.to for s in mock.sent] == [NUMBER] * 3
    assert [s.idempotency_key for s in mock.sent] == ["job0", "job1", "job2"]
    assert results[2]["encoding"] == "UCS-2"
    # the result is kept in Redis: no text, no number, no code
    assert CODE not in str(results) and NUMBER not in str(results)
    assert results[0]["message_id"] == mock.sent[0].message_id


async def test_plain_builtins_are_validated_into_the_union() -> None:
    mock = MockSMSProvider(echo=False)
    handle = make_sms_handler(mock)
    raw = {"type": "welcome", "id": "x", "timestamp": NOW_MS,
           "recipient": {"phone_number": NUMBER}, "user_name": "Baraka"}
    await handle(make_job(raw))
    assert mock.sent[0].message.startswith("Welcome Baraka!")
    with pytest.raises(PermanentError, match=r"decode: .*\$\.type"):
        await handle(make_job({**raw, "type": "fax"}))


@pytest.mark.parametrize(
    ("age_s", "sent"),
    [(0, True), (599, True), (600, False), (3600, False)],
)
async def test_otp_expiry(age_s: int, sent: bool) -> None:
    mock = MockSMSProvider(echo=False)
    handle = make_sms_handler(mock, clock=clock_at(NOW_MS + age_s * 1000))
    otp = OTPSMS(id="o", timestamp=NOW_MS, recipient=TO, code=CODE, expiry_minutes=10)
    if sent:
        await handle(make_job(otp))
        assert len(mock.sent) == 1
    else:
        with pytest.raises(PermanentError, match="otp expired") as info:
            await handle(make_job(otp))
        assert CODE not in str(info.value)
        assert mock.sent == []


async def test_invalid_number_in_a_raw_payload_is_permanent() -> None:
    mock = MockSMSProvider(echo=False)
    bad = WelcomeSMS(id="w", timestamp=NOW_MS, user_name="A",
                     recipient=Recipient(phone_number="+25471234567899"))
    with pytest.raises(PermanentError, match="invalid phone number") as info:
        await make_sms_handler(mock)(make_job(bad))
    assert "25471234567899" not in str(info.value)
    assert mock.sent == []


async def test_over_long_text_is_permanent() -> None:
    mock = MockSMSProvider(echo=False)
    long_note = NotificationSMS(id="n", timestamp=NOW_MS, recipient=TO, message="ب" * 700)
    with pytest.raises(PermanentError, match="too long"):
        await make_sms_handler(mock)(make_job(long_note))
    assert mock.sent == []


@pytest.mark.parametrize(
    "error",
    [
        ProviderPermanentError("Salum 1006 invalid credentials", provider="salum", code=1006),
        ProviderLowCredit("Salum 1004 low credit", provider="salum", code=1004),
    ],
)
async def test_permanent_provider_errors_become_permanent(error: Exception) -> None:
    provider = FailingProvider(error)
    with pytest.raises(PermanentError, match=str(error)):
        await make_sms_handler(provider)(make_job(jobs()[0]))
    assert provider.calls == 1


async def test_transient_with_delay_becomes_retry_after() -> None:
    error = ProviderTransientError("Salum 4090", provider="salum", code=4090, retry_after=300.0)
    with pytest.raises(RetryAfter) as info:
        await make_sms_handler(FailingProvider(error))(make_job(jobs()[0]))
    assert info.value.delay == 300.0 and "4090" in str(info.value)


async def test_transient_without_delay_propagates_for_backoff() -> None:
    error = ProviderTransientError("Salum HTTP 503", provider="salum", code=503)
    with pytest.raises(ProviderTransientError) as info:
        await make_sms_handler(FailingProvider(error))(make_job(jobs()[0]))
    assert info.value is error


async def test_logs_carry_context_and_no_secrets() -> None:
    mock = MockSMSProvider(echo=False)
    handle = make_sms_handler(mock, clock=clock_at(NOW_MS))
    failing = make_sms_handler(
        FailingProvider(ProviderTransientError("Salum HTTP 503", provider="salum", code=503)),
        clock=clock_at(NOW_MS),
    )
    with structlog.testing.capture_logs() as logs:
        for i, data in enumerate(jobs()):
            await handle(make_job(data, job_id=f"job{i}", attempt=2))
        with pytest.raises(ProviderTransientError):
            await failing(make_job(jobs()[1], job_id="jobfail"))
    sms_lines = [e for e in logs if e["event"].startswith("sms.") and e["event"] != "sms.mock_sent"]
    assert [e["event"] for e in sms_lines] == ["sms.sent"] * 3 + ["sms.send_failed"]
    for entry, kind in zip(sms_lines, ["welcome", "otp", "notification", "otp"], strict=True):
        assert entry["queue"] == "sms" and entry["type"] == kind
        assert entry["job_id"].startswith("job") and entry["attempt"] in (1, 2)
        assert entry["to"] == "+2547****678"
    text = str(logs)
    assert CODE not in text
    assert "Mzigo" not in text and "Welcome" not in text
    assert not re.search(r"\+?254712345678", text)


async def test_end_to_end_through_salum_standin(standin: SalumStandin) -> None:
    provider = SalumSMSProvider(standin.url, str(standin.api_key), str(standin.partner_id), "SQ")
    handle = make_sms_handler(provider, clock=lambda: time.time())
    fresh = [
        WelcomeSMS(id="w", timestamp=time.time_ns() // 10**6, recipient=TO, user_name="Zawadi"),
        OTPSMS(id="o", timestamp=time.time_ns() // 10**6, recipient=TO, code=CODE),
        NotificationSMS(id="n", timestamp=time.time_ns() // 10**6, recipient=TO, message="Hi"),
    ]
    try:
        results = [await handle(make_job(d, job_id=f"job{i}")) for i, d in enumerate(fresh)]
    finally:
        await provider.aclose()
    assert all(r["provider"] == "salum" and r["message_id"] for r in results)
    bodies = [r.body for r in standin.received]
    assert [b["mobile"] for b in bodies if b] == ["254712345678"] * 3
    assert [b["clientsmsid"] for b in bodies if b] == ["job0", "job1", "job2"]
    otp = fresh[1]
    assert isinstance(otp, OTPSMS)
    assert [b["message"] for b in bodies if b][1] == render_otp_sms(otp).message
