"""Failover through ProviderRouter, in-process: real Redis, a real Worker, the Salum and
Africa's Talking stand-ins on loopback. Process-level runs are in test_sms_failover_workers."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from typing import Any

import pytest
import structlog

from streamq import Defer, Job, JobState, Queue, Worker, WorkerEvent
from streamq.devredis import free_port
from streamq.metrics import Metrics
from streamq.sms import create_notification_sms_job, create_otp_sms_job, make_sms_handler
from streamq.sms.breaker import BreakerPolicy, Breakers
from streamq.sms.failover import ProviderRouter
from streamq.sms.providers import AfricasTalkingSMSProvider, SalumSMSProvider
from streamq.sms.standin import SalumStandin
from streamq.sms.standin_at import AfricasTalkingStandin
from tests.support.util import running, wait_until

from .conftest import API_KEY, PARTNER_ID, SHORTCODE

AT_KEY = "atsk_failover_SECRET_77"
AT_USER = "streamq"
NUMBER = "+254712345678"
CODE = "480213"



@pytest.fixture
async def at_standin() -> AsyncIterator[AfricasTalkingStandin]:
    async with AfricasTalkingStandin(api_key=AT_KEY, username=AT_USER) as s:
        yield s


def salum_at(url: str, timeout: float = 0.5) -> SalumSMSProvider:
    return SalumSMSProvider(url, API_KEY, PARTNER_ID, SHORTCODE, timeout_total=timeout,
                            timeout_connect=0.3)


def at_provider(standin: AfricasTalkingStandin) -> AfricasTalkingSMSProvider:
    return AfricasTalkingSMSProvider(AT_USER, AT_KEY, api_url=standin.url, timeout_total=1.0,
                                     timeout_connect=0.3)


class Run:
    """A worker over a router, recording its events."""

    def __init__(self, queue: Queue, router: ProviderRouter, **options: Any) -> None:
        self.events: list[WorkerEvent] = []
        self.worker = Worker(queue, make_sms_handler(router), rate_limit=None, **options)
        for name in ("completed", "failed", "retrying", "dead", "deferred"):
            self.worker.on(name, self.events.append)  # type: ignore[arg-type]

    def count(self, name: str) -> int:
        return sum(e.name == name for e in self.events)


async def events_of(q: Queue, name: str) -> list[dict[str, str]]:
    out = []
    for e in await q.read_events(count=1000):
        if e.name == name:
            out.append({"job": e.job_id, "e": e.error or "", **(e.fields or {})})
    return out


async def test_refused_connection_fails_over_and_opens_the_breaker(
    queue: Queue, at_standin: AfricasTalkingStandin
) -> None:
    salum = salum_at(f"http://127.0.0.1:{free_port()}/api/services/sendsms/")  # nothing there
    router = ProviderRouter(queue, [salum, at_provider(at_standin)],
                            policy=BreakerPolicy(errors=3, window_s=30, cooldown_s=60))
    refs = [await create_notification_sms_job(recipient=NUMBER, message=f"n{i}", queue=queue)
            for i in range(12)]
    run = Run(queue, router, concurrency=1)
    try:
        async with running(run.worker):
            await wait_until(lambda: run.count("completed") >= 12, 15, message="12 sent")
    finally:
        await router.aclose()
    keys = [r.idempotency_key for r in at_standin.received]
    assert sorted(keys) == sorted(r.job_id for r in refs), "each once, through the backup"
    assert run.count("failed") == run.count("dead") == 0
    failovers = await events_of(queue, "failover")
    assert len(failovers) == 12 and {f["to"] for f in failovers} == {"africastalking"}
    reasons = [f["reason"] for f in failovers]
    assert reasons[:3] == ["unreachable"] * 3 and set(reasons[3:]) == {"breaker_open"}
    breaker = await router.breakers.snapshot("salum")
    assert breaker["st"] == "open" and breaker["kind"] == "errors"
    [opened] = [e for e in await events_of(queue, "breaker") if e["state"] == "open"]
    assert opened["provider"] == "salum" and "unreachable" in opened["e"]
    for ref in refs:
        info = await queue.get_job(ref.job_id)
        assert info is not None and info.state is JobState.COMPLETED and info.attempts == 1


async def test_refused_credentials_fail_over_at_once(
    queue: Queue, standin: SalumStandin, at_standin: AfricasTalkingStandin
) -> None:
    standin.set_mode("1006")
    router = ProviderRouter(queue, [salum_at(standin.url), at_provider(at_standin)],
                            policy=BreakerPolicy(cooldown_s=60))
    refs = [await create_notification_sms_job(recipient=NUMBER, message=f"c{i}", queue=queue)
            for i in range(5)]
    run = Run(queue, router, concurrency=1)
    metrics = Metrics()
    metrics.attach(run.worker)
    with structlog.testing.capture_logs() as logs:
        try:
            async with running(run.worker):
                await wait_until(lambda: run.count("completed") >= 5, 10, message="5 sent")
            page = (await metrics.scrape())[0].decode()
        finally:
            await router.aclose()
    assert len(standin.received) == 1, "one refusal opens the breaker: no second try"
    assert sorted(r.idempotency_key or "" for r in at_standin.received) == sorted(
        r.job_id for r in refs)
    assert run.count("dead") == 0 and await queue.dead_letters(10) == []
    breaker = await router.breakers.snapshot("salum")
    assert breaker["st"] == "open" and breaker["kind"] == "config" and "1006" in breaker["why"]
    reasons = [f["reason"] for f in await events_of(queue, "failover")]
    assert reasons == ["config"] + ["breaker_open"] * 4
    assert (f'streamq_sms_failovers_total{{from_provider="salum",queue="{queue.name}",reason="config",'
            'to_provider="africastalking"} 1.0') in page
    assert 'state="open"} 1.0' in page and "streamq_sms_breaker_state" in page
    assert [e["event"] for e in logs].count("sms.breaker_opened") == 1
    assert API_KEY not in str(logs) and AT_KEY not in str(logs)
    assert not re.search(r"\+?2547\d{8}", str(logs))


async def test_a_timeout_is_retried_on_the_same_provider_never_the_backup(
    queue: Queue, standin: SalumStandin, at_standin: AfricasTalkingStandin
) -> None:
    """The first send times out (Salum may have sent it) and opens Salum's breaker. The
    job waits for Salum (same clientsmsid) while new jobs fail over; the backup never
    sees the timed-out one."""
    standin.script("slow:1.0")  # then ok
    router = ProviderRouter(queue, [salum_at(standin.url, timeout=0.3), at_provider(at_standin)],
                            policy=BreakerPolicy(errors=1, window_s=30, cooldown_s=0.6))
    first = await create_otp_sms_job(recipient=NUMBER, code=CODE, queue=queue)
    run = Run(queue, router, concurrency=2)
    try:
        async with running(run.worker):
            await wait_until(lambda: run.count("retrying") >= 1, 10, message="the timeout")
            later = await create_notification_sms_job(recipient=NUMBER, message="later",
                                                      queue=queue)
            await wait_until(lambda: run.count("completed") >= 2, 10, message="both sent")
    finally:
        await router.aclose()
    assert [r.idempotency_key for r in at_standin.received] == [later.job_id]
    salum_ids = [r.body["clientsmsid"] for r in standin.received if r.body]
    assert salum_ids == [first.job_id, first.job_id], "the retry went to Salum, same key"
    assert run.count("deferred") >= 1, "it waited for Salum's breaker instead of failing over"
    info = await queue.get_job(first.job_id)
    assert info is not None and info.state is JobState.COMPLETED
    assert info.attempts == 2, "the timeout used an attempt; the waits for Salum did not"


async def test_a_run_that_died_mid_send_pins_the_job(
    queue: Queue, standin: SalumStandin, at_standin: AfricasTalkingStandin
) -> None:
    """A pin left 'sending' (its worker was killed during the call) counts as maybe
    sent: with Salum's breaker open the job waits for Salum, it does not fail over."""
    router = ProviderRouter(queue, [salum_at(standin.url), at_provider(at_standin)],
                            policy=BreakerPolicy(cooldown_s=60))
    ref = await create_notification_sms_job(recipient=NUMBER, message="x", queue=queue)
    job = Job(id=ref.job_id, data=None, attempt=1, max_attempts=3, queue_name=queue.name,
              priority="normal", created_ms=0, enqueued_ms=0, type_name="notification")
    try:
        assert await router._route_begin(job.id) == ("", "")
        ok, _ = await router._route_pin(job, "salum", "", None)  # ...and the worker dies here
        assert ok
        await router.breakers.failure("salum", "config", "Salum 1006 invalid credentials")
        with pytest.raises(Defer) as info:
            await router.send(job, NUMBER, "x")
        assert not info.value.hold, "the backup may take other jobs: only this one waits"
        assert "waiting for salum" in str(info.value)
        assert await router._route_begin(job.id) == ("salum", "maybe")
    finally:
        await router.aclose()
    assert at_standin.received == [] and standin.received == []


async def test_every_provider_down_holds_then_resumes_through_the_first_that_works(
    queue: Queue, standin: SalumStandin, at_standin: AfricasTalkingStandin
) -> None:
    standin.set_mode("1006")
    at_standin.set_mode("http401")
    router = ProviderRouter(queue, [salum_at(standin.url), at_provider(at_standin)],
                            policy=BreakerPolicy(cooldown_s=0.2))
    for i in range(6):
        await create_notification_sms_job(recipient=NUMBER, message=f"h{i}", attempts=1,
                                          queue=queue)
    run = Run(queue, router, concurrency=2)
    try:
        async with running(run.worker):
            await wait_until(lambda: run.worker.fetch_hold.holds >= 3, 10, message="a hold")
            assert "no SMS provider can take messages now" in run.worker.fetch_hold.reason
            at_standin.set_mode("ok")
            await wait_until(lambda: run.count("completed") >= 6, 10, message="resumed")
    finally:
        await router.aclose()
    assert run.count("dead") == run.count("failed") == 0
    assert len(at_standin.received) - 6 <= run.worker.fetch_hold.holds + 2, "no churn"
    assert (await router.breakers.snapshot("africastalking")).get("st") == "closed"


async def test_breaker_probe_is_single_and_its_lease_expires(queue: Queue) -> None:
    await queue.connect()
    b = Breakers(queue, BreakerPolicy(errors=2, window_s=5, cooldown_s=0.2))
    assert (await b.admit("salum", 5)).allowed
    assert await b.failure("salum", "error", "e1") == ("closed", False)
    assert await b.success("salum") is False  # resets the run of errors
    assert await b.failure("salum", "error", "e2") == ("closed", False)
    assert await b.failure("salum", "error", "e3") == ("open", True)
    shut = await b.admit("salum", 5)
    assert not shut.allowed and shut.state == "open" and 0 < shut.wait_s <= 0.2
    await wait_until(lambda: _admitted(b, 0.3), 5, message="the probe")  # one probe...
    second = await b.admit("salum", 0.3)
    assert not second.allowed and second.state == "half_open"  # ...and only one
    await wait_until(lambda: _admitted(b, 5), 5, message="a new probe after the lease")
    assert await b.failure("salum", "error", "probe failed") == ("open", True)
    await wait_until(lambda: _admitted(b, 5), 5, message="the next probe")
    assert await b.success("salum") is True
    assert (await b.admit("salum", 5)).state == "closed"
    states = [e["state"] for e in await events_of(queue, "breaker")]
    assert states == ["open", "half_open", "open", "half_open", "closed"]


async def _admitted(b: Breakers, lease: float) -> bool:
    a = await b.admit("salum", lease)
    return a.allowed and a.probe


def test_provider_keys_share_the_queue_slot_and_hold_no_number() -> None:
    from redis.crc import key_slot

    from streamq.errors import ConfigError
    from streamq.keys import QueueKeys

    k = QueueKeys("sms")
    keys = [k.breaker("salum"), k.downstream_limiter("africastalking"), k.route("job-1"),
            k.events, *k.lanes]
    assert len({key_slot(key.encode()) for key in keys}) == 1
    for bad in ("Salum", "+254712345678", "a" * 33, "x:y"):
        with pytest.raises(ConfigError):
            k.breaker(bad)
