"""The PII scan of T10 as a helper: no full phone number, OTP code or secret in a text
(worker logs, dead-letter reasons, stand-in print-outs)."""

from __future__ import annotations

import re
from collections.abc import Iterable

E164 = re.compile(r"\+\d{8,15}")
"""A full international number; masked ones look like +2547****678."""


def pii_found(text: str, secrets: Iterable[str] = ()) -> list[str]:
    """What leaked: full E.164 numbers, then any of ``secrets`` (numbers without '+',
    OTP codes, API keys) found verbatim."""
    found = E164.findall(text)
    found += [s for s in secrets if s and s in text]
    return found


def assert_no_pii(text: str, secrets: Iterable[str] = (), *, min_lines: int = 1) -> None:
    """Fail when ``text`` leaks; also when it is (almost) empty: a scan of nothing
    proves nothing."""
    assert text.count("\n") >= min_lines, "almost nothing was logged: the scan proves nothing"
    leaked = pii_found(text, secrets)
    assert leaked == [], f"leaked into the output: {sorted(set(leaked))}"
