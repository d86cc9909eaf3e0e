"""Delivery reports (SPEC 9.4): Africa's Talking callbacks landing on the job that sent the
message. Real redis-server, the Africa's Talking stand-in, a real Worker over a
ProviderRouter and the delivery endpoint served by aiohttp on loopback."""

from __future__ import annotations

import base64
import functools
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import aiohttp
import anyio
import pytest
import structlog

from streamq import JobState, Queue, Worker
from streamq.crypto import KEYS_ENV
from streamq.devredis import free_port
from streamq.metrics import Metrics
from streamq.sms import SMSJob, create_notification_sms_job, make_sms_handler
from streamq.sms.delivery import (
    DeliveryReports,
    MalformedReport,
    digest,
    parse_report,
    status_rank,
)
from streamq.sms.delivery_http import DELIVERY_PATH, delivery_app, serve_delivery
from streamq.sms.failover import ProviderRouter
from streamq.sms.privacy import sms_queue_options
from streamq.sms.providers import AfricasTalkingSMSProvider
from streamq.sms.standin_at import AfricasTalkingStandin
from tests.support.pii import assert_no_pii
from tests.support.redis_dump import dump_all
from tests.support.util import running, wait_until

AT_KEY = "atsk_delivery_SECRET_99"
AT_USER = "streamq"
SECRET = "dlr-Secret_0123456789abcdef"
NUMBER = "+254712345678"  # ends in 8: the stand-in reports Success
ENC_KEYS = f"d1:{base64.b64encode(b'd' * 32).decode()}"


@dataclass
class Stack:
    queue: Queue
    at: AfricasTalkingStandin
    router: ProviderRouter
    worker: Worker
    metrics: Metrics
    http: aiohttp.ClientSession
    base: str

    @property
    def url(self) -> str:
        return f"{self.base}{DELIVERY_PATH}/{SECRET}"

    async def post(self, form: dict[str, str] | aiohttp.FormData | None = None, *,
                   url: str | None = None,
                   **kw: Any) -> tuple[int, Any]:
        async with self.http.post(url or self.url, data=form, **kw) as r:
            body = await r.read()
            try:
                return r.status, await r.json(content_type=None)
            except ValueError:
                return r.status, body.decode()

    async def send(self, *numbers: str) -> list[tuple[str, str]]:
        """Send one notification per number through the worker: (job id, message id)."""
        refs = [await create_notification_sms_job(recipient=n, message="hello",
                                                  queue=self.queue) for n in numbers]
        async with running(self.worker):
            for ref in refs:
                await wait_until(functools.partial(_completed, self.queue, ref.job_id), 60,
                                 message=f"job {ref.job_id} sent")
        out = []
        for ref in refs:
            info = await self.queue.get_job(ref.job_id)
            assert info is not None and isinstance(info.result, dict)
            out.append((ref.job_id, info.result["message_id"]))
        return out

    def counted(self, status: str) -> float:
        return self.metrics.registry.get_sample_value(
            "streamq_sms_delivery_total",
            {"queue": self.queue.name, "provider": "africastalking", "status": status}) or 0.0

    async def delivery(self, job_id: str) -> dict[str, Any] | None:
        info = await self.queue.get_job(job_id)
        assert info is not None and info.state is JobState.COMPLETED
        assert isinstance(info.result, dict)
        found: dict[str, Any] | None = info.result.get("delivery")
        return found

    async def delivery_events(self) -> list[dict[str, str]]:
        return [{"job": e.job_id, **(e.fields or {})}
                for e in await self.queue.read_events(count=5000) if e.name == "delivery"]

    async def state(self) -> set[tuple[bytes, bytes]]:
        """Everything of this queue in Redis (for "nothing changed")."""
        tag = f"{{{self.queue.name}".encode()
        return {(k, v) for k, v in await dump_all(self.queue.redis)
                if tag in k and b":lock:" not in k}


async def _completed(q: Queue, job_id: str) -> bool:
    info = await q.get_job(job_id)
    return info is not None and info.state is JobState.COMPLETED


@asynccontextmanager
async def stack(queue: Queue, **standin: Any) -> AsyncIterator[Stack]:
    async with (AfricasTalkingStandin(api_key=AT_KEY, username=AT_USER, **standin) as at,
                anyio.create_task_group() as tg):
        port = await tg.start(serve_delivery, DeliveryReports(queue), SECRET, "127.0.0.1", 0)
        provider = AfricasTalkingSMSProvider(AT_USER, AT_KEY, api_url=at.url, timeout_total=5.0,
                                             timeout_connect=1.0)
        router = ProviderRouter(queue, [provider])
        worker = Worker(queue, make_sms_handler(router), rate_limit=None)
        metrics = Metrics()
        metrics.attach(worker)
        try:
            async with aiohttp.ClientSession() as http:
                yield Stack(queue, at, router, worker, metrics, http, f"http://127.0.0.1:{port}")
        finally:
            await router.aclose()
            tg.cancel_scope.cancel()



def report(message_id: str, status: str = "Success", **extra: str) -> dict[str, str]:
    return {"id": message_id, "status": status, "phoneNumber": NUMBER, "networkCode": "63902",
            "retryCount": "0", **extra}


# -- the callback ---------------------------------------------------------------------------
async def test_a_report_lands_on_the_job_and_a_repeat_changes_nothing(queue: Queue) -> None:
    async with stack(queue) as s:
        [(job_id, message_id)] = await s.send(NUMBER)
        assert await s.delivery(job_id) is None, "no report yet"
        status, body = await s.post(report(message_id))
        assert (status, body["changed"], body["job_id"]) == (200, True, job_id)
        got = await s.delivery(job_id)
        assert got is not None
        assert {k: got[k] for k in ("status", "network_code", "failure_reason", "retry_count",
                                    "message_id", "provider")} == {
            "status": "Success", "network_code": "63902", "failure_reason": None,
            "retry_count": 0, "message_id": message_id, "provider": "africastalking"}
        assert got["at"].endswith("Z")
        info = await queue.get_job(job_id)
        assert info is not None and info.result["provider"] == "africastalking", "result kept"
        before = await s.state()
        # the same callback again (Africa's Talking retries when unsure), also with a
        # higher retryCount: nothing changes, not even the time, and it is counted once
        for retry in ("0", "1"):
            status, body = await s.post(report(message_id, retryCount=retry))
            assert (status, body["changed"], body["status"]) == (200, False, "Success")
        assert await s.state() == before
        assert s.counted("Success") == 1
        assert await s.delivery_events() == [
            {"job": job_id, "status": "Success", "provider": "africastalking"}]


async def test_a_later_status_updates_an_earlier_one_never_does(queue: Queue) -> None:
    async with stack(queue) as s:
        [(job_id, message_id)] = await s.send(NUMBER)
        steps = [("Sent", True), ("Buffered", True), ("Submitted", False), ("Sent", False),
                 ("Success", True), ("Buffered", False), ("Failed", False), ("Rejected", False)]
        shown = ""
        for status_text, changes in steps:
            code, body = await s.post(report(message_id, status_text))
            assert (code, body["changed"]) == (200, changes), status_text
            shown = status_text if changes else shown
            got = await s.delivery(job_id)
            assert got is not None and got["status"] == shown == body["status"], status_text
        final = await s.delivery(job_id)
        assert final is not None and final["status"] == "Success"
        assert [e["status"] for e in await s.delivery_events()] == ["Sent", "Buffered", "Success"]
        assert [s.counted(x) for x in ("Sent", "Buffered", "Submitted", "Success", "Failed")] \
            == [1, 1, 0, 1, 0]


async def test_a_failure_is_final_but_success_of_another_send_wins(queue: Queue) -> None:
    async with stack(queue) as s:
        [(job_id, message_id)] = await s.send(NUMBER)
        code, body = await s.post(report(message_id, "Failed", failureReason="AbsentSubscriber"))
        assert (code, body["changed"]) == (200, True)
        for later in ("Buffered", "Rejected", "Failed"):
            code, body = await s.post(report(message_id, later))
            assert (code, body["changed"], body["status"]) == (200, False, "Failed"), later
        got = await s.delivery(job_id)
        assert got is not None
        assert (got["status"], got["failure_reason"]) == ("Failed", "AbsentSubscriber")
        # the job's message went out twice (an ambiguous outcome retried on the same
        # provider): the second message id also points at the job, and its Success wins
        second = "ATXid_second_send_of_the_same_job"
        await s.router.delivery.record("africastalking", second, job_id, 0)
        code, body = await s.post(report(second, "Success"))
        assert (code, body["changed"]) == (200, True)
        got = await s.delivery(job_id)
        assert got is not None and (got["status"], got["message_id"]) == ("Success", second)
        assert got["failure_reason"] is None


async def test_an_unknown_status_ranks_between_progress_and_final(queue: Queue) -> None:
    assert status_rank("Buffered") < status_rank("Expired") < status_rank("Failed")
    async with stack(queue) as s:
        [(_job_id, message_id)] = await s.send(NUMBER)
        for status_text, changes in (("Buffered", True), ("Expired", True), ("Sent", False),
                                     ("Success", True)):
            code, body = await s.post(report(message_id, status_text))
            assert (code, body["changed"]) == (200, changes), status_text
        assert s.counted("other") == 1 and s.counted("Success") == 1


MALFORMED: list[tuple[str, dict[str, str] | None, dict[str, Any]]] = [
    ("no id", {"status": "Success"}, {}),
    ("no status", {"id": "{mid}"}, {}),
    ("empty id", {"id": "", "status": "Success"}, {}),
    ("a status with spaces", {"id": "{mid}", "status": "Success now"}, {}),
    ("a status too long", {"id": "{mid}", "status": "S" * 40}, {}),
    ("an id with spaces", {"id": "ATX id", "status": "Success"}, {}),
    ("a retryCount that is not a count", {"id": "{mid}", "status": "Success",
                                          "retryCount": "-1"}, {}),
    ("a network code with a quote", {"id": "{mid}", "status": "Success",
                                     "networkCode": "63'902"}, {}),
    ("a phone number 40 long", {"id": "{mid}", "status": "Success",
                                "phoneNumber": "+" + "1" * 39}, {}),
    ("JSON, not a form", None, {"json": {"id": "{mid}", "status": "Success"}}),
    ("no body", None, {}),
]


async def test_malformed_posts_get_400_and_change_nothing(queue: Queue) -> None:
    async with stack(queue) as s:
        [(job_id, message_id)] = await s.send(NUMBER)
        before = await s.state()
        for what, form, kw in MALFORMED:
            if form is not None:
                form = {k: v.replace("{mid}", message_id) for k, v in form.items()}
            if "json" in kw:
                kw = {"json": {k: v.replace("{mid}", message_id) for k, v in kw["json"].items()}}
            status, body = await s.post(form, **kw)
            assert status == 400, (what, status, body)
            assert "error" in body and message_id not in body["error"], what
        # a multipart form with a file in it
        data = aiohttp.FormData()
        data.add_field("id", message_id)
        data.add_field("status", "Success")
        data.add_field("failureReason", b"x", filename="r.txt")
        status, _ = await s.post(data)
        assert status == 400
        async with s.http.get(s.url) as r:
            assert r.status == 405
        # a body over the limit is refused before it is read
        status, _ = await s.post({"id": message_id, "status": "Success", "pad": "x" * 20_000})
        assert status == 413
        assert await s.state() == before
        assert await s.delivery(job_id) is None and s.counted("Success") == 0


async def test_an_unknown_message_id_gets_404_and_changes_nothing(queue: Queue) -> None:
    async with stack(queue) as s:
        [(_job_id, message_id)] = await s.send(NUMBER)
        before = await s.state()
        for unknown in ("ATXid_" + "f" * 32, message_id + "x", message_id.upper()):
            status, body = await s.post(report(unknown))
            assert (status, body) == (404, {"error": "unknown message id"}), unknown
        assert await s.state() == before and s.counted("Success") == 0


async def test_a_wrong_secret_gets_the_same_404_as_no_route(queue: Queue) -> None:
    async with stack(queue) as s:
        [(job_id, message_id)] = await s.send(NUMBER)
        before = await s.state()
        nowhere = await s.post(report(message_id), url=f"{s.base}/no/such/path")
        assert nowhere[0] == 404
        for wrong in (SECRET[:-1], SECRET + "x", SECRET.upper(), "", "a" * len(SECRET)):
            got = await s.post(report(message_id), url=f"{s.base}{DELIVERY_PATH}/{wrong}")
            assert got == nowhere, wrong
        assert await s.state() == before
        assert await s.delivery(job_id) is None and s.counted("Success") == 0
        status, _ = await s.post(report(message_id))
        assert status == 200, "the right secret still works"


async def test_storage_down_answers_503(redis_url: str, queue_name: str) -> None:
    dead = Queue(queue_name, redis_url=f"redis://127.0.0.1:{free_port()}/0")
    try:
        async with anyio.create_task_group() as tg:
            port = await tg.start(serve_delivery, DeliveryReports(dead), SECRET, "127.0.0.1", 0)
            async with aiohttp.ClientSession() as http, http.post(
                    f"http://127.0.0.1:{port}{DELIVERY_PATH}/{SECRET}",
                    data=report("ATXid_x")) as r:
                assert r.status == 503 and r.headers["Retry-After"] == "30"
            tg.cancel_scope.cancel()
    finally:
        await dead.close()


# -- privacy --------------------------------------------------------------------------------
async def test_no_full_number_or_secret_in_any_log_line(
    queue: Queue, capsys: pytest.CaptureFixture[str]
) -> None:
    numbers = ["+254712345678", "+254712345671", "+254712345673"]
    with structlog.testing.capture_logs() as logs:
        async with stack(queue, echo=True) as s:
            s.at.set_callback(s.url, 0.0)
            sent = await s.send(*numbers)
            await s.at.wait_for_callbacks(4, 60)
            await s.post(report(sent[0][1], "Success"))
            await s.post(report("ATXid_unknown"))
            await s.post({"id": sent[0][1]})
            await s.post(report(sent[0][1]), url=f"{s.base}{DELIVERY_PATH}/{SECRET[:-1]}x")
    names = {e["event"] for e in logs}
    assert {"sms.delivery_report", "sms.delivery_unknown", "sms.delivery_malformed",
            "sms.delivery_forbidden", "sms.delivery_listening"} <= names, names
    text = "\n".join(str(e) for e in logs) + "\n" + capsys.readouterr().out
    assert "delivery report Success" in text, "the stand-in printed its callbacks"
    digits = [n.lstrip("+") for n in numbers]
    assert_no_pii(text, [SECRET, AT_KEY, *digits], min_lines=10)
    masked = [e["to"] for e in logs if e["event"] == "sms.delivery_report"]
    assert masked and all("****" in m for m in masked)


async def test_the_phone_number_is_not_stored(queue: Queue) -> None:
    async with stack(queue) as s:
        [(job_id, message_id)] = await s.send(NUMBER)
        await s.post(report(message_id, "Failed", failureReason="DeliveryFailure"))
        for key, value in await dump_all(queue.redis):
            if f"{{{queue.name}".encode() in key:
                assert b"712345678" not in value, key
        ref = queue.keys.delivery_ref("africastalking", digest(message_id))
        assert message_id.encode() not in ref.encode()
        assert await queue.redis.get(ref) == f"0|{job_id}".encode()
        assert 0 < await queue.redis.ttl(ref) <= 3 * 24 * 3600


# -- end to end -----------------------------------------------------------------------------
async def test_end_to_end_send_through_the_standin_then_its_callbacks(queue: Queue) -> None:
    """Send via the stand-in -> it POSTs the callbacks its numbers ask for -> the reports
    land on the jobs (the recipient's last digit chooses what is reported)."""
    numbers = {"success": "+254712345678", "failed": "+254712345671",
               "rejected": "+254712345672", "buffered_then_success": "+254712345673",
               "submitted_only": "+254712345674", "twice": "+254712345675",
               "none": "+254712345679"}
    async with stack(queue) as s:
        s.at.set_callback(s.url, 0.0)
        sent = dict(zip(numbers, await s.send(*numbers.values()), strict=True))
        # 1 + 1 + 1 + 2 + 1 + 2 + 0 = 8 callbacks answered with 200 (a callback racing
        # ahead of the message id's record gets 404 first and is sent again)
        await wait_until(lambda: sum(c.http_status == 200 for c in s.at.callbacks) >= 8, 60,
                         message="8 callbacks answered")
        got = {name: await s.delivery(job_id) for name, (job_id, _) in sent.items()}
        assert {name: d and d["status"] for name, d in got.items()} == {
            "success": "Success", "failed": "Failed", "rejected": "Rejected",
            "buffered_then_success": "Success", "submitted_only": "Submitted",
            "twice": "Success", "none": None}
        assert got["failed"] and got["failed"]["failure_reason"] == "DeliveryFailure"
        assert got["rejected"] and got["rejected"]["failure_reason"] == "UserInBlackList"
        assert {name: s.counted(x) for name, x in (("Success", "Success"), ("Failed", "Failed"),
                                                   ("Buffered", "Buffered"))} == {
            "Success": 3, "Failed": 1, "Buffered": 1}
        assert s.counted("Rejected") == 1 and s.counted("Submitted") == 1
        events = await s.delivery_events()
        assert len(events) == 7, "one per change; the repeated Success is not one"
        assert [c for c in s.at.callbacks if c.http_status not in (200, 404)] == []


async def test_a_partitioned_queue_finds_the_job_in_its_partition(
    redis_url: str, queue_name: str
) -> None:
    q = Queue(queue_name, redis_url=redis_url, job_type=SMSJob, partitions=3)
    try:
        async with stack(q) as s:
            sent = await s.send(*(f"+25471234560{i}" for i in range(6)))
            partitions = {q.layout.keys_for(job_id).partition for job_id, _ in sent}
            assert len(partitions) > 1, "the jobs spread over the partitions"
            for job_id, message_id in sent:
                status, body = await s.post(report(message_id))
                assert (status, body["job_id"]) == (200, job_id)
                got = await s.delivery(job_id)
                assert got is not None and got["status"] == "Success"
    finally:
        await q.close()


async def test_an_encrypted_queue_keeps_its_sealed_result_and_gets_the_report(
    redis_url: str, queue_name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(KEYS_ENV, raising=False)
    q = Queue(queue_name, redis_url=redis_url, job_type=SMSJob,
              **sms_queue_options({KEYS_ENV: ENC_KEYS}))
    assert q.codec.encrypt
    keyless = Queue(queue_name, redis_url=redis_url, job_type=SMSJob)
    try:
        async with stack(q) as s:
            [(job_id, message_id)] = await s.send(NUMBER)
            # the endpoint needs no key: it never opens the sealed result
            async with anyio.create_task_group() as tg:
                port = await tg.start(serve_delivery, DeliveryReports(keyless), SECRET,
                                      "127.0.0.1", 0)
                status, body = await s.post(
                    report(message_id), url=f"http://127.0.0.1:{port}{DELIVERY_PATH}/{SECRET}")
                tg.cancel_scope.cancel()
            assert (status, body["changed"]) == (200, True)
            info = await q.get_job(job_id)
            assert info is not None and info.result_error is None
            assert info.result["message_id"] == message_id
            assert info.result["delivery"]["status"] == "Success"
            record = await q.redis.get(q.keys.job(job_id))
            assert isinstance(record, bytes) and message_id.encode() not in record, "sealed"
        blind = await keyless.get_job(job_id)
        assert blind is not None and blind.result_error is not None
        assert blind.result == {"delivery": info.result["delivery"]}
    finally:
        await keyless.close()
        await q.close()


# -- pieces ---------------------------------------------------------------------------------
def test_parse_report_reads_the_documented_fields() -> None:
    r = parse_report({"id": "ATXid_1", "status": "Failed", "phoneNumber": NUMBER,
                      "networkCode": "63902", "failureReason": "UserInBlackList",
                      "retryCount": "2", "extra": "ignored"})
    assert (r.message_id, r.status, r.network_code, r.failure_reason, r.retry_count) == (
        "ATXid_1", "Failed", "63902", "UserInBlackList", 2)
    assert NUMBER not in repr(r) and r.masked_number == "+2547****678"
    minimal = parse_report({"id": "ATXid_1", "status": "Sent"})
    assert (minimal.retry_count, minimal.network_code, minimal.masked_number) == (None, "", None)
    with pytest.raises(MalformedReport, match="'status' is missing"):
        parse_report({"id": "ATXid_1"})


def test_the_secret_must_be_long_and_url_safe() -> None:
    from streamq.errors import ConfigError

    for bad in ("short", "has a space in it 123", "a/b" * 8, "x" * 129):
        with pytest.raises(ConfigError, match="16-128 characters"):
            delivery_app(DeliveryReports(Queue("q")), bad)


async def test_delivery_references_are_off_with_ttl_zero(queue: Queue) -> None:
    async with stack(queue) as s:
        s.router.delivery.ttl_s = 0
        [(_job_id, message_id)] = await s.send(NUMBER)
        assert await queue.redis.get(
            queue.keys.delivery_ref("africastalking", digest(message_id))) is None
        status, _ = await s.post(report(message_id))
        assert status == 404


def test_delivery_keys_share_the_queue_slot_and_hold_no_message_id() -> None:
    from streamq.keys import QueueKeys

    home, third = QueueKeys("sms"), QueueKeys("sms", 3)
    ref = home.delivery_ref("africastalking", digest("ATXid_abc"))
    assert ref == f"streamq:{{sms}}:dlr:africastalking:{digest('ATXid_abc')}"
    assert "ATXid" not in ref and len(digest("ATXid_abc")) == 32
    assert third.delivery("order-{42}").startswith("streamq:{sms~3}:delivery:")
    from streamq.errors import ConfigError

    with pytest.raises(ConfigError):
        home.delivery_ref("africastalking", "not-a-digest")



async def test_a_reference_that_cannot_be_written_never_fails_the_job(
    redis_url: str, queue_name: str, redis: Any
) -> None:
    """A real refusal: an ACL user that may write every key of the queue but its delivery
    references. The SMS went out, so the job completes (a retry would send it twice), and
    the failure is logged."""
    user = f"u{queue_name}"
    prefix = f"streamq:{{{queue_name}}}:"
    await redis.execute_command(
        "ACL", "SETUSER", user, "on", ">pw", "resetkeys", f"~{prefix}[^d]*", f"~{prefix}de*",
        f"~{prefix}do*", "+@all")
    url = redis_url.replace("redis://", f"redis://{user}:pw@")
    q = Queue(queue_name, redis_url=url, job_type=SMSJob)
    try:
        with structlog.testing.capture_logs() as logs:
            async with stack(q) as s:
                [(job_id, message_id)] = await s.send(NUMBER)
        info = await q.get_job(job_id)
        assert info is not None and info.state is JobState.COMPLETED and info.attempts == 1
        assert len(s.at.received) == 1, "sent once"
        [failed] = [e for e in logs if e["event"] == "sms.delivery_ref_failed"]
        assert failed["job_id"] == job_id and "NOPERM" in failed["error"]
        assert await redis.get(q.keys.delivery_ref("africastalking", digest(message_id))) is None
    finally:
        await q.close()
        await redis.execute_command("ACL", "DELUSER", user)
