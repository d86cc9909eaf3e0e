"""The SMS payloads: a msgspec tagged union on the field ``type``.

``SMSJob = WelcomeSMS | OTPSMS | NotificationSMS``. The constraints below (``Meta``)
are checked by msgspec whenever a payload is *decoded* (the worker, ``Queue.add``'s
validation, :func:`validate_job`), not when a Struct is constructed in Python. They are
the worker's guard against a raw entry that bypassed the job creators: a bad number, an
OTP code that is not digits or a 10 MB message fails decoding and is dead-lettered
instead of reaching the provider.

Schema evolution (msgspec rules): a new field must get a default, so jobs written by an
older producer still decode in a newer worker.
"""

from __future__ import annotations

from typing import Annotated, Final, Literal, TypeAlias

import msgspec
from msgspec import Meta

from streamq.errors import PayloadError

#: SMS bodies longer than this are refused (Twilio error 21617 uses the same cap).
MAX_MESSAGE_CHARS: Final = 1600
MAX_NAME_CHARS: Final = 100
MAX_METADATA_ITEMS: Final = 32
MAX_METADATA_CHARS: Final = 256

# Post-normalisation shape: '+' then up to 15 digits (ITU-T E.164). Full validity is
# checked with phonenumbers when the job is created and again by the dispatcher.
E164 = Annotated[str, Meta(pattern=r"^\+[1-9][0-9]{6,14}$")]
PayloadId = Annotated[str, Meta(pattern=r"^[A-Za-z0-9_.:@=+-]{1,128}$")]
TimestampMs = Annotated[int, Meta(ge=0)]
OTPCode = Annotated[str, Meta(pattern=r"^[0-9]{4,10}$")]
ExpiryMinutes = Annotated[int, Meta(ge=1, le=1440)]
Name = Annotated[str, Meta(min_length=1, max_length=MAX_NAME_CHARS)]
MessageText = Annotated[str, Meta(min_length=1, max_length=MAX_MESSAGE_CHARS)]
MetaText = Annotated[str, Meta(max_length=MAX_METADATA_CHARS)]
Metadata = Annotated[dict[MetaText, MetaText], Meta(max_length=MAX_METADATA_ITEMS)]
Encoding: TypeAlias = Literal["GSM-7", "UCS-2"]


class Recipient(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """Who receives the SMS. ``phone_number`` is E.164 once the job is created."""

    phone_number: E164
    name: Name | None = None


class _SMSBase(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True, tag_field="type"):
    """Base fields of every SMS job (the seed's ``BaseJobData``)."""

    id: PayloadId
    timestamp: TimestampMs  # creation time, ms since the Unix epoch
    recipient: Recipient


class WelcomeSMS(_SMSBase, frozen=True, kw_only=True, tag="welcome"):
    user_name: Name


class OTPSMS(_SMSBase, frozen=True, kw_only=True, tag="otp"):
    code: OTPCode
    expiry_minutes: ExpiryMinutes = 10


class NotificationSMS(_SMSBase, frozen=True, kw_only=True, tag="notification"):
    message: MessageText
    metadata: Metadata | None = None


SMSJob: TypeAlias = WelcomeSMS | OTPSMS | NotificationSMS


class TemplateResult(msgspec.Struct, frozen=True, kw_only=True):
    """A rendered SMS and the facts a sender needs to price and send it."""

    message: str
    recipient: Recipient
    encoding: Encoding
    segments: int


_encoder = msgspec.msgpack.Encoder()
_decoder: msgspec.msgpack.Decoder[SMSJob] = msgspec.msgpack.Decoder(SMSJob)


def validate_job(job: SMSJob) -> SMSJob:
    """Check a Struct built in Python against the constraints, as the worker will.

    Struct constructors do not run ``Meta`` checks, so the creators round-trip the job
    through msgpack before it can reach Redis. msgspec's messages name the field
    (``at `$.code```) without echoing its value, so they are safe to show.
    """
    try:
        return _decoder.decode(_encoder.encode(job))
    except msgspec.ValidationError as exc:
        raise PayloadError(f"invalid SMS job: {exc}") from None
