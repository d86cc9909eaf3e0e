"""Checks for numeric settings and options: one clear ``ConfigError`` line naming the setting.

Used where values enter the engine (``JobOptions``, ``Backoff``, ``QueueDefaults``,
``Worker``), so a nonsensical value is refused when it is written, not when a Lua
script trips over it halfway through a transition.
"""

from __future__ import annotations

import math
from datetime import timedelta
from typing import Any

from .errors import ConfigError

MAX_DELAY_S = 10 * 365 * 24 * 3600.0
"""The longest delay, backoff, timeout or TTL streamq accepts: 10 years, in seconds.
Longer values are almost surely a unit mistake (ms for s); beyond ~3e5 years the Redis
clock arithmetic would stop being exact."""


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def seconds_value(name: str, value: Any, *, positive: bool = False,
                  maximum: float = MAX_DELAY_S) -> float:
    """A duration in seconds (a number or a ``timedelta``), finite, >= 0 (> 0 when
    ``positive``), at most ``maximum``."""
    if isinstance(value, timedelta):
        value = value.total_seconds()
    if not _is_number(value):
        raise ConfigError(f"{name} must be a number of seconds or a timedelta, "
                          f"got {type(value).__name__}")
    v = float(value)
    if math.isnan(v) or math.isinf(v):
        raise ConfigError(f"{name} must be a finite number of seconds, got {v}")
    if v < 0 or (positive and v == 0):
        raise ConfigError(f"{name} must be {'>' if positive else '>='} 0 seconds, got {v:g}")
    if v > maximum:
        raise ConfigError(f"{name} must be at most {maximum:g} seconds "
                          f"({maximum / 86400 / 365:g} years), got {v:g}")
    return v


def number_value(name: str, value: Any, *, minimum: float, strict: bool = False) -> float:
    """A finite number >= ``minimum`` (> when ``strict``)."""
    if not _is_number(value):
        raise ConfigError(f"{name} must be a number, got {type(value).__name__}")
    v = float(value)
    if math.isnan(v) or math.isinf(v):
        raise ConfigError(f"{name} must be a finite number, got {v}")
    if v < minimum or (strict and v == minimum):
        raise ConfigError(f"{name} must be {'>' if strict else '>='} {minimum:g}, got {v:g}")
    return v


def int_value(name: str, value: Any, *, minimum: int, maximum: int | None = None) -> int:
    """An integer (not a bool) in [minimum, maximum]."""
    if not isinstance(value, int) or isinstance(value, bool):
        raise ConfigError(f"{name} must be an integer, got {value!r}")
    if value < minimum:
        raise ConfigError(f"{name} must be an integer >= {minimum}, got {value}")
    if maximum is not None and value > maximum:
        raise ConfigError(f"{name} must be an integer <= {maximum}, got {value}")
    return value


__all__ = ["MAX_DELAY_S", "int_value", "number_value", "seconds_value"]
