"""A queue's partitions: the stored count, where a job lives, the keys of each partition.

A partitioned queue is N copies of the one-slot layout of ``keys.py`` plus this small
routing layer. Partition 0 is the queue's home: its keys are those of a queue without
partitions, and queue-wide state lives there (the stored count in the ``meta`` hash,
the queue-wide token bucket). The count is stored when the queue is first written to
(first writer wins, ``lua/adopt_partitions``); ``Queue(name)`` adopts it, and an
explicit different count fails at first use with one line naming the stored one.

Processes re-read the stored count every ``RECHECK_S`` seconds, so a queue grown by an
operator (:func:`grow_partitions`, ``python -m streamq partitions --grow``) is picked up
by running producers and workers without a restart. Earlier counts are kept as the
queue's history: a job id is looked up in its partition under the current count, then
under each earlier one.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any

import anyio
import structlog

from .errors import ConfigError
from .keys import MAX_PARTITIONS, QueueKeys, check_partitions
from .routing import lookup_order, partition_of

if TYPE_CHECKING:
    from .queue import Queue

log = structlog.get_logger("streamq.partitions")

RECHECK_S = 10.0
"""How long a process trusts the partition count it read before reading it again."""

RunScript = Callable[[str, Sequence[str], Sequence[Any]], Awaitable[Any]]


def _text(v: Any) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)


class Layout:
    """The partition count a queue uses and the keys of each partition.

    ``count`` is the stored count once read (until then: the count asked for, or 1).
    """

    def __init__(self, name: str, requested: int | None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.name = name
        self.requested = None if requested is None else check_partitions(requested)
        self.home = QueueKeys(name)
        self.history: tuple[int, ...] = ()
        self._stored: int | None = None
        self._matched = False
        self._checked_at = float("-inf")
        self._clock = clock
        self._keys: list[QueueKeys] = [self.home]
        self._lock: anyio.Lock | None = None

    @property
    def count(self) -> int:
        if self._stored is not None:
            return self._stored
        return self.requested or 1

    @property
    def stored(self) -> int | None:
        """The count read from Redis (None: not read yet, or none stored)."""
        return self._stored

    def fresh(self) -> bool:
        """True while the stored count read last may be used without asking Redis again."""
        return self._stored is not None and self._clock() - self._checked_at < RECHECK_S

    async def refresh(self, run: RunScript, *, store: bool) -> int:
        """The count to use now: the one read last while it is fresh, else :meth:`resolve`
        (once for a burst of concurrent callers)."""
        if self.fresh():
            return self.count
        if self._lock is None:
            self._lock = anyio.Lock()
        async with self._lock:
            if self.fresh():
                return self.count
            return await self.resolve(run, store=store)

    async def resolve(self, run: RunScript, *, store: bool) -> int:
        """Read the stored count (storing ours, or 1, first when ``store`` and none is).
        Returns the count to use now."""
        k = self.home
        r = await run("adopt_partitions", [k.meta, *k.lanes, k.delayed, k.stats, k.dead],
                      [self.requested or 0, 1 if store else 0])
        stored = int(r[0])
        if stored == -1:
            raise ConfigError(
                f"queue {self.name!r} holds {int(r[1])} jobs from before its partition count "
                f"was stored: let them finish before opening it with partitions="
                f"{self.requested} (or open it with partitions=1)")
        if stored == 0:
            return self.requested or 1  # nothing stored, and this was a read: ask again later
        if not 1 <= stored <= MAX_PARTITIONS:
            raise ConfigError(f"queue {self.name!r} has a malformed partition count in Redis: "
                              f"{stored}")
        history = tuple(int(x) for x in _text(r[1]).split(",") if x)
        if self.requested is not None and not self._matched and stored != self.requested:
            hint = (f"; grow it with: python -m streamq partitions --queue {self.name} --grow "
                    f"{self.requested}" if self.requested > stored else "")
            raise ConfigError(
                f"queue {self.name!r} has {stored} partitions stored in Redis, not the "
                f"{self.requested} asked for: use partitions={stored}, or None to adopt it{hint}")
        self._matched = True
        if self._stored is not None and stored != self._stored:
            log.warning("queue.partitions_changed", queue=self.name, was=self._stored,
                        now=stored)
        self._stored = stored
        self.history = history
        self._checked_at = self._clock()
        return stored

    def keys(self, partition: int) -> QueueKeys:
        """The keys of one partition."""
        while len(self._keys) <= partition:
            self._keys.append(QueueKeys(self.name, len(self._keys)))
        return self._keys[partition]

    def all_keys(self, count: int | None = None) -> list[QueueKeys]:
        """The keys of every partition, 0 (the home) first."""
        n = self.count if count is None else count
        self.keys(n - 1)
        return self._keys[:n]

    def keys_for(self, job_id: str, count: int | None = None) -> QueueKeys:
        """The keys of the partition a new job with this id goes to."""
        return self.keys(partition_of(job_id, self.count if count is None else count))

    def lookup(self, job_id: str, count: int | None = None) -> list[QueueKeys]:
        """Where a job may be, most likely first: its partition under the current count,
        then under each earlier count."""
        n = self.count if count is None else count
        return [self.keys(p) for p in lookup_order(job_id, n, self.history)]


async def grow_partitions(queue: Queue, partitions: int) -> int:
    """Raise the stored partition count of ``queue`` to ``partitions`` (an operator step;
    ``python -m streamq partitions --grow N`` runs it). Returns the count before.

    Allowed only while no job of the queue is live (waiting, active or delayed: stop the
    producers and let the workers drain it; a pause does not empty it), because a live
    job's id must keep deduplicating where it was added. Finished jobs stay where they
    are and are still found by id (the old count joins the history), and dead letters
    are still listed and replayed. The new partitions get their consumer groups, and
    the pause flag when the queue is paused, before the count changes; running workers
    and producers pick the new count up within ``RECHECK_S`` seconds.
    """
    new = check_partitions(partitions)
    old = await queue.partition_count(store=True)
    if new <= old:
        raise ConfigError(f"queue {queue.name!r} has {old} partitions; a count can only grow "
                          f"(asked for {new})")
    counts = await queue.counts()
    live = counts["waiting"] + counts["active"] + counts["delayed"]
    if live:
        raise ConfigError(
            f"queue {queue.name!r} has {live} live jobs (waiting, active or delayed): stop "
            "adding, let the workers drain it, then grow it")
    paused = await queue.is_paused()
    layout = queue.layout
    for p in range(old, new):
        await queue.prepare_partition(layout.keys(p), paused=paused)
    k = layout.home
    r = await queue.run_script("grow_partitions", [k.meta], [old, new])
    if int(r[0]) != 1:
        raise ConfigError(f"queue {queue.name!r}: its partition count changed meanwhile "
                          f"(now {int(r[1])}); nothing grown")
    await layout.resolve(queue.run_script, store=False)
    log.warning("queue.partitions_grown", queue=queue.name, was=old, now=new)
    return old


__all__ = ["RECHECK_S", "Layout", "grow_partitions"]
