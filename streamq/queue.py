"""The producer side: ``Queue`` adds jobs and answers questions about them.

A ``Queue`` does no I/O until first used; it is an async context manager. Each
multi-key change is one Lua transition from ``lua/`` (see ``scripts.py``). A
partitioned queue (``partitions=N``) routes each job to one partition by its id
(``partitions.py``); what spans partitions is merged in ``fanout.py``.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Awaitable, Iterable, Sequence
from datetime import datetime, timedelta
from typing import Any, cast

import anyio
from redis.asyncio.cluster import RedisCluster
from redis.exceptions import ResponseError

from .blind_index import BlindIndex, Terms
from .cluster import Client
from .codec import Codec, type_tag
from .connection import translate_redis_errors
from .crypto import KeyRing
from .dead import DeadLetter, parse_dead_entries
from .errors import ConfigError, PayloadError, RedisUnavailable
from .events import QueueEvent, parse_events
from .fanout import dead_bounds, each, id_key, merge_sorted, parse_ref, sum_counts
from .fanout import read_events as read_merged_events
from .flows.create import ChildFailurePolicy, FlowJob, FlowRef, add_flow
from .flows.finish import cancel_flow_job
from .job import Backoff, JobInfo, JobOptions, JobRef, JobState, run_spec
from .jobinfo import job_info
from .keys import GROUP, QueueKeys, check_job_id, check_queue_name
from .listing import JobPage, Payload, WorkerInfo, job_events, list_jobs, list_workers, read_payload
from .partitions import Layout
from .pipelines import Call, Replicas, run_calls
from .priority import lane_of
from .redact import redact_url
from .routing import partition_of
from .schedules.model import Misfire, Overlap, Schedule
from .schedules.store import DEFAULT_GRACE_S, Schedules
from .scripts import ArgT, ScriptRunner
from .settings import (
    CONCURRENT_CALLS,
    MAX_BLOCK_MS,
    STARTUP_TIMEOUT_S,
    QueueDefaults,
    check_redis_url,
    make_client,
    open_client,
    redis_url_from_env,
    seconds,
)
from .validate import int_value, seconds_value

# byte -> letter; 256 = 9 * 26 + 22, so letters a-v come up 10 times in 256, w-z 9 times:
# about 4.70 bits a letter, 75 bits an id
_ID_TABLE = bytes(ord("a") + i % 26 for i in range(256))
# jobs per enqueue call in add_bulk, and calls per pipeline round trip (well under 1 MB)
BULK_CHUNK = 500
# what a job without options gets (frozen, checked once: add_bulk builds none per job)
_NO_OPTIONS = JobOptions()


_Group = tuple[QueueKeys, list[tuple[str, list[ArgT]]], list[list[str]]]
"""add_bulk's jobs of one partition: its keys, each job's (id, enqueue arguments), and
with a blind index each job's tokens (kept apart: no extra object per job without one)."""


DEFAULT_REPLICA_TIMEOUT_S = 1.0
"""How long ``add`` waits for ``min_replicas`` acknowledgements (``WAIT``) by default."""


def client_url(client: Client) -> str:
    """A URL naming the server of a client passed in (for errors): its first node's."""
    if isinstance(client, RedisCluster):
        nodes = client.startup_nodes or client.get_nodes()
        return f"redis://{nodes[0].host}:{nodes[0].port}" if nodes else "a Redis Cluster"
    kw = client.connection_pool.connection_kwargs
    if kw.get("path"):
        return f"unix://{kw['path']}?db={kw.get('db', 0)}"
    tls = "ssl" in client.connection_pool.connection_class.__name__.lower()
    scheme = "rediss" if tls else "redis"
    return f"{scheme}://{kw.get('host', 'localhost')}:{kw.get('port', 6379)}/{kw.get('db', 0)}"


def new_job_id() -> str:
    """A random 16-letter id (75 bits). Letters only: no digit runs that look like PII in
    key names."""
    return os.urandom(16).translate(_ID_TABLE).decode("ascii")


def _text(v: Any) -> str:
    return v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v)


class Queue:
    """One named queue: its own Redis keyspace under the hash tag ``streamq:{name}:``, or,
    with ``partitions=N``, N keyspaces (``{name}``, ``{name~1}``, ...) that one logical
    queue spreads over. ``partitions=None`` adopts the count stored in Redis (1 for a new
    queue); an explicit count is stored at first use, and one that differs from the
    stored count fails there with one line naming it."""

    def __init__(
        self,
        name: str = "sms",
        *,
        redis_url: str | None = None,
        job_type: Any = None,
        defaults: QueueDefaults | None = None,
        redis: Client | None = None,
        partitions: int | None = None,
        encrypt: bool = False,
        keyring: KeyRing | None = None,
        blind_index: Terms | None = None,
        redact_errors: bool = False,
        min_replicas: int = 0,
        replica_timeout: float = DEFAULT_REPLICA_TIMEOUT_S,
    ) -> None:
        """``redis_url`` (else ``REDIS_URL``) may name one Redis or any node of a Redis
        Cluster (found at first use); ``redis`` is a client of your own instead (a
        ``Redis`` or a ``RedisCluster``), which the queue does not close.

        ``encrypt=True`` seals every payload with the active key of ``keyring`` (default:
        ``STREAMQ_ENCRYPTION_KEYS``); without keys it is a ConfigError here. Any queue opens
        envelopes when keys are configured. ``blind_index`` (a payload's search terms) keeps
        a keyed index of them for ``streamq.blind_index.find_jobs``; it needs the keys too.
        ``redact_errors=True`` (implied by ``encrypt``) masks the payload's own values out
        of stored error reasons, events and logs.

        ``min_replicas=k`` (k > 0): ``add`` and ``add_bulk`` return only once k replicas of
        the master that took the jobs acknowledged them (``WAIT`` on the connection that
        wrote, up to ``replica_timeout`` seconds), else raise ``NotReplicated``."""
        self.name = check_queue_name(name)
        self.layout = Layout(self.name, partitions)
        self.keys = self.layout.home
        """The keys of partition 0, the queue's home (all of them when N = 1)."""
        self.defaults = defaults or QueueDefaults()
        ring = keyring if keyring is not None else KeyRing.from_env()
        self.codec = Codec(job_type, self.defaults.max_payload_bytes, queue=self.name,
                           keyring=ring, encrypt=encrypt, redact_errors=redact_errors)
        self.blind_index: BlindIndex | None = None
        if blind_index is not None:
            d = self.defaults
            self.blind_index = BlindIndex(
                blind_index, ring, self.name,
                max(d.completed_ttl_s, d.failed_ttl_s) + d.index_live_s)
        if redis_url:
            self.redis_url = check_redis_url(redis_url, "redis_url")
        elif redis is not None:
            self.redis_url = client_url(redis)  # what errors name: the client's own server
        else:
            self.redis_url = redis_url_from_env()
        self.min_replicas = int_value("min_replicas", min_replicas, minimum=0)
        self.replica_timeout = seconds_value("replica_timeout", replica_timeout, positive=True)
        self._redis: Client | None = redis
        self._own_redis = redis is None
        self._opened = redis is not None
        self._open_lock: anyio.Lock | None = None
        self._scripts: ScriptRunner | None = None
        self._calls: anyio.Semaphore | None = None
        self._default_backoff = Backoff(base=self.defaults.backoff_s).encode()
        self._schedules: Schedules | None = None

    # -- connection -----------------------------------------------------------------
    @property
    def redis(self) -> Client:
        """The client: once the queue has talked to Redis, a ``RedisCluster`` when the URL
        names a cluster node, else a ``Redis`` (before that: a ``Redis``, replaced at the
        first call if the node turns out to be a cluster's)."""
        if self._redis is None:
            self._redis = make_client(self.redis_url, False)
        return self._redis

    @property
    def is_cluster(self) -> bool:
        return isinstance(self._redis, RedisCluster)

    async def _open(self) -> Client:
        """The client, after asking the node the URL names whether it is a cluster's
        (once per queue; ``cluster.py``). Every call that talks to Redis passes here."""
        if not self._opened:
            if self._open_lock is None:
                self._open_lock = anyio.Lock()
            async with self._open_lock:
                if not self._opened:
                    with translate_redis_errors(self.redis_url):
                        client = await open_client(self.redis_url)
                    made = self._redis
                    if made is not None and not isinstance(client, RedisCluster):
                        await client.aclose()  # one Redis: keep the client already made
                    else:
                        if made is not None:
                            await made.aclose()  # made before the answer: a cluster's node
                        self._redis = client
                        self._scripts = None
                    self._opened = True
        assert self._redis is not None
        return self._redis

    @property
    def owns_client(self) -> bool:
        """True when the queue made its own Redis client (no ``redis=`` was passed)."""
        return self._own_redis

    @property
    def scripts(self) -> ScriptRunner:
        if self._scripts is None:
            self._scripts = ScriptRunner(self.redis)
        return self._scripts

    async def connect(self) -> None:
        """Check that Redis answers (clear error naming the URL if not) and load the scripts.

        The first answer must come within STARTUP_TIMEOUT_S, retries included: a wrong
        port, a TLS client on a plaintext port (whose handshake Redis never answers) or a
        black-holed address is reported at once instead of after the client's retries."""
        with translate_redis_errors(self.redis_url):
            try:
                with anyio.fail_after(STARTUP_TIMEOUT_S):
                    await self._open()
                    await self.redis.ping()
            except TimeoutError:
                raise RedisUnavailable(
                    f"Redis did not answer at {redact_url(self.redis_url)} within "
                    f"{STARTUP_TIMEOUT_S:g}s (wrong port, or TLS against a plaintext port?)"
                ) from None
            await self.scripts.load_all()
            # a partition count that differs from the stored one fails here, in one line
            await self.layout.resolve(self.scripts, store=False)

    async def partition_count(self, *, store: bool = False) -> int:
        """The queue's partition count: read from Redis at first use and again every
        ``partitions.RECHECK_S`` seconds. ``store``: when none is stored yet, store this
        queue's (the first writer wins); every call that writes jobs or flags stores it."""
        if not self._opened:
            await self._open()
        return await self.layout.refresh(self._run, store=store)

    async def ensure_groups(self) -> None:
        """Create the lanes' consumer group in every partition (idempotent). Reading from
        0 keeps earlier adds."""
        for k in self.layout.all_keys(await self.partition_count(store=True)):
            await self.prepare_partition(k)

    async def prepare_partition(self, k: QueueKeys, *, paused: bool = False) -> None:
        """Create one partition's consumer groups (idempotent), and set its pause flag when
        ``paused`` (a partition added to a paused queue)."""
        with translate_redis_errors(self.redis_url):
            for lane in k.lanes:
                try:
                    await self.redis.xgroup_create(lane, GROUP, id="0", mkstream=True)
                except ResponseError as exc:
                    if "BUSYGROUP" not in str(exc):
                        raise
            if paused:
                await self.redis.set(k.paused, b"1")

    async def close(self) -> None:
        if self._redis is not None and self._own_redis:
            await self._redis.aclose()
            self._redis = None
            self._scripts = None

    async def __aenter__(self) -> Queue:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    @property
    def _gate(self) -> anyio.Semaphore:
        # a burst of concurrent adds waits here instead of opening a connection each
        if self._calls is None:
            self._calls = anyio.Semaphore(CONCURRENT_CALLS)
        return self._calls

    async def _run(self, name: str, keys: Sequence[str], args: Sequence[ArgT]) -> Any:
        if not self._opened:
            await self._open()
        async with self._gate:
            with translate_redis_errors(self.redis_url):
                return await self.scripts(name, keys, args)

    def _replicas(self) -> Replicas | None:
        if not self.min_replicas:
            return None
        return Replicas(self.min_replicas, max(1, round(self.replica_timeout * 1000)),
                        redact_url(self.redis_url))

    async def run_calls(self, calls: Sequence[Call], *, per_trip: int | None = 8,
                        replicas: Replicas | None = None) -> list[Any]:
        """Pipelined script calls (``pipelines.py``): per master on a cluster, each
        pipeline closed by WAIT when ``replicas`` asks for it."""
        client = await self._open()
        with translate_redis_errors(self.redis_url):
            return await run_calls(client, self.scripts, calls, per_trip=per_trip,
                                   replicas=replicas)

    async def run_script(self, name: str, keys: Sequence[str], args: Sequence[ArgT]) -> Any:
        """Run one Lua transition of ``lua/`` on this queue's client (the partition layer)."""
        return await self._run(name, keys, args)

    async def _write_count(self) -> int:
        lay = self.layout
        return lay.count if lay.fresh() else await self.partition_count(store=True)

    # -- adding ---------------------------------------------------------------------
    def _job_args(self, data: Any, options: JobOptions | None) -> tuple[str, list[ArgT]]:
        opts = options or _NO_OPTIONS
        lane = lane_of(opts.priority)
        job_id = check_job_id(opts.job_id) if opts.job_id is not None else new_job_id()
        attempts = self.defaults.attempts if opts.attempts is None else opts.attempts
        if not isinstance(attempts, int) or attempts < 1:
            raise ConfigError(f"attempts must be an integer >= 1, got {attempts!r}")
        delay = seconds(opts.delay)
        if delay < 0:
            raise ConfigError(f"delay must be >= 0 seconds, got {delay}")
        if opts.backoff is None:
            backoff = self._default_backoff
        elif isinstance(opts.backoff, Backoff):
            backoff = opts.backoff.encode()
        else:
            backoff = Backoff(base=float(opts.backoff)).encode()
        if opts.timeout is not None:
            backoff = run_spec(backoff, seconds(opts.timeout))
        payload = self.codec.encode(data, job_id)
        return job_id, [job_id, payload, lane, attempts, round(delay * 1000), backoff,
                        type_tag(data)]

    async def add(self, data: Any, options: JobOptions | None = None) -> JobRef:
        """Add one job. Once this returns, the job is in Redis. A live custom ``job_id`` is
        not added twice: the existing job's reference is returned."""
        job_id, args = self._job_args(data, options)
        k = self.layout.keys_for(job_id, await self._write_count())
        keys = [*self._enqueue_keys(k), k.bucket(job_id)]
        argv: list[ArgT] = [1, self.defaults.events_max, *args]
        if self.blind_index is not None:
            # the index sets live in the job's partition: written by the same enqueue call
            ix = self.blind_index.index_keys(data, k)
            keys += ix
            argv += [self.blind_index.horizon_ms, len(ix)]
        if self.min_replicas:
            # the enqueue and its WAIT on one connection (pipelines.py)
            async with self._gate:
                await self.run_calls([("enqueue", keys, argv)], replicas=self._replicas())
        else:
            await self._run("enqueue", keys, argv)
        return JobRef(job_id, self.name)

    async def add_bulk(self, items: Iterable[Any | tuple[Any, JobOptions]]) -> list[JobRef]:
        """Add many jobs, pipelined in chunks; every payload is validated before any is sent.

        Each item is a payload, exactly as ``add`` takes it, or a ``(payload, JobOptions)``
        pair: a 2-tuple whose second element IS a ``JobOptions`` instance (which is not
        msgpack-able, so no payload looks like one). Any other value, ``("a", None)``
        included, is a payload. Returns refs in order.
        """
        prepared: list[tuple[str, list[ArgT]]] = []
        ix = self.blind_index
        tokens: list[list[str]] = []  # with a blind index: each job's tokens, in order
        for item in items:
            if isinstance(item, tuple) and len(item) == 2 and isinstance(item[1], JobOptions):
                data, options = item
            else:
                data, options = item, None
            prepared.append(self._job_args(data, options))
            if ix is not None:
                tokens.append(ix.tokens(data))
        n = await self._write_count()
        groups: list[_Group]
        if n == 1:
            groups = [(self.keys, prepared, tokens)]
        else:
            by_partition: dict[int, _Group] = {}
            for i, job in enumerate(prepared):
                p = partition_of(job[0], n)
                group = by_partition.get(p)
                if group is None:
                    group = by_partition[p] = (self.layout.keys(p), [], [])
                group[1].append(job)
                if ix is not None:
                    group[2].append(tokens[i])
            groups = [by_partition[p] for p in sorted(by_partition)]
        async with self._gate:
            await self._send_bulk(groups)
        return [JobRef(job_id, self.name) for job_id, _ in prepared]

    async def _send_bulk(self, groups: list[_Group]) -> None:
        """One enqueue call per chunk of BULK_CHUNK jobs of one partition (every call stays
        in one slot, its blind-index sets included), 8 calls per pipeline round trip; on a
        cluster, one pipeline per master (``pipelines.py``)."""
        calls: list[Call] = []
        ix = self.blind_index
        for k, prepared, tokens in groups:
            fixed = self._enqueue_keys(k)
            bucket = k.bucket
            for c in range(0, len(prepared), BULK_CHUNK):
                chunk = prepared[c : c + BULK_CHUNK]
                args: list[ArgT] = [len(chunk), self.defaults.events_max]
                keys = list(fixed)
                for job_id, a in chunk:
                    args.extend(a)
                    keys.append(bucket(job_id))
                if ix is not None:
                    kid = ix.ring.active
                    sets = tokens[c : c + BULK_CHUNK]
                    args.append(ix.horizon_ms)
                    args.extend(len(t) for t in sets)
                    keys.extend(k.blind_index(kid, t) for ts in sets for t in ts)
                calls.append(("enqueue", keys, args))
        await self.run_calls(calls, replicas=self._replicas())

    @staticmethod
    def _enqueue_keys(k: QueueKeys) -> list[str]:
        return [*k.lane_keys, k.events, k.delayed, k.delayed_data, k.control]

    # -- questions and operations -----------------------------------------------------
    async def get_job(self, job_id: str) -> JobInfo | None:
        """The job's state and facts, or None if unknown or its record has expired."""
        check_job_id(job_id)
        reply: Any = None
        for k in self.layout.lookup(job_id, await self.partition_count()):
            reply = await self._run(
                "get_job",
                [*k.lane_keys, k.moves, k.delayed, k.delayed_data, k.bucket(job_id), k.job(job_id),
                 k.delivery(job_id)],
                [GROUP, job_id],
            )
            if reply:
                break
        if not reply:
            return None
        with translate_redis_errors(self.redis_url):
            return await job_info(self, k, job_id, reply)

    async def counts(self) -> dict[str, int]:
        """Jobs per state: waiting, active, delayed, completed, failed (plus cancelled,
        paused 0/1 and dead, the dead-letter stream's length). completed and cancelled are
        totals since the queue was created; failed counts dead letters not replayed.
        A partitioned queue's counts are the sums over its partitions (one snapshot each)."""
        return sum_counts(await each([
            functools.partial(self._run, "counts",
                              [*k.lane_keys, k.delayed, k.stats, k.paused, k.dead], [GROUP])
            for k in self.layout.all_keys(await self.partition_count())
        ]))

    async def partition_counts(self) -> list[dict[str, int]]:
        """The counts of each partition, partition 0 first (operators: is the load even?)."""
        return [sum_counts([r]) for r in await each([
            functools.partial(self._run, "counts",
                              [*k.lane_keys, k.delayed, k.stats, k.paused, k.dead], [GROUP])
            for k in self.layout.all_keys(await self.partition_count())
        ])]

    async def cancel(self, job_id: str) -> bool:
        """Cancel a waiting or delayed job so it never runs. False if it is unknown,
        finished, or already running (an active job cannot be cancelled). A job of a flow
        settles its flow too: a waiting parent takes its not-started subtree with it, and
        its parent counts it as failed ("was cancelled", docs/workflows.md)."""
        check_job_id(job_id)
        for k in self.layout.lookup(job_id, await self.partition_count()):
            reply = await self._run(
                "cancel",
                [*k.lane_keys, k.events, k.delayed, k.delayed_data, k.stats, k.moves,
                 k.bucket(job_id), k.job(job_id)],
                [GROUP, job_id, self.defaults.failed_ttl_ms, self.defaults.events_max],
            )
            if isinstance(reply, list):  # a job of a flow: its flow is settled too
                with translate_redis_errors(self.redis_url):
                    r = await cancel_flow_job(self, k, job_id, _text(reply[1]))
            else:
                r = int(reply)
            if r != 0:  # cancelled (1), or found running (-1): either way it was here
                return r == 1
        return False

    async def add_flow(self, root: FlowJob, *, on_child_failure: ChildFailurePolicy) -> FlowRef:
        """Add a flow: ``root`` runs once all its children (``FlowJob.children``, on this
        queue or others of the same Redis, nested up to 100 levels) have finished; it
        waits meanwhile in state ``waiting_children``. ``on_child_failure`` is required:
        ``"fail"`` dead-letters a parent when one of its children fails for good (and
        cancels its children that have not started), ``"continue"`` runs it anyway, the
        failure in its ``Job.children_results()``. All jobs are added or none (a live
        id, a bad payload: nothing is written). Returns the root's reference, with its
        children's. See docs/workflows.md."""
        return await add_flow(self, root, on_child_failure)

    async def pause(self) -> None:
        """Workers stop taking jobs from this queue (running jobs finish). A partitioned
        queue's flag is set in every partition (each claim checks its own), the home's
        last: ``is_paused`` is true once all are set. If this raises, call it again."""
        parts = self.layout.all_keys(await self.partition_count(store=True))
        with translate_redis_errors(self.redis_url):
            for k in [*parts[1:], parts[0]]:
                await self.redis.set(k.paused, b"1")

    async def resume(self) -> None:
        """Clear the pause flag in every partition (the home's last) and wake idle workers."""
        parts = self.layout.all_keys(await self.partition_count(store=True))
        for k in [*parts[1:], parts[0]]:
            await self._run("resume", [k.paused, k.control], [])

    async def is_paused(self) -> bool:
        """True when the home partition's pause flag is set."""
        await self._open()
        with translate_redis_errors(self.redis_url):
            return bool(await self.redis.exists(self.keys.paused))

    async def dead_letters(
        self, limit: int = 100, *, after: str = "-", partition: int | None = None
    ) -> list[DeadLetter]:
        """The oldest ``limit`` dead letters, with their errors: from the start (``-``),
        after a letter (``"(" + letter.ref``) or from one (``letter.ref``). A partitioned
        queue's letters are merged in (entry id, partition) order; ``partition`` lists one
        partition's only (``after`` then names an entry id of that partition)."""
        n = await self.partition_count()
        if partition is not None:
            if not 0 <= partition < n:
                raise ConfigError(f"partition must be from 0 to {n - 1}, got {partition}")
            start = after
            if after not in ("-", ""):
                exclusive = after.startswith("(")
                start = ("(" if exclusive else "") + parse_ref(after.lstrip("("))[0]
            return await self._dead_page(self.layout.keys(partition), start, limit)
        parts = self.layout.all_keys(n)
        pages = await each([
            functools.partial(self._dead_page, k, start, limit)
            for k, start in zip(parts, dead_bounds(after, n), strict=True)
        ])
        return merge_sorted(pages, lambda d: (id_key(d.entry_id), d.partition), limit)

    async def _dead_page(self, k: QueueKeys, start: str, limit: int) -> list[DeadLetter]:
        with translate_redis_errors(self.redis_url):
            entries = await self.redis.xrange(k.dead, min=start, max="+", count=limit)
        return parse_dead_entries(entries or [], self.codec, k.partition)

    async def replay_dead(self, job_id: str | None = None) -> int:
        """Put dead-lettered jobs back to work with fresh attempts: one job id, or all of
        them when ``job_id`` is None or ``"all"``. Returns how many were replayed. A job
        goes back to work in the partition that holds its dead letter."""
        parts = self.layout.all_keys(await self.partition_count(store=True))
        if job_id is not None and job_id != "all":
            check_job_id(job_id)
            for k in self.layout.lookup(job_id):
                with translate_redis_errors(self.redis_url):
                    record = await cast(Awaitable[Any], self.redis.get(k.job(job_id)))
                # a failed record is 'failed|n|a|t|f|type|<dead entry id>|error'
                fields = _text(record).split("|", 7) if record else []
                if len(fields) == 8 and fields[0] == "failed" and fields[6]:
                    return await self._replay_one(fields[6], job_id, k.partition)
            letters = await self._find_dead(job_id)
            return sum([await self._replay_one(d.entry_id, job_id, d.partition)
                        for d in letters])
        return sum([await self._replay_partition(k) for k in parts])

    async def _replay_partition(self, k: QueueKeys) -> int:
        replayed = 0
        after = "-"
        with translate_redis_errors(self.redis_url):
            newest = await self.redis.xrevrange(k.dead, count=1)
        if not newest:
            return 0
        # stop at the newest letter present now: jobs that fail again meanwhile are new
        # letters, and replaying them in the same sweep could loop for ever
        end = _text(newest[0][0])
        while True:
            with translate_redis_errors(self.redis_url):
                entries = await self.redis.xrange(k.dead, min=after, max=end, count=500)
            batch = parse_dead_entries(entries or [], self.codec, k.partition)
            if not batch:
                return replayed
            for d in batch:
                replayed += await self._replay_one(d.entry_id, d.job_id, k.partition)
            after = "(" + batch[-1].entry_id

    async def _find_dead(self, job_id: str) -> list[DeadLetter]:
        found: list[DeadLetter] = []
        after = "-"
        while True:
            batch = await self.dead_letters(1000, after=after)
            if not batch:
                return found
            found.extend(d for d in batch if d.job_id == job_id)
            after = "(" + batch[-1].ref

    async def _replay_one(self, entry_id: str, job_id: str, partition: int = 0) -> int:
        k = self.layout.keys(partition)
        r = await self._run(
            "replay",
            [*k.lane_keys, k.events, k.dead, k.stats, k.moves, k.bucket(job_id), k.job(job_id)],
            [entry_id, self.defaults.events_max],
        )
        return 1 if int(r) == 1 else 0

    async def read_events(
        self, after: str = "0-0", count: int = 100, block: float | None = None
    ) -> list[QueueEvent]:
        """Events after the position ``after`` ("$" for only new ones); waits up to
        ``block`` seconds for the first (below the client's socket timeout). The position
        is a stream id; a partitioned queue's is one id per partition joined by ``,``,
        and each event's ``id`` is the position just after it (see ``fanout.py``)."""
        block_ms = None if block is None else max(1, min(round(block * 1000), MAX_BLOCK_MS))
        n = await self.partition_count()
        with translate_redis_errors(self.redis_url):
            if n > 1:
                return await read_merged_events(self.redis, self.layout.all_keys(n), after,
                                                count, block_ms)
            reply = await self.redis.xread({self.keys.events: after}, count=count,
                                           block=block_ms)
        return parse_events(reply)

    # -- listing for operators (listing.py) ---------------------------------------------
    async def _partition_keys(self) -> list[QueueKeys]:
        """The keys of each of the queue's partitions."""
        return self.layout.all_keys(await self.partition_count())

    async def list_jobs(self, state: JobState | str, *, cursor: str | None = None,
                        limit: int = 50) -> JobPage:
        """One page of the jobs in ``state`` (waiting, active, delayed, completed, failed),
        in the order listing.py documents; pass ``page.next_cursor`` for the next page.
        Each page costs the same however deep it is."""
        return await list_jobs(self, await self._partition_keys(), state, cursor, limit)

    async def job_payload(self, job_id: str) -> Payload | None:
        """The payload a waiting, active, delayed or failed job holds, decoded through the
        queue's codec; None when none is kept (completed, cancelled, unknown)."""
        check_job_id(job_id)
        for k in self.layout.lookup(job_id, await self.partition_count()):
            with translate_redis_errors(self.redis_url):
                found = await read_payload(self, k, job_id)
            if found is not None:
                return found
        return None

    async def job_events(self, job_id: str) -> list[QueueEvent]:
        """The job's events still in the queue's events stream, oldest first."""
        check_job_id(job_id)
        return await job_events(self, await self._partition_keys(), job_id)

    async def workers(self) -> list[WorkerInfo]:
        """The workers (consumers of the queue's group) with the jobs each holds."""
        return await list_workers(self, await self._partition_keys())

    async def purge_completed(self, batch: int = 1000) -> int:
        """Delete the records of completed jobs now, instead of at their TTL. An operator
        command: it SCANs the queue's record keys, partition by partition (the queue's
        counters are untouched). Returns how many records were deleted."""
        deleted = 0
        for k in self.layout.all_keys(await self.partition_count()):
            pattern = k.job("*")
            with translate_redis_errors(self.redis_url):
                keys: list[bytes] = []
                async for key in self.redis.scan_iter(match=pattern, count=batch):
                    keys.append(key)
                    if len(keys) >= batch:
                        deleted += await self._purge_records(keys, b"completed|")
                        keys = []
                if keys:
                    deleted += await self._purge_records(keys, b"completed|")
        return deleted

    async def _purge_records(self, keys: list[bytes], prefix: bytes) -> int:
        values: list[Any] = await self.redis.mget(keys)
        doomed = [k for k, v in zip(keys, values, strict=True)
                  if isinstance(v, bytes) and v.startswith(prefix)]
        if doomed:
            await self.redis.delete(*doomed)
        return len(doomed)

    async def purge_dead(self) -> int:
        """Drop every dead letter of every partition (their failed records expire on their
        own)."""
        n = 0
        for k in self.layout.all_keys(await self.partition_count()):
            with translate_redis_errors(self.redis_url):
                n += int(await self.redis.xlen(k.dead))
                await self.redis.delete(k.dead)
        return n

    # -- schedules (streamq/schedules/) -------------------------------------------------
    @property
    def schedule_store(self) -> Schedules:
        """The queue's schedules (upsert, list, pause, resume, remove, run now)."""
        if self._schedules is None:
            self._schedules = Schedules(self)
        return self._schedules

    async def upsert_schedule(
        self, schedule_id: str, *, cron: str | None = None,
        every: float | timedelta | None = None, tz: str = "UTC", data: Any = None,
        options: JobOptions | None = None, misfire: Misfire = "run_once",
        overlap: Overlap = "allow", start_at: datetime | None = None,
        end_at: datetime | None = None, limit: int | None = None, paused: bool | None = None,
        misfire_grace: float | timedelta = DEFAULT_GRACE_S,
    ) -> Schedule:
        """Create or change a schedule (idempotent by id): ``cron`` (5 fields, read in the
        IANA zone ``tz``) or ``every`` (seconds or timedelta); each run adds ``data`` with
        ``options``. See docs/schedules.md for misfire, overlap and the DST rule."""
        return await self.schedule_store.upsert(
            schedule_id, cron=cron, every=every, tz=tz, data=data, options=options,
            misfire=misfire, overlap=overlap, start_at=start_at, end_at=end_at, limit=limit,
            paused=paused, misfire_grace=misfire_grace)

    async def schedules(self) -> list[Schedule]:
        """Every schedule of the queue, by id, with its next and last runs."""
        return await self.schedule_store.all()

    async def get_schedule(self, schedule_id: str) -> Schedule | None:
        return await self.schedule_store.get(schedule_id)

    async def remove_schedule(self, schedule_id: str) -> bool:
        """Delete a schedule (runs already added finish). False if there was none."""
        return await self.schedule_store.remove(schedule_id)

    async def pause_schedule(self, schedule_id: str) -> bool:
        return await self.schedule_store.set_paused(schedule_id, True)

    async def resume_schedule(self, schedule_id: str) -> bool:
        return await self.schedule_store.set_paused(schedule_id, False)

    async def run_schedule_now(self, schedule_id: str) -> JobRef | None:
        """One extra run of the schedule now, with its own job id (not a slot's)."""
        return await self.schedule_store.run_now(schedule_id)

    def __repr__(self) -> str:
        return f"Queue({self.name!r})"


__all__ = ["Queue", "new_job_id"]

# re-exported for type checkers of callers that catch it from here
_ = PayloadError
