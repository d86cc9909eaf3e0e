"""Prometheus metrics of provider failover, breakers and per-provider rate limits.

They live in the registry of the ``Metrics`` attached to the running worker (the engine's
``streamq.metrics.current_metrics()``), created there on first use; without a metrics
server every function here does nothing, so the router calls them unconditionally.

=========================================  =======  ===========================================
``streamq_sms_failovers_total``            counter  queue, from_provider, to_provider, reason
                                                    (``unreachable``, ``config``,
                                                    ``breaker_open``): messages sent through a
                                                    later provider than the first choice
``streamq_sms_breaker_transitions_total``  counter  queue, provider, state (``open``,
                                                    ``half_open``, ``closed``): transitions
                                                    this process made (each is made once,
                                                    by one worker)
``streamq_sms_breaker_state``              gauge    queue, provider: 0 closed, 1 half-open,
                                                    2 open, as this process last saw it
``streamq_sms_provider_rate_limit_waits``  counter  queue, provider: times (``_total``) and
``streamq_sms_provider_rate_limit_wait_``  counter  seconds (``..._seconds_total``) a send
``seconds``                                         waited for a token of the provider's limit
``streamq_sms_delivery_total``             counter  queue, provider, status (``Success``,
                                                    ``Failed``, ... or ``other``): delivery
                                                    reports that changed a job's delivery
                                                    status (a repeat is not counted)
=========================================  =======  ===========================================
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass
from typing import Final

from prometheus_client import Counter, Gauge

from streamq.metrics import Metrics, current_metrics

BREAKER_STATES: Final[dict[str, int]] = {"closed": 0, "half_open": 1, "open": 2}


@dataclass(frozen=True, slots=True)
class _Instruments:
    failovers: Counter
    transitions: Counter
    state: Gauge
    waits: Counter
    wait_seconds: Counter
    delivery: Counter


_by_metrics: weakref.WeakKeyDictionary[Metrics, _Instruments] = weakref.WeakKeyDictionary()


def _instruments() -> _Instruments | None:
    m = current_metrics()
    if m is None:
        return None
    found = _by_metrics.get(m)
    if found is None:
        r = m.registry
        found = _Instruments(
            failovers=Counter("streamq_sms_failovers", "Messages sent through a later provider "
                              "than the first choice, by why the earlier one was passed over.",
                              ("queue", "from_provider", "to_provider", "reason"), registry=r),
            transitions=Counter("streamq_sms_breaker_transitions", "Circuit-breaker transitions "
                                "made by this process.", ("queue", "provider", "state"),
                                registry=r),
            state=Gauge("streamq_sms_breaker_state", "Circuit breaker as last seen by this "
                        "process: 0 closed, 1 half-open, 2 open.", ("queue", "provider"),
                        registry=r),
            waits=Counter("streamq_sms_provider_rate_limit_waits", "Times a send waited for a "
                          "token of its provider's rate limit.", ("queue", "provider"),
                          registry=r),
            wait_seconds=Counter("streamq_sms_provider_rate_limit_wait_seconds", "Seconds sends "
                                 "waited for tokens of their provider's rate limit.",
                                 ("queue", "provider"), registry=r),
            delivery=Counter("streamq_sms_delivery", "Delivery reports that changed a job's "
                             "delivery status, by the new status.",
                             ("queue", "provider", "status"), registry=r),
        )
        _by_metrics[m] = found
    return found


def failover(queue: str, from_provider: str, to_provider: str, reason: str,
             count: int = 1) -> None:
    i = _instruments()
    if i is not None:
        i.failovers.labels(queue, from_provider, to_provider, reason).inc(count)


def breaker_transition(queue: str, provider: str, state: str) -> None:
    i = _instruments()
    if i is not None:
        i.transitions.labels(queue, provider, state).inc()
        i.state.labels(queue, provider).set(BREAKER_STATES.get(state, 0))


def breaker_seen(queue: str, provider: str, state: str) -> None:
    i = _instruments()
    if i is not None:
        i.state.labels(queue, provider).set(BREAKER_STATES.get(state, 0))


def rate_limited(queue: str, provider: str, seconds: float) -> None:
    i = _instruments()
    if i is not None:
        i.waits.labels(queue, provider).inc()
        i.wait_seconds.labels(queue, provider).inc(max(0.0, seconds))


def delivery(queue: str, provider: str, status: str) -> None:
    i = _instruments()
    if i is not None:
        i.delivery.labels(queue, provider, status).inc()
