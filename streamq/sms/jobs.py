"""Job creators: the API an application calls to send an SMS.

Each creator normalises the number to E.164, builds the typed job, checks it against
the payload constraints and renders it once, so that a bad number, a bad OTP code or
an over-long text fails here with a clear error and nothing reaches Redis. Then it adds
the job to ``queue`` or to the module's default SMS queue (:func:`get_sms_queue`).

The payload ``id`` (uuid4 hex, the seed's ``BaseJobData.id``) identifies the message;
the engine's job id (returned in the :class:`JobRef`, and the provider idempotency key)
identifies its delivery. They differ on purpose: engine ids are kept free of digit runs
because they appear in Redis key names.
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Iterable
from datetime import timedelta
from typing import Final, TypeAlias

from streamq import JobOptions, JobRef, Queue
from streamq.errors import PayloadError
from streamq.priority import Priority

from .phone import InvalidPhoneNumber, normalize_phone
from .privacy import sms_queue_options
from .templates import render_sms
from .types import (
    OTPSMS,
    NotificationSMS,
    Recipient,
    SMSJob,
    WelcomeSMS,
    validate_job,
)

Delay: TypeAlias = float | timedelta | None
QUEUE_ENV: Final = "STREAMQ_SMS_QUEUE"
DEFAULT_QUEUE: Final = "sms"

_default_queue: Queue | None = None


def get_sms_queue() -> Queue:
    """The module's SMS queue, created on first use from the environment.

    Its name comes from ``STREAMQ_SMS_QUEUE`` (default ``sms``), Redis from ``REDIS_URL``
    or ``REDIS_HOST``/``PORT``/``PASSWORD``/``DB``. It connects lazily. With
    ``STREAMQ_ENCRYPTION_KEYS`` set, its payloads are encrypted and its jobs indexed by
    number (see :mod:`streamq.sms.privacy`).
    """
    global _default_queue
    if _default_queue is None:
        name = os.environ.get(QUEUE_ENV, "").strip() or DEFAULT_QUEUE
        _default_queue = Queue(name, job_type=SMSJob, **sms_queue_options())
    return _default_queue


async def close_sms_queue() -> None:
    """Close the default queue's connections; the next creator call opens a new one.

    Call it before your event loop ends (the connections belong to that loop).
    """
    global _default_queue
    queue, _default_queue = _default_queue, None
    if queue is not None:
        await queue.close()


def _recipient(recipient: Recipient | str) -> Recipient:
    if isinstance(recipient, str):
        return Recipient(phone_number=normalize_phone(recipient))
    if isinstance(recipient, Recipient):
        return Recipient(phone_number=normalize_phone(recipient.phone_number), name=recipient.name)
    raise TypeError(
        f"recipient must be a Recipient or a phone number string, not {type(recipient).__name__}"
    )


def _new_id() -> str:
    return uuid.uuid4().hex


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


async def _enqueue(
    job: SMSJob,
    *,
    priority: Priority,
    delay: Delay,
    job_id: str | None,
    attempts: int | None,
    queue: Queue | None,
) -> JobRef:
    job = validate_job(job)
    render_sms(job)  # raises TemplateError/MessageTooLong before anything is written
    options = JobOptions(priority=priority, delay=delay, job_id=job_id, attempts=attempts)
    return await (queue if queue is not None else get_sms_queue()).add(job, options)


async def create_welcome_sms_job(
    *,
    recipient: Recipient | str,
    user_name: str,
    priority: Priority = "normal",
    delay: Delay = None,
    job_id: str | None = None,
    attempts: int | None = None,
    queue: Queue | None = None,
) -> JobRef:
    """Queue a welcome SMS ("Welcome Alice! ...")."""
    job = WelcomeSMS(
        id=_new_id(), timestamp=_now_ms(), recipient=_recipient(recipient), user_name=user_name
    )
    return await _enqueue(
        job, priority=priority, delay=delay, job_id=job_id, attempts=attempts, queue=queue
    )


async def create_otp_sms_job(
    *,
    recipient: Recipient | str,
    code: str,
    expiry_minutes: int = 10,
    priority: Priority = "high",
    delay: Delay = None,
    job_id: str | None = None,
    attempts: int | None = None,
    queue: Queue | None = None,
) -> JobRef:
    """Queue a one-time code. High priority by default, as in the original: a user waits.

    The worker does not send it once ``expiry_minutes`` have passed since creation.
    """
    delay_s = delay.total_seconds() if isinstance(delay, timedelta) else float(delay or 0)
    if isinstance(expiry_minutes, int) and 0 < expiry_minutes * 60 <= delay_s:
        # The worker would only find it expired: refuse a code that can never be sent.
        raise PayloadError(
            f"OTP delay {delay_s:g}s is not shorter than its expiry ({expiry_minutes} min)"
        )
    job = OTPSMS(
        id=_new_id(),
        timestamp=_now_ms(),
        recipient=_recipient(recipient),
        code=code,
        expiry_minutes=expiry_minutes,
    )
    return await _enqueue(
        job, priority=priority, delay=delay, job_id=job_id, attempts=attempts, queue=queue
    )


async def create_notification_sms_job(
    *,
    recipient: Recipient | str,
    message: str,
    metadata: dict[str, str] | None = None,
    priority: Priority = "normal",
    delay: Delay = None,
    job_id: str | None = None,
    attempts: int | None = None,
    queue: Queue | None = None,
) -> JobRef:
    """Queue a free-text SMS; text over 10 segments or 1600 characters is refused here."""
    job = NotificationSMS(
        id=_new_id(),
        timestamp=_now_ms(),
        recipient=_recipient(recipient),
        message=message,
        metadata=metadata,
    )
    return await _enqueue(
        job, priority=priority, delay=delay, job_id=job_id, attempts=attempts, queue=queue
    )



async def create_notification_sms_jobs(
    *,
    recipients: Iterable[Recipient | str],
    message: str,
    metadata: dict[str, str] | None = None,
    priority: Priority = "normal",
    delay: Delay = None,
    attempts: int | None = None,
    queue: Queue | None = None,
) -> list[JobRef]:
    """Queue one notification per recipient, the same text for all (a broadcast), in one
    pipelined write. A worker with ``--batch-size`` sends them in a few requests, each
    job with its own outcome (docs/sms-providers.md, Broadcasts).

    Every number and the text are checked before anything is written: one invalid number
    refuses the whole call, naming its position (and the number masked). Refs come back
    in the recipients' order; a number listed twice gets two jobs.
    """
    jobs: list[SMSJob] = []
    now = _now_ms()
    for i, recipient in enumerate(recipients):
        try:
            to = _recipient(recipient)
        except InvalidPhoneNumber as exc:
            raise InvalidPhoneNumber(f"recipient {i}: {exc}") from None
        jobs.append(validate_job(NotificationSMS(
            id=_new_id(), timestamp=now, recipient=to, message=message, metadata=metadata)))
    if not jobs:
        return []
    render_sms(jobs[0])  # the same text for all: too long is refused once, before writing
    options = JobOptions(priority=priority, delay=delay, attempts=attempts)
    target = queue if queue is not None else get_sms_queue()
    return await target.add_bulk((job, options) for job in jobs)
