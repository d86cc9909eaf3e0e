"""Broadcasts: one text to many recipients in one provider request, as a batch handler.

``Worker(queue, make_sms_batch_handler(router), batch=BatchOptions(size=100))`` (or
``python -m streamq.worker --provider africastalking --batch-size 100``) hands the SMS
jobs over in batches; :class:`BroadcastSender` sends each batch like this:

1. **Prepare** each job as the one-job handler does (decode, re-check the number, refuse
   an expired OTP, render): a job that can never be sent is dead-lettered alone.
2. **Group** the jobs whose rendered text is identical and whose provider choice is the
   same (the pin: a job that may already have been sent through a provider goes back to
   that one only, so it only shares a request with jobs locked there too).
3. **Walk the provider list** per group, as the router walks it per message:

   * a provider with a bulk API (:class:`~streamq.sms.providers.base.BulkSMSProvider`:
     Africa's Talking) gets the group in requests of at most ``max_recipients`` numbers
     (``AT_BULK_MAX``, default 100), one number at most once per request (a second job
     for the same number and text goes in another request: the reply could not tell two
     entries apart). Per request: one breaker admission, one rate-limit token per
     recipient (gathered as the bucket grants them), each job pinned before the call.
   * a provider without one (Salum's ``sendsms`` takes a single ``mobile``; the mock) gets
     the group's jobs one request each, through the router's per-message step.

4. **Outcomes.** Of the request as a whole:

   ==============================  ==================================================
   credentials refused             provably not sent: the breaker opens, the group
                                   moves to the next provider (there per job if it
                                   has no bulk API)
   unreachable (refused, DNS,      provably not sent: counts towards the breaker, the
   connect timeout)                group moves to the next provider
   ambiguous (read timeout, 5xx,   each job of the request is retried later on THIS
   reset, unreadable 2xx is        provider only (its pin says "maybe"); never sent
   permanent: see below)           through a second one
   permanent (HTTP 400...)         each job dead-lettered with the reason
   ==============================  ==================================================

   Of each recipient, from the reply's per-recipient entries: sent -> that job's result
   (provider, message id, encoding, segments) and its delivery reference recorded (one
   pipelined write for the request), so the delivery callbacks land on each job;
   permanent (401-409) -> that job dead-lettered; transient (500-502) -> that job retried
   on the same provider; **a number the reply does not name** -> that job retried on the
   same provider (it may have been sent: never counted as sent); entries for numbers not
   asked for are ignored and counted in the request's log line. The breaker hears of a
   success when any recipient was answered (sent or refused), of a failure when every
   one got a gateway error.

When no provider can take a group now, its jobs wait (``Defer``) or fail transiently
exactly as a single message would (see :meth:`ProviderRouter.not_now`).

**Idempotency.** Every job's pin is written before its request, so retries stay on the
provider that may have sent it. Africa's Talking has no idempotency for SMS; the request
carries ``Idempotency-Key: <job id>`` for one recipient, else ``bulk-<digest of the job
ids>`` (for logs and the stand-in).

**Logs**: one ``sms.broadcast`` line per request (provider, recipients, sent, refused,
retried, missing, unknown, seconds), one ``sms.sent`` per job as the single path logs it,
``sms.send_failed`` per failed job; numbers masked, never a text. **Metrics**: each
message counts once in ``streamq_provider_send_seconds`` with its own outcome and its
request's latency.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

import anyio
import structlog
from redis.exceptions import RedisError

from streamq import Defer, Job, PermanentError
from streamq.errors import ConfigError, StreamqError
from streamq.metrics import ProviderOutcome, record_provider_send
from streamq.redact import redact_text

from .dispatch import PreparedSMS, engine_error, prepare_sms
from .failover import RECORD_TIMEOUT_S, ProviderRouter, Skip, Slot, Walk
from .providers.base import (
    BulkReply,
    BulkSMSProvider,
    ProviderConfigError,
    ProviderError,
    ProviderPermanentError,
    ProviderTransientError,
    ProviderUnreachable,
    SendResult,
)

log = structlog.get_logger("streamq.sms")

MAX_IN_FLIGHT: Final = 10
"""Provider requests one batch makes at once (a batch of 1,000 jobs to 1,000 different
texts, or through a provider without a bulk API, is 1,000 requests)."""
REDIS_CALLS: Final = 32
"""Redis calls (pins, settles) one request makes at once."""

BatchResult = dict[str, Any]


@dataclass(slots=True, eq=False)
class _Item:
    """One job of a broadcast: prepared, and its way through the providers."""

    sms: PreparedSMS
    walk: Walk = field(default_factory=Walk)

    @property
    def job(self) -> Job:
        return self.sms.job

    @property
    def to(self) -> str:
        return self.sms.to


def request_key(jobs: Sequence[Job]) -> str:
    """The ``Idempotency-Key`` of one request: the job id for one job, else a digest of
    the job ids (the same jobs in the same order give the same key)."""
    if len(jobs) == 1:
        return jobs[0].id
    ids = ",".join(j.id for j in jobs)
    return "bulk-" + hashlib.sha256(ids.encode()).hexdigest()[:32]


def chunks(items: Sequence[_Item], size: int) -> list[list[_Item]]:
    """Requests of at most ``size`` jobs, no number twice in one (a later request takes
    the repeat), in the jobs' order."""
    out: list[list[_Item]] = []
    seen: list[set[str]] = []
    first_open = 0
    for item in items:
        for i in range(first_open, len(out)):
            if len(out[i]) < size and item.to not in seen[i]:
                out[i].append(item)
                seen[i].add(item.to)
                break
        else:
            out.append([item])
            seen.append({item.to})
        while first_open < len(out) and len(out[first_open]) >= size:
            first_open += 1
    return out


def _in_order(items: Sequence[_Item], subset: Sequence[_Item]) -> list[_Item]:
    """The items of ``subset`` in the order of ``items`` (by identity)."""
    chosen = {id(i) for i in subset}
    return [i for i in items if id(i) in chosen]


async def _each(items: Sequence[_Item], call: Callable[[_Item], Awaitable[None]],
                limit: int) -> None:
    """``call`` for every item, at most ``limit`` at once."""
    if len(items) == 1:
        await call(items[0])
        return
    limiter = anyio.CapacityLimiter(limit)

    async def one(item: _Item) -> None:
        async with limiter:
            await call(item)

    async with anyio.create_task_group() as tg:
        for item in items:
            tg.start_soon(one, item)


class BroadcastSender:
    """The batch handler: ``await sender(jobs)`` -> job id -> result or exception."""

    def __init__(self, router: ProviderRouter, *, clock: Callable[[], float] = time.time,
                 max_in_flight: int = MAX_IN_FLIGHT) -> None:
        if not isinstance(router, ProviderRouter):
            raise ConfigError("a broadcast sends through a ProviderRouter (breakers, pins and "
                              "rate limits are kept in the queue's Redis)")
        if max_in_flight < 1:
            raise ConfigError("max_in_flight must be at least 1")
        self.router = router
        self.clock = clock
        self.max_in_flight = max_in_flight

    async def __call__(self, jobs: list[Job]) -> BatchResult:
        outcomes: BatchResult = {}
        items: list[_Item] = []
        for job in jobs:
            try:
                items.append(_Item(prepare_sms(job, self.clock)))
            except PermanentError as exc:
                outcomes[job.id] = exc
        router = self.router
        if router.multi:
            async def begin(item: _Item) -> None:
                item.walk = await router.begin(item.job)

            await _each(items, begin, REDIS_CALLS)
        groups: dict[tuple[str, str], list[_Item]] = {}
        for item in items:
            try:
                router.candidates(item.walk)
            except PermanentError as exc:
                outcomes[item.job.id] = exc
                continue
            lock = item.walk.pinned if item.walk.locked else ""
            groups.setdefault((item.sms.rendered.message, lock), []).append(item)
        limiter = anyio.CapacityLimiter(self.max_in_flight)
        async with anyio.create_task_group() as tg:
            for (message, _), group in groups.items():
                tg.start_soon(self._group, message, group, outcomes, limiter)
        return outcomes

    async def _group(self, message: str, group: list[_Item], outcomes: BatchResult,
                     limiter: anyio.CapacityLimiter) -> None:
        """One text's jobs through the provider list. An error of our own (Redis) fails
        the jobs of this group that have no outcome yet, not the whole batch."""
        try:
            pending = group
            for slot in self.router.candidates(group[0].walk):
                if not pending:
                    break
                if isinstance(slot.provider, BulkSMSProvider):
                    pending = await self._bulk(slot, slot.provider, message, pending, outcomes,
                                               limiter)
                else:
                    pending = await self._singly(slot, message, pending, outcomes, limiter)
            for item in pending:
                outcomes[item.job.id] = self._not_now(item)
        except Exception as exc:
            for item in group:
                outcomes.setdefault(item.job.id, exc)

    def _not_now(self, item: _Item) -> BaseException:
        exc = self.router.not_now(item.walk)
        if isinstance(exc, ProviderError):
            return engine_error(exc, item.sms.log)
        if isinstance(exc, Defer):
            item.sms.log.debug("sms.deferred", reason=str(exc), delay=exc.delay, hold=exc.hold)
        return exc

    def _sent(self, item: _Item, result: SendResult) -> dict[str, Any]:
        rendered = item.sms.rendered
        item.sms.log.info("sms.sent", provider=result.provider, message_id=result.message_id,
                          encoding=rendered.encoding, segments=rendered.segments)
        return item.sms.result(result)

    # -- a provider without a bulk API: one request per job ----------------------------------
    async def _singly(self, slot: Slot, message: str, pending: list[_Item],
                      outcomes: BatchResult, limiter: anyio.CapacityLimiter) -> list[_Item]:
        moving: list[_Item] = []

        async def one(item: _Item) -> None:
            async with limiter:
                try:
                    result = await self.router.try_slot(item.job, slot, item.to, message,
                                                        item.walk)
                except Defer as exc:
                    outcomes[item.job.id] = exc
                    return
                except (ProviderPermanentError, ProviderTransientError) as exc:
                    outcomes[item.job.id] = engine_error(exc, item.sms.log)
                    return
            if result is None:
                moving.append(item)
            else:
                outcomes[item.job.id] = self._sent(item, result)

        await _each(pending, one, len(pending))
        return _in_order(pending, moving)

    # -- a provider with a bulk API: requests of many recipients -----------------------------
    async def _bulk(self, slot: Slot, provider: BulkSMSProvider, message: str,
                    pending: list[_Item], outcomes: BatchResult,
                    limiter: anyio.CapacityLimiter) -> list[_Item]:
        moving: list[_Item] = []
        requests = chunks(pending, max(1, provider.max_recipients))

        async def request(chunk: list[_Item]) -> None:
            async with limiter:
                moving.extend(await self._request(slot, provider, message, chunk, outcomes))

        async with anyio.create_task_group() as tg:
            for chunk in requests:
                tg.start_soon(request, chunk)
        return _in_order(pending, moving)

    async def _request(self, slot: Slot, provider: BulkSMSProvider, message: str,
                       chunk: list[_Item], outcomes: BatchResult) -> list[_Item]:
        """One request for ``chunk``; returns the jobs it provably did not send."""
        router = self.router
        admission = await router.breakers.admit(slot.name, slot.probe_lease_s)
        if not admission.allowed:
            skip = router.breaker_skip(slot, admission.state, admission.wait_s, admission.why)
            for item in chunk:
                item.walk.skipped.append(skip)
            return chunk
        await router.take_tokens(slot, len(chunk))
        if router.multi:
            refused: list[_Item] = []

            async def pin(item: _Item) -> None:
                if not await router.pin(item.job, slot, item.walk):
                    refused.append(item)

            await _each(chunk, pin, REDIS_CALLS)
            for item in refused:
                # another run of this job moved the pin meanwhile: look again shortly
                outcomes[item.job.id] = Defer(0.1, "the job's provider pin changed under this run")
            gone = {id(i) for i in refused}
            chunk = [i for i in chunk if id(i) not in gone]
            if not chunk:
                return []
        settle: dict[str, str] = {}  # job id -> sent | unsent; else maybe
        sent_as: dict[str, ProviderOutcome] = {}
        t0 = time.perf_counter()
        try:
            return await self._call(slot, provider, message, chunk, outcomes, settle, sent_as)
        finally:
            elapsed = time.perf_counter() - t0
            for item in chunk:
                record_provider_send(slot.name, sent_as.get(item.job.id, "error"), elapsed,
                                     queue=router.queue.name)
            if router.multi:
                with anyio.CancelScope(shield=True):
                    async def settled(item: _Item) -> None:
                        await router.settle(item.job.id, slot.name,
                                            settle.get(item.job.id, "maybe"))

                    await _each(chunk, settled, REDIS_CALLS)

    async def _call(self, slot: Slot, provider: BulkSMSProvider, message: str,
                    chunk: list[_Item], outcomes: BatchResult, settle: dict[str, str],
                    sent_as: dict[str, ProviderOutcome]) -> list[_Item]:
        router = self.router
        breakers = router.breakers
        queue = router.queue.name
        first = chunk[0].job
        t0 = time.perf_counter()
        try:
            reply = await provider.send_many([i.to for i in chunk], message,
                                             idempotency_key=request_key([i.job for i in chunk]))
        except ProviderConfigError as exc:
            _, opened = await breakers.failure(slot.name, "config", self._reason(first, exc))
            log.debug("sms.provider_refused_config", queue=queue, provider=slot.name,
                      code=exc.code, error=redact_text(str(exc)), recipients=len(chunk),
                      opened_breaker=opened)
            skip = router.config_skip(slot, exc)
            for item in chunk:
                item.walk.skipped.append(skip)
                settle[item.job.id] = "unsent"
                sent_as[item.job.id] = "config_error"
            return chunk
        except ProviderUnreachable as exc:
            await breakers.failure(slot.name, "error", self._reason(first, exc))
            error = redact_text(str(exc))
            log.warning("sms.provider_unreachable", queue=queue, provider=slot.name, error=error,
                        recipients=len(chunk))
            skip = Skip(slot.name, "unreachable", 0.0, error)
            for item in chunk:
                item.walk.unreachable = exc
                item.walk.skipped.append(skip)
                settle[item.job.id] = "unsent"
                sent_as[item.job.id] = "transient_error"
            return chunk
        except ProviderTransientError as exc:
            # ambiguous: it may have sent every one of them; each retries on this provider
            if exc.code == 429:
                await breakers.success(slot.name)
            else:
                await breakers.failure(slot.name, "error", self._reason(first, exc))
            self._request_failed(slot, chunk, exc, outcomes, sent_as, "transient_error", t0)
            return []
        except ProviderPermanentError as exc:
            await breakers.success(slot.name)  # it answered: about the request
            self._request_failed(slot, chunk, exc, outcomes, sent_as, "permanent_error", t0)
            return []
        await self._answered(slot, chunk, reply, outcomes, settle, sent_as, t0)
        return []

    def _request_failed(self, slot: Slot, chunk: list[_Item], exc: ProviderError,
                        outcomes: BatchResult, sent_as: dict[str, ProviderOutcome],
                        outcome: ProviderOutcome, t0: float) -> None:
        log.warning("sms.broadcast", queue=self.router.queue.name, provider=slot.name,
                    recipients=len(chunk), sent=0, error=redact_text(str(exc)),
                    permanent=outcome == "permanent_error",
                    seconds=round(time.perf_counter() - t0, 3))
        for item in chunk:
            outcomes[item.job.id] = engine_error(exc, item.sms.log)
            sent_as[item.job.id] = outcome

    async def _answered(self, slot: Slot, chunk: list[_Item], reply: BulkReply,
                        outcomes: BatchResult, settle: dict[str, str],
                        sent_as: dict[str, ProviderOutcome], t0: float) -> None:
        """The reply's per-recipient outcomes onto the jobs."""
        router = self.router
        refs: list[tuple[str, str, int]] = []
        counts = {"sent": 0, "refused": 0, "retried": 0, "missing": 0}
        failovers: dict[tuple[str, str], tuple[Skip, int]] = {}
        transient: ProviderError | None = None
        for item in chunk:
            job = item.job
            got = reply.outcomes.get(item.to)
            if isinstance(got, SendResult):
                counts["sent"] += 1
                settle[job.id] = "sent"
                sent_as[job.id] = "sent"
                outcomes[job.id] = self._sent(item, got)
                if got.message_id:
                    refs.append((got.message_id, job.id, job.partition))
                came = item.walk.came_from(slot.name)
                if came is not None:
                    key = (came.name, came.reason)
                    failovers[key] = (came, failovers.get(key, (came, 0))[1] + 1)
                continue
            if got is None:
                counts["missing"] += 1
                got = ProviderTransientError(
                    f"{slot.name} answered the request without an entry for this recipient "
                    f"(it may have been sent): retried on {slot.name} only", provider=slot.name)
            if isinstance(got, ProviderPermanentError):
                counts["refused"] += 1
                sent_as[job.id] = "permanent_error"
            else:
                counts["retried"] += 1
                sent_as[job.id] = "transient_error"
                transient = transient or got
            outcomes[job.id] = engine_error(got, item.sms.log)
        if counts["sent"] or counts["refused"]:
            await router.breakers.success(slot.name)
        elif transient is not None:
            await router.breakers.failure(slot.name, "error",
                                          self._reason(chunk[0].job, transient))
        say = log.warning if counts["missing"] or reply.unknown else log.info
        say("sms.broadcast", queue=router.queue.name, provider=slot.name,
            recipients=len(chunk), **counts, unknown=reply.unknown,
            seconds=round(time.perf_counter() - t0, 3))
        for came, count in failovers.values():
            router.note_failover(came, slot.name, count, jobs=count)
        await self._record(slot, refs)

    async def _record(self, slot: Slot, refs: list[tuple[str, str, int]]) -> None:
        """Record the message ids for the delivery callbacks. Shielded and bounded: the
        messages went out, so nothing here may fail their jobs."""
        delivery = self.router.delivery
        if not refs or not delivery.enabled or not getattr(slot.provider, "delivery_reports",
                                                           False):
            return
        with anyio.move_on_after(RECORD_TIMEOUT_S, shield=True) as scope:
            try:
                await delivery.record_many(slot.name, refs)
            except (StreamqError, RedisError, OSError) as exc:
                log.warning("sms.delivery_ref_failed", queue=self.router.queue.name,
                            provider=slot.name, messages=len(refs), error=redact_text(str(exc)),
                            note="sent; their delivery reports will not find the jobs")
        if scope.cancelled_caught:
            log.warning("sms.delivery_ref_failed", queue=self.router.queue.name,
                        provider=slot.name, messages=len(refs),
                        error=f"no answer within {RECORD_TIMEOUT_S:g}s",
                        note="sent; their delivery reports will not find the jobs")

    def _reason(self, job: Job, exc: BaseException) -> str:
        return self.router.queue.codec.redact_error(str(exc), job.data)


def make_sms_batch_handler(
    router: ProviderRouter, *, clock: Callable[[], float] = time.time,
    max_in_flight: int = MAX_IN_FLIGHT,
) -> BroadcastSender:
    """A batch handler sending SMS jobs as broadcasts (see the module docs): run it with
    ``Worker(queue, handler, batch=BatchOptions(size=100, max_wait=0.05))``."""
    return BroadcastSender(router, clock=clock, max_in_flight=max_in_flight)


__all__ = ["BroadcastSender", "chunks", "make_sms_batch_handler", "request_key"]
