"""Build the configured providers from environment variables.

==============================  =======================================================
``SMS_PROVIDERS``               ordered list for failover, e.g. ``salum,africastalking``
                                (the worker's ``--provider`` takes the same list)
``STREAMQ_PROVIDER``            one provider (used when ``SMS_PROVIDERS`` is unset):
                                ``mock`` (default), ``salum`` or ``africastalking``
``SALUM_API_URL``               default ``https://sms.salum.co.ke/api/services/sendsms/``
``SALUM_API_KEY``               required for salum (a secret: never printed)
``SALUM_PARTNER_ID``            required for salum
``SALUM_SHORTCODE``             required for salum (the sender id)
``SALUM_TIMEOUT``               total seconds per request, default 10
``SALUM_CONNECT_TIMEOUT``       seconds to connect, default 3
``SALUM_RATE_LIMIT``            jobs/s through salum across all workers (unset: none)
``AT_USERNAME``                 required for africastalking (``sandbox`` for the sandbox)
``AT_API_KEY``                  required for africastalking (a secret: never printed)
``AT_SENDER_ID``                optional sender id / short code (``from``)
``AT_API_URL``                  default ``https://api.africastalking.com``; the sandbox
                                is ``https://api.sandbox.africastalking.com``
``AT_TIMEOUT``                  total seconds per request, default 10
``AT_CONNECT_TIMEOUT``          seconds to connect, default 3
``AT_RATE_LIMIT``               jobs/s through africastalking across all workers
``AT_BULK_MAX``                 recipients per request of a broadcast, default 100 (1-1000)
``STREAMQ_MOCK_LATENCY``        mock: seconds per send, default 0
``STREAMQ_MOCK_FAILURE_RATE``   mock: share of sends failing transiently, default 0
==============================  =======================================================

Errors name the variable at fault, never its value.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from typing import Final

from streamq.errors import ConfigError

from .africastalking import BULK_MAX_DEFAULT, BULK_MAX_LIMIT, AfricasTalkingSMSProvider
from .africastalking import DEFAULT_API_URL as AT_DEFAULT_API_URL
from .base import SMSProvider
from .mock import MockSMSProvider
from .salum import DEFAULT_API_URL, SalumSMSProvider

PROVIDERS: Final = ("mock", "salum", "africastalking")
_REQUIRED: Final[dict[str, tuple[str, ...]]] = {
    "salum": ("SALUM_API_KEY", "SALUM_PARTNER_ID", "SALUM_SHORTCODE"),
    "africastalking": ("AT_USERNAME", "AT_API_KEY"),
}
RATE_LIMIT_VARS: Final[dict[str, str]] = {"salum": "SALUM_RATE_LIMIT",
                                          "africastalking": "AT_RATE_LIMIT"}


def _number(env: Mapping[str, str], var: str, default: float, *, low: float, high: float) -> float:
    raw = env.get(var, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"{var} must be a number") from None
    if not math.isfinite(value) or not low <= value <= high:
        raise ConfigError(f"{var} must be between {low:g} and {high:g}")
    return value


def _whole(env: Mapping[str, str], var: str, default: int, *, low: int, high: int) -> int:
    value = _number(env, var, float(default), low=low, high=high)
    if value != int(value):
        raise ConfigError(f"{var} must be a whole number")
    return int(value)


def provider_names(choice: str | Sequence[str] | None = None, *,
                   env: Mapping[str, str] | None = None) -> list[str]:
    """The ordered provider list: ``choice`` (a name, a comma-separated list or a
    sequence), else ``SMS_PROVIDERS``, else ``STREAMQ_PROVIDER``, else ``mock``."""
    source = os.environ if env is None else env
    raw: str | Sequence[str] = "mock"
    origin = ""  # the variable the list came from, named in errors
    if choice:
        raw = choice
    else:
        for var in ("SMS_PROVIDERS", "STREAMQ_PROVIDER"):
            if source.get(var, "").strip():
                raw, origin = source[var].strip(), var
                break
    items = raw.split(",") if isinstance(raw, str) else list(raw)
    names = [n.strip().lower() for n in items if n.strip()]
    if not names:
        raise ConfigError("the provider list is empty: use e.g. salum,africastalking")
    for n in names:
        if n not in PROVIDERS:
            shown = f"{origin}={raw[:60]!r}: " if origin and isinstance(raw, str) else ""
            raise ConfigError(f"{shown}unknown provider {n[:40]!r}: use one of "
                              f"{', '.join(PROVIDERS)}")
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise ConfigError(f"provider {dup[0]!r} is listed twice")
    return names


def provider_from_settings(
    name: str | None = None, *, env: Mapping[str, str] | None = None
) -> SMSProvider:
    """The provider ``name`` (else ``STREAMQ_PROVIDER``, else ``mock``), configured from env."""
    source = os.environ if env is None else env
    chosen = (name or source.get("STREAMQ_PROVIDER", "") or "mock").strip().lower()
    if chosen not in PROVIDERS:
        raise ConfigError(f"unknown provider {chosen[:40]!r}: use one of {', '.join(PROVIDERS)}")
    missing = [var for var in _REQUIRED.get(chosen, ()) if not source.get(var, "").strip()]
    if missing:
        raise ConfigError(f"provider {chosen} needs {', '.join(missing)} (not set)")
    if chosen == "mock":
        return MockSMSProvider(
            latency=_number(source, "STREAMQ_MOCK_LATENCY", 0.0, low=0.0, high=60.0),
            failure_rate=_number(source, "STREAMQ_MOCK_FAILURE_RATE", 0.0, low=0.0, high=1.0),
        )
    if chosen == "salum":
        return SalumSMSProvider(
            api_url=source.get("SALUM_API_URL", "").strip() or DEFAULT_API_URL,
            api_key=source["SALUM_API_KEY"].strip(),
            partner_id=source["SALUM_PARTNER_ID"].strip(),
            shortcode=source["SALUM_SHORTCODE"].strip(),
            timeout_total=_number(source, "SALUM_TIMEOUT", 10.0, low=0.1, high=300.0),
            timeout_connect=_number(source, "SALUM_CONNECT_TIMEOUT", 3.0, low=0.1, high=300.0),
        )
    return AfricasTalkingSMSProvider(
        username=source["AT_USERNAME"].strip(),
        api_key=source["AT_API_KEY"].strip(),
        sender_id=source.get("AT_SENDER_ID", "").strip() or None,
        api_url=source.get("AT_API_URL", "").strip() or AT_DEFAULT_API_URL,
        timeout_total=_number(source, "AT_TIMEOUT", 10.0, low=0.1, high=300.0),
        timeout_connect=_number(source, "AT_CONNECT_TIMEOUT", 3.0, low=0.1, high=300.0),
        max_recipients=_whole(source, "AT_BULK_MAX", BULK_MAX_DEFAULT, low=1,
                              high=BULK_MAX_LIMIT),
    )


def providers_from_settings(choice: str | Sequence[str] | None = None, *,
                            env: Mapping[str, str] | None = None) -> list[SMSProvider]:
    """Every provider of the ordered list (see :func:`provider_names`), configured."""
    return [provider_from_settings(n, env=env) for n in provider_names(choice, env=env)]


def rate_limits_from_settings(names: Sequence[str], *, env: Mapping[str, str] | None = None
                              ) -> dict[str, float | None]:
    """``SALUM_RATE_LIMIT`` / ``AT_RATE_LIMIT`` (jobs/s; unset or 0 = no limit of its own)."""
    source = os.environ if env is None else env
    out: dict[str, float | None] = {}
    for n in names:
        var = RATE_LIMIT_VARS.get(n)
        if var is None:
            continue
        value = _number(source, var, 0.0, low=0.0, high=100_000.0)
        out[n] = value or None
    return out
