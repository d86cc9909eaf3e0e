"""Which queues exist in a Redis: found by a SCAN, never by a key producers must write.

Every queue has a lane stream ``streamq:{<name>}:lane:<priority>`` from its first job
(or the first start of a worker), so one SCAN for ``keys.DISCOVERY_PATTERN`` finds them
all.
Producers and workers write nothing outside their queue's own keys for this, so the
least-privilege ACLs (``~streamq:{<queue>}:*``) stay as they are; the one who scans
(the dashboard) needs ``+scan`` on ``~streamq:*``.

Cost: one pass over the whole keyspace in batches of ``SCAN_BATCH`` keys (about a
millisecond of Redis time per batch), so callers cache the result and repeat it
rarely (the dashboard: at start, then every ``--rescan`` seconds).
"""

from __future__ import annotations

from typing import Any

from .keys import BREAKER_PATTERN, DISCOVERY_PATTERN, breaker_of_key, queue_of_key

SCAN_BATCH = 1000


async def find_queues(redis: Any) -> list[str]:
    """The names of the queues in this Redis, sorted."""
    found: set[str] = set()
    async for key in redis.scan_iter(match=DISCOVERY_PATTERN, count=SCAN_BATCH):
        name = queue_of_key(key.decode("utf-8", "replace") if isinstance(key, bytes) else str(key))
        if name is not None:
            found.add(name)
    return sorted(found)


async def find_breakers(redis: Any) -> dict[str, list[str]]:
    """The downstreams (SMS providers) with a breaker hash, per queue: those that have
    counted a failure at least once (a provider that never failed has no hash). The same
    kind of SCAN as ``find_queues``, for ``keys.BREAKER_PATTERN``."""
    found: dict[str, set[str]] = {}
    async for key in redis.scan_iter(match=BREAKER_PATTERN, count=SCAN_BATCH):
        hit = breaker_of_key(key.decode("utf-8", "replace") if isinstance(key, bytes) else str(key))
        if hit is not None:
            found.setdefault(hit[0], set()).add(hit[1])
    return {q: sorted(names) for q, names in sorted(found.items())}


__all__ = ["SCAN_BATCH", "find_breakers", "find_queues"]
