"""Build the configured provider from environment variables.

=========================  ==========================================================
``STREAMQ_PROVIDER``       ``mock`` (default) or ``salum``
``SALUM_API_URL``          default ``https://sms.salum.co.ke/api/services/sendsms/``
``SALUM_API_KEY``          required for salum (a secret: never printed)
``SALUM_PARTNER_ID``       required for salum
``SALUM_SHORTCODE``        required for salum (the sender id)
``SALUM_TIMEOUT``          total seconds per request, default 10
``SALUM_CONNECT_TIMEOUT``  seconds to connect, default 3
``STREAMQ_MOCK_LATENCY``   mock: seconds per send, default 0
``STREAMQ_MOCK_FAILURE_RATE``  mock: share of sends failing transiently, default 0
=========================  ==========================================================

Errors name the variable at fault, never its value.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from typing import Final

from streamq.errors import ConfigError

from .base import SMSProvider
from .mock import MockSMSProvider
from .salum import DEFAULT_API_URL, SalumSMSProvider

PROVIDERS: Final = ("mock", "salum")
_SALUM_REQUIRED: Final = ("SALUM_API_KEY", "SALUM_PARTNER_ID", "SALUM_SHORTCODE")


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


def provider_from_settings(
    name: str | None = None, *, env: Mapping[str, str] | None = None
) -> SMSProvider:
    """The provider ``name`` (else ``STREAMQ_PROVIDER``, else ``mock``), configured from env."""
    source = os.environ if env is None else env
    chosen = (name or source.get("STREAMQ_PROVIDER", "") or "mock").strip().lower()
    if chosen == "mock":
        return MockSMSProvider(
            latency=_number(source, "STREAMQ_MOCK_LATENCY", 0.0, low=0.0, high=60.0),
            failure_rate=_number(source, "STREAMQ_MOCK_FAILURE_RATE", 0.0, low=0.0, high=1.0),
        )
    if chosen == "salum":
        missing = [var for var in _SALUM_REQUIRED if not source.get(var, "").strip()]
        if missing:
            raise ConfigError(f"provider salum needs {', '.join(missing)} (not set)")
        return SalumSMSProvider(
            api_url=source.get("SALUM_API_URL", "").strip() or DEFAULT_API_URL,
            api_key=source["SALUM_API_KEY"].strip(),
            partner_id=source["SALUM_PARTNER_ID"].strip(),
            shortcode=source["SALUM_SHORTCODE"].strip(),
            timeout_total=_number(source, "SALUM_TIMEOUT", 10.0, low=0.1, high=300.0),
            timeout_connect=_number(source, "SALUM_CONNECT_TIMEOUT", 3.0, low=0.1, high=300.0),
        )
    raise ConfigError(f"unknown provider {chosen[:40]!r}: use one of {', '.join(PROVIDERS)}")
