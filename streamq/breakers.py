"""Downstream circuit breakers as operators see them: read one queue's breakers, close
one by hand. The breakers themselves (when they open, probe and close) are the SMS
layer's (``streamq.sms.breaker``); their hashes are kept in the queue's home partition
(``QueueKeys.breaker``), laid out as ``lua/breaker_admit.lua`` says:

    st (closed | open | half_open; absent = closed), n (errors counted in the window),
    ws (the window's start, ms), until (open: when a probe may go, ms), probe (half-open:
    the probe's lease end, ms), kind (errors | config), why (the last failure, redacted),
    since (the last transition, ms)

A downstream that never failed has no hash: it is closed. Its token bucket
(``QueueKeys.downstream_limiter``: tk tokens at ts ms) exists while its rate limit is in
use. Times are Redis's clock.

    statuses = await read_breakers(q, ["salum", "africastalking"])
    closed = await close_breaker(q, "salum")     # lua/breaker_close.lua

The engine knows no channel: which downstreams a channel configures, with what breaker
policy and rate limits, it declares as a :class:`Downstreams` entry point of the group
``streamq.downstreams`` (the SMS package does: ``sms =
"streamq.sms.provider_settings:DOWNSTREAMS"``), read by :func:`downstream_settings`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from importlib.metadata import entry_points
from typing import TYPE_CHECKING, Any

from .connection import translate_redis_errors
from .errors import ConfigError
from .job import ms_to_dt
from .keys import check_downstream_name

if TYPE_CHECKING:
    from .queue import Queue

STATES = ("closed", "open", "half_open")
DOWNSTREAMS_GROUP = "streamq.downstreams"
"""The entry-point group where a channel declares its :class:`Downstreams`."""


@dataclass(frozen=True, slots=True)
class DownstreamSettings:
    """What a channel's configuration (this process's environment) says about the
    downstreams of its queue: for operators' tools (the dashboard's breakers page), which
    label it as this process's: the workers' own settings decide."""

    queue: str
    """The channel's queue."""
    names: list[str] = field(default_factory=list)
    """The downstreams configured here, in order ([] when none is named here)."""
    policy: str = ""
    """The breaker policy as one line."""
    limits: dict[str, float | None] = field(default_factory=dict)
    """Each downstream's rate limit (calls/s; None: none of its own)."""
    problem: str = ""
    """A configuration error, one line ('' when none)."""


@dataclass(frozen=True, slots=True)
class Downstreams:
    """A channel's downstreams, declared as an entry point of ``streamq.downstreams``."""

    settings: Callable[[Mapping[str, str], Mapping[str, Sequence[str]]], DownstreamSettings]
    """(environment, downstreams found in Redis per queue) -> its settings (the rate
    limits of the found ones of its queue included)."""


def downstream_settings(env: Mapping[str, str],
                        found: Mapping[str, Sequence[str]]) -> list[DownstreamSettings]:
    """Every installed channel's settings; ``found``: downstreams with a breaker hash per
    queue."""
    out = []
    for ep in entry_points(group=DOWNSTREAMS_GROUP):
        try:
            obj = ep.load()
        except Exception as exc:  # a broken plugin must not take the tools down
            raise ConfigError(f"entry point {ep.name} of {DOWNSTREAMS_GROUP} cannot be "
                              f"loaded: {type(exc).__name__}: {exc}") from None
        if isinstance(obj, Downstreams):
            out.append(obj.settings(env, found))
    return out


def _text(v: Any) -> str:
    return v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v or "")


def _int(v: Any) -> int:
    try:
        return int(_text(v) or 0)
    except ValueError:
        return 0


@dataclass(frozen=True, slots=True)
class BreakerStatus:
    queue: str
    downstream: str
    state: str
    """closed, open or half_open."""
    stored: bool
    """False: no breaker hash (it never counted a failure): closed."""
    errors: int = 0
    """Errors in a row counted so far in the current window (closed)."""
    window_start: datetime | None = None
    since: datetime | None = None
    """When it last changed state (opened, went half-open, closed)."""
    open_until: datetime | None = None
    """Open: when its cool-down ends and the next call probes."""
    probe_until: datetime | None = None
    """Half-open: when the probe's lease runs out (a probe that never reports is replaced)."""
    kind: str = ""
    """Why it opened: errors (a run of failures) or config (credentials refused)."""
    why: str = ""
    """Its last failure, one line, already redacted when it was stored."""
    tokens: float | None = None
    """Its rate limit's token bucket as last stored (None: not in use lately)."""
    tokens_at: datetime | None = None


async def read_breakers(queue: Queue, names: Sequence[str]) -> list[BreakerStatus]:
    """The breakers of ``names`` on ``queue`` (one pipelined read), in that order."""
    k = queue.keys
    wanted = [check_downstream_name(n) for n in names]
    if not wanted:
        return []
    with translate_redis_errors(queue.redis_url):
        pipe = queue.redis.pipeline(transaction=False)
        for n in wanted:
            pipe.hgetall(k.breaker(n))
            pipe.hmget(k.downstream_limiter(n), ["tk", "ts"])
        replies = await pipe.execute()
    out = []
    for i, n in enumerate(wanted):
        raw, bucket = replies[2 * i], replies[2 * i + 1]
        h = {_text(key): _text(v) for key, v in (raw or {}).items()}
        state = h.get("st") or "closed"
        tokens = None
        if bucket and bucket[0] is not None:
            try:
                tokens = float(_text(bucket[0]))
            except ValueError:
                tokens = None
        out.append(BreakerStatus(
            queue=queue.name, downstream=n, state=state if state in STATES else "closed",
            stored=bool(h), errors=_int(h.get("n")), window_start=ms_to_dt(h.get("ws")),
            since=ms_to_dt(h.get("since")),
            open_until=ms_to_dt(h.get("until")) if state == "open" else None,
            probe_until=ms_to_dt(h.get("probe")) if state == "half_open" else None,
            kind=h.get("kind", ""), why=h.get("why", ""), tokens=tokens,
            tokens_at=ms_to_dt(_text(bucket[1])) if tokens is not None and bucket else None))
    return out


async def close_breaker(queue: Queue, name: str) -> bool:
    """Close ``name``'s breaker now (open or half-open -> closed, as a successful probe
    would, with a 'breaker' event of kind 'manual'). False when it was closed already."""
    k = queue.keys
    reply = await queue.run_script("breaker_close", [k.breaker(check_downstream_name(name)),
                                                     k.events],
                                   [name, queue.defaults.events_max])
    return bool(int(reply[1]))


PIN_STATES = {"sending": "a call in flight (or its worker died mid-call)",
              "unsent": "provably not sent: may fail over",
              "maybe": "may have been sent: stays on this provider"}


async def route_pin(queue: Queue, job_id: str) -> tuple[str, str] | None:
    """The provider a job is pinned to and the pin's state (sending, unsent, maybe), from
    its ``route`` hash in the job's partition (``lua/route_*.lua``); None without one."""
    await queue.partition_count()
    key = queue.layout.keys_for(job_id).route(job_id)
    with translate_redis_errors(queue.redis_url):
        got = await queue.redis.hmget(key, ["p", "s"])
    return (_text(got[0]), _text(got[1]) or "maybe") if got and got[0] else None


__all__ = ["DOWNSTREAMS_GROUP", "PIN_STATES", "STATES", "BreakerStatus", "DownstreamSettings",
           "Downstreams", "close_breaker", "downstream_settings", "read_breakers", "route_pin"]
