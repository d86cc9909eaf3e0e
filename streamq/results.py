"""Stored results: a handler's return value kept with the job's completed record.

A completed record is one compact string written by ``lua/complete.lua`` (a batched hot
path): ``completed|attempt|max|created|finished|type|`` followed by a *tail*:

    ``|``                 the handler returned None (nothing stored: a None costs nothing)
    ``r|<bytes>``         the result, encoded by the queue's codec (``Codec.encode_value``)
    ``x|<reason>``        the result was dropped: it could not be encoded, or it was over
                          ``QueueDefaults.max_result_bytes``

A downstream's delivery report (an SMS gateway's callback, ``lua/delivery_report.lua``)
lives in a hash of its own next to the record, written after the job ran and without
opening the result (which may be sealed); ``Queue.get_job`` adds it to a completed job's
result as ``result["delivery"]`` (:func:`with_delivery`).

A dropped result does not fail the job: the handler's side effect has happened, and
running it again to get a smaller result would repeat it. The job completes, a
``job.result_dropped`` warning is logged, and ``JobInfo.result_error`` says why
(``JobInfo.result`` is None). The result lives exactly as long as the record
(``completed_ttl_s``): it is the record.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import structlog

from .codec import Codec
from .errors import PayloadError

log = structlog.get_logger("streamq.results")

NO_RESULT = b"|"
RESULT = b"r"
DROPPED = b"x"
MAX_REASON_CHARS = 300


def result_tail(codec: Codec, max_bytes: int, queue: str, job_id: str, result: Any) -> bytes | None:
    """The record tail for a non-None result: ``r|<bytes>``, or ``x|<reason>`` (logged as
    a warning) when it cannot be kept. None when results are off (``max_bytes`` 0)."""
    if max_bytes <= 0:
        return None
    try:
        raw = codec.encode_value(result, job_id, max_bytes=max_bytes)
    except PayloadError as exc:
        reason = " ".join(str(exc).split())[:MAX_REASON_CHARS]
        log.warning("job.result_dropped", queue=queue, job_id=job_id, reason=reason,
                    note="the job completed; its result is not kept")
        return DROPPED + b"|" + reason.encode()
    return RESULT + b"|" + raw


def read_result(codec: Codec, marker: bytes | str, tail: bytes, job_id: str
                ) -> tuple[Any, str | None]:
    """(result, result_error) of a completed record from its tail's marker and rest."""
    mark = marker.encode() if isinstance(marker, str) else marker
    if mark == RESULT:
        try:
            return codec.decode_value(tail, job_id), None
        except PayloadError as exc:
            return None, str(exc)
    if mark == DROPPED:
        return None, tail.decode("utf-8", "replace")
    return None, None


DELIVERY_FIELDS: dict[str, str] = {
    "s": "status", "n": "network_code", "f": "failure_reason", "c": "retry_count",
    "t": "at", "m": "message_id", "p": "provider",
}
"""The delivery hash's fields (lua/delivery_report.lua) and their names in the result."""


def read_delivery(fields: dict[str, str]) -> dict[str, Any] | None:
    """The delivery report from get_job's ``d.*`` fields (prefix removed), or None.
    Empty fields read as None, the retry count as an int, the time as ISO 8601 UTC."""
    if not fields.get("s"):
        return None
    out: dict[str, Any] = {}
    for short, name in DELIVERY_FIELDS.items():
        raw = fields.get(short, "")
        value: Any = raw or None
        if short == "c" and raw.isdigit():
            value = int(raw)
        elif short == "t" and raw.isdigit():
            at = datetime.fromtimestamp(int(raw) / 1000, UTC)
            value = at.isoformat(timespec="milliseconds").replace("+00:00", "Z")
        out[name] = value
    return out


def with_delivery(result: Any, delivery: dict[str, Any] | None) -> Any:
    """A completed job's result with its delivery report under ``"delivery"``: added to a
    dict result, or the only key when nothing else could be read (no result kept, or a
    sealed one this process cannot open); any other result is left as it is."""
    if delivery is None:
        return result
    if isinstance(result, dict):
        return {**result, "delivery": delivery}
    if result is None:
        return {"delivery": delivery}
    return result


def split_record(record: bytes) -> tuple[list[str], bytes]:
    """A record's seven leading fields (state ... dead id) as text and the rest as bytes
    (a failed job's error, a completed job's result): a result may hold any byte."""
    parts = record.split(b"|", 7)
    head = [p.decode("utf-8", "replace") for p in parts[:7]]
    return head, parts[7] if len(parts) > 7 else b""


__all__ = ["DELIVERY_FIELDS", "NO_RESULT", "read_delivery", "read_result", "result_tail",
           "split_record", "with_delivery"]
