"""Job creators: validation before Redis, options, and the default queue from env."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import anyio
import msgspec
import pytest

from streamq import Job, JobState, Queue, Worker
from streamq.errors import PayloadError, RedisUnavailable
from streamq.sms import (
    InvalidPhoneNumber,
    MessageTooLong,
    Recipient,
    SMSJob,
    close_sms_queue,
    create_notification_sms_job,
    create_otp_sms_job,
    create_welcome_sms_job,
    get_sms_queue,
)

# Nothing listens on port 1: any attempt to reach Redis fails with RedisUnavailable.
UNREACHABLE = "redis://127.0.0.1:1/0"


@pytest.fixture
async def offline() -> AsyncIterator[Queue]:
    queue = Queue("sms", redis_url=UNREACHABLE, job_type=SMSJob)
    try:
        yield queue
    finally:
        await queue.close()


@pytest.fixture
async def queue(redis_url: str, queue_name: str) -> AsyncIterator[Queue]:
    q = Queue(queue_name, redis_url=redis_url, job_type=SMSJob)
    try:
        yield q
    finally:
        await q.close()


async def test_offline_queue_really_is_unreachable(offline: Queue) -> None:
    # The control for the tests below: a valid job does try Redis, and fails there.
    with pytest.raises(RedisUnavailable):
        await create_welcome_sms_job(recipient="0712345678", user_name="Alice", queue=offline)


@pytest.mark.parametrize("number", ["+1", "0712345", "not a number", "+25471234567899", ""])
@pytest.mark.parametrize("creator", ["welcome", "otp", "notification"])
async def test_bad_numbers_fail_before_redis(offline: Queue, number: str, creator: str) -> None:
    with pytest.raises(InvalidPhoneNumber) as info:
        await create(creator, recipient=number, queue=offline)
    if len(number) > 8:
        assert number not in str(info.value)


@pytest.mark.parametrize(
    ("creator", "fields", "error"),
    [
        ("otp", {"code": "12"}, r"\$\.code"),
        ("otp", {"code": "12ab56"}, r"\$\.code"),
        ("otp", {"code": 123456}, r"\$\.code"),
        ("otp", {"code": "1234", "expiry_minutes": 0}, r"\$\.expiry_minutes"),
        ("otp", {"code": "1234", "expiry_minutes": 1441}, r"\$\.expiry_minutes"),
        ("welcome", {"user_name": ""}, r"\$\.user_name"),
        ("welcome", {"user_name": "  "}, "user_name"),
        ("welcome", {"user_name": "x" * 101}, r"\$\.user_name"),
        ("notification", {"message": ""}, r"\$\.message"),
        ("notification", {"message": "a" * 1531}, "too long"),
        ("notification", {"message": "😀" * 336}, "too long"),
        ("notification", {"message": "a" * 1601}, r"\$\.message"),
        ("notification", {"message": "hi", "metadata": {"k": 1}}, r"\$\.metadata"),
    ],
)
async def test_bad_fields_fail_before_redis(
    offline: Queue, creator: str, fields: dict[str, Any], error: str
) -> None:
    with pytest.raises(PayloadError, match=error) as info:
        await create(creator, queue=offline, **fields)
    assert isinstance(info.value, ValueError)
    code = fields.get("code")
    if code is not None:
        assert str(code) not in str(info.value).replace("4,10", "")


@pytest.mark.parametrize("delay", [600, timedelta(minutes=11)])
async def test_otp_delayed_past_its_expiry_is_refused(
    offline: Queue, delay: float | timedelta
) -> None:
    with pytest.raises(PayloadError, match="expiry"):
        await create_otp_sms_job(recipient="0712345678", code="1234", expiry_minutes=10,
                                 delay=delay, queue=offline)


async def test_too_long_is_its_own_error(offline: Queue) -> None:
    with pytest.raises(MessageTooLong):
        await create_notification_sms_job(recipient="0712345678", message="a" * 1531,
                                          queue=offline)


async def test_bad_recipient_type(offline: Queue) -> None:
    with pytest.raises(TypeError, match="recipient"):
        await create_welcome_sms_job(recipient=254712345678, user_name="A",  # type: ignore[arg-type]
                                     queue=offline)


async def create(kind: str, *, recipient: Recipient | str = "0712345678", **kw: Any) -> Any:
    if kind == "welcome":
        kw.setdefault("user_name", "Alice")
        return await create_welcome_sms_job(recipient=recipient, **kw)
    if kind == "otp":
        kw.setdefault("code", "123456")
        return await create_otp_sms_job(recipient=recipient, **kw)
    kw.setdefault("message", "Your order shipped")
    return await create_notification_sms_job(recipient=recipient, **kw)


async def stored_payload(queue: Queue) -> SMSJob:
    """The one payload in ``queue``, as the worker decodes it."""
    seen: list[SMSJob] = []
    arrived = anyio.Event()

    async def handler(job: Job) -> None:
        seen.append(job.data)
        arrived.set()

    worker = Worker(queue, handler, rate_limit=None)
    async with anyio.create_task_group() as tg:
        tg.start_soon(worker.run)
        with anyio.fail_after(10):
            await arrived.wait()
        await worker.close()
    [job] = seen
    return job


async def test_kenyan_national_number_is_stored_as_e164(queue: Queue) -> None:
    ref = await create_welcome_sms_job(
        recipient=Recipient(phone_number="0712 345 678", name="Alice"), user_name="Alice",
        queue=queue,
    )
    assert ref.queue_name == queue.name
    data = await stored_payload(queue)
    assert msgspec.to_builtins(data) | {"id": "-", "timestamp": 0} == {
        "type": "welcome", "id": "-", "timestamp": 0,
        "recipient": {"phone_number": "+254712345678", "name": "Alice"},
        "user_name": "Alice",
    }
    assert len(data.id) == 32 and data.timestamp > 1_700_000_000_000


async def test_priorities(queue: Queue) -> None:
    otp = await create_otp_sms_job(recipient="0712345678", code="123456", queue=queue)
    welcome = await create_welcome_sms_job(recipient="0712345678", user_name="A", queue=queue)
    low = await create_notification_sms_job(recipient="0712345678", message="m",
                                            priority="low", queue=queue)
    infos = [await queue.get_job(ref.job_id) for ref in (otp, welcome, low)]
    assert [i.priority if i else None for i in infos] == ["high", "normal", "low"]
    assert all(i is not None and i.state is JobState.WAITING for i in infos)


@pytest.mark.parametrize("delay", [60, 60.0, timedelta(minutes=1)])
async def test_delay_attempts_and_job_id(queue: Queue, delay: float | timedelta) -> None:
    ref = await create_notification_sms_job(
        recipient="+254712345678", message="later", delay=delay, attempts=5,
        job_id="order-1234-shipped", queue=queue,
    )
    assert ref.job_id == "order-1234-shipped"
    info = await queue.get_job(ref.job_id)
    assert info is not None and info.state is JobState.DELAYED and info.max_attempts == 5
    # the same live job id again: no second job
    again = await create_notification_sms_job(
        recipient="+254712345678", message="later", delay=delay, job_id="order-1234-shipped",
        queue=queue,
    )
    assert again == ref
    assert (await queue.counts())["delayed"] == 1


async def test_default_queue_comes_from_env(
    monkeypatch: pytest.MonkeyPatch, redis_url: str, queue_name: str
) -> None:
    monkeypatch.setenv("REDIS_URL", redis_url)
    monkeypatch.setenv("STREAMQ_SMS_QUEUE", queue_name)
    await close_sms_queue()
    try:
        assert get_sms_queue() is get_sms_queue()
        assert get_sms_queue().name == queue_name
        ref = await create_otp_sms_job(recipient="0712345678", code="4321")
        assert ref.queue_name == queue_name
    finally:
        await close_sms_queue()
    async with Queue(queue_name, redis_url=redis_url, job_type=SMSJob) as check:
        info = await check.get_job(ref.job_id)
    assert info is not None and info.priority == "high"


async def test_default_queue_name_is_sms(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("STREAMQ_SMS_QUEUE", raising=False)
    await close_sms_queue()
    try:
        assert get_sms_queue().name == "sms"
    finally:
        await close_sms_queue()
