"""What this process's environment says about the SMS queue's providers, for operators'
tools: the provider list (``SMS_PROVIDERS`` / ``STREAMQ_PROVIDER``), the breaker policy
(``SMS_BREAKER_*``) and the rate limits (``SALUM_RATE_LIMIT``, ``AT_RATE_LIMIT``).

Declared in pyproject.toml as the entry point ``streamq.downstreams: sms``, so the
dashboard's breakers page shows them without the engine importing this package.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Final

from streamq.breakers import Downstreams, DownstreamSettings
from streamq.errors import ConfigError

from .breaker import breaker_policy_from_settings
from .jobs import QUEUE_ENV
from .providers.factory import provider_names, rate_limits_from_settings


def sms_downstreams(env: Mapping[str, str] | None = None,
                    found: Mapping[str, Sequence[str]] | None = None) -> DownstreamSettings:
    """The SMS queue's providers as configured in ``env`` (default: this process's);
    ``found``: providers seen in Redis per queue, whose rate limits are looked up too for
    the SMS queue. A provider list is given only when one is named (not the ``mock``
    default)."""
    source = os.environ if env is None else env
    queue = source.get(QUEUE_ENV, "").strip() or "sms"
    seen = list((found or {}).get(queue, []))
    names: list[str] = []
    try:
        if source.get("SMS_PROVIDERS", "").strip() or source.get("STREAMQ_PROVIDER", "").strip():
            names = provider_names(None, env=source)
        p = breaker_policy_from_settings(source)
        policy = (f"opens after {p.errors} errors in a row within {p.window_s:g} s (or at once "
                  f"on refused credentials), stays open {p.cooldown_s:g} s, then one message "
                  "probes")
        limits = rate_limits_from_settings(sorted({*names, *seen}), env=source)
    except ConfigError as exc:
        return DownstreamSettings(queue=queue, names=names, problem=str(exc))
    return DownstreamSettings(queue=queue, names=names, policy=policy, limits=limits)


DOWNSTREAMS: Final = Downstreams(settings=sms_downstreams)
"""The SMS package's declaration (entry point ``streamq.downstreams: sms``)."""

__all__ = ["DOWNSTREAMS", "sms_downstreams"]
