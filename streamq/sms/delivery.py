"""Delivery reports: which job a gateway's message id belongs to, and what it reports.

Africa's Talking POSTs a delivery report to a callback URL for each status change of a
message it accepted (form fields ``id`` = the ``messageId`` of the send reply,
``status``, ``phoneNumber``, ``networkCode``, ``failureReason``, ``retryCount``). Two
steps make such a report land on the job that sent the message:

1. **At send** (:meth:`DeliveryReports.record`, called by the
   :class:`~streamq.sms.failover.ProviderRouter` once a provider that sends delivery
   callbacks accepted a message; :meth:`DeliveryReports.record_many` for the messages of
   a broadcast request, pipelined): one ``SET`` with a TTL, in the queue's home,
   ``streamq:{sms}:dlr:<provider>:<digest of the message id>`` -> ``<partition>|<job id>``.
   It is written after the send succeeded and before the job completes; a failure to
   write it is logged and never fails the job (the SMS went out: a retry would send it
   twice). Cost: one Redis write per message sent through Africa's Talking, and the
   key's memory for ``AT_DELIVERY_TTL`` (default 3 days; 0 records nothing).
2. **At callback** (:meth:`DeliveryReports.apply`, behind the HTTP endpoint of
   ``delivery_http.py``): the reference is read (none: the id is unknown, HTTP 404,
   nothing changes), then ``lua/delivery_report.lua`` runs on the job's partition. It
   writes the report into the job's delivery hash only when its status ranks higher
   than the stored one, and then adds a ``delivery`` event to the events stream; the
   caller counts ``streamq_sms_delivery_total{status}`` only then. ``Queue.get_job``
   shows the report as ``JobInfo.result["delivery"]``.

Ordering (the status ranks, :data:`STATUS_RANKS`): ``Sent`` < ``Submitted`` <
``Buffered`` (in progress) < an unknown status < ``Rejected`` = ``Failed`` (final) <
``Success`` (final). A report is applied only when it ranks strictly higher than the
stored one, so a repeated callback changes nothing, a late ``Buffered`` never hides a
``Success``, a final status is never overwritten by a non-final one, and one failure
never by another. ``Success`` does win over a failure: a job whose message was sent
twice (an ambiguous outcome retried on the same provider) shows that one of them
reached the handset.

The report's ``phoneNumber`` is neither stored nor compared: the message id identifies
the message; the number appears in logs masked (``+2547****678``) and nowhere else.
Delivery reports are stored in clear on encrypted queues: they hold a status, a network
code, a failure reason and times, never a number or a text, and writing them needs no
key (the job's sealed result is never opened).
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

import structlog

from streamq import Queue
from streamq.connection import translate_redis_errors
from streamq.errors import ConfigError
from streamq.keys import QueueKeys
from streamq.redact import mask_phone

from . import provider_metrics

log = structlog.get_logger("streamq.sms")

DEFAULT_TTL_S: Final = 3 * 24 * 3600.0
"""How long a message id stays resolvable (and a job's delivery hash kept): telcos hold
a message for an absent handset for up to a few days before the final report."""
MAX_TTL_S: Final = 30 * 24 * 3600.0
TTL_ENV: Final = "AT_DELIVERY_TTL"
SECRET_ENV: Final = "AT_DELIVERY_SECRET"

STATUS_RANKS: Final[dict[str, int]] = {
    "Sent": 1, "Submitted": 2, "Buffered": 3,
    "Rejected": 10, "Failed": 10,
    "Success": 11,
}
"""Africa's Talking's documented statuses by rank (see the module docs)."""
UNKNOWN_RANK: Final = 5
"""A status Africa's Talking may add later: above the in-progress ones, below the finals."""
FINAL_RANK: Final = 10

_ID_RE = re.compile(r"^[\x21-\x7e]{1,128}$")
_STATUS_RE = re.compile(r"^[A-Za-z][A-Za-z_]{0,31}$")
_NETWORK_RE = re.compile(r"^[A-Za-z0-9_-]{1,16}$")
_REASON_RE = re.compile(r"^[A-Za-z0-9_ .-]{1,64}$")
_SECRET_RE = re.compile(r"^[A-Za-z0-9_-]{16,128}$")
MAX_RETRY_COUNT: Final = 1_000_000


class MalformedReport(ValueError):
    """A callback whose form lacks a field or holds a value of the wrong shape. The
    message names the field, never its value."""


@dataclass(frozen=True, slots=True)
class DeliveryReport:
    """One delivery callback, checked. ``phone_number`` is only ever shown masked."""

    message_id: str
    status: str
    network_code: str = ""
    failure_reason: str = ""
    retry_count: int | None = None
    phone_number: str = field(default="", repr=False)

    @property
    def rank(self) -> int:
        return status_rank(self.status)

    @property
    def masked_number(self) -> str | None:
        return mask_phone(self.phone_number) if self.phone_number else None


@dataclass(frozen=True, slots=True)
class Applied:
    """What :meth:`DeliveryReports.apply` did: ``changed`` False for a repeat or a report
    not later than the stored one (``status`` is then the stored one); ``before``: the
    status it replaced, if any."""

    job_id: str
    partition: int
    changed: bool
    status: str
    before: str | None


def status_rank(status: str) -> int:
    return STATUS_RANKS.get(status, UNKNOWN_RANK)


def metric_status(status: str) -> str:
    """The ``status`` label: a documented status, else ``other`` (bounded cardinality)."""
    return status if status in STATUS_RANKS else "other"


def digest(message_id: str) -> str:
    """The message id as it appears in a key name: 32 hex digits of its SHA-256."""
    return hashlib.sha256(message_id.encode()).hexdigest()[:32]


def _optional(form: Mapping[str, str], name: str, pattern: re.Pattern[str]) -> str:
    raw = form.get(name, "").strip()
    if raw and not pattern.match(raw):
        raise MalformedReport(f"field {name!r} is malformed")
    return raw


def parse_report(form: Mapping[str, str]) -> DeliveryReport:
    """The report in a callback's form fields; :class:`MalformedReport` when ``id`` or
    ``status`` is missing or any field has the wrong shape."""
    message_id = form.get("id", "").strip()
    status = form.get("status", "").strip()
    if not message_id:
        raise MalformedReport("field 'id' is missing")
    if not status:
        raise MalformedReport("field 'status' is missing")
    if not _ID_RE.match(message_id):
        raise MalformedReport("field 'id' is malformed")
    if not _STATUS_RE.match(status):
        raise MalformedReport("field 'status' is malformed")
    retry_raw = form.get("retryCount", "").strip()
    retry: int | None = None
    if retry_raw:
        if not retry_raw.isdigit() or int(retry_raw) > MAX_RETRY_COUNT:
            raise MalformedReport("field 'retryCount' is not a count")
        retry = int(retry_raw)
    phone = form.get("phoneNumber", "").strip()
    if len(phone) > 32:
        raise MalformedReport("field 'phoneNumber' is malformed")
    return DeliveryReport(
        message_id=message_id,
        status=status,
        network_code=_optional(form, "networkCode", _NETWORK_RE),
        failure_reason=_optional(form, "failureReason", _REASON_RE),
        retry_count=retry,
        phone_number=phone,
    )


def check_secret(secret: str, origin: str = SECRET_ENV) -> str:
    """A callback secret: 16-128 URL-safe characters (it is a path segment)."""
    if not _SECRET_RE.match(secret):
        raise ConfigError(
            f"{origin} must be 16-128 characters of A-Z a-z 0-9 _ - (make one with: python -c "
            "'import secrets; print(secrets.token_urlsafe(32))')")
    return secret


def secret_matches(given: str, secret: str) -> bool:
    """Constant-time comparison of fixed-length digests, so the answer time tells nothing
    about the secret, not even its length."""
    return hmac.compare_digest(hashlib.sha256(given.encode()).digest(),
                               hashlib.sha256(secret.encode()).digest())


def delivery_secret_from_env(env: Mapping[str, str] | None = None) -> str:
    source = os.environ if env is None else env
    raw = source.get(SECRET_ENV, "").strip()
    if not raw:
        raise ConfigError(f"{SECRET_ENV} must be set to serve delivery reports: the callback "
                          "URL's last path segment, which authenticates the callbacks")
    return check_secret(raw)


def delivery_ttl_from_env(env: Mapping[str, str] | None = None) -> float:
    """``AT_DELIVERY_TTL`` seconds (default 3 days; 0 = record no message ids)."""
    source = os.environ if env is None else env
    raw = source.get(TTL_ENV, "").strip()
    if not raw:
        return DEFAULT_TTL_S
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not 0 <= value <= MAX_TTL_S:
        raise ConfigError(f"{TTL_ENV} must be a number of seconds from 0 to {MAX_TTL_S:g} "
                          "(0 = no delivery reports)")
    return value


def _text(v: Any) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)


class DeliveryReports:
    """Message ids of one queue's sends, and the reports landing on their jobs."""

    def __init__(self, queue: Queue, *, ttl_s: float = DEFAULT_TTL_S) -> None:
        if not 0 <= ttl_s <= MAX_TTL_S:
            raise ConfigError(f"delivery TTL must be from 0 to {MAX_TTL_S:g} s")
        self.queue = queue
        self.ttl_s = ttl_s

    @property
    def enabled(self) -> bool:
        return self.ttl_s > 0

    def _ref_key(self, provider: str, message_id: str) -> str:
        return self.queue.layout.home.delivery_ref(provider, digest(message_id))

    async def record(self, provider: str, message_id: str, job_id: str, partition: int) -> None:
        """Remember which job sent ``message_id`` (one SET with the TTL)."""
        if not self.enabled:
            return
        with translate_redis_errors(self.queue.redis_url):
            await self.queue.redis.set(self._ref_key(provider, message_id),
                                       f"{partition}|{job_id}", px=round(self.ttl_s * 1000))

    async def record_many(self, provider: str,
                          refs: Sequence[tuple[str, str, int]]) -> None:
        """:meth:`record` for many ``(message id, job id, partition)`` at once: the SETs
        of a broadcast's request in one round trip (one pipeline; the keys share the
        queue's home slot, and a SET repeated after a failure writes the same value)."""
        if not self.enabled or not refs:
            return
        px = round(self.ttl_s * 1000)
        with translate_redis_errors(self.queue.redis_url):
            pipe = self.queue.redis.pipeline(transaction=False)
            for message_id, job_id, partition in refs:
                pipe.set(self._ref_key(provider, message_id), f"{partition}|{job_id}", px=px)
            await pipe.execute()

    async def find(self, provider: str, message_id: str) -> tuple[int, str] | None:
        """(partition, job id) of a recorded message id, or None."""
        with translate_redis_errors(self.queue.redis_url):
            raw = await self.queue.redis.get(self._ref_key(provider, message_id))
        if raw is None:
            return None
        partition, _, job_id = _text(raw).partition("|")
        if not partition.isdigit() or not job_id:
            return None
        return int(partition), job_id

    async def apply(self, report: DeliveryReport, provider: str = "africastalking"
                    ) -> Applied | None:
        """Land ``report`` on its job (see the module docs). None: the message id is
        unknown (never recorded, or its reference expired); nothing was written."""
        found = await self.find(provider, report.message_id)
        if found is None:
            log.info("sms.delivery_unknown", queue=self.queue.name, provider=provider,
                     message_id=report.message_id, status=report.status,
                     to=report.masked_number)
            return None
        partition, job_id = found
        k: QueueKeys = self.queue.layout.keys(partition)
        reply = await self.queue.run_script(
            "delivery_report", [k.delivery(job_id), k.events],
            [report.status, report.rank, report.network_code, report.failure_reason,
             "" if report.retry_count is None else report.retry_count, report.message_id,
             provider, round((self.ttl_s or DEFAULT_TTL_S) * 1000), job_id,
             self.queue.defaults.events_max])
        changed = bool(int(reply[0]))
        status = _text(reply[1])
        before = (_text(reply[2]) or None) if changed else None
        if changed:
            provider_metrics.delivery(self.queue.name, provider, metric_status(status))
        log.info("sms.delivery_report", queue=self.queue.name, job_id=job_id,
                 provider=provider, message_id=report.message_id, status=report.status,
                 changed=changed, before=before, network_code=report.network_code or None,
                 failure_reason=report.failure_reason or None, retry_count=report.retry_count,
                 to=report.masked_number)
        return Applied(job_id=job_id, partition=partition, changed=changed, status=status,
                       before=before)


__all__ = [
    "DEFAULT_TTL_S",
    "STATUS_RANKS",
    "Applied",
    "DeliveryReport",
    "DeliveryReports",
    "MalformedReport",
    "check_secret",
    "delivery_secret_from_env",
    "delivery_ttl_from_env",
    "digest",
    "parse_report",
    "secret_matches",
    "status_rank",
]
