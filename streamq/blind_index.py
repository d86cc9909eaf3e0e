"""A keyed blind index: find a queue's jobs by a secret term (a phone number) without
storing the term anywhere in Redis.

``Queue(..., blind_index=terms)`` takes a function of a payload returning its terms (the
SMS layer returns ``["e164:+254712345678"]``; the engine knows nothing of phone numbers).
For each term the enqueue transition adds the job id to a sorted set named by the term's
HMAC-SHA256 token (``streamq:{q}:bidx:<kid>:<token>``), atomically with the add. The
HMAC key is derived (HKDF) from an encryption key of the ring, and the key name carries
that key's id, so the index is versioned by key id:

- new entries are written under the active key id;
- :func:`find_jobs` looks under every key id of the ring, so a job indexed before a
  rotation is still found while its old key is configured;
- ``rotate-keys`` moves a rotated job's entries to the active key id in the same atomic
  transition that re-encrypts its payload (it knows the terms once it has opened it).

Entries expire with their jobs: an entry is scored with the latest time its job can still
exist in Redis (its due time, plus the longest record retention, plus an allowance for
time spent waiting), every write and every lookup prunes entries past their score, and
each set's TTL is kept at least as long as its newest entry, so an unused set vanishes.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from .crypto import KeyRing
from .errors import ConfigError
from .job import JobInfo
from .keys import QueueKeys

if TYPE_CHECKING:
    from .queue import Queue

Terms = Callable[[Any], Iterable[str]]
"""A payload's blind-index terms (e.g. its phone numbers in E.164)."""


class BlindIndex:
    """The blind index of one queue: its terms function and the ring its tokens come from."""

    __slots__ = ("horizon_ms", "keys", "queue", "ring", "terms")

    def __init__(self, terms: Terms, ring: KeyRing | None, queue: str, keys: QueueKeys,
                 horizon_s: float) -> None:
        if ring is None:
            raise ConfigError(
                f"queue {queue!r} has a blind index but no key is configured: set "
                "STREAMQ_ENCRYPTION_KEYS (its HMAC key is derived from the encryption keys)"
            )
        self.terms = terms
        self.ring = ring
        self.queue = queue
        self.keys = keys
        self.horizon_ms = max(1, round(horizon_s * 1000))
        """How long an entry outlives its job's due time (longest retention + allowance)."""

    def tokens(self, data: Any, kid: str | None = None) -> list[str]:
        """The distinct tokens of a payload's terms under key ``kid`` (default: the active
        one); the index set of a token is ``keys.blind_index(kid, token)`` of the job's
        partition."""
        kid = kid or self.ring.active
        out: list[str] = []
        for term in self.terms(data):
            token = self.ring.token(kid, self.queue, term)
            if token not in out:
                out.append(token)
        return out

    def index_keys(self, data: Any, kid: str | None = None) -> list[str]:
        """The index sets a payload belongs to, under key ``kid`` (default: the active one)."""
        kid = kid or self.ring.active
        return [self.keys.blind_index(kid, t) for t in self.tokens(data, kid)]

    def lookup_keys(self, term: str) -> list[str]:
        """The sets that may hold ``term``'s jobs: one per key id of the ring."""
        return [self.keys.blind_index(kid, self.ring.token(kid, self.queue, term))
                for kid in self.ring.kids]


def lookup_keys(queue: Queue, term: str) -> list[str]:
    """The index sets of ``term`` in ``queue``, one per configured key id."""
    ring = queue.codec.keyring
    if ring is None:
        raise ConfigError("searching the blind index needs the encryption keys: set "
                          "STREAMQ_ENCRYPTION_KEYS")
    return [queue.keys.blind_index(kid, ring.token(kid, queue.name, term)) for kid in ring.kids]


async def find_job_ids(queue: Queue, term: str) -> list[str]:
    """Ids of the jobs indexed under ``term`` whose entries have not expired (pruning the
    expired ones on the way)."""
    reply = await queue._run("index_lookup", lookup_keys(queue, term), [])
    return [v.decode() if isinstance(v, bytes) else str(v) for v in reply]


async def find_jobs(queue: Queue, term: str) -> list[JobInfo]:
    """The jobs of ``term`` that still exist, oldest first (a job whose record expired
    is left out even while its index entry lives on)."""
    found: list[JobInfo] = []
    for job_id in await find_job_ids(queue, term):
        info = await queue.get_job(job_id)
        if info is not None:
            found.append(info)
    found.sort(key=lambda i: (i.created_at.timestamp() if i.created_at else 0.0, i.id))
    return found


__all__ = ["BlindIndex", "Terms", "find_job_ids", "find_jobs", "lookup_keys"]
