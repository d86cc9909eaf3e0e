"""The payload union: tags, constraints a raw payload must meet, and the public names."""

from __future__ import annotations

import types

import msgspec
import pytest

import streamq.sms
from streamq.errors import PayloadError
from streamq.sms import OTPSMS, NotificationSMS, Recipient, SMSJob, WelcomeSMS
from streamq.sms.types import validate_job

TO = Recipient(phone_number="+254712345678", name="Amina")


def decode(doc: dict[str, object]) -> SMSJob:
    raw = msgspec.msgpack.encode(doc)
    job: SMSJob = msgspec.msgpack.decode(raw, type=SMSJob)
    return job


def base(**fields: object) -> dict[str, object]:
    return {"id": "abc", "timestamp": 1_700_000_000_000,
            "recipient": {"phone_number": "+254712345678"}, **fields}


def test_tagged_union_round_trip() -> None:
    jobs: list[SMSJob] = [
        WelcomeSMS(id="a", timestamp=1, recipient=TO, user_name="Alice"),
        OTPSMS(id="b", timestamp=2, recipient=TO, code="1234", expiry_minutes=5),
        NotificationSMS(id="c", timestamp=3, recipient=TO, message="hi", metadata={"k": "v"}),
    ]
    for job in jobs:
        raw = msgspec.json.encode(job)
        assert msgspec.json.decode(raw, type=SMSJob) == job
    assert msgspec.json.decode(msgspec.json.encode(jobs[0]))["type"] == "welcome"
    assert msgspec.to_builtins(jobs[1])["type"] == "otp"
    assert msgspec.to_builtins(jobs[2])["type"] == "notification"


def test_defaults() -> None:
    otp = decode(base(type="otp", code="123456"))
    assert isinstance(otp, OTPSMS) and otp.expiry_minutes == 10
    note = decode(base(type="notification", message="hi"))
    assert isinstance(note, NotificationSMS) and note.metadata is None


@pytest.mark.parametrize(
    ("doc", "where"),
    [
        (base(type="fax"), "$.type"),
        ({"type": "welcome", "id": "a", "timestamp": 1, "user_name": "A"}, "recipient"),
        (base(type="welcome", user_name=5), "$.user_name"),
        (base(type="welcome", user_name=""), "$.user_name"),
        (base(type="otp", code="12"), "$.code"),
        (base(type="otp", code="12345678901"), "$.code"),
        (base(type="otp", code="12ab"), "$.code"),
        (base(type="otp", code="1234", expiry_minutes=0), "$.expiry_minutes"),
        (base(type="otp", code="1234", expiry_minutes=1441), "$.expiry_minutes"),
        (base(type="notification", message="x" * 1601), "$.message"),
        (base(type="notification", message=""), "$.message"),
        (base(type="notification", message="hi", metadata={"k": "v" * 300}), "$.metadata"),
        ({**base(type="welcome", user_name="A"), "recipient": {"phone_number": "+1"}},
         "$.recipient.phone_number"),
        ({**base(type="welcome", user_name="A"), "recipient": {"phone_number": "0712345678"}},
         "$.recipient.phone_number"),
        ({**base(type="welcome", user_name="A"), "timestamp": -1}, "$.timestamp"),
        ({**base(type="welcome", user_name="A"), "id": "has space"}, "$.id"),
    ],
)
def test_raw_payload_constraints(doc: dict[str, object], where: str) -> None:
    with pytest.raises(msgspec.ValidationError, match=where.replace("$", r"\$")) as info:
        decode(doc)
    # msgspec names the field without echoing the value (an OTP code is a secret)
    if doc.get("code"):
        assert str(doc["code"]) not in str(info.value)


def test_validate_job_checks_python_built_structs() -> None:
    # Struct constructors do not check Meta constraints; validate_job does.
    job = OTPSMS(id="a", timestamp=1, recipient=TO, code="98")
    with pytest.raises(PayloadError, match=r"\$\.code") as info:
        validate_job(job)
    assert "98" not in str(info.value).replace("$.code", "")
    good = WelcomeSMS(id="a", timestamp=1, recipient=TO, user_name="Alice")
    assert validate_job(good) == good


def test_public_names() -> None:
    spec_names = {
        "create_welcome_sms_job", "create_otp_sms_job", "create_notification_sms_job",
        "Recipient", "TemplateResult", "render_welcome_sms", "render_otp_sms",
        "render_notification_sms", "SMSJob", "WelcomeSMS", "OTPSMS", "NotificationSMS",
    }
    exported = streamq.sms.__all__
    assert spec_names <= set(exported)
    assert exported == sorted(exported)
    assert len(exported) == len(set(exported))
    for name in exported:
        assert getattr(streamq.sms, name) is not None
    # __all__ is complete: every public module-level name of the package is listed
    public = {
        name
        for name, value in vars(streamq.sms).items()
        if not name.startswith("_") and not isinstance(value, types.ModuleType)
    }
    assert public - {"annotations"} == set(exported)
