"""Which queues exist: a registry set that every ``Queue`` writes its name to.

A ``Queue`` adds its name to the set ``keys.REGISTRY`` the first time it writes (its
first ``add``/``add_bulk``, or ``ensure_groups`` when a worker starts): one SADD per
``Queue`` object, not per job. Monitors (the dashboard) read the set instead of
scanning the keyspace. Queues used before the registry existed are found once by
``discover``: a SCAN for a key every queue has, whose finds are added to the set.
"""

from __future__ import annotations

from typing import Any

from .keys import DISCOVERY_PATTERN, REGISTRY, check_queue_name, queue_of_key

SCAN_BATCH = 1000


def _text(v: Any) -> str:
    return v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v)


async def register(redis: Any, name: str) -> None:
    """Record that queue ``name`` exists (idempotent)."""
    await redis.sadd(REGISTRY, check_queue_name(name))


async def known_queues(redis: Any) -> list[str]:
    """The names in the registry, sorted (names that are not valid queue names are skipped)."""
    names = {_text(m) for m in await redis.smembers(REGISTRY)}
    out = []
    for name in names:
        try:
            out.append(check_queue_name(name))
        except Exception:  # a foreign member: never shown, never used as a key
            continue
    return sorted(out)


async def discover(redis: Any) -> list[str]:
    """SCAN the keyspace once for queues (cost: one pass over every key, in batches), add
    what it finds to the registry and return the names found."""
    found: set[str] = set()
    async for key in redis.scan_iter(match=DISCOVERY_PATTERN, count=SCAN_BATCH):
        name = queue_of_key(_text(key))
        if name is not None:
            found.add(name)
    if found:
        await redis.sadd(REGISTRY, *sorted(found))
    return sorted(found)


__all__ = ["discover", "known_queues", "register"]
