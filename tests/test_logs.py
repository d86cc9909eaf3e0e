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
