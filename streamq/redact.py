"""Masking of personal data and secrets before text reaches logs, events or Redis.

Phone-like digit runs become ``+2547****678`` (first 4 digits after the plus, last 3
kept); a run of fewer than 10 digits is masked whole (``********``), because keeping 7 of
its digits would give away most of, say, an 8-digit OTP code. In free text (error
messages, dead-letter reasons) a long digit run that is not a phone number is masked the
same way, because free text cannot tell them apart; values
that are known not to be personal data (provider message ids, response codes) are
passed as their own log fields, which ``streamq.logs`` leaves readable. Redis URLs lose
their password.
"""

from __future__ import annotations

import re
from urllib.parse import urlsplit, urlunsplit

# 8+ digits, optionally led by '+', possibly split by spaces or dashes ("0712 345 678").
_PHONE_RE = re.compile(r"\+?\d(?:[\s-]?\d){7,}")


def mask_phone(number: str) -> str:
    """Mask one phone number: ``+254712345678`` -> ``+2547****678``."""
    digits = re.sub(r"\D", "", number)
    plus = "+" if number.strip().startswith("+") else ""
    if len(digits) < 10:
        # too short to be a full number: an OTP code or an account number, say
        return plus + "*" * len(digits)
    return f"{plus}{digits[:4]}****{digits[-3:]}"


def redact_text(text: str) -> str:
    """Mask every phone-like digit run inside free text (error messages, log values)."""
    return _PHONE_RE.sub(lambda m: mask_phone(m.group(0)), text)


def redact_url(url: str) -> str:
    """``redis://user:secret@host:6379/0`` -> ``redis://user:***@host:6379/0``."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparseable url>"
    if parts.password is None and "@" not in parts.netloc:
        return url
    userinfo, _, hostinfo = parts.netloc.rpartition("@")
    user = userinfo.split(":", 1)[0]
    netloc = f"{user}:***@{hostinfo}" if user else f"***@{hostinfo}"
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))
