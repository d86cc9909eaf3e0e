"""Log hygiene of the structlog set-up the command lines use."""

from __future__ import annotations

import io
import json

import structlog

from streamq.logs import configure_logging


def test_json_logs_mask_numbers_drop_secrets_and_keep_our_own_fields() -> None:
    out = io.StringIO()
    configure_logging("json", "debug", stream=out)
    try:
        log = structlog.get_logger("t")
        log.info("job.retry_scheduled", queue="sms", consumer="host-4812345-ab12cd",
                 error="provider refused +254712345678 (0712 345 678)", code="493817",
                 api_key="sk-live-secret", message="Your code is 493817")
        line = json.loads(out.getvalue().strip())
    finally:
        structlog.reset_defaults()
    assert line["error"] == "provider refused +2547****678 (0712****678)"
    assert line["code"] == line["api_key"] == line["message"] == "***"
    assert line["consumer"] == "host-4812345-ab12cd"  # our own value, not a phone number
    assert line["timestamp"].startswith("20") and "*" not in line["timestamp"]
    assert "493817" not in out.getvalue() and "secret" not in out.getvalue()


def test_provider_codes_and_message_ids_stay_readable_while_numbers_and_otps_do_not() -> None:
    out = io.StringIO()
    configure_logging("json", "debug", stream=out)
    try:
        log = structlog.get_logger("t")
        # what the SMS dispatcher logs on a refusal and on a success
        log.warning("sms.send_failed", provider="salum", code=1006, to="+2547****678",
                    error="Salum 1006 invalid credentials for 254712345678")
        log.info("sms.sent", provider="salum", message_id="829084211734", to="+2547****678")
        log.info("sms.mock_sent", message_id="3f2a90817263544b8c0d1e2f3a4b5c6d")
        log.info("otp.leak", code="482913", http_code=503)
        failed, sent, mock, otp = (json.loads(ln) for ln in out.getvalue().splitlines())
    finally:
        structlog.reset_defaults()
    assert failed["code"] == 1006
    assert failed["error"] == "Salum 1006 invalid credentials for 2547****678"
    assert sent["message_id"] == "829084211734"
    assert mock["message_id"] == "3f2a90817263544b8c0d1e2f3a4b5c6d"
    assert otp["code"] == "***" and otp["http_code"] == 503
    assert "254712345678" not in out.getvalue() and "482913" not in out.getvalue()


def test_a_short_digit_run_in_free_text_is_masked_whole() -> None:
    from streamq.redact import redact_text

    # an 8-digit OTP code quoted by a provider: first-4/last-3 masking would show 7 digits
    assert redact_text("code 73915254 rejected") == "code ******** rejected"
    assert redact_text("+254712345678 and 0712345678") == "+2547****678 and 0712****678"
