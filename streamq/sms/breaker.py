"""A circuit breaker per SMS provider, kept in Redis so that every worker agrees.

States and transitions (each one Lua transition, ``lua/breaker_*.lua``):

* **closed**: calls go through. ``errors`` failures in a row (no success between them)
  within ``window_s`` seconds open it: unreachable, timeouts, 5xx, per-recipient
  gateway errors. A configuration error (the provider refused the credentials) opens
  it at once. Message-level failures (a bad number) and 429s count as answers, not
  failures.
* **open**: calls are refused (the router fails over, or holds delivery) for
  ``cooldown_s`` seconds.
* **half-open**: after the cool-down, the first caller is the probe: one call goes
  through, under a lease (``probe_lease_s``: the provider's timeout plus a margin);
  every other caller is refused until the probe reports. Success closes the breaker,
  failure opens it for another cool-down; a probe whose worker died is replaced when
  its lease runs out.

Defaults: 5 errors within 30 s open it; open for 30 s. Environment:
``SMS_BREAKER_ERRORS``, ``SMS_BREAKER_WINDOW`` (s), ``SMS_BREAKER_COOLDOWN`` (s).

Cost on the happy path: a worker that found a breaker closed trusts that for
``CLOSED_TRUST_S`` (0.5 s) before asking Redis again, and reports a success only when
there is something to reset (errors counted, a probe), so a healthy provider costs about
two Redis calls a second per worker, not two per message. The price: a breaker opened by
another worker is seen up to 0.5 s late, which costs at most a few calls that fail the
same way (provably unsent ones fail over, ambiguous ones retry on the same provider).

Each transition writes a ``breaker`` entry to the queue's events stream (provider,
state, kind, reason), is logged by the one worker that made it (opening at error
level; a failed probe at most once a minute), and counted in
``streamq_sms_breaker_transitions_total``.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final, Literal

import structlog

from streamq import Queue
from streamq.errors import ConfigError
from streamq.keys import check_downstream_name
from streamq.redact import redact_text

from . import provider_metrics

log = structlog.get_logger("streamq.sms")

BreakerState = Literal["closed", "half_open", "open"]
FailureKind = Literal["error", "config"]
MAX_REASON_CHARS: Final = 200
CLOSED_TRUST_S: Final = 0.5
PROBE_LOG_EVERY_S: Final = 60.0


@dataclass(frozen=True, slots=True)
class BreakerPolicy:
    """When a provider's breaker opens and for how long."""

    errors: int = 5
    """Failures in a row (no success between them) that open the breaker..."""
    window_s: float = 30.0
    """... when they all fall within this many seconds."""
    cooldown_s: float = 30.0
    """Seconds the breaker stays open before one probe may go."""

    def __post_init__(self) -> None:
        if self.errors < 1:
            raise ConfigError("SMS_BREAKER_ERRORS must be >= 1")
        if self.window_s <= 0 or self.cooldown_s <= 0:
            raise ConfigError("SMS_BREAKER_WINDOW and SMS_BREAKER_COOLDOWN must be > 0 seconds")


def breaker_policy_from_settings(env: Mapping[str, str] | None = None) -> BreakerPolicy:
    """``SMS_BREAKER_ERRORS``, ``SMS_BREAKER_WINDOW`` and ``SMS_BREAKER_COOLDOWN`` (s)."""
    source = os.environ if env is None else env
    values: dict[str, float] = {}
    for var, field_name in (("SMS_BREAKER_ERRORS", "errors"), ("SMS_BREAKER_WINDOW", "window_s"),
                            ("SMS_BREAKER_COOLDOWN", "cooldown_s")):
        raw = source.get(var, "").strip()
        if raw:
            try:
                values[field_name] = float(raw)
            except ValueError:
                raise ConfigError(f"{var} must be a number") from None
    errors = values.pop("errors", 5.0)
    if errors != int(errors):
        raise ConfigError("SMS_BREAKER_ERRORS must be a whole number")
    return BreakerPolicy(errors=int(errors), **values)


@dataclass(frozen=True, slots=True)
class Admission:
    allowed: bool
    state: BreakerState
    wait_s: float
    """Seconds until a call may be admitted again (0 when allowed)."""
    probe: bool
    """This call is the half-open probe."""
    why: str = ""
    """Why the breaker opened (its last failure, redacted), when it is not closed."""


def _text(v: Any) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)


class Breakers:
    """The breakers of one queue's providers (the queue's hash tag holds their keys)."""

    def __init__(self, queue: Queue, policy: BreakerPolicy | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.queue = queue
        self.policy = policy or BreakerPolicy()
        self._clock = clock
        self._last_probe_log: dict[str, float] = {}
        self._closed_until: dict[str, float] = {}
        """name -> local time until which a closed breaker is trusted without asking."""
        self._report: set[str] = set()
        """Names whose next success must reach Redis (errors counted, or not closed)."""

    def _keys(self, name: str) -> list[str]:
        k = self.queue.keys
        return [k.breaker(check_downstream_name(name)), k.events]

    async def admit(self, name: str, probe_lease_s: float) -> Admission:
        if self._clock() < self._closed_until.get(name, 0.0):
            return Admission(True, "closed", 0.0, False)
        reply = await self.queue.scripts(
            "breaker_admit", self._keys(name),
            [name, max(1, round(probe_lease_s * 1000)), self.queue.defaults.events_max])
        allowed, state, wait_ms, probe = int(reply[0]), _text(reply[1]), int(reply[2]), int(reply[3])
        why = _text(reply[4]) if len(reply) > 4 else ""
        if state == "closed":
            self._closed_until[name] = self._clock() + CLOSED_TRUST_S
            if len(reply) > 5 and int(reply[5]) > 0:
                self._report.add(name)
        else:
            self._closed_until.pop(name, None)
            self._report.add(name)
        q = self.queue.name
        if probe and state == "half_open":
            log.debug("sms.breaker_probe", queue=q, provider=name,
                      note="cool-down over: one message probes the provider")
            provider_metrics.breaker_transition(q, name, "half_open")
        else:
            provider_metrics.breaker_seen(q, name, state)
        return Admission(bool(allowed), state, wait_ms / 1000, bool(probe),  # type: ignore[arg-type]
                         why)

    async def failure(self, name: str, kind: FailureKind, reason: str) -> tuple[BreakerState, bool]:
        """Report a failed call; returns the state after and whether this call opened it.

        Opening from closed is logged once at error level; a failed probe (reopening)
        at most once a minute per provider in this process, so a provider that stays
        down for hours costs a line a minute, not one per probe."""
        p = self.policy
        why = redact_text(" ".join(reason.split()))[:MAX_REASON_CHARS]
        reply = await self.queue.scripts(
            "breaker_failure", self._keys(name),
            [name, kind, p.errors, round(p.window_s * 1000), round(p.cooldown_s * 1000), why,
             self.queue.defaults.events_max])
        state, opened, before = _text(reply[0]), bool(int(reply[1])), _text(reply[3])
        self._report.add(name)
        if state != "closed":
            self._closed_until.pop(name, None)
        q = self.queue.name
        if opened:
            provider_metrics.breaker_transition(q, name, "open")
            if before == "closed":
                log.error("sms.breaker_opened", queue=q, provider=name, kind=kind, reason=why,
                          cooldown_s=p.cooldown_s,
                          note="no message goes to this provider until a probe succeeds")
            else:
                now = self._clock()
                if now - self._last_probe_log.get(name, -PROBE_LOG_EVERY_S) >= PROBE_LOG_EVERY_S:
                    self._last_probe_log[name] = now
                    log.warning("sms.breaker_probe_failed", queue=q, provider=name, kind=kind,
                                reason=why, next_probe_in_s=p.cooldown_s)
        else:
            provider_metrics.breaker_seen(q, name, state)
        return state, opened  # type: ignore[return-value]

    async def success(self, name: str) -> bool:
        """Report a call the provider answered; returns whether this call closed it.
        Skipped when this worker knows of nothing to reset."""
        if name not in self._report:
            return False
        self._report.discard(name)
        reply = await self.queue.scripts(
            "breaker_success", self._keys(name), [name, self.queue.defaults.events_max])
        state, closed = _text(reply[0]), bool(int(reply[1]))
        q = self.queue.name
        if closed:
            log.warning("sms.breaker_closed", queue=q, provider=name,
                        note="the probe got through: the provider takes messages again")
            provider_metrics.breaker_transition(q, name, "closed")
        else:
            provider_metrics.breaker_seen(q, name, state)
        return closed

    async def snapshot(self, name: str) -> dict[str, str]:
        """The breaker's fields as stored (for operators and tests)."""
        raw = await self.queue.redis.hgetall(self.queue.keys.breaker(name))
        return {_text(k): _text(v) for k, v in raw.items()}
