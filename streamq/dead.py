"""Dead letters as users read them."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from .codec import Codec
from .errors import PayloadError
from .job import ms_to_dt


@dataclass(frozen=True, slots=True)
class DeadLetter:
    entry_id: str
    job_id: str
    error: str
    attempts: int
    failed_at: datetime | None
    data: Any
    """The decoded payload, or the raw bytes when it cannot be decoded (an encrypted payload
    without its key stays the sealed bytes)."""
    partition: int = 0
    """The partition whose dead-letter stream holds it (0 for a queue without partitions)."""

    @property
    def ref(self) -> str:
        """Names the letter across partitions: the entry id, with ``@<partition>`` after it
        outside partition 0. ``Queue.dead_letters(after="(" + ref)`` lists the next ones."""
        return self.entry_id if self.partition == 0 else f"{self.entry_id}@{self.partition}"


def parse_dead_entries(entries: list[Any], codec: Codec, partition: int = 0) -> list[DeadLetter]:
    out: list[DeadLetter] = []
    for entry_id, fields in entries:
        f = {k.decode(): v for k, v in fields.items()}
        raw = f.get("d", b"")
        job_id = f.get("j", b"").decode("utf-8", "replace")
        try:
            data: Any = codec.decode(raw, job_id)
        except PayloadError:
            data = raw
        out.append(
            DeadLetter(
                entry_id=entry_id.decode(),
                job_id=job_id,
                error=f.get("e", b"").decode("utf-8", "replace"),
                attempts=int(f.get("n", b"0") or 0),
                failed_at=ms_to_dt(f.get("f", b"0").decode()),
                data=data,
                partition=partition,
            )
        )
    return out
