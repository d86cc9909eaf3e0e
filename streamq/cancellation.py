"""Telling a real cancellation from a stray ``CancelledError``.

A handler (or a hook) may raise ``CancelledError`` without anyone cancelling the task
running it: it awaited a future some library cancelled, or re-raised one it caught.
Treated as a cancellation, that stops a worker's runner task for good (and with it the
worker). ``cancelled_from_outside()`` answers whether the current task is really being
cancelled: an enclosing anyio cancel scope was cancelled (or its deadline passed), or
asyncio holds a cancel request for the task (``Task.cancel()`` from outside anyio).
"""

from __future__ import annotations

import asyncio
import math

import anyio


def cancelled_from_outside() -> bool:
    """True when the task is being cancelled, False for a stray ``CancelledError``.

    Call it in an ``except CancelledError`` block: re-raise when True, otherwise the
    error is the raising code's own failure."""
    if anyio.current_effective_deadline() == -math.inf:
        return True  # an enclosing cancel scope was cancelled (anyio: -inf when so)
    try:
        task = asyncio.current_task()
    except RuntimeError:  # no asyncio loop (another backend): trust the scopes
        return False
    return task is not None and task.cancelling() > 0


__all__ = ["cancelled_from_outside"]
