"""Every Redis key of a queue, under one Cluster hash tag per partition.

All keys of queue ``sms`` look like ``streamq:{sms}:...`` so that every Lua transition
runs on one slot. A partitioned queue (``Queue(name, partitions=N)``) is N copies of
that layout: partition 0 uses exactly those keys (it is the queue's *home*: queue-wide
state such as the stored partition count and, for N > 1, the queue-wide token bucket
lives there), partition p >= 1 uses its own hash tag ``streamq:{sms~p}:...``. ``~`` is
not allowed in queue names, so no queue's tag can collide with another's partition.
No other module builds key names. Job ids appear only in per-job record keys
(``job:<id>``, after the tag, so an id's own ``{...}`` never becomes the key's tag);
payload data never appears in a key name.
"""

from __future__ import annotations

import re
import zlib
from dataclasses import dataclass, field

from .errors import ConfigError, JobIdError
from .priority import LANE_SUFFIXES

GROUP = "workers"

_QUEUE_NAME_RE = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
# { and } let an id carry a routing tag (see routing.py); the key of its record keeps the
# queue's tag first: streamq:{sms}:job:order-{42}-sms hashes on 'sms'
_JOB_ID_RE = re.compile(r"^[A-Za-z0-9_.:@=+{}-]{1,128}$")
_DOWNSTREAM_RE = re.compile(r"^[a-z0-9_-]{1,32}$")

PARTITION_SEP = "~"
"""Between a queue's name and a partition number in the hash tag (never in a queue name)."""
MAX_PARTITIONS = 128
"""An idle worker holds one blocking read per partition; 128 spreads a queue over more
masters than any cluster this engine was measured on."""


def check_downstream_name(name: str) -> str:
    """A downstream's name (an SMS provider: configuration, never personal data)."""
    if not isinstance(name, str) or not _DOWNSTREAM_RE.match(name):
        raise ConfigError(f"name {str(name)[:40]!r} is invalid: use 1-32 characters of a-z 0-9 _ -")
    return name


def check_queue_name(name: str) -> str:
    if not _QUEUE_NAME_RE.match(name):
        raise ConfigError(
            f"queue name {name!r} is invalid: use 1-64 characters of A-Z a-z 0-9 _ . -"
        )
    return name


def check_job_id(job_id: str) -> str:
    if not isinstance(job_id, str) or not _JOB_ID_RE.match(job_id):
        shown = job_id[:40] if isinstance(job_id, str) else type(job_id).__name__
        raise JobIdError(
            f"job_id {shown!r} is invalid: use 1-128 characters of A-Z a-z 0-9 _ . : @ = + - {{ }}"
        )
    return job_id


INDEX_BUCKETS = 2048

DISCOVERY_PATTERN = "streamq:{*}:lane:*"
"""What ``discovery.find_queues`` SCANs for: the lanes, one of which every queue has once
a job was added (the lane of its priority: a queue of high-priority jobs only has no
normal lane until a worker starts) or a worker started (each partition has them; only
the home's name is a queue name)."""
_DISCOVERED_RE = re.compile(r"^streamq:\{([A-Za-z0-9_.-]{1,64})\}:lane:(?:high|normal|low)$")


def queue_of_key(key: str) -> str | None:
    """The queue name in a key matched by DISCOVERY_PATTERN; None for anything else (a
    partition's own tag, a foreign key)."""
    m = _DISCOVERED_RE.match(key)
    return m.group(1) if m else None


BREAKER_PATTERN = "streamq:{*}:breaker:*"
"""What ``discovery.find_breakers`` SCANs for: the breaker hash of a downstream (an SMS
provider), kept in its queue's home partition once it has counted a failure."""
_BREAKER_RE = re.compile(r"^streamq:\{([A-Za-z0-9_.-]{1,64})\}:breaker:([a-z0-9_-]{1,32})$")


def breaker_of_key(key: str) -> tuple[str, str] | None:
    """(queue, downstream) of a key matched by BREAKER_PATTERN; None for anything else."""
    m = _BREAKER_RE.match(key)
    return (m.group(1), m.group(2)) if m else None


def check_partitions(n: object, what: str = "partitions") -> int:
    if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= MAX_PARTITIONS:
        raise ConfigError(f"{what} must be an integer from 1 to {MAX_PARTITIONS}, got {n!r}")
    return n


def partition_tag(name: str, partition: int) -> str:
    """The hash tag of one partition: the queue's name for partition 0, ``name~p`` else."""
    return name if partition == 0 else f"{name}{PARTITION_SEP}{partition}"


@dataclass(frozen=True, slots=True)
class QueueKeys:
    """Key names of one partition of a queue (partition 0: the queue's home, whose keys
    are those of a queue without partitions). ``lanes`` holds one stream per priority
    level, indexed by lane number (priority.py: 0 high, 1 normal, 2 low, 3-9 the other
    levels; not in priority order). ``lane_keys`` is what every script that reads or
    writes lanes takes first: the ten lanes, then the lane map."""

    name: str
    partition: int = 0
    buckets: int = INDEX_BUCKETS
    prefix: str = field(init=False)
    lanes: tuple[str, ...] = field(init=False)
    lane_keys: tuple[str, ...] = field(init=False)

    def __post_init__(self) -> None:
        p = f"streamq:{{{partition_tag(self.name, self.partition)}}}:"
        object.__setattr__(self, "prefix", p)
        lanes = tuple(p + "lane:" + suffix for suffix in LANE_SUFFIXES)
        object.__setattr__(self, "lanes", lanes)
        object.__setattr__(self, "lane_keys", (*lanes, p + "lanemap"))

    @property
    def lane_map(self) -> str:
        """STRING bitmap, bit i = lane number i may hold entries no consumer has read yet.
        Every transition that adds to a lane sets its bit; the claim reads only the lanes
        whose bit is set and clears a bit when that lane had no more to give (it reads
        every lane when it finds nothing, so an entry added by hand is found too)."""
        return self.lane_keys[-1]

    def bucket(self, job_id: str) -> str:
        """The index bucket of a job: HASH job_id -> location at add time
        (``<lane digit>:<entry id>``, or ``d`` while delayed).

        The index is split into small hashes because Redis stores a hash of up to 128
        fields as a compact listpack: about 40 bytes per job instead of about 117 in one
        big hash. The bucket is a function of the id alone, so it never changes.
        """
        return f"{self.prefix}idx:{zlib.crc32(job_id.encode()) % self.buckets}"

    @property
    def moves(self) -> str:
        """HASH job_id -> current location, for jobs moved since added (promoted, reclaimed),
        where the transition that moved them could not name the job's bucket."""
        return self.prefix + "moves"

    @property
    def delayed(self) -> str:
        """ZSET job_id scored by due time (Redis clock, ms): delayed jobs and scheduled retries."""
        return self.prefix + "delayed"

    @property
    def delayed_data(self) -> str:
        """HASH job_id -> packed entry of a delayed job (payload and meta)."""
        return self.prefix + "delayed:data"

    @property
    def dead(self) -> str:
        """STREAM of dead letters (capped)."""
        return self.prefix + "dead"

    @property
    def control(self) -> str:
        """STREAM (capped) that wakes idle workers: resume, an earlier due time."""
        return self.prefix + "control"

    @property
    def paused(self) -> str:
        return self.prefix + "paused"

    @property
    def stats(self) -> str:
        """HASH of counters: completed, failed, cancelled."""
        return self.prefix + "stats"

    @property
    def limiter(self) -> str:
        """HASH token bucket shared by all workers: tk (tokens), ts (ms). The home's is the
        queue-wide bucket (taken by the claim when N = 1, by take_tokens when N > 1); the
        other partitions' are unused."""
        return self.prefix + "limiter"

    @property
    def meta(self) -> str:
        """HASH of queue-wide settings, in the home partition only: ``partitions`` (the
        stored N) and ``history`` (earlier Ns, oldest first, comma-separated)."""
        return self.prefix + "meta"

    @property
    def reclaim_lock(self) -> str:
        """One claimer per period looks for entries of dead workers to take over."""
        return self.prefix + "lock:reclaim"

    @property
    def sweep_lock(self) -> str:
        """One upkeep sweep per period (stalled-too-often entries, orphans, idle consumers)."""
        return self.prefix + "lock:sweep"

    @property
    def events(self) -> str:
        """STREAM (capped) of job lifecycle events for external monitors."""
        return self.prefix + "events"

    @property
    def completed_index(self) -> str:
        """ZSET job_id scored by finish time (Redis clock, ms): the most recently completed
        jobs, capped at ``QueueDefaults.completed_index_max``, so they can be listed."""
        return self.prefix + "done"

    def job(self, job_id: str) -> str:
        """HASH record of a delayed-or-finished job (state, attempts, error, timestamps)."""
        return self.prefix + "job:" + job_id

    def progress(self, job_id: str) -> str:
        """STRING (with TTL) the last progress a job reported, tagged with its attempt."""
        return self.prefix + "progress:" + job_id

    def flow(self, job_id: str) -> str:
        """HASH of a flow parent (a job with children): its state, its payload while it
        waits, its pending-children count and each finished child's outcome (flows/)."""
        return self.prefix + "flow:" + job_id

    # -- downstreams a handler calls (SMS providers): the names are configuration --------
    def breaker(self, name: str) -> str:
        """HASH circuit breaker of a downstream, shared by all workers (lua/breaker_*)."""
        return self.prefix + "breaker:" + check_downstream_name(name)

    def downstream_limiter(self, name: str) -> str:
        """HASH token bucket of a downstream (lua/limiter_take), like ``limiter``."""
        return self.prefix + "limiter:" + check_downstream_name(name)

    def route(self, job_id: str) -> str:
        """HASH (with TTL) the downstream a job is pinned to and whether it may have
        delivered there (lua/route_*): a job never moves once it may have been sent."""
        return self.prefix + "route:" + job_id

    def delivery(self, job_id: str) -> str:
        """HASH (with TTL) the last delivery report a downstream sent for a job (an SMS
        gateway's callback: lua/delivery_report); ``get_job`` shows it in the completed
        job's result as ``result["delivery"]``. No number, no text."""
        return self.prefix + "delivery:" + job_id

    def delivery_ref(self, downstream: str, digest: str) -> str:
        """STRING (with TTL) ``<partition>|<job id>``: the job a downstream's message id
        belongs to, in the queue's home. ``digest`` is a hash of the message id (hex),
        so a gateway's id never becomes part of a key name as given."""
        if not re.fullmatch(r"[0-9a-f]{16,64}", digest):
            raise ConfigError("a delivery reference is named by a hex digest")
        return f"{self.prefix}dlr:{check_downstream_name(downstream)}:{digest}"

    # -- schedules (streamq/schedules/): one hash per schedule, in the partition of its id -----
    @property
    def schedules(self) -> str:
        """ZSET schedule_id scored by its due slot (Redis clock, ms; +inf while paused or
        finished): every schedule of this partition, and which is due next."""
        return self.prefix + "schedules"

    def schedule(self, schedule_id: str) -> str:
        """HASH of one schedule: its spec, payload, options and state (due slot, last
        fired slot: the tombstone, runs). See lua/upsert_schedule.lua."""
        return self.prefix + "schedule:" + schedule_id

    def blind_index(self, kid: str, token: str) -> str:
        """ZSET job_id scored by expiry (ms): the jobs of one blind-index term. ``token`` is
        the term's HMAC (letters a-p, see crypto.py), ``kid`` the key it was made with;
        the term itself (a phone number) never appears in a key name."""
        return f"{self.prefix}bidx:{kid}:{token}"

    def all_fixed(self) -> list[str]:
        return [
            *self.lane_keys,
            self.moves,
            self.delayed,
            self.delayed_data,
            self.dead,
            self.control,
            self.paused,
            self.stats,
            self.completed_index,
            self.limiter,
            self.reclaim_lock,
            self.sweep_lock,
            self.events,
            self.meta,
            self.schedules,
        ]
