"""The exceptions streamq raises, as one tree.

    StreamqError
    ├── ConfigError(ValueError)  a setting or option is missing or malformed (names it)
    ├── RedisUnavailable       Redis cannot be reached / authenticated at a URL
    ├── QueueFull              Redis refused a write: maxmemory reached (OOM)
    ├── NotReplicated          fewer replicas than ``min_replicas`` acknowledged an add
    ├── PayloadError(ValueError)  a payload cannot be encoded, is too large, or fails validation
    │   └── DecryptError       an encrypted payload cannot be opened (no key, unknown key id,
    │                          authentication failed); the reason never holds payload data
    ├── JobIdError(ValueError) a custom job id has a bad charset or length
    ├── LeaseLost              a worker's claim on an entry was taken over (fencing)
    ├── ScriptError            a Lua transition returned an unexpected reply
    └── ChildFailed            a flow's child failed for good or was cancelled (a value in
                               its parent's ``children_results()``, not raised by streamq)

Exceptions a *handler* raises to steer the worker:

    PermanentError             fail the job now, no retry (dead letter)
    RetryAfter                 transient failure; retry after the given delay
    Defer                      not now: back to the delayed set, no attempt used;
                               ``hold=True`` also pauses the worker's fetching
"""

from __future__ import annotations


class StreamqError(Exception):
    """Base class of every error streamq raises itself."""


class ConfigError(StreamqError, ValueError):
    """A setting is missing or malformed. The message names the setting, never a secret."""


class RedisUnavailable(StreamqError):
    """Redis could not be reached or refused the credentials at the (redacted) URL."""


class QueueFull(StreamqError):
    """Redis refused the write because it is out of memory (maxmemory, noeviction)."""


class NotReplicated(StreamqError):
    """An add of a queue with ``min_replicas=k`` was not acknowledged by k replicas in
    time (WAIT). The add may have happened: adding the same jobs again is safe while they
    are live, since a live job id is not added twice. ``acked`` replicas answered of the
    ``wanted``."""

    def __init__(self, message: str, *, acked: int = 0, wanted: int = 0) -> None:
        super().__init__(message)
        self.acked = acked
        self.wanted = wanted


class PayloadError(StreamqError, ValueError):
    """The job payload cannot be encoded, does not validate, or exceeds the size cap."""


class DecryptError(PayloadError):
    """An encrypted payload cannot be opened: no key configured, an unknown key id, or
    authentication failed (tampered, or copied from another job or queue). Permanent: the
    job is dead-lettered with this reason, which never holds payload data."""


class JobIdError(StreamqError, ValueError):
    """A custom job id is empty, too long, or uses characters outside the allowed set."""


class LeaseLost(StreamqError):
    """The entry is no longer owned by this worker: another worker reclaimed it."""


class ScriptError(StreamqError):
    """A Lua transition answered with a status this client does not know."""


class ChildFailed(StreamqError):
    """How a flow parent's ``children_results()`` shows a child that failed for good or
    was cancelled (policy "continue"): ``job_id``, ``error`` (its one-line reason) and
    ``state`` ("failed" or "cancelled"). A value, not raised: check with isinstance."""

    def __init__(self, job_id: str, error: str, state: str = "failed") -> None:
        super().__init__(f"child {job_id} {state}: {error}")
        self.job_id = job_id
        self.error = error
        self.state = state


class PermanentError(Exception):
    """Raised by a handler: the job failed for good and must not be retried."""


class RetryAfter(Exception):
    """Raised by a handler: a transient failure that should be retried after ``delay`` seconds.

    The delay replaces the exponential backoff for this retry (still capped by the
    worker's ``max_retry_delay``); the attempt still counts.
    """

    def __init__(self, delay: float, message: str = "") -> None:
        super().__init__(message or f"retry after {delay:g}s")
        self.delay = max(0.0, float(delay))


class Defer(Exception):
    """Raised by a handler: not now. The job did no work and goes back to the delayed
    set, due after ``delay`` seconds, **without using an attempt** (its attempt number,
    failure count and last error stay as they were).

    ``hold=True`` says more: nothing else this worker would claim can succeed either (a
    dependency every job needs is down, e.g. the SMS provider refuses the credentials).
    The worker then claims no new job for ``delay`` seconds, after which it claims one
    job at a time (a probe) until a probe finishes with any outcome other than another
    ``Defer(hold=True)``. Jobs stay queued meanwhile; the worker logs the hold once (then
    at a low rate), reports it in ``/healthz`` and metrics, and resumes by itself.

    The delay is capped by the worker's ``max_retry_delay``. A job may be deferred any
    number of times: a handler that must give up at some point (an OTP that expired)
    checks that itself before deferring.
    """

    def __init__(self, delay: float, reason: str = "", *, hold: bool = False) -> None:
        super().__init__(reason or f"deferred for {delay:g}s")
        self.delay = max(0.0, float(delay))
        self.hold = hold
