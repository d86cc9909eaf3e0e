"""Phone numbers: E.164 and national input, normalisation, and errors that mask the number."""

from __future__ import annotations

import pytest

from streamq.errors import ConfigError, PayloadError
from streamq.sms.phone import InvalidPhoneNumber, default_region, msisdn_digits, normalize_phone


@pytest.mark.parametrize(
    ("raw", "e164"),
    [
        ("+254712345678", "+254712345678"),
        ("0712345678", "+254712345678"),  # Kenyan national format (default region KE)
        ("0712 345 678", "+254712345678"),
        ("0712-345-678", "+254712345678"),
        ("+254 712 345 678", "+254712345678"),
        ("0112345678", "+254112345678"),  # the newer 01xx mobile range
        ("+14155552671", "+14155552671"),  # E.164 of another country is fine
        ("+447911123456", "+447911123456"),
    ],
)
def test_valid_numbers_normalise_to_e164(raw: str, e164: str) -> None:
    assert normalize_phone(raw) == e164


@pytest.mark.parametrize(
    "raw",
    ["+1", "", "abc", "0712345", "+2547123", "+254712345678999", "12", "+0712345678",
     "07123456789012345678", "x" * 200],
)
def test_invalid_numbers_are_rejected(raw: str) -> None:
    with pytest.raises(InvalidPhoneNumber) as info:
        normalize_phone(raw)
    assert isinstance(info.value, PayloadError) and isinstance(info.value, ValueError)
    assert "invalid phone number" in str(info.value)


def test_error_masks_the_number() -> None:
    bad = "+25471234567899"  # 14 digits: too long for Kenya
    with pytest.raises(InvalidPhoneNumber) as info:
        normalize_phone(bad)
    text = str(info.value)
    assert bad not in text and bad[1:] not in text
    assert "+2547****899" in text
    assert "E.164" in text and "KE" in text


def test_non_string_is_rejected() -> None:
    with pytest.raises(InvalidPhoneNumber, match="must be a string"):
        normalize_phone(254712345678)  # type: ignore[arg-type]


def test_default_region_from_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STREAMQ_DEFAULT_REGION", "ug")
    assert default_region() == "UG"
    assert normalize_phone("0772123456") == "+256772123456"  # a Ugandan mobile
    monkeypatch.setenv("STREAMQ_DEFAULT_REGION", "XX")
    with pytest.raises(ConfigError, match="STREAMQ_DEFAULT_REGION"):
        normalize_phone("0712345678")
    # E.164 input still needs a sane configuration, but an explicit region wins.
    assert normalize_phone("0712345678", "KE") == "+254712345678"


def test_default_region_is_kenya() -> None:
    assert default_region({}) == "KE"


def test_msisdn_digits() -> None:
    assert msisdn_digits("+254712345678") == "254712345678"
