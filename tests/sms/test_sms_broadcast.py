"""Broadcasts (streamq/sms/broadcast.py): one text to many recipients per Africa's Talking
request, through a real Worker in batch mode, real Redis, and the stand-ins on loopback."""

from __future__ import annotations

import re
import time
from collections.abc import AsyncIterator
from typing import Any

import anyio
import pytest
import structlog

from streamq import BatchOptions, Job, JobState, Queue, Worker, WorkerEvent
from streamq.devredis import free_port
from streamq.errors import PayloadError
from streamq.sms import (
    InvalidPhoneNumber,
    SMSJob,
    create_notification_sms_job,
    create_notification_sms_jobs,
)
from streamq.sms.breaker import BreakerPolicy
from streamq.sms.broadcast import _Item, chunks, make_sms_batch_handler, request_key
from streamq.sms.delivery_http import serve_delivery
from streamq.sms.dispatch import PreparedSMS
from streamq.sms.failover import ProviderRouter
from streamq.sms.providers import AfricasTalkingSMSProvider, SalumSMSProvider
from streamq.sms.providers.base import (
    ProviderConfigError,
    ProviderPermanentError,
    ProviderTransientError,
    SendResult,
)
from streamq.sms.standin import SalumStandin
from streamq.sms.standin_at import AfricasTalkingStandin
from tests.support.util import running, wait_until

from .conftest import API_KEY, PARTNER_ID, SHORTCODE

AT_KEY = "atsk_broadcast_SECRET_31"
AT_USER = "streamq"
TEXT = "Water supply resumes at 6 pm in your area."
SECRET = "broadcast-Secret_0123456789abcdef"


def number(i: int) -> str:
    # last digit 6-8: the stand-in's delivery report is a plain Success
    return f"+2547{10000000 + i * 10 + 6:08d}"



@pytest.fixture
async def at() -> AsyncIterator[AfricasTalkingStandin]:
    async with AfricasTalkingStandin(api_key=AT_KEY, username=AT_USER) as s:
        yield s


def at_provider(url: str, *, timeout: float = 2.0, max_recipients: int = 100
                ) -> AfricasTalkingSMSProvider:
    return AfricasTalkingSMSProvider(AT_USER, AT_KEY, api_url=url, timeout_total=timeout,
                                     timeout_connect=0.3, max_recipients=max_recipients)


def salum_provider(url: str) -> SalumSMSProvider:
    return SalumSMSProvider(url, API_KEY, PARTNER_ID, SHORTCODE, timeout_total=2.0,
                            timeout_connect=0.3)


class Run:
    """A worker running the broadcast handler, recording its events."""

    def __init__(self, queue: Queue, router: ProviderRouter, *, size: int = 100,
                 max_wait: float = 0.2, concurrency: int = 2) -> None:
        self.events: list[WorkerEvent] = []
        self.worker = Worker(queue, make_sms_batch_handler(router), rate_limit=None,
                             concurrency=concurrency,
                             batch=BatchOptions(size=size, max_wait=max_wait))
        for name in ("completed", "failed", "retrying", "dead", "deferred"):
            self.worker.on(name, self.events.append)  # type: ignore[arg-type]

    def count(self, name: str) -> int:
        return sum(e.name == name for e in self.events)


async def add(queue: Queue, numbers: list[str], text: str = TEXT) -> list[str]:
    return [(await create_notification_sms_job(recipient=n, message=text, queue=queue)).job_id
            for n in numbers]


def numbers_of(at: AfricasTalkingStandin) -> list[list[str]]:
    return [r.form["to"].split(",") for r in at.received]


def leaks(logs: list[dict[str, Any]], *texts: str) -> list[str]:
    """Full numbers or texts found in captured log lines."""
    shown = str(logs)
    found = re.findall(r"\+?2547\d{8}", shown)
    return found + [t for t in texts if t in shown]


async def test_a_broadcast_goes_out_in_one_request(
    queue: Queue, at: AfricasTalkingStandin
) -> None:
    router = ProviderRouter(queue, [at_provider(at.url)])
    nums = [number(i) for i in range(60)]
    ids = await add(queue, nums)
    run = Run(queue, router)
    with structlog.testing.capture_logs() as logs:
        try:
            async with running(run.worker):
                await wait_until(lambda: run.count("completed") >= 60, 30, message="60 sent")
        finally:
            await router.aclose()
    assert len(at.received) == 1, "60 recipients of one text: one request"
    [request] = at.received
    assert sorted(request.form["to"].split(",")) == sorted(nums)
    assert request.form["message"] == TEXT
    assert (request.idempotency_key or "").startswith("bulk-")
    message_ids = set()
    for job_id in ids:
        info = await queue.get_job(job_id)
        assert info is not None and info.state is JobState.COMPLETED and info.attempts == 1
        assert info.result["provider"] == "africastalking"
        assert info.result["encoding"] == "GSM-7" and info.result["segments"] == 1
        message_ids.add(info.result["message_id"])
        # the delivery reference, as the single-send path records it
        assert await router.delivery.find("africastalking", info.result["message_id"]) == (
            0, job_id)
    assert len(message_ids) == 60
    [line] = [e for e in logs if e["event"] == "sms.broadcast"]
    assert (line["recipients"], line["sent"], line["missing"], line["unknown"]) == (60, 60, 0, 0)
    assert len([e for e in logs if e["event"] == "sms.sent"]) == 60
    assert leaks(logs, TEXT) == []


def _job(job_id: str) -> Job:
    return Job(id=job_id, data=None, attempt=1, max_attempts=3, queue_name="q",
               priority="normal", created_ms=0, enqueued_ms=0, type_name="notification")


async def test_mixed_per_recipient_results_land_on_each_job(
    queue: Queue, at: AfricasTalkingStandin
) -> None:
    """Sent; refused (403 -> dead); low credit (405 -> dead, one error line); a gateway
    error (500 -> retried, then sent); a number the reply leaves out (retried, never
    counted as sent); a number nobody asked for in the reply (ignored)."""
    sent, refused, broke, lost, poor = (number(i) for i in range(5))
    at.script_number(refused, "403")
    at.script_number(broke, "500", "ok")
    at.script_number(lost, "omit", "ok")
    at.script_number(poor, "405")
    at.stray = [number(99)]
    router = ProviderRouter(queue, [at_provider(at.url)])
    ids = dict(zip((sent, refused, broke, lost, poor), await add(
        queue, [sent, refused, broke, lost, poor]), strict=True))
    run = Run(queue, router)
    with structlog.testing.capture_logs() as logs:
        try:
            async with running(run.worker):
                await wait_until(lambda: run.count("completed") >= 3 and run.count("dead") >= 2,
                                 30, message="3 sent, 2 dead")
        finally:
            await router.aclose()
    first = numbers_of(at)[0]
    assert sorted(first) == sorted([sent, refused, broke, lost, poor])
    asked = [n for r in numbers_of(at) for n in r]
    assert asked.count(sent) == asked.count(refused) == asked.count(poor) == 1
    assert asked.count(broke) == asked.count(lost) == 2, "retried once each, same provider"
    states = {}
    for n, job_id in ids.items():
        info = await queue.get_job(job_id)
        assert info is not None
        states[n] = (info.state, info.attempts)
    assert states[sent] == (JobState.COMPLETED, 1)
    assert states[broke] == states[lost] == (JobState.COMPLETED, 2)
    assert states[refused][0] is JobState.FAILED and states[poor][0] is JobState.FAILED
    dead = {d.job_id: d.error for d in await queue.dead_letters(10)}
    assert "403 InvalidPhoneNumber" in dead[ids[refused]]
    assert "405 InsufficientBalance" in dead[ids[poor]]
    first_line = next(e for e in logs if e["event"] == "sms.broadcast")
    assert first_line["log_level"] == "warning"
    assert (first_line["sent"], first_line["refused"], first_line["retried"],
            first_line["missing"], first_line["unknown"]) == (1, 2, 2, 1, 1)  # missing: retried too
    assert [e["event"] for e in logs].count("sms.provider_low_credit") == 1
    assert leaks(logs, TEXT) == []


async def test_different_texts_go_in_separate_requests_and_a_repeated_number_in_another(
    queue: Queue, at: AfricasTalkingStandin
) -> None:
    router = ProviderRouter(queue, [at_provider(at.url, max_recipients=4)])
    texts = ["Meeting moved to 3 pm.", "Meeting cancelled.", "Bring your ID card."]
    for t, text in enumerate(texts):
        await add(queue, [number(10 * t + i) for i in range(6)], text)
    twice = await add(queue, [number(50), number(50), number(51)])
    run = Run(queue, router)
    try:
        async with running(run.worker):
            await wait_until(lambda: run.count("completed") >= 21, 30, message="21 sent")
    finally:
        await router.aclose()
    by_text: dict[str, list[list[str]]] = {}
    for r in at.received:
        by_text.setdefault(r.form["message"], []).append(r.form["to"].split(","))
    for t, text in enumerate(texts):
        # 6 numbers, at most 4 a request: 2 requests, each number once
        assert sorted(len(req) for req in by_text[text]) == [2, 4]
        assert sorted(n for req in by_text[text] for n in req) == sorted(
            number(10 * t + i) for i in range(6))
    # the same number twice with the same text: never twice in one request
    assert sorted(map(sorted, by_text[TEXT])) == [[number(50)], [number(50), number(51)]]
    infos = [await queue.get_job(j) for j in twice]
    assert all(i is not None and i.state is JobState.COMPLETED for i in infos)
    assert len({i.result["message_id"] for i in infos if i is not None}) == 3


async def test_a_group_fails_over_on_a_refused_connection_and_goes_per_job_to_salum(
    queue: Queue, standin: SalumStandin
) -> None:
    """Africa's Talking refuses the connection (provably unsent): the group moves to
    Salum, whose API takes one number a request: one request per job there."""
    gone = at_provider(f"http://127.0.0.1:{free_port()}")
    router = ProviderRouter(queue, [gone, salum_provider(standin.url)],
                            policy=BreakerPolicy(errors=3, window_s=30, cooldown_s=60))
    ids = await add(queue, [number(i) for i in range(8)])
    run = Run(queue, router)
    try:
        async with running(run.worker):
            await wait_until(lambda: run.count("completed") >= 8, 30, message="8 sent")
    finally:
        await router.aclose()
    assert sorted(r.body["clientsmsid"] for r in standin.received if r.body) == sorted(ids)
    events = [e for e in await queue.read_events(count=1000) if e.name == "failover"]
    assert sorted(e.job_id or "" for e in events) == sorted(ids)
    assert {(e.fields or {}).get("reason") for e in events} == {"unreachable"}
    assert run.count("failed") == 0, "provably unsent: no attempt used"
    for job_id in ids:
        info = await queue.get_job(job_id)
        assert info is not None and info.result["provider"] == "salum"


async def test_jobs_failing_over_from_salum_are_gathered_into_one_request(
    queue: Queue, at: AfricasTalkingStandin
) -> None:
    gone = salum_provider(f"http://127.0.0.1:{free_port()}/api/services/sendsms/")
    router = ProviderRouter(queue, [gone, at_provider(at.url)])
    ids = await add(queue, [number(i) for i in range(10)])
    run = Run(queue, router)
    try:
        async with running(run.worker):
            await wait_until(lambda: run.count("completed") >= 10, 30, message="10 sent")
    finally:
        await router.aclose()
    assert sorted(n for r in numbers_of(at) for n in r) == sorted(number(i) for i in range(10))
    assert len(at.received) == 1, "each tried Salum alone, then all went in one request"
    for job_id in ids:
        info = await queue.get_job(job_id)
        assert info is not None and info.result["provider"] == "africastalking"


async def test_a_timeout_is_retried_on_the_same_provider_never_the_backup(
    queue: Queue, at: AfricasTalkingStandin, standin: SalumStandin
) -> None:
    """The request times out (Africa's Talking may have sent all of them): every job
    retries on Africa's Talking; Salum never sees one."""
    at.script("slow:2.5")  # then ok
    router = ProviderRouter(queue, [at_provider(at.url, timeout=0.8),
                                    salum_provider(standin.url)],
                            policy=BreakerPolicy(errors=1, window_s=30, cooldown_s=0.5))
    ids = await add(queue, [number(i) for i in range(6)])
    run = Run(queue, router)
    try:
        async with running(run.worker):
            await wait_until(lambda: run.count("completed") >= 6, 30, message="6 sent")
    finally:
        await router.aclose()
    assert standin.received == [], "never sent through a second provider"
    asked = [n for r in numbers_of(at) for n in r]
    assert all(asked.count(number(i)) == 2 for i in range(6))
    for job_id in ids:
        info = await queue.get_job(job_id)
        assert info is not None and info.state is JobState.COMPLETED and info.attempts == 2
        assert info.result["provider"] == "africastalking"


async def test_an_http_503_is_retried_on_the_same_provider(
    queue: Queue, at: AfricasTalkingStandin, standin: SalumStandin
) -> None:
    at.script("http503")
    router = ProviderRouter(queue, [at_provider(at.url), salum_provider(standin.url)])
    ids = await add(queue, [number(i) for i in range(4)])
    run = Run(queue, router)
    try:
        async with running(run.worker):
            await wait_until(lambda: run.count("completed") >= 4, 30, message="4 sent")
    finally:
        await router.aclose()
    assert standin.received == [] and run.count("retrying") == 4
    assert len(numbers_of(at)[0]) == 4
    assert [await attempts(queue, j) for j in ids] == [2] * 4


async def test_the_rate_limit_takes_a_token_per_recipient(
    queue: Queue, at: AfricasTalkingStandin
) -> None:
    rate, jobs = 20.0, 70
    router = ProviderRouter(queue, [at_provider(at.url, max_recipients=10)],
                            rate_limits={"africastalking": rate})
    await add(queue, [number(i) for i in range(jobs)])
    run = Run(queue, router, concurrency=1)
    t0 = time.monotonic()  # no token can be taken before: the bucket starts full here
    try:
        async with running(run.worker):
            await wait_until(lambda: run.count("completed") >= jobs, 60, message="all sent")
    finally:
        await router.aclose()
    arrivals = [(r.at, len(r.form["to"].split(","))) for r in at.received]
    assert sum(n for _, n in arrivals) == jobs and max(n for _, n in arrivals) <= 10
    total = 0
    for at_time, n in sorted(arrivals):
        total += n
        # a burst of one second's tokens, then the rate: never more recipients than that
        assert total <= rate + rate * (at_time - t0) + 1, (total, at_time - t0)
    spread = arrivals[-1][0] - t0
    assert spread >= (jobs - rate) / rate * 0.95, f"{jobs} recipients in {spread:.2f}s"


async def test_delivery_callbacks_land_on_each_broadcast_job(
    queue: Queue, at: AfricasTalkingStandin
) -> None:
    port = free_port()
    at.set_callback(f"http://127.0.0.1:{port}/sms/delivery/{SECRET}", delay=0.05)
    router = ProviderRouter(queue, [at_provider(at.url)])
    failing = "+254712345671"  # last digit 1: the stand-in reports Failed
    nums = [number(i) for i in range(5)] + [failing]
    ids = dict(zip(nums, await add(queue, nums), strict=True))
    run = Run(queue, router)
    try:
        async with anyio.create_task_group() as tg:
            await tg.start(serve_delivery, router.delivery, SECRET, "127.0.0.1", port)
            async with running(run.worker):
                await wait_until(lambda: sum(c.http_status == 200 for c in at.callbacks) >= 6,
                                 30, message="6 callbacks answered")
            tg.cancel_scope.cancel()
    finally:
        await router.aclose()
    assert len(at.received) == 1
    for n, job_id in ids.items():
        info = await queue.get_job(job_id)
        assert info is not None and info.state is JobState.COMPLETED
        report = info.result["delivery"]
        assert report["message_id"] == info.result["message_id"]
        assert report["status"] == ("Failed" if n == failing else "Success")


async def test_credentials_refused_fail_a_group_over_and_hold_with_one_provider(
    queue: Queue, at: AfricasTalkingStandin
) -> None:
    at.set_mode("http401")
    router = ProviderRouter(queue, [at_provider(at.url)], policy=BreakerPolicy(cooldown_s=0.3))
    ids = await add(queue, [number(i) for i in range(5)])
    run = Run(queue, router)
    try:
        async with running(run.worker):
            await wait_until(lambda: run.worker.fetch_hold.holds >= 1, 30, message="a hold")
            at.set_mode("ok")
            await wait_until(lambda: run.count("completed") >= 5, 30, message="resumed")
    finally:
        await router.aclose()
    assert run.count("dead") == run.count("failed") == 0, "credentials never dead-letter"
    assert [await attempts(queue, j) for j in ids] == [1] * 5


async def test_the_worker_command_line_broadcasts(
    redis_url: str, queue_name: str, tmp_path: Any, at: AfricasTalkingStandin
) -> None:
    from tests.support.pii import assert_no_pii
    from tests.support.sms_workers import WorkerProcs

    procs = WorkerProcs(tmp_path, {"REDIS_URL": redis_url, "AT_USERNAME": AT_USER,
                                   "AT_API_KEY": AT_KEY, "AT_API_URL": at.url})
    q = Queue(queue_name, redis_url=redis_url, job_type=SMSJob)
    try:
        await add(q, [number(i) for i in range(40)])
        procs.start("--queue", queue_name, "--provider", "africastalking", "--rate-limit", "0",
                    "--batch-size", "100", "--batch-max-wait", "0.05")
        await wait_until(lambda: _completed(q, 40), 60, 0.1, message="40 completed")
        assert await procs.stop() == [0]
    finally:
        procs.kill_all()
        await q.close()
    assert len(at.received) == 1 and len(numbers_of(at)[0]) == 40
    logs = procs.all_logs()
    assert '"broadcast"' in logs and "sms.broadcast" in logs
    assert_no_pii(logs, [AT_KEY, TEXT, *(number(i).lstrip("+") for i in range(40))],
                  min_lines=5)


async def attempts(q: Queue, job_id: str) -> int:
    info = await q.get_job(job_id)
    assert info is not None and info.state is JobState.COMPLETED
    return info.attempts


async def _completed(q: Queue, n: int) -> bool:
    return (await q.counts())["completed"] >= n


async def test_create_notification_sms_jobs_checks_everything_before_writing(
    queue: Queue
) -> None:
    with pytest.raises(InvalidPhoneNumber, match=r"recipient 2: invalid phone number '\+\*+'"):
        await create_notification_sms_jobs(
            recipients=[number(1), number(2), "+2547123", number(3)], message=TEXT, queue=queue)
    with pytest.raises(PayloadError, match="1600"):
        await create_notification_sms_jobs(recipients=[number(1)], message="x" * 1601,
                                           queue=queue)
    assert (await queue.counts())["waiting"] == 0, "nothing written"
    refs = await create_notification_sms_jobs(
        recipients=[number(1), "0710000026", number(1)], message=TEXT, queue=queue)
    assert len(refs) == 3 and (await queue.counts())["waiting"] == 3
    payloads = [await queue.job_payload(r.job_id) for r in refs]
    assert [p.data.recipient.phone_number for p in payloads if p] == [  # type: ignore[union-attr]
        number(1), number(2), number(1)]


# -- the parts --------------------------------------------------------------------------------
def _item(n: str) -> _Item:
    return _Item(PreparedSMS(job=_job(n), to=n, rendered=None, log=None))  # type: ignore[arg-type]


def test_chunks_cap_the_size_and_never_repeat_a_number() -> None:
    items = [_item(n) for n in ["a", "b", "a", "c", "a", "d", "e"]]
    got = [[i.to for i in c] for c in chunks(items, 3)]
    assert got == [["a", "b", "c"], ["a", "d", "e"], ["a"]]
    assert [[i.to for i in c] for c in chunks(items[:2], 1)] == [["a"], ["b"]]


def test_request_key_is_the_job_id_alone_else_a_digest() -> None:
    assert request_key([_job("j1")]) == "j1"
    key = request_key([_job("j1"), _job("j2")])
    assert key.startswith("bulk-") and key == request_key([_job("j1"), _job("j2")])
    assert key != request_key([_job("j2"), _job("j1")])


async def test_send_many_classifies_each_recipient(at: AfricasTalkingStandin) -> None:
    provider = at_provider(at.url, max_recipients=3)
    a, b, c = number(1), number(2), number(3)
    try:
        at.script_number(b, "406")
        at.script_number(c, "omit")
        at.stray = [number(4)]
        reply = await provider.send_many([a, b, c], "hi", idempotency_key="k")
        assert isinstance(reply.outcomes[a], SendResult)
        assert isinstance(reply.outcomes[b], ProviderPermanentError)
        assert "406 UserInBlacklist" in str(reply.outcomes[b])
        assert c not in reply.outcomes and reply.unknown == 1
        at.script_number(a, "501")
        reply = await provider.send_many([a], "hi", idempotency_key="k")
        assert isinstance(reply.outcomes[a], ProviderTransientError)
        with pytest.raises(ValueError, match="at most 3"):
            await provider.send_many([a, b, c, number(5)], "hi", idempotency_key="k")
        with pytest.raises(ValueError, match="distinct"):
            await provider.send_many([a, a], "hi", idempotency_key="k")
        at.set_mode("http401")
        with pytest.raises(ProviderConfigError):
            await provider.send_many([a, b], "hi", idempotency_key="k")
        at.set_mode("empty:InvalidSenderId")
        with pytest.raises(ProviderPermanentError, match="402"):
            await provider.send_many([a, b], "hi", idempotency_key="k")
    finally:
        await provider.aclose()
    assert at.received[0].form["to"] == f"{a},{b},{c}"


async def test_a_large_reply_is_read_whole(at: AfricasTalkingStandin) -> None:
    """1,000 recipients: a reply of about 150 KB, beyond the one-recipient read cap."""
    provider = at_provider(at.url, max_recipients=1000)
    nums = [f"+2547{20000000 + i:08d}" for i in range(1000)]
    try:
        t0 = time.monotonic()
        reply = await provider.send_many(nums, "hi", idempotency_key="k")
    finally:
        await provider.aclose()
    assert len(reply.outcomes) == 1000 and reply.unknown == 0, time.monotonic() - t0
    assert all(isinstance(o, SendResult) for o in reply.outcomes.values())


async def test_the_standin_takes_per_number_replies_over_http(at: AfricasTalkingStandin) -> None:
    import aiohttp

    a, b = number(1), number(2)
    async with aiohttp.ClientSession() as http:
        async with http.post(at.url + "/_standin/mode",
                             json={"numbers": {a: ["502"], b: ["omit"]}, "stray": [number(3)]}) as r:
            assert r.status == 200
        async with http.post(at.url + "/_standin/mode", json={"numbers": {a: ["fax"]}}) as r:
            assert r.status == 400 and "unknown per-number reply" in (await r.json())["error"]
    provider = at_provider(at.url)
    try:
        reply = await provider.send_many([a, b, number(4)], "hi", idempotency_key="k")
    finally:
        await provider.aclose()
    assert isinstance(reply.outcomes[a], ProviderTransientError) and b not in reply.outcomes
    assert isinstance(reply.outcomes[number(4)], SendResult) and reply.unknown == 1
