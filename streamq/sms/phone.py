"""Phone numbers: validate with libphonenumber and normalise to E.164.

Accepted: a valid number in E.164 (``+254712345678``) or in the national format of the
default region (env ``STREAMQ_DEFAULT_REGION``, default ``KE``: ``0712345678``).
Spaces, dashes and brackets are tolerated, as libphonenumber tolerates them.

Error messages show the number masked (``+2547****678``): they end up in logs and in
dead-letter reasons stored in Redis, and phonenumbers' own parse errors are never passed
through, since they may echo the input.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Final

import phonenumbers

from streamq.errors import ConfigError, PayloadError
from streamq.redact import mask_phone

DEFAULT_REGION: Final = "KE"
REGION_ENV: Final = "STREAMQ_DEFAULT_REGION"
# Longer input cannot be a phone number; refuse before handing it to the parser.
_MAX_INPUT_CHARS: Final = 64


class InvalidPhoneNumber(PayloadError):
    """A recipient number is not a valid number in E.164 or the default region's format."""


def default_region(env: Mapping[str, str] | None = None) -> str:
    """The region used for national-format numbers, from ``STREAMQ_DEFAULT_REGION``."""
    source = os.environ if env is None else env
    region = source.get(REGION_ENV, "").strip().upper() or DEFAULT_REGION
    if region not in phonenumbers.SUPPORTED_REGIONS:
        raise ConfigError(
            f"{REGION_ENV}={region!r} is not a region code libphonenumber knows "
            "(use an ISO 3166 alpha-2 code such as KE, UG, TZ)"
        )
    return region


def _shown(number: str) -> str:
    masked = mask_phone(number)
    return repr(masked) if masked.strip("+") else "(no digits)"


def normalize_phone(number: str, region: str | None = None) -> str:
    """Return ``number`` in E.164, or raise :class:`InvalidPhoneNumber`.

    ``region`` defaults to :func:`default_region`; it only matters for numbers written
    without a leading ``+``.
    """
    if not isinstance(number, str):
        raise InvalidPhoneNumber(
            f"phone number must be a string, not {type(number).__name__}"
        )
    region = region or default_region()
    hint = f"expected E.164 (+254712345678) or a national number of region {region}"
    if len(number) > _MAX_INPUT_CHARS:
        raise InvalidPhoneNumber(f"invalid phone number: longer than {_MAX_INPUT_CHARS} characters")
    try:
        parsed = phonenumbers.parse(number, region)
    except phonenumbers.NumberParseException:
        raise InvalidPhoneNumber(f"invalid phone number {_shown(number)}: {hint}") from None
    if not phonenumbers.is_valid_number(parsed):
        raise InvalidPhoneNumber(f"invalid phone number {_shown(number)}: {hint}")
    return str(phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164))


def msisdn_digits(e164: str) -> str:
    """``+254712345678`` -> ``254712345678``: the form SMS gateways such as Salum expect."""
    return e164.removeprefix("+")
