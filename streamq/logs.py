"""structlog set-up for the command lines: JSON in production, console in development.

The library itself never configures logging; ``python -m streamq.worker`` and
``python -m streamq`` call ``configure_logging``. The last processor before rendering
masks phone-like digit runs in every string value and drops keys that may hold
secrets or message text (OTP codes live in message text).

What stays readable, because it is no personal data and masking would break it: our own
fields (timestamps, consumer names, entry ids), provider message ids (``message_id``),
and response codes: ``code`` passes when it is an integer (an HTTP status or a provider's
response code such as Salum's 1006), while a string ``code`` is hidden (an OTP code is a
string of digits, ``OTPSMS.code``).
"""

from __future__ import annotations

import logging
import sys
from collections.abc import MutableMapping
from typing import Any, Literal, TextIO

import structlog

from .redact import redact_text

LogFormat = Literal["json", "console"]

# values we write ourselves and that hold no personal data, but long digit runs
# (timestamps, pids in consumer names, entry ids) that the phone masker would mangle
TRUSTED_KEYS = frozenset({"timestamp", "consumer", "previous_owner", "queue",
                          "level", "logger", "transition", "message_id"})

DROPPED_KEYS = frozenset(
    {"body", "message", "text", "code", "otp", "api_key", "apikey", "password",
     "authorization", "token", "secret"}
)


def redact_event(
    _logger: Any, _method: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    for key in list(event_dict):
        value = event_dict[key]
        if key.lower() in DROPPED_KEYS:
            if not _is_response_code(key, value):
                event_dict[key] = "***"
            continue
        if isinstance(value, str) and key not in TRUSTED_KEYS:
            event_dict[key] = redact_text(value)
    return event_dict


def _is_response_code(key: str, value: object) -> bool:
    """An integer ``code`` is a response code (HTTP status, provider code), never an OTP."""
    return key.lower() == "code" and (value is None or type(value) is int)


def configure_logging(
    fmt: LogFormat = "console", level: str = "info", stream: TextIO | None = None
) -> None:
    renderer: Any
    if fmt == "json":
        renderer = structlog.processors.JSONRenderer()
    else:
        renderer = structlog.dev.ConsoleRenderer(colors=False)
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            redact_event,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(
            logging.getLevelNamesMapping().get(level.upper(), logging.INFO)
        ),
        logger_factory=structlog.PrintLoggerFactory(stream or sys.stderr),
        cache_logger_on_first_use=False,
    )
