"""A keyed blind index: find a queue's jobs by a secret term (a phone number) without
storing the term anywhere in Redis.

``Queue(..., blind_index=terms)`` takes a function of a payload returning its terms (the
SMS layer returns ``["e164:+254712345678"]``; the engine knows nothing of phone numbers).
For each term the enqueue transition adds the job id to a sorted set named by the term's
HMAC-SHA256 token (``streamq:{q}:bidx:<kid>:<token>``), atomically with the add. On a
partitioned queue the sets live in the job's partition (``streamq:{q~p}:bidx:...``),
written by the same single-slot enqueue call, and a lookup asks every partition. The
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

import functools
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from importlib.metadata import entry_points
from typing import TYPE_CHECKING, Any

from .crypto import KeyRing
from .errors import ConfigError
from .fanout import each
from .job import JobInfo
from .keys import QueueKeys

if TYPE_CHECKING:
    from .queue import Queue

Terms = Callable[[Any], Iterable[str]]
"""A payload's blind-index terms (e.g. its phone numbers in E.164)."""

SEARCH_TERMS_GROUP = "streamq.search_terms"
"""The entry-point group where a channel declares its :class:`SearchTerms`."""


@dataclass(frozen=True, slots=True)
class SearchTerms:
    """A channel's blind-index terms, for the operator tools (``python -m streamq find``,
    ``rotate-keys``, the dashboard). The engine knows no channel: a package declares this
    object as an entry point of the group ``streamq.search_terms`` (the SMS package does:
    ``sms = "streamq.sms.privacy:SEARCH_TERMS"``), and the tools find it there."""

    option: str
    """The command-line option that searches by it, without dashes: ``phone``."""
    noun: str
    """What one value is, for messages: ``number``."""
    help: str
    to_term: Callable[[str], str]
    """An operator's input -> its term (validating it: a bad value raises a StreamqError)."""
    terms: Terms
    """A payload -> its terms (the function the channel's queues are built with)."""
    queues: Callable[[], Iterable[str]]
    """The names of the queues built with these terms (read when asked: may follow env)."""


def search_terms() -> list[SearchTerms]:
    """Every channel's SearchTerms declared in the entry-point group, by option name."""
    found: dict[str, SearchTerms] = {}
    for ep in entry_points(group=SEARCH_TERMS_GROUP):
        try:
            obj = ep.load()
        except Exception as exc:  # a broken plugin must not take the tools down
            raise ConfigError(f"entry point {ep.name} of {SEARCH_TERMS_GROUP} cannot be "
                              f"loaded: {type(exc).__name__}: {exc}") from None
        if isinstance(obj, SearchTerms):
            found.setdefault(obj.option, obj)
    return [found[k] for k in sorted(found)]


class BlindIndex:
    """The blind index of one queue: its terms function and the ring its tokens come from.
    Its sets live in the partition of the jobs they index (``QueueKeys.blind_index``), so
    the enqueue transition writes them in its own slot."""

    __slots__ = ("horizon_ms", "queue", "ring", "terms")

    def __init__(self, terms: Terms, ring: KeyRing | None, queue: str, horizon_s: float) -> None:
        if ring is None:
            raise ConfigError(
                f"queue {queue!r} has a blind index but no key is configured: set "
                "STREAMQ_ENCRYPTION_KEYS (its HMAC key is derived from the encryption keys)"
            )
        self.terms = terms
        self.ring = ring
        self.queue = queue
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

    def index_keys(self, data: Any, keys: QueueKeys, kid: str | None = None) -> list[str]:
        """The index sets a payload belongs to in the partition ``keys`` (the job's), under
        key ``kid`` (default: the active one)."""
        kid = kid or self.ring.active
        return [keys.blind_index(kid, t) for t in self.tokens(data, kid)]


def lookup_keys(queue: Queue, term: str, keys: QueueKeys | None = None) -> list[str]:
    """The index sets of ``term`` in one partition of ``queue`` (default: its home), one
    per configured key id."""
    ring = queue.codec.keyring
    if ring is None:
        raise ConfigError("searching the blind index needs the encryption keys: set "
                          "STREAMQ_ENCRYPTION_KEYS")
    k = queue.keys if keys is None else keys
    return [k.blind_index(kid, ring.token(kid, queue.name, term)) for kid in ring.kids]


async def find_job_ids(queue: Queue, term: str) -> list[str]:
    """Ids of the jobs indexed under ``term`` whose entries have not expired (pruning the
    expired ones on the way), from every partition of the queue: one ``index_lookup``
    call per partition, each in its own slot."""
    parts = queue.layout.all_keys(await queue.partition_count())
    sets = [lookup_keys(queue, term, k) for k in parts]
    replies = await each([functools.partial(queue.run_script, "index_lookup", keys, [])
                          for keys in sets])
    out: list[str] = []
    seen: set[str] = set()
    for reply in replies:
        for v in reply:
            job_id = v.decode() if isinstance(v, bytes) else str(v)
            if job_id not in seen:
                seen.add(job_id)
                out.append(job_id)
    return out


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


__all__ = ["SEARCH_TERMS_GROUP", "BlindIndex", "SearchTerms", "Terms", "find_job_ids",
           "find_jobs", "lookup_keys", "search_terms"]
