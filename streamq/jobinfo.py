"""``Queue.get_job``'s answer: the reply of lua/get_job.lua read into a ``JobInfo``, with
the result (``results.py``), the progress (``progress.py``) and, for a flow parent
waiting for its children, its flow hash (``flows/``)."""

from __future__ import annotations

from collections.abc import Awaitable
from typing import TYPE_CHECKING, Any, cast

from .job import JobInfo, JobState, ms_to_dt
from .keys import QueueKeys
from .priority import Priority, priority_of_lane
from .progress import decode_progress
from .results import read_delivery, read_result, with_delivery

if TYPE_CHECKING:
    from .queue import Queue

_PROGRESS_STATES = (JobState.ACTIVE, JobState.COMPLETED, JobState.FAILED)


def _text(v: Any) -> str:
    return v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v)


def _int(v: Any, default: int = 0) -> int:
    try:
        return int(v)
    except (TypeError, ValueError):
        return default


def _priority(lane: str | None) -> Priority | None:
    if lane is not None and lane.isdigit():
        return priority_of_lane(int(lane))
    return None


async def job_info(q: Queue, k: QueueKeys, job_id: str, reply: list[Any]) -> JobInfo | None:
    """A JobInfo from get_job.lua's reply {state, field, value, ...} (None if unreadable)."""
    try:
        st = JobState(_text(reply[0]))
    except ValueError:
        return None
    redis: Any = q.redis
    if st is JobState.WAITING_CHILDREN:
        got = await redis.hmget(k.flow(job_id), ["a", "t", "y", "l", "pend"])
        return JobInfo(id=job_id, state=st, attempts=0, max_attempts=_int(got[0]),
                       created_at=ms_to_dt(got[1]), job_type=_text(got[2] or b"") or None,
                       priority=_priority(_text(got[3]) if got[3] is not None else None),
                       pending_children=_int(got[4]))
    raw = {_text(reply[i]): reply[i + 1] for i in range(1, len(reply) - 1, 2)}
    f = {name: _text(v) for name, v in raw.items() if name != "e"}
    error: str | None = _text(raw["e"]) if raw.get("e") else None
    result: Any = None
    result_error: str | None = None
    if st is JobState.COMPLETED:
        error = None  # a completed record's last field is its result (results.py)
        result, result_error = read_result(q.codec, f.get("x", ""), raw.get("e") or b"", job_id)
        result = with_delivery(result, read_delivery(
            {name[2:]: v for name, v in f.items() if name.startswith("d.")}))
    attempts = _int(f.get("n"))
    progress: Any = None
    if st in _PROGRESS_STATES:
        stored = await cast(Awaitable[Any], redis.get(k.progress(job_id)))
        progress = decode_progress(stored, attempts + 1 if st is JobState.ACTIVE else attempts)
    return JobInfo(
        id=job_id,
        state=st,
        attempts=attempts,
        max_attempts=_int(f.get("a")),
        error=error,
        created_at=ms_to_dt(f.get("t")),
        finished_at=ms_to_dt(f.get("f")),
        due_at=ms_to_dt(f.get("due", "").split(".")[0]),
        priority=_priority(f.get("lane")),
        stalls=_int(f.get("s")),
        job_type=f.get("y") or None,
        result=result,
        result_error=result_error,
        progress=progress,
    )


__all__ = ["job_info"]
