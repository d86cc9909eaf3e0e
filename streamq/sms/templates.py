"""SMS templates: pure functions from a typed job to a :class:`TemplateResult`.

Besides the text, a result carries what a sender pays for: the encoding and the number
of segments.

* **GSM-7** when every character is in the GSM 03.38 default alphabet or its extension
  table. Extension characters (``^ { } \\ [ ~ ] | €`` and form feed) are sent as ESC plus
  a character, so they cost two septets. One SMS holds 160 septets; a concatenated
  message holds 153 per part (the UDH takes the rest), and an escape pair is never split
  across parts.
* **UCS-2** otherwise (Arabic, emoji, ``ç``...): 70 UTF-16 code units in one SMS, 67 per
  part. Characters outside the BMP (most emoji) are surrogate pairs costing two units,
  also never split across parts.

A message over :data:`MAX_SEGMENTS` segments or :data:`MAX_MESSAGE_CHARS` characters
raises :class:`MessageTooLong`: cutting it silently would deliver something the caller
did not write.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Iterable
from typing import Final

from streamq.errors import PayloadError

from .types import (
    MAX_MESSAGE_CHARS,
    OTPSMS,
    Encoding,
    NotificationSMS,
    SMSJob,
    TemplateResult,
    WelcomeSMS,
)

MAX_SEGMENTS: Final = 10
GSM_SINGLE: Final = 160
GSM_PART: Final = 153
UCS2_SINGLE: Final = 70
UCS2_PART: Final = 67

# GSM 03.38 default alphabet, in table order, without ESC (0x1B), which is not a
# character a message can contain.
GSM_BASIC: Final = frozenset(
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
GSM_EXTENSION: Final = frozenset("\f^{}\\[~]|€")


class TemplateError(PayloadError):
    """A job's text cannot be rendered into an SMS."""


class MessageTooLong(TemplateError):
    """The rendered text exceeds the segment or character limit."""


def _gsm_costs(text: str) -> list[int] | None:
    costs: list[int] = []
    for ch in text:
        if ch in GSM_BASIC:
            costs.append(1)
        elif ch in GSM_EXTENSION:
            costs.append(2)
        else:
            return None
    return costs


def _count(costs: Iterable[int], single: int, part: int) -> int:
    costs = list(costs)
    if sum(costs) <= single:
        return 1
    # Concatenated: fill parts greedily; a unit that does not fit whole starts a part.
    segments, used = 1, 0
    for cost in costs:
        if used + cost > part:
            segments += 1
            used = 0
        used += cost
    return segments


def measure(text: str) -> tuple[Encoding, int]:
    """The encoding a gateway will use for ``text`` and how many segments it takes."""
    gsm = _gsm_costs(text)
    if gsm is not None:
        return "GSM-7", _count(gsm, GSM_SINGLE, GSM_PART)
    return "UCS-2", _count((2 if ord(ch) > 0xFFFF else 1 for ch in text), UCS2_SINGLE, UCS2_PART)


def _result(kind: str, message: str, job: SMSJob) -> TemplateResult:
    # NFC: a decomposed "é" (e + combining accent) would force UCS-2; composed, it is GSM.
    message = unicodedata.normalize("NFC", message)
    if not message.strip():
        raise TemplateError(f"{kind} SMS text is empty")
    encoding, segments = measure(message)
    if segments > MAX_SEGMENTS or len(message) > MAX_MESSAGE_CHARS:
        raise MessageTooLong(
            f"{kind} SMS is too long: {len(message)} characters, {segments} {encoding} "
            f"segments (limit {MAX_SEGMENTS} segments and {MAX_MESSAGE_CHARS} characters)"
        )
    return TemplateResult(
        message=message, recipient=job.recipient, encoding=encoding, segments=segments
    )


def _clean_name(name: str) -> str:
    # A name is one line: collapse newlines and runs of spaces a form may have let in.
    return " ".join(name.split())


def render_welcome_sms(job: WelcomeSMS) -> TemplateResult:
    name = _clean_name(job.user_name)
    if not name:
        raise TemplateError("welcome SMS needs a user_name")
    return _result("welcome", f"Welcome {name}! Thanks for joining us.", job)


def render_otp_sms(job: OTPSMS) -> TemplateResult:
    unit = "minute" if job.expiry_minutes == 1 else "minutes"
    text = (
        f"Your verification code is {job.code}. It expires in {job.expiry_minutes} {unit}. "
        "Do not share it with anyone."
    )
    return _result("otp", text, job)


def render_notification_sms(job: NotificationSMS) -> TemplateResult:
    return _result("notification", job.message, job)


def render_sms(job: SMSJob) -> TemplateResult:
    """Route a job to its template by type (the seed worker's switch)."""
    match job:
        case WelcomeSMS():
            return render_welcome_sms(job)
        case OTPSMS():
            return render_otp_sms(job)
        case NotificationSMS():
            return render_notification_sms(job)
