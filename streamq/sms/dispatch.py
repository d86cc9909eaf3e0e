"""The SMS handler: route a decoded job to its template and send it through a provider.

The engine decodes the payload with the ``SMSJob`` union, so an unknown ``type`` or a
payload failing the constraints never gets here; it is dead-lettered with msgspec's
reason. This handler turns the remaining failures into the engine's vocabulary:

* provider permanent errors, an invalid number, an over-long text and an expired OTP
  raise :class:`streamq.PermanentError` (dead letter now, no retry);
* provider transient errors with a known delay raise :class:`streamq.RetryAfter`;
* other transient errors propagate unchanged, so the worker retries with backoff;
* a provider that refuses our credentials or configuration is not the message's fault:
  :class:`streamq.Defer` with ``hold=True`` (no attempt used, the worker pauses its
  fetching and probes until the provider takes messages again). Through a
  :class:`~streamq.sms.failover.ProviderRouter` (several providers, breakers in Redis)
  the router decides: fail over, wait (``Defer``), or hold.

The job id travels as the provider's idempotency key: delivery is at least once, and a
job retried after a crash must be recognisable as the same message.

Log lines carry queue, job id, type, attempt and the masked number; never the text (an
OTP code is a secret) and never the full number.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Final

import msgspec
import structlog

from streamq import Defer, Job, PermanentError, RetryAfter
from streamq.metrics import ProviderOutcome, record_provider_send
from streamq.redact import mask_phone, redact_text

from .failover import ProviderRouter, provider_name
from .phone import DEFAULT_REGION, InvalidPhoneNumber, normalize_phone
from .providers.base import (
    ProviderConfigError,
    ProviderError,
    ProviderPermanentError,
    ProviderTransientError,
    SendResult,
    SMSProvider,
)
from .templates import TemplateError, render_sms
from .types import OTPSMS, NotificationSMS, SMSJob, TemplateResult, WelcomeSMS

log = structlog.get_logger("streamq.sms")

SMSHandler = Callable[[Job], Awaitable[dict[str, Any]]]
Send = Callable[[Job, str, str], Awaitable[SendResult]]

CONFIG_RETRY_S: Final = 30.0
"""A lone provider refused the configuration: probe it again after this many seconds."""


def _as_sms_job(data: object) -> SMSJob:
    if isinstance(data, WelcomeSMS | OTPSMS | NotificationSMS):
        return data
    # A queue created without job_type hands over plain builtins: validate them here.
    try:
        job: SMSJob = msgspec.convert(data, SMSJob)
    except msgspec.ValidationError as exc:
        raise PermanentError(f"decode: {exc}") from None
    return job


def _type_name(job: SMSJob) -> str:
    return str(type(job).__struct_config__.tag)


def _direct(provider: SMSProvider, config_retry_s: float) -> Send:
    """Send through one provider without Redis-held state (no breaker, no failover)."""
    name = provider_name(provider)

    async def send(job: Job, to: str, message: str) -> SendResult:
        t0 = time.perf_counter()
        outcome: ProviderOutcome = "error"
        try:
            result = await provider.send(to, message, idempotency_key=job.id)
            outcome = "sent"
            return result
        except ProviderConfigError as exc:
            outcome = "config_error"
            raise Defer(config_retry_s, redact_text(str(exc)), hold=True) from exc
        except ProviderPermanentError:
            outcome = "permanent_error"
            raise
        except ProviderTransientError:
            outcome = "transient_error"
            raise
        finally:
            record_provider_send(name, outcome, time.perf_counter() - t0, queue=job.queue_name)

    return send


@dataclass(frozen=True, slots=True)
class PreparedSMS:
    """A job ready to send: its number (E.164), its rendered text, its log context."""

    job: Job
    to: str
    rendered: TemplateResult
    log: Any  # a structlog logger bound to the job (queue, id, type, attempt, masked number)

    def result(self, sent: SendResult) -> dict[str, Any]:
        """What the completed record keeps (JobInfo.result): no text and no number."""
        return {
            "provider": sent.provider,
            "message_id": sent.message_id,
            "encoding": self.rendered.encoding,
            "segments": self.rendered.segments,
        }


def prepare_sms(job: Job, clock: Callable[[], float] = time.time) -> PreparedSMS:
    """Decode, re-check the number, refuse an expired OTP and render: the steps before a
    send. Raises ``PermanentError`` (logged) when the job can never be sent."""
    data = _as_sms_job(job.data)
    number = data.recipient.phone_number
    bound = log.bind(
        queue=job.queue_name,
        job_id=job.id,
        type=_type_name(data),
        attempt=job.attempt,
        to=mask_phone(number),
    )
    try:
        # Re-checked here: a raw entry may have bypassed the creators.
        to = normalize_phone(number, DEFAULT_REGION)
    except InvalidPhoneNumber as exc:
        bound.warning("sms.invalid_recipient", error=str(exc))
        raise PermanentError(str(exc)) from None

    if isinstance(data, OTPSMS):
        age_s = clock() - data.timestamp / 1000
        if age_s >= data.expiry_minutes * 60:
            # A stale code is useless to the user and confusing: do not send it.
            bound.warning(
                "sms.otp_expired", age_s=round(age_s), expiry_minutes=data.expiry_minutes
            )
            raise PermanentError(
                f"otp expired: created {age_s:.0f}s ago, valid {data.expiry_minutes} min; "
                "not sent"
            )

    try:
        rendered = render_sms(data)
    except TemplateError as exc:
        bound.warning("sms.render_failed", error=str(exc))
        raise PermanentError(str(exc)) from None
    return PreparedSMS(job=job, to=to, rendered=rendered, log=bound)


def engine_error(exc: ProviderError, bound: Any) -> Exception:
    """A provider's refusal of one message in the engine's terms (logged): permanent ->
    ``PermanentError`` (dead letter), transient with a delay -> ``RetryAfter``, other
    transient errors as they are (retried with backoff)."""
    reason = redact_text(str(exc))
    permanent = isinstance(exc, ProviderPermanentError)
    retry_after = getattr(exc, "retry_after", None)
    bound.warning("sms.send_failed", provider=exc.provider, code=exc.code, error=reason,
                  permanent=permanent, **({} if permanent else {"retry_after": retry_after}))
    if permanent:
        return PermanentError(reason)
    if retry_after is not None:
        return RetryAfter(retry_after, reason)
    return exc


def make_sms_handler(
    provider: SMSProvider | ProviderRouter, *, clock: Callable[[], float] = time.time,
    config_retry_s: float = CONFIG_RETRY_S,
) -> SMSHandler:
    """A worker handler sending each SMS job through ``provider``: one provider, or a
    :class:`ProviderRouter` over an ordered list (breakers, failover, rate limits).

    ``clock`` (seconds since the epoch) decides OTP expiry; tests move it instead of
    sleeping. ``config_retry_s``: with a single bare provider, how long delivery holds
    after it refused the configuration before one message probes it again.
    """
    send = provider.send if isinstance(provider, ProviderRouter) else _direct(
        provider, config_retry_s)

    async def handle_sms(job: Job) -> dict[str, Any]:
        sms = prepare_sms(job, clock)
        bound = sms.log
        try:
            result = await send(job, sms.to, sms.rendered.message)
        except Defer as exc:
            bound.debug("sms.deferred", reason=str(exc), delay=exc.delay, hold=exc.hold)
            raise
        except (ProviderPermanentError, ProviderTransientError) as exc:
            error = engine_error(exc, bound)
            if error is exc:
                raise
            raise error from exc

        bound.info(
            "sms.sent",
            provider=result.provider,
            message_id=result.message_id,
            encoding=sms.rendered.encoding,
            segments=sms.rendered.segments,
        )
        # Kept with the completed record (JobInfo.result); it holds no text and no number.
        return sms.result(result)

    return handle_sms
