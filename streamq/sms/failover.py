"""Send through an ordered list of providers, failing over only when it cannot double-send.

``ProviderRouter(queue, [salum, africastalking])`` is what the SMS handler sends through
(``make_sms_handler(router)``); ``python -m streamq.worker --provider salum,africastalking``
builds it. Per message, in order:

1. **The pin.** With more than one provider, each job has a small Redis hash (key
   ``route:<job id>``, lua/route_*.lua) naming the provider it was last sent through and
   whether that send may have reached the handset: ``sending`` (in flight), ``unsent``
   (provably not sent) or ``maybe``. It is written *before* each call, so it survives
   retries and worker crashes: a run that finds ``sending`` knows its predecessor died
   mid-call and counts the message as maybe sent. A job whose pin says ``maybe`` goes to
   that provider again and to no other, with the same idempotency key (the job id).
   TTL: 7 days while the job is live, 1 hour after a send succeeded.
2. **The breaker** of each candidate (breaker.py, kept in Redis): an open breaker skips
   the provider; after its cool-down one message probes it.
3. **The provider's rate limit** (``SALUM_RATE_LIMIT``, ``AT_RATE_LIMIT`` jobs/s, a token
   bucket in Redis shared by every worker of the queue): the send waits for a token, so
   a failover cannot flood the backup beyond its own limit.
4. **The call**, and its outcome:

   ==============================  ==============================================
   sent                            done; the breaker hears of a success
   configuration error (bad key)   provably not sent: the breaker opens at once,
                                   the message moves to the next provider
   unreachable (refused, DNS,      provably not sent: counts towards the
   connect timeout)                breaker, the message moves to the next provider
   ambiguous (read timeout, 5xx,   the provider may have sent it: the job retries
   reset, per-recipient 5xx)       later on THIS provider only (attempt counted)
   permanent (bad number...)       dead letter; the provider answered, so for the
                                   breaker it is a success
   ==============================  ==============================================

When no provider can take the message now, nothing is dead-lettered and no attempt is
used: the handler raises ``Defer`` (back to the delayed set until the earliest breaker
lets a probe through). If *every* provider is down (all breakers open, e.g. the only
provider refuses the credentials), it is ``Defer(hold=True)``: the worker stops claiming
and probes with one job per cool-down, resuming by itself once the probe gets through.
If the providers were merely unreachable and their breakers are still closed, the
attempt fails as a transient error (retried with backoff, as before), until the
breakers open.

Failovers are logged (``sms.failover``), counted (``streamq_sms_failovers_total``) and
written to the queue's events stream (``failover``: job, from, to, reason).

After a send through a provider that posts delivery reports (Africa's Talking), the
message id it answered is recorded for its job (``delivery.py``: one Redis write, never
failing the job), so the delivery callback can find it.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, Literal

import anyio
import structlog
from redis.exceptions import RedisError

from streamq import Defer, Job, PermanentError, Queue
from streamq.errors import ConfigError, StreamqError
from streamq.keys import QueueKeys, check_downstream_name
from streamq.metrics import ProviderOutcome, record_provider_send
from streamq.redact import mask_phone, redact_text

from . import provider_metrics
from .breaker import BreakerPolicy, Breakers, breaker_policy_from_settings
from .delivery import DEFAULT_TTL_S, DeliveryReports, delivery_ttl_from_env
from .providers.base import (
    ProviderConfigError,
    ProviderPermanentError,
    ProviderTransientError,
    ProviderUnreachable,
    SendResult,
    SMSProvider,
)
from .providers.factory import provider_names, providers_from_settings, rate_limits_from_settings

log = structlog.get_logger("streamq.sms")

ROUTE_TTL_S: Final = 7 * 24 * 3600.0
SENT_ROUTE_TTL_S: Final = 3600.0
PROBE_MARGIN_S: Final = 5.0
RECHECK_WHILE_PROBING_S: Final = 1.0
"""A probe by another worker is in flight: look again this soon (not after its lease)."""
RECORD_TIMEOUT_S: Final = 5.0
"""Recording a sent message's id waits this long at most (the SMS is out either way)."""

SkipReason = Literal["breaker_open", "config", "unreachable"]


@dataclass(frozen=True, slots=True)
class Slot:
    """One configured provider: its name, its rate limit and its probe lease."""

    name: str
    provider: SMSProvider
    rate_limit: float | None
    probe_lease_s: float


@dataclass(frozen=True, slots=True)
class Skip:
    """A provider passed over for a message, and why."""

    name: str
    reason: SkipReason
    wait_s: float
    error: str = ""


@dataclass(slots=True)
class Walk:
    """One job's way through the provider list in one run: its pin as last read (and
    whether it is locked there: it may have been sent), the providers passed over and
    why, and the last "unreachable" error."""

    pinned: str = ""
    locked: bool = False
    skipped: list[Skip] = field(default_factory=list)
    unreachable: ProviderUnreachable | None = None

    def came_from(self, name: str) -> Skip | None:
        """The provider a send through ``name`` fails over from (None: no failover)."""
        return self.skipped[0] if self.skipped and self.skipped[0].name != name else None


def provider_name(provider: SMSProvider) -> str:
    name = getattr(provider, "name", None)
    if isinstance(name, str) and name:
        return name
    return type(provider).__name__.removesuffix("SMSProvider").lower() or "provider"


def _text(v: Any) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)


class ProviderRouter:
    """Sends each SMS job through the first provider that can take it (see module docs)."""

    def __init__(
        self,
        queue: Queue,
        providers: Sequence[SMSProvider],
        *,
        rate_limits: Mapping[str, float | None] | None = None,
        policy: BreakerPolicy | None = None,
        probe_lease_s: float | None = None,
        delivery_ttl_s: float = DEFAULT_TTL_S,
    ) -> None:
        if not providers:
            raise ConfigError("at least one SMS provider is needed")
        limits = dict(rate_limits or {})
        slots: list[Slot] = []
        for p in providers:
            name = check_downstream_name(provider_name(p))
            if any(s.name == name for s in slots):
                raise ConfigError(f"provider {name!r} is listed twice")
            rate = limits.pop(name, None)
            if rate is not None and rate <= 0:
                raise ConfigError(f"the rate limit of {name} must be > 0 jobs/s (or unset)")
            timeout = float(getattr(p, "timeout_total", 10.0) or 10.0)
            slots.append(Slot(name, p, rate, probe_lease_s or timeout + PROBE_MARGIN_S))
        if limits:
            raise ConfigError(f"rate limit for a provider not in the list: {', '.join(limits)}")
        self.queue = queue
        self.slots: tuple[Slot, ...] = tuple(slots)
        self.breakers = Breakers(queue, policy)
        self.delivery = DeliveryReports(queue, ttl_s=delivery_ttl_s)
        self._by_name = {s.name: s for s in slots}

    @property
    def names(self) -> list[str]:
        return [s.name for s in self.slots]

    @property
    def multi(self) -> bool:
        return len(self.slots) > 1

    async def aclose(self) -> None:
        for s in self.slots:
            await s.provider.aclose()

    # -- sending ---------------------------------------------------------------------
    async def send(self, job: Job, to: str, message: str) -> SendResult:
        """Send one job's message. Raises the provider's permanent or (ambiguous)
        transient error, ``Defer`` when no provider can take it now, ``PermanentError``
        when it is pinned to a provider no longer configured."""
        walk = await self.begin(job)
        for slot in self.candidates(walk):
            result = await self.try_slot(job, slot, to, message, walk)
            if result is not None:
                return result
        raise self.not_now(walk)

    async def begin(self, job: Job) -> Walk:
        """Read the job's pin (with more than one provider) at the start of a run."""
        pinned, state = await self._route_begin(job.id) if self.multi else ("", "")
        return Walk(pinned=pinned, locked=state == "maybe")

    def candidates(self, walk: Walk) -> list[Slot]:
        """The providers a job may go to, in order: all, or only the one it may already
        have been sent through (``PermanentError`` if that one is no longer configured)."""
        if not walk.locked:
            return list(self.slots)
        if walk.pinned not in self._by_name:
            raise PermanentError(
                f"may have been sent through provider {walk.pinned!r}, which is no longer "
                "configured: not sent through another one (replay once that is intended)")
        return [self._by_name[walk.pinned]]

    async def admit(self, slot: Slot, walk: Walk | None = None) -> bool:
        """Ask ``slot``'s breaker; when it refuses, the skip goes into ``walk``."""
        admission = await self.breakers.admit(slot.name, slot.probe_lease_s)
        if admission.allowed:
            return True
        if walk is not None:
            walk.skipped.append(self.breaker_skip(slot, admission.state, admission.wait_s,
                                                  admission.why))
        return False

    @staticmethod
    def breaker_skip(slot: Slot, state: str, wait_s: float, why: str) -> Skip:
        if state == "half_open":
            wait_s = min(wait_s, RECHECK_WHILE_PROBING_S)
        return Skip(slot.name, "breaker_open", wait_s, f"breaker open after: {why}" if why else "")

    async def try_slot(self, job: Job, slot: Slot, to: str, message: str,
                       walk: Walk) -> SendResult | None:
        """One job through one provider: breaker, rate limit, pin, call. None when the
        provider provably did not send it (the reason goes into ``walk``); raises what
        :meth:`send` raises otherwise."""
        if not await self.admit(slot, walk):
            return None
        await self.take_tokens(slot)
        if self.multi and not await self.pin(job, slot, walk):
            # another run of this job moved the pin meanwhile: look again shortly
            raise Defer(0.1, "the job's provider pin changed under this run")
        try:
            result = await self._call(job, slot, to, message)
        except ProviderConfigError as exc:
            walk.skipped.append(self.config_skip(slot, exc))
            return None
        except ProviderUnreachable as exc:
            walk.unreachable = exc
            walk.skipped.append(Skip(slot.name, "unreachable", 0.0, redact_text(str(exc))))
            return None
        came = walk.came_from(slot.name)
        if came is not None:
            self.note_failover(came, slot.name, 1, job_id=job.id, attempt=job.attempt,
                               to=mask_phone(to))
        return result

    def config_skip(self, slot: Slot, exc: ProviderConfigError) -> Skip:
        return Skip(slot.name, "config", self.breakers.policy.cooldown_s, redact_text(str(exc)))

    def note_failover(self, came: Skip, to_provider: str, count: int, **fields: Any) -> None:
        """Count and log messages sent through ``to_provider`` after ``came`` passed them
        over (the events stream got its entry when the job was pinned)."""
        provider_metrics.failover(self.queue.name, came.name, to_provider, came.reason, count)
        # routine while a breaker is open (info); a first-hand failure: warning
        say = log.info if came.reason == "breaker_open" else log.warning
        say("sms.failover", queue=self.queue.name, **fields, from_provider=came.name,
            to_provider=to_provider, reason=came.reason, error=came.error or None)

    def _reason(self, job: Job, exc: BaseException) -> str:
        """A provider's error as the breaker stores it: on an encrypted queue, without the
        payload's own values (a gateway may quote the text it refused)."""
        return self.queue.codec.redact_error(str(exc), job.data)

    async def _call(self, job: Job, slot: Slot, to: str, message: str) -> SendResult:
        """One provider call, its outcome told to the pin, the breaker and the metrics."""
        t0 = time.perf_counter()
        outcome: ProviderOutcome = "error"
        settle = "maybe"
        try:
            result = await slot.provider.send(to, message, idempotency_key=job.id)
        except ProviderConfigError as exc:
            outcome, settle = "config_error", "unsent"
            _, opened = await self.breakers.failure(slot.name, "config", self._reason(job, exc))
            # the breaker's own line says it loudly; per message only at debug
            log.debug("sms.provider_refused_config", queue=self.queue.name, job_id=job.id,
                      provider=slot.name, code=exc.code, error=redact_text(str(exc)),
                      opened_breaker=opened)
            raise
        except ProviderUnreachable as exc:
            outcome, settle = "transient_error", "unsent"
            await self.breakers.failure(slot.name, "error", self._reason(job, exc))
            log.warning("sms.provider_unreachable", queue=self.queue.name, job_id=job.id,
                        provider=slot.name, error=redact_text(str(exc)))
            raise
        except ProviderTransientError as exc:
            outcome = "transient_error"
            if exc.code == 429:  # it answered: busy, not broken
                await self.breakers.success(slot.name)
            else:
                await self.breakers.failure(slot.name, "error", self._reason(job, exc))
            raise
        except ProviderPermanentError:
            outcome = "permanent_error"
            await self.breakers.success(slot.name)  # it answered: about the message
            raise
        else:
            outcome, settle = "sent", "sent"
            await self.breakers.success(slot.name)
            await self._record_sent(job, slot, result)
            return result
        finally:
            record_provider_send(slot.name, outcome, time.perf_counter() - t0,
                                 queue=self.queue.name)
            if self.multi:
                with anyio.CancelScope(shield=True):
                    await self.settle(job.id, slot.name, settle)

    async def _record_sent(self, job: Job, slot: Slot, result: SendResult) -> None:
        """Record the message id for the delivery callback. Shielded and bounded: the SMS
        went out, so nothing here may fail the job (a retry would send it again)."""
        if (not self.delivery.enabled or not result.message_id
                or not getattr(slot.provider, "delivery_reports", False)):
            return
        with anyio.move_on_after(RECORD_TIMEOUT_S, shield=True) as scope:
            try:
                await self.delivery.record(slot.name, result.message_id, job.id, job.partition)
            except (StreamqError, RedisError, OSError) as exc:
                log.warning("sms.delivery_ref_failed", queue=self.queue.name, job_id=job.id,
                            provider=slot.name, message_id=result.message_id,
                            error=redact_text(str(exc)),
                            note="sent; its delivery reports will not find the job")
        if scope.cancelled_caught:
            log.warning("sms.delivery_ref_failed", queue=self.queue.name, job_id=job.id,
                        provider=slot.name, message_id=result.message_id,
                        error=f"no answer within {RECORD_TIMEOUT_S:g}s",
                        note="sent; its delivery reports will not find the job")

    def not_now(self, walk: Walk) -> BaseException:
        """No provider took the message in this run: what the handler raises."""
        if walk.unreachable is not None:
            # reachable-or-not is not settled by a breaker yet: an ordinary transient
            # failure (attempt counted), retried with backoff on the same order
            return walk.unreachable
        skipped = walk.skipped
        waits = [s.wait_s for s in skipped if s.wait_s > 0]
        delay = max(0.05, min(waits) if waits else self.breakers.policy.cooldown_s)
        why = "; ".join(f"{s.name}: {s.error or s.reason.replace('_', ' ')}" for s in skipped)
        if walk.locked:
            # pinned (it may have been sent there): only that provider may take it
            reason = f"waiting for {walk.pinned}, which may already have it ({why})"
            return Defer(delay, reason, hold=not self.multi)
        return Defer(delay, f"no SMS provider can take messages now ({why})", hold=True)

    async def take_tokens(self, slot: Slot, count: int = 1) -> None:
        """Wait for ``count`` tokens of the provider's rate limit (one per message). More
        than its burst are gathered as they come (``lua/take_tokens.lua`` grants what
        there is), so a broadcast to 100 numbers at 8/s waits about 12 s."""
        if slot.rate_limit is None or count < 1:
            return
        key = self.queue.keys.downstream_limiter(slot.name)
        burst = max(1.0, slot.rate_limit)
        waited = 0.0
        while True:
            if count == 1:
                wait_ms = int(await self.queue.scripts("limiter_take", [key],
                                                       [slot.rate_limit, burst]))
                granted = 1 if wait_ms <= 0 else 0
            else:
                reply = await self.queue.scripts("take_tokens", [key],
                                                 [slot.rate_limit, burst, count, 0])
                granted, wait_ms = int(reply[0]), int(reply[1])
            count -= granted
            if count <= 0:
                break
            wait_ms = max(wait_ms, 1)
            waited += wait_ms / 1000
            await anyio.sleep(wait_ms / 1000)
        if waited:
            provider_metrics.rate_limited(self.queue.name, slot.name, waited)

    # -- the pin ------------------------------------------------------------------------
    def _job_keys(self, job_id: str) -> QueueKeys:
        """The keys of the job's own partition (its pin lives there, next to the job; the
        breakers and provider buckets are queue-wide, in the queue's home)."""
        return self.queue.layout.keys_for(job_id)

    async def _route_begin(self, job_id: str) -> tuple[str, str]:
        reply = await self.queue.scripts("route_begin", [self._job_keys(job_id).route(job_id)],
                                         [round(ROUTE_TTL_S * 1000)])
        return _text(reply[0]), _text(reply[1])

    async def pin(self, job: Job, slot: Slot, walk: Walk) -> bool:
        """Pin the job to ``slot`` before calling it (False: the pin moved under this
        run); a failover writes its ``failover`` event here."""
        ok, walk.pinned = await self._route_pin(job, slot.name, walk.pinned,
                                                walk.came_from(slot.name))
        return ok

    async def settle(self, job_id: str, name: str, outcome: str) -> None:
        """Record how a call through the pinned provider ended (sent, unsent, maybe)."""
        await self._route_settle(job_id, name, outcome)

    async def _route_pin(self, job: Job, name: str, seen: str,
                         came_from: Skip | None) -> tuple[bool, str]:
        k = self._job_keys(job.id)
        reply = await self.queue.scripts(
            "route_pin", [k.route(job.id), k.events],
            [name, seen, round(ROUTE_TTL_S * 1000), came_from.name if came_from else "",
             came_from.reason if came_from else "", job.id, job.type_name or "", job.attempt,
             self.queue.defaults.events_max])
        return bool(int(reply[0])), _text(reply[1])

    async def _route_settle(self, job_id: str, name: str, outcome: str) -> None:
        ttl = SENT_ROUTE_TTL_S if outcome == "sent" else ROUTE_TTL_S
        await self.queue.scripts("route_settle", [self._job_keys(job_id).route(job_id)],
                                 [name, outcome, round(ttl * 1000)])

    # -- start-up check ----------------------------------------------------------------
    async def check(self, *, open_breakers: bool = True) -> list[tuple[str, bool, str]]:
        """Check each provider where its API allows it without sending a message:
        ``(name, ok, what was found)``. With ``open_breakers``, a refusal of the
        credentials opens that provider's breaker at once, so no message is spent
        discovering it (Africa's Talking reads the account; Salum can only show that its
        URL answers, see ``SalumSMSProvider.check``; the mock has nothing to check)."""
        out: list[tuple[str, bool, str]] = []
        for slot in self.slots:
            check = getattr(slot.provider, "check", None)
            if check is None:
                out.append((slot.name, True, "nothing to check"))
                continue
            try:
                found = await check()
            except ProviderConfigError as exc:
                if open_breakers:
                    await self.breakers.failure(slot.name, "config", str(exc))
                out.append((slot.name, False, redact_text(str(exc))))
            except (ProviderTransientError, ProviderPermanentError) as exc:
                out.append((slot.name, False, redact_text(str(exc))))
            else:
                out.append((slot.name, True, str(found)))
        return out


def router_from_settings(queue: Queue, choice: str | Sequence[str] | None = None, *,
                         env: Mapping[str, str] | None = None) -> ProviderRouter:
    """The router over the configured provider list (``--provider`` / ``SMS_PROVIDERS`` /
    ``STREAMQ_PROVIDER``), with the per-provider rate limits and breaker policy from env."""
    names = provider_names(choice, env=env)
    return ProviderRouter(queue, providers_from_settings(names, env=env),
                          rate_limits=rate_limits_from_settings(names, env=env),
                          policy=breaker_policy_from_settings(env),
                          delivery_ttl_s=delivery_ttl_from_env(env))


__all__ = ["ProviderRouter", "Skip", "Slot", "Walk", "provider_name", "router_from_settings"]
