"""One run of a handler: its per-job timeout, and stray cancellations turned into failures.

How an attempt ends, as the worker sees it (``run_with_timeout`` for jobs with a timeout,
the worker's own ``await handler(job)`` otherwise):

- the handler's value: success;
- ``AttemptTimedOut``: the attempt ran past its timeout and was cut (a failed attempt);
- ``HandlerCancelled``: the handler raised ``CancelledError`` although the worker was
  not cancelling it (a failed attempt, so a poison job cannot stop a worker);
- the handler's own exception: a failed attempt;
- ``CancelledError``: the worker itself is being cancelled (shutdown cut, stop): the
  attempt was interrupted, not failed, and the error propagates.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import anyio

from ..cancellation import cancelled_from_outside

T = TypeVar("T")


class AttemptFailed(Exception):
    """An attempt ended by the worker's judgement, not by an exception of the handler's
    own type; the message is the job's one-line error."""


class AttemptTimedOut(AttemptFailed):
    def __init__(self, timeout: float) -> None:
        super().__init__(f"timed out after {timeout:g}s")
        self.timeout = timeout


class HandlerCancelled(AttemptFailed):
    def __init__(self) -> None:
        super().__init__("CancelledError raised by the handler (not a worker cancellation)")


async def run_with_timeout(handler: Callable[[T], Awaitable[Any]], job: T,
                           cut_after: float) -> Any:
    """Await ``handler(job)`` (a job, or a batch's list of jobs) inside a cancel scope
    of our own that cuts it after ``cut_after`` seconds. (Jobs without a timeout are
    awaited directly by the worker, which turns a stray ``CancelledError`` into
    ``HandlerCancelled`` itself: the hot path pays for neither the scope nor this call.)"""
    with anyio.CancelScope(deadline=anyio.current_time() + cut_after):
        try:
            return await handler(job)
        except anyio.get_cancelled_exc_class():
            if cancelled_from_outside():
                # our deadline (the scope swallows its own cancellation: we go on below)
                # or the worker's own cut (it propagates through the scope)
                raise
            raise HandlerCancelled() from None
    # only reached when the scope swallowed its deadline's cancellation (a handler that
    # returns, even late, returns from inside the scope)
    raise AttemptTimedOut(cut_after)


__all__ = ["AttemptFailed", "AttemptTimedOut", "HandlerCancelled", "run_with_timeout"]
