"""The worker's fetch hold: stop claiming while a dependency every job needs is down.

A handler raises ``Defer(delay, reason, hold=True)`` when it finds that nothing it would
do can succeed now (the engine does not know why: for the SMS worker, every provider's
circuit breaker is open, e.g. after the provider refused the credentials). The job goes
back to the delayed set without using an attempt, and the worker's fetch loop asks
this object before each claim:

* not held: claim as usual;
* held, the delay not over: claim nothing (the backlog stays in its lanes, untouched);
* held, the delay over: claim **one** job, the probe, and no other until the probe has
  finished. A probe that ends in another ``Defer(hold=True)`` starts the next hold
  period; any other outcome (completed, failed, retried, dead-lettered) means the
  dependency answered again: the hold is released and the worker fetches as usual.

So a worker with a broken dependency costs one job claim per hold period, not a claim
and hand-back per job at the rate limit. Outcomes of jobs that were already running
when the hold began do not release it: only a probe's does. The hold is per worker; the
handler side keeps whatever shared state decides it (the SMS breakers live in Redis).

Logging: the start of a hold is one error line (``worker.held``), later holds of the
same episode at most one warning per ``log_every`` seconds (``worker.still_held``), the
end one warning (``worker.hold_released``, with how long it lasted).
"""

from __future__ import annotations

import time
from collections.abc import Callable

import anyio
import structlog

from ..job import Job

log = structlog.get_logger("streamq.worker")

DEFAULT_LOG_EVERY_S = 60.0


class FetchHold:
    """Whether the worker may claim now; see the module docstring."""

    def __init__(self, queue_name: str, *, log_every: float = DEFAULT_LOG_EVERY_S,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.queue_name = queue_name
        self.log_every = log_every
        self._clock = clock
        self._until: float | None = None
        self._since: float | None = None
        self._last_log = 0.0
        self._probe: Job | None = None
        self._probe_reheld = False
        self._probe_out = False
        self._changed = anyio.Event()
        self.reason = ""
        self.holds = 0
        """Hold periods started since the worker began (a re-hold after a failed probe counts)."""

    # -- state ------------------------------------------------------------------------
    @property
    def held(self) -> bool:
        return self._until is not None

    @property
    def held_for(self) -> float:
        """Seconds since this hold episode began (0 when not held)."""
        return 0.0 if self._since is None else max(0.0, self._clock() - self._since)

    @property
    def retry_in(self) -> float:
        """Seconds until the next probe may be claimed (0 when not held or due)."""
        return 0.0 if self._until is None else max(0.0, self._until - self._clock())

    # -- the fetch loop's side --------------------------------------------------------
    def limit(self) -> int | None:
        """How many jobs the fetch loop may claim now: None = no limit (not held), 0 =
        none (wait with :meth:`wait`), 1 = one probe."""
        if self._until is None:
            return None
        if self._probe_out or self._clock() < self._until:
            return 0
        return 1

    async def wait(self, at_most: float) -> None:
        """Wait until the hold changes, the probe may go, or ``at_most`` seconds pass."""
        wait = at_most
        if self._until is not None and not self._probe_out:
            wait = min(wait, max(0.0, self._until - self._clock()))
        event = self._changed
        with anyio.move_on_after(wait):
            await event.wait()

    def claimed(self, job: Job | None) -> None:
        """The fetch loop claimed in probe mode: ``job`` is the probe (None: nothing was
        waiting, so no probe is out)."""
        if self._until is None:
            return
        self._probe = job
        self._probe_reheld = False
        self._probe_out = job is not None

    # -- the runners' side -------------------------------------------------------------
    def hold(self, job: Job, seconds: float, reason: str) -> None:
        """A job's handler raised ``Defer(hold=True)``: hold fetching for ``seconds``."""
        now = self._clock()
        first = self._until is None
        self._until = now + max(0.0, seconds)
        self.reason = reason
        self.holds += 1
        if job is self._probe:
            self._probe_reheld = True
        if first:
            self._since = now
            self._last_log = now
            log.error("worker.held", queue=self.queue_name, reason=reason,
                      probe_in=round(seconds, 3),
                      note="delivery holds: jobs stay queued and use no attempt; one job "
                      "probes after each hold period, and fetching resumes when one succeeds")
        elif now - self._last_log >= self.log_every:
            self._last_log = now
            log.warning("worker.still_held", queue=self.queue_name, reason=reason,
                        held_for=round(now - (self._since or now), 1),
                        probe_in=round(seconds, 3))
        self._notify()

    def finished(self, job: Job) -> None:
        """A job left its runner, with whatever outcome."""
        if job is not self._probe:
            return
        reheld = self._probe_reheld
        self._probe = None
        self._probe_out = False
        self._probe_reheld = False
        if not reheld:
            self.release()
        else:
            self._notify()

    def release(self) -> None:
        """End the hold now (a probe finished with another outcome, or by hand)."""
        if self._until is None:
            return
        held_for = self.held_for
        self._until = None
        self._since = None
        self._probe = None
        self._probe_out = False
        log.warning("worker.hold_released", queue=self.queue_name, held_for=round(held_for, 3),
                    reason=self.reason)
        self.reason = ""
        self._notify()

    def _notify(self) -> None:
        self._changed.set()
        self._changed = anyio.Event()


__all__ = ["FetchHold"]
