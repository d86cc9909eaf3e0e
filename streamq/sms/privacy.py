"""Privacy of the SMS queue: encryption on whenever keys are set, and a blind index of
the recipients' numbers.

The engine encrypts payloads and keeps a keyed blind index for any queue that asks
(``Queue(..., encrypt=True, blind_index=terms)``); this module says what that means for
SMS: every SMS queue built here (the job creators' default queue, the SMS worker's)
encrypts as soon as ``STREAMQ_ENCRYPTION_KEYS`` is set, and indexes each job under its
recipient's E.164 number, so ``python -m streamq find --phone +2547...`` lists a number's
jobs while Redis holds neither the number nor its plain hash.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any, Final

from streamq.blind_index import SearchTerms, Terms
from streamq.crypto import KeyRing

from .phone import normalize_phone

PHONE_TERM: Final = "e164:"


def phone_term(number: str) -> str:
    """The blind-index term of a number (any accepted format; normalised to E.164 first)."""
    return PHONE_TERM + normalize_phone(number)


def phone_terms(data: Any) -> list[str]:
    """The terms of one SMS payload: its recipient's number (already E.164 in a job)."""
    recipient = getattr(data, "recipient", None)
    if recipient is None and isinstance(data, Mapping):
        recipient = data.get("recipient")
    number = getattr(recipient, "phone_number", None)
    if number is None and isinstance(recipient, Mapping):
        number = recipient.get("phone_number")
    return [PHONE_TERM + number] if isinstance(number, str) and number else []


def sms_queue_options(env: Mapping[str, str] | None = None) -> dict[str, Any]:
    """``Queue`` keyword options of an SMS queue: encrypted and indexed by number when
    ``STREAMQ_ENCRYPTION_KEYS`` is set; either way, a payload's values (the text with its
    codes) are masked out of error reasons."""
    ring = KeyRing.from_env(env)
    if ring is None:
        return {"redact_errors": True}
    terms: Terms = phone_terms
    return {"encrypt": True, "keyring": ring, "blind_index": terms}


def _sms_queues() -> list[str]:
    return [os.environ.get("STREAMQ_SMS_QUEUE", "").strip() or "sms"]


SEARCH_TERMS: Final = SearchTerms(
    option="phone",
    noun="number",
    help="a phone number in E.164 (+254712345678) or the national format of "
    "STREAMQ_DEFAULT_REGION (0712345678)",
    to_term=phone_term,
    terms=phone_terms,
    queues=_sms_queues,
)
"""Declared in pyproject.toml as the entry point ``streamq.search_terms: sms``, so the
operator tools offer ``--phone`` and know the SMS queue's terms without the engine
importing this package."""

__all__ = ["PHONE_TERM", "SEARCH_TERMS", "phone_term", "phone_terms", "sms_queue_options"]
