"""streamq: an asyncio job queue on Redis Streams.

    from streamq import Queue, Worker, JobOptions

    async with Queue("emails") as q:
        ref = await q.add({"to": "a@example.com"}, JobOptions(priority="high"))

    async def handler(job): ...
    await Worker(q, handler, concurrency=5).run()
"""

from .dead import DeadLetter
from .errors import (
    ChildFailed,
    ConfigError,
    Defer,
    JobIdError,
    LeaseLost,
    NotReplicated,
    PayloadError,
    PermanentError,
    QueueFull,
    RedisUnavailable,
    RetryAfter,
    StreamqError,
)
from .events import WorkerEvent
from .flows import FlowJob
from .job import Backoff, Job, JobInfo, JobOptions, JobRef, JobState
from .queue import Queue
from .schedules import Schedule
from .settings import QueueDefaults
from .worker import BatchOptions, Worker

__all__ = [
    "Backoff",
    "BatchOptions",
    "ChildFailed",
    "ConfigError",
    "DeadLetter",
    "Defer",
    "FlowJob",
    "Job",
    "JobIdError",
    "JobInfo",
    "JobOptions",
    "JobRef",
    "JobState",
    "LeaseLost",
    "NotReplicated",
    "PayloadError",
    "PermanentError",
    "Queue",
    "QueueDefaults",
    "QueueFull",
    "RedisUnavailable",
    "RetryAfter",
    "Schedule",
    "StreamqError",
    "Worker",
    "WorkerEvent",
]

__version__ = "0.1.0"
