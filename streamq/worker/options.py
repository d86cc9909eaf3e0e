"""The checks a ``Worker``'s arguments pass at construction: one ``ConfigError`` line each.

A value that cannot work (a burst below one token never starts a job, a heartbeat no
more often than the visibility timeout lets running jobs be taken over) is refused
here rather than discovered as a stuck or duplicating queue.
"""

from __future__ import annotations

from ..errors import ConfigError
from ..validate import MAX_DELAY_S, int_value, number_value, seconds_value


def check_worker_options(
    *,
    concurrency: int,
    rate_limit: float | None,
    burst: float | None,
    visibility_timeout: float,
    heartbeat_interval: float | None,
    reclaim_interval: float | None,
    max_stalled: int,
    shutdown_grace: float,
    max_retry_delay: float,
    consumer_prune_after: float,
    name: str | None,
    job_timeout: float | None,
) -> None:
    int_value("concurrency", concurrency, minimum=1)
    tokens = None if burst is None else number_value("burst (tokens)", burst, minimum=1)
    if rate_limit is not None:
        rate = number_value("rate_limit (jobs/s; None for no limit)", rate_limit, minimum=0,
                            strict=True)
        # the bucket's key lives as long as a full refill takes: keep that finite and sane
        refill = (max(1.0, rate) if tokens is None else tokens) / rate
        if refill > MAX_DELAY_S:
            raise ConfigError(f"rate_limit {rate:g} jobs/s with burst {tokens or max(1.0, rate):g}"
                              f" takes {refill:g}s to refill; at most {MAX_DELAY_S:g}s")
    vt = seconds_value("visibility_timeout", visibility_timeout, positive=True)
    if heartbeat_interval is not None:
        hb = seconds_value("heartbeat_interval", heartbeat_interval, positive=True)
        if hb >= vt:
            raise ConfigError(f"heartbeat_interval ({hb:g}s) must be below visibility_timeout "
                              f"({vt:g}s): running jobs would look stalled and be taken over")
    if reclaim_interval is not None:
        seconds_value("reclaim_interval", reclaim_interval, positive=True)
    int_value("max_stalled", max_stalled, minimum=1)
    seconds_value("shutdown_grace", shutdown_grace)
    seconds_value("max_retry_delay", max_retry_delay)
    seconds_value("consumer_prune_after", consumer_prune_after)
    if name is not None and (not isinstance(name, str) or not name.strip()):
        raise ConfigError("name (the consumer name) must be a non-empty string")
    if job_timeout is not None:
        seconds_value("job_timeout", job_timeout, positive=True)


__all__ = ["check_worker_options"]
