"""Operator actions written to a queue's events stream, with who did them.

An action (replay, purge, pause, resume, cancel, a schedule's run_schedule,
pause_schedule, resume_schedule, and close_breaker of a provider's breaker: from the
dashboard, or any tool that acts on a queue for someone) is one events entry::

    ev=action  act=<action>  j=<job id, schedule id, provider, or * for the whole queue>
    actor=<role>
    n=<jobs affected>  [e=<error, when the action failed>]

``Queue.read_events`` returns it as a ``QueueEvent`` named ``action`` whose ``fields``
hold act, actor and n. The entry is written even when the queue's events are turned
off (``events_max=0``), capped at ``AUDIT_MAX`` entries then: an audit trail must not
depend on a monitoring setting.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from .connection import translate_redis_errors
from .errors import ConfigError
from .redact import redact_text

if TYPE_CHECKING:
    from .queue import Queue

AUDIT_MAX = 2_000
ACTIONS = frozenset({"replay", "purge", "pause", "resume", "cancel", "run_schedule",
                     "pause_schedule", "resume_schedule", "close_breaker"})
_ACTOR_RE = re.compile(r"^[a-z][a-z0-9_-]{0,31}$")


async def record_action(q: Queue, action: str, actor: str, target: str = "*",
                        affected: int = 0, error: str | None = None) -> str:
    """Append one action entry to the queue's events stream; returns its entry id."""
    if action not in ACTIONS:
        raise ConfigError(f"action {action!r} is unknown: use one of {', '.join(sorted(ACTIONS))}")
    if not _ACTOR_RE.match(actor):
        raise ConfigError(f"actor {actor[:40]!r} is invalid: a role name such as operator")
    fields: dict[str, str | int] = {"ev": "action", "act": action, "j": target, "y": "",
                                    "a": 0, "actor": actor, "n": affected}
    if error:
        fields["e"] = redact_text(" ".join(error.split()))[:500]
    maxlen = q.defaults.events_max or AUDIT_MAX
    with translate_redis_errors(q.redis_url):
        entry = await q.redis.xadd(q.keys.events, fields,  # type: ignore[arg-type]
                                   maxlen=maxlen, approximate=True)
    return entry.decode() if isinstance(entry, bytes) else str(entry)


__all__ = ["ACTIONS", "AUDIT_MAX", "record_action"]
