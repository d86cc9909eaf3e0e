"""SMS jobs through the real engine: creators -> Redis -> Worker -> handler -> Salum stand-in."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Callable
from typing import Any

import anyio
import pytest
import structlog

from streamq import JobState, Queue, Worker, WorkerEvent
from streamq.sms import (
    SalumSMSProvider,
    create_notification_sms_job,
    create_otp_sms_job,
    create_welcome_sms_job,
    make_sms_handler,
)
from streamq.sms.standin import SalumStandin
from tests.support.util import wait_until

from .conftest import API_KEY, PARTNER_ID, SHORTCODE

NUMBER = "+254712345678"
CODE = "73910254"



async def run_worker(
    queue: Queue,
    provider: SalumSMSProvider,
    until: Callable[[list[WorkerEvent]], bool],
    **options: Any,
) -> list[WorkerEvent]:
    """Run a worker until ``until(events)`` holds (10 s deadline), then stop it."""
    events: list[WorkerEvent] = []
    done = anyio.Event()

    def record(event: WorkerEvent) -> None:
        events.append(event)
        if until(events):
            done.set()

    worker = Worker(queue, make_sms_handler(provider), rate_limit=None, **options)
    for name in ("completed", "failed", "retrying", "dead"):
        worker.on(name, record)
    async with anyio.create_task_group() as tg:
        tg.start_soon(worker.run)
        with anyio.fail_after(10):
            await done.wait()
        await worker.close()
    return events


def finished(count: int) -> Callable[[list[WorkerEvent]], bool]:
    return lambda events: sum(e.name in ("completed", "dead") for e in events) >= count


@pytest.fixture
async def provider(standin: SalumStandin) -> AsyncIterator[SalumSMSProvider]:
    p = SalumSMSProvider(standin.url, API_KEY, PARTNER_ID, SHORTCODE,
                         timeout_total=0.3, timeout_connect=0.3)
    try:
        yield p
    finally:
        await p.aclose()


async def test_all_three_kinds_are_delivered(
    queue: Queue, standin: SalumStandin, provider: SalumSMSProvider
) -> None:
    with structlog.testing.capture_logs() as logs:
        refs = [
            await create_welcome_sms_job(recipient="0712345678", user_name="Wanjiku",
                                         queue=queue),
            await create_otp_sms_job(recipient=NUMBER, code=CODE, expiry_minutes=5, queue=queue),
            await create_notification_sms_job(recipient="0722 000 111", message="مرحبا 👋",
                                              queue=queue),
        ]
        events = await run_worker(queue, provider, finished(3))
    assert sorted(e.job_id for e in events if e.name == "completed") == sorted(
        r.job_id for r in refs
    )
    got = sorted((r.body["mobile"], r.body["message"]) for r in standin.received if r.body)
    assert got == sorted([
        ("254712345678", "Welcome Wanjiku! Thanks for joining us."),
        ("254712345678", f"Your verification code is {CODE}. It expires in 5 minutes. "
                         "Do not share it with anyone."),
        ("254722000111", "مرحبا 👋"),
    ])
    assert sorted(r.body["clientsmsid"] for r in standin.received if r.body) == sorted(
        r.job_id for r in refs
    )
    # Each job's record keeps what the dispatcher returned (no text, no number).
    for ref in refs:
        info = await queue.get_job(ref.job_id)
        assert info is not None and info.state is JobState.COMPLETED
        assert isinstance(info.result, dict), info
        assert set(info.result) == {"provider", "message_id", "encoding", "segments"}
        assert info.result["provider"] == "salum" and info.result["message_id"]
        assert CODE not in str(info.result) and "712345678" not in str(info.result)
    arabic = await queue.get_job(refs[2].job_id)
    assert arabic is not None and arabic.result["encoding"] == "UCS-2"
    # The OTP (high priority) went first.
    first = standin.received[0].body
    assert first is not None and first["message"].startswith("Your verification code")
    text = str(logs)
    assert CODE not in text and API_KEY not in text
    assert not re.search(r"\+?2547\d{8}", text)


@pytest.mark.parametrize(
    ("mode", "requests", "reason"),
    [
        ("1001", 1, "1001"), ("1002", 1, "1002"), ("1003", 1, "1003"), ("1004", 1, "low credit"),
        ("1005", 3, "1005"), ("1007", 3, "1007"),
        ("http500", 3, "HTTP 500"), ("http503", 3, "HTTP 503"), ("http429", 3, "HTTP 429"),
        ("http400", 1, "HTTP 400"), ("http404", 1, "HTTP 404"), ("http422", 1, "HTTP 422"),
        ("garbage", 1, "unparseable 2xx"), ("disconnect", 3, "connection error"),
        ("slow:0.6", 3, "timed out"),
    ],
)
async def test_salum_outcome_leads_to_retry_or_dead_letter(
    queue: Queue, standin: SalumStandin, provider: SalumSMSProvider,
    mode: str, requests: int, reason: str,
) -> None:
    standin.set_mode(mode)
    ref = await create_notification_sms_job(recipient=NUMBER, message="hi", attempts=3,
                                            queue=queue)
    events = await run_worker(queue, provider, finished(1))
    [dead] = [e for e in events if e.name == "dead"]
    assert reason in (dead.error or "")
    assert len(standin.received) == requests
    assert {r.body["clientsmsid"] for r in standin.received if r.body} == {ref.job_id}
    info = await queue.get_job(ref.job_id)
    assert info is not None and info.state is JobState.FAILED
    assert API_KEY not in (info.error or "") and "254712345678" not in (info.error or "")


async def test_4090_retries_after_the_delay_the_worker_allows(
    queue: Queue, standin: SalumStandin, provider: SalumSMSProvider
) -> None:
    standin.script("4090")  # then ok
    await create_notification_sms_job(recipient=NUMBER, message="hi", queue=queue)
    events = await run_worker(queue, provider, finished(1), max_retry_delay=0.05)
    [retrying] = [e for e in events if e.name == "retrying"]
    assert retrying.delay == 0.05  # 300 s asked for, capped by the worker
    assert [e.name for e in events][-1] == "completed"
    assert len(standin.received) == 2


async def test_429_retry_after_is_honoured(
    queue: Queue, standin: SalumStandin, provider: SalumSMSProvider
) -> None:
    standin.script("http429:1")  # then ok
    await create_notification_sms_job(recipient=NUMBER, message="hi", queue=queue)
    events = await run_worker(queue, provider, finished(1))
    assert [e.name for e in events][-1] == "completed"
    first, second = standin.received
    assert second.at - first.at >= 1.0  # measured on the server's clock


async def test_timeout_then_success_keeps_the_idempotency_key(
    queue: Queue, standin: SalumStandin, provider: SalumSMSProvider
) -> None:
    standin.script("slow:0.6")  # the first reply comes after the client gave up
    ref = await create_otp_sms_job(recipient=NUMBER, code=CODE, queue=queue)
    events = await run_worker(queue, provider, finished(1))
    assert [e.name for e in events][-1] == "completed"
    assert [r.body["clientsmsid"] for r in standin.received if r.body] == [ref.job_id] * 2


@pytest.mark.parametrize("mode", ["1006", "1006-top", "4091", "4092", "http401", "http403"])
async def test_credential_errors_hold_delivery_instead_of_dead_lettering(
    queue: Queue, standin: SalumStandin, provider: SalumSMSProvider, mode: str
) -> None:
    """Issue 10.3: a wrong key must not drain the backlog into the dead letters. The
    jobs stay queued with no attempt used, and delivery resumes once the key works."""
    standin.set_mode(mode)
    refs = [await create_notification_sms_job(recipient=NUMBER, message=f"m{i}", attempts=1,
                                              queue=queue) for i in range(6)]
    events: list[WorkerEvent] = []
    worker = Worker(queue, make_sms_handler(provider, config_retry_s=0.2), rate_limit=None,
                    concurrency=2)
    for name in ("completed", "failed", "retrying", "dead", "deferred"):
        worker.on(name, events.append)  # type: ignore[arg-type]
    async with anyio.create_task_group() as tg:
        tg.start_soon(worker.run)
        await wait_until(lambda: worker.fetch_hold.holds >= 4, 10,
                         message="several probes, each refused")
        assert worker.fetch_hold.held
        # one claim of `concurrency` jobs, then one probe per hold period: no churn
        assert len(standin.received) <= 2 + worker.fetch_hold.holds
        assert {e.name for e in events} == {"deferred"}
        standin.set_mode("ok")  # the operator fixed the key on the provider's side
        await wait_until(lambda: sum(e.name == "completed" for e in events) >= 6, 10,
                         message="all six delivered")
        await worker.close()
    assert not [e for e in events if e.name in ("dead", "failed", "retrying")]
    for ref in refs:
        info = await queue.get_job(ref.job_id)
        assert info is not None and info.state is JobState.COMPLETED and info.attempts == 1
    assert await queue.dead_letters(10) == []
