"""Which partition of a queue holds a job: a function of the job id alone.

``get_job``, ``cancel`` and ``replay_dead`` need only the id, custom ids included. An id
may carry a *routing tag* the way a Redis Cluster key carries a hash tag: when it holds
a non-empty ``{...}``, only the text inside the first braces is hashed, so
``order-{42}-sms`` and ``order-{42}-email`` always share a partition (schedules and flows
rely on that to keep related jobs in one slot).

The hash is BLAKE2b (64 bits, personalised), not the crc32 that picks a job's index
bucket inside its partition (``keys.QueueKeys.bucket``): with the same hash, partition
p of N would only ever see the buckets b with b = p (mod N) when N divides 2048, and
its index hashes would grow twice as large. The mapping must never change between
versions (a job added by one version is looked up by the next): the tests pin it.
"""

from __future__ import annotations

import hashlib

_PERSON = b"streamq-part"
_BASE = hashlib.blake2b(digest_size=8, person=_PERSON)


def routing_tag(job_id: str) -> str:
    """The part of the id that is hashed: the text in its first non-empty ``{...}``, else
    the whole id (Redis Cluster's rule for hash tags)."""
    start = job_id.find("{")
    if start >= 0:
        end = job_id.find("}", start + 1)
        if end > start + 1:
            return job_id[start + 1 : end]
    return job_id


def partition_of(job_id: str, partitions: int) -> int:
    """The partition (0..partitions-1) of a job id."""
    if partitions == 1:
        return 0
    if "{" in job_id:
        job_id = routing_tag(job_id)
    h = _BASE.copy()
    h.update(job_id.encode())
    return int.from_bytes(h.digest(), "big") % partitions


def lookup_order(job_id: str, partitions: int, history: tuple[int, ...] = ()) -> list[int]:
    """Where to look for a job: its partition under the current count first, then under
    each earlier count (newest first), for jobs added before the queue grew."""
    order = [partition_of(job_id, partitions)]
    for n in reversed(history):
        p = partition_of(job_id, n)
        if p not in order:
            order.append(p)
    return order


__all__ = ["lookup_order", "partition_of", "routing_tag"]
