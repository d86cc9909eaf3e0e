"""Templates: text, encoding and segment counts at every boundary."""

from __future__ import annotations

import pytest

from streamq.errors import PayloadError
from streamq.sms import (
    OTPSMS,
    NotificationSMS,
    Recipient,
    WelcomeSMS,
    render_notification_sms,
    render_otp_sms,
    render_welcome_sms,
)
from streamq.sms.templates import MessageTooLong, TemplateError, measure, render_sms

TO = Recipient(phone_number="+254712345678")


def note(text: str) -> NotificationSMS:
    return NotificationSMS(id="n1", timestamp=1, recipient=TO, message=text)


@pytest.mark.parametrize(
    ("text", "encoding", "segments"),
    [
        ("a", "GSM-7", 1),
        ("a" * 160, "GSM-7", 1),
        ("a" * 161, "GSM-7", 2),
        ("a" * 306, "GSM-7", 2),  # 2 x 153
        ("a" * 307, "GSM-7", 3),
        ("a" * 1530, "GSM-7", 10),
        # extension characters cost two septets
        ("€" * 80, "GSM-7", 1),
        ("€" * 81, "GSM-7", 2),
        ("a" * 159 + "^", "GSM-7", 2),
        ("a" * 158 + "{", "GSM-7", 1),
        ("[]{}\\~|^€\f", "GSM-7", 1),
        # an escape pair is not split across parts: 152 + 1 ext in part one would need
        # 154 septets, so the ext char opens part two
        ("a" * 152 + "€" + "a" * 152, "GSM-7", 3),
        ("a" * 151 + "€" + "a" * 153, "GSM-7", 2),
        # GSM basic-set letters that are not ASCII stay GSM-7
        ("Ñoño à ÉÄÖÜ ¿¡ £¥§ ΔΦΓΛΩΠΨΣΘΞ", "GSM-7", 1),
        # UCS-2: 70 single, 67 per part
        ("ب" * 70, "UCS-2", 1),
        ("ب" * 71, "UCS-2", 2),
        ("ب" * 134, "UCS-2", 2),
        ("ب" * 135, "UCS-2", 3),
        ("a" * 69 + "ç", "UCS-2", 1),  # lowercase c-cedilla is not GSM (only Ç is)
        # emoji outside the BMP are surrogate pairs: two UTF-16 units
        ("😀" * 35, "UCS-2", 1),
        ("😀" * 36, "UCS-2", 2),
        ("a" * 66 + "😀" + "a" * 66, "UCS-2", 3),  # the pair opens part two, not split
        ("a" * 65 + "😀" + "a" * 67, "UCS-2", 2),
    ],
)
def test_measure(text: str, encoding: str, segments: int) -> None:
    assert measure(text) == (encoding, segments)
    result = render_notification_sms(note(text))
    assert (result.encoding, result.segments) == (encoding, segments)
    assert result.message == text


@pytest.mark.parametrize(
    ("name", "expected", "encoding"),
    [
        ("Alice", "Welcome Alice!", "GSM-7"),
        ("Wanjiku Kamau", "Welcome Wanjiku Kamau!", "GSM-7"),  # Swahili/Kikuyu names
        ("Zawadi Mwanaisha", "Welcome Zawadi Mwanaisha!", "GSM-7"),
        ("فاطمة", "Welcome فاطمة!", "UCS-2"),
        ("José", "Welcome José!", "GSM-7"),  # é is in the GSM basic set
        ("Zoë 🎉", "Welcome Zoë 🎉!", "UCS-2"),
        ("  Amina\n  Njeri ", "Welcome Amina Njeri!", "GSM-7"),  # one line, spaces collapsed
    ],
)
def test_welcome(name: str, expected: str, encoding: str) -> None:
    job = WelcomeSMS(id="w1", timestamp=1, recipient=TO, user_name=name)
    result = render_welcome_sms(job)
    assert result.message.startswith(expected)
    assert result.encoding == encoding
    assert result.recipient == TO
    assert render_sms(job) == result


def test_decomposed_accent_is_composed_to_stay_gsm() -> None:
    decomposed = "Jose\u0301"  # e + combining acute: not in GSM until NFC-composed
    result = render_welcome_sms(WelcomeSMS(id="w", timestamp=1, recipient=TO, user_name=decomposed))
    assert "José" in result.message
    assert result.encoding == "GSM-7"


def test_welcome_blank_name_is_an_error() -> None:
    with pytest.raises(TemplateError, match="user_name"):
        render_welcome_sms(WelcomeSMS(id="w", timestamp=1, recipient=TO, user_name=" \n "))


@pytest.mark.parametrize(("minutes", "phrase"), [(10, "expires in 10 minutes"),
                                                 (1, "expires in 1 minute.")])
def test_otp_text(minutes: int, phrase: str) -> None:
    job = OTPSMS(id="o", timestamp=1, recipient=TO, code="482913", expiry_minutes=minutes)
    result = render_otp_sms(job)
    assert "482913" in result.message
    assert phrase in result.message
    assert (result.encoding, result.segments) == ("GSM-7", 1)


def test_over_long_notification_is_refused_not_cut() -> None:
    with pytest.raises(MessageTooLong, match=r"11 GSM-7 segments") as info:
        render_notification_sms(note("a" * 1531))
    assert isinstance(info.value, PayloadError)  # a ValueError for callers
    assert "aaaa" not in str(info.value)  # the text itself is not echoed
    with pytest.raises(MessageTooLong, match="UCS-2"):
        render_notification_sms(note("ب" * 671))
    # 10 UCS-2 segments hold 10 x 67 units: the longest Arabic text accepted.
    assert render_notification_sms(note("ب" * 670)).segments == 10


def test_empty_notification_is_an_error() -> None:
    with pytest.raises(TemplateError, match="empty"):
        render_notification_sms(note("   "))
