"""Handlers for ``python -m streamq.worker --handler tests.chaos.handlers:NAME``."""

from __future__ import annotations

from streamq import Job


async def noop(job: Job) -> None:
    """Accept every job and do nothing."""
