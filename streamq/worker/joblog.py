"""One log line when a job starts and one when it finishes (duration and outcome).

Debug lines, as arq and Celery print them: ``python -m streamq.worker --log-level debug``
(or ``STREAMQ_LOG_LEVEL=debug``) turns them on. They are worker hooks, attached only
when asked for, so a worker without them does not pay for them.

    job.started   queue=emails job_id=... type=... attempt=1 waited_s=0.004
    job.finished  queue=emails job_id=... type=... attempt=1 outcome=completed duration_s=0.031
    job.finished  ... outcome=retrying duration_s=0.002 retry_in_s=2.0 error='TimeoutError: ...'
    job.finished  ... outcome=dead duration_s=0.001 error='no recipient'

``completed`` is logged once the job is acknowledged in Redis; errors are the one-line,
redacted reasons the worker stores.
"""

from __future__ import annotations

from typing import Any

import structlog

from ..events import WorkerEvent
from .core import Worker

log = structlog.get_logger("streamq.worker")


def _fields(event: WorkerEvent) -> dict[str, Any]:
    return {"queue": event.queue, "job_id": event.job_id, "type": event.job_type,
            "attempt": event.attempt}


def _duration(event: WorkerEvent) -> float | None:
    return None if event.run_s is None else round(event.run_s, 4)


def _started(event: WorkerEvent) -> None:
    waited = None if event.wait_s is None else round(event.wait_s, 4)
    log.debug("job.started", **_fields(event), waited_s=waited)


def _completed(event: WorkerEvent) -> None:
    log.debug("job.finished", **_fields(event), outcome="completed", duration_s=_duration(event))


def _retrying(event: WorkerEvent) -> None:
    delay = None if event.delay is None else round(event.delay, 3)
    log.debug("job.finished", **_fields(event), outcome="retrying", duration_s=_duration(event),
              retry_in_s=delay, error=event.error)


def _dead(event: WorkerEvent) -> None:
    log.debug("job.finished", **_fields(event), outcome="dead", duration_s=_duration(event),
              error=event.error)


def log_jobs(worker: Worker) -> None:
    """Log a start and a finish line (debug level) for every job ``worker`` runs."""
    worker.on("active", _started)
    worker.on("completed", _completed)
    worker.on("retrying", _retrying)
    worker.on("dead", _dead)


__all__ = ["log_jobs"]
