"""Redis Cluster: found from any node's URL, and a cluster client that rides out failovers.

Detection: ``REDIS_URL`` may name any node of a cluster. When a queue (or a worker, the
dashboard...) first talks to Redis, one ``HELLO 2`` on a single-node client says whether
the node runs in cluster mode (its ``mode`` field; ``INFO cluster`` when HELLO is not
allowed). A single Redis keeps the probing client, so the question costs one round trip
per client made.

The cluster client is redis-py's ``RedisCluster`` with the options of ``make_redis``
(RESP2, timeouts, keepalive, hiredis packing) and one change: a command that meets a
moment of cluster trouble is tried again until ``STREAMQ_CLUSTER_RETRY_S`` seconds
(default 10) have passed since its first failure, with a short growing pause between
tries. Trouble means: MOVED/ASK storms and ``TTL exhausted`` (redis-py follows each
redirect itself, 16 at most per try), TRYAGAIN (a multi-key command, every script of
ours, on a slot that is being migrated), CLUSTERDOWN / MASTERDOWN, a node that refuses
connections or times out (a killed master until its replica takes over, about two
``cluster-node-timeout`` later), and a slot map that cannot be read or does not cover
every slot. Past the bound the command raises ``ClusterUnreachable``, which
``connection.translate_redis_errors`` turns into one ``RedisUnavailable`` line naming
the cluster. Retrying is safe because every write of streamq is idempotent (``enqueue``
dedups on the job id while the job is live) or fenced (a worker's transitions check
that it still owns the entry).
"""

from __future__ import annotations

import contextlib
import math
import os
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping
from contextvars import ContextVar
from typing import Any, TypeVar, cast
from urllib.parse import parse_qs, urlsplit

import anyio
from redis.asyncio import Redis
from redis.asyncio.cluster import ClusterPipeline, NodesManager, RedisCluster
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.crc import key_slot
from redis.exceptions import (
    AskError,
    ClusterDownError,
    ClusterError,
    RedisClusterException,
    RedisError,
    ResponseError,
    SlotNotCoveredError,
    TryAgainError,
)
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from .errors import ConfigError
from .redact import redact_text, redact_url

T = TypeVar("T")

Client = Redis | RedisCluster
"""What a queue talks to: one Redis, or a Redis Cluster."""

RETRY_ENV = "STREAMQ_CLUSTER_RETRY_S"
DEFAULT_RETRY_S = 10.0
FIRST_PAUSE_S = 0.05
MAX_PAUSE_S = 1.0

_TRANSIENT_MESSAGES = (
    "Redis Cluster cannot be connected",  # no startup node answered CLUSTER SLOTS
    "All slots are not covered",  # a slot map read mid-failover
    "could not agree on a valid slots cache",  # nodes disagree while a failover settles
)


class ClusterUnreachable(RedisConnectionError):
    """A cluster command kept failing for the whole retry bound. A redis-py connection
    error, so the worker's loops treat it as an outage; a ``Queue`` reports it as
    ``RedisUnavailable`` naming the cluster."""


class ClusterCommandError(RedisError):
    """redis-py's ``RedisClusterException`` (which is not a ``RedisError``) that does not
    pass by itself (an ACL refusal while reading the slot map, a command it cannot
    route), as a ``RedisError``: the worker's loops report it and go on instead of
    dying; a ``Queue`` reports it as ``RedisUnavailable``. The original is its cause."""


def retry_s_from_env(env: Mapping[str, str] | None = None) -> float:
    """``STREAMQ_CLUSTER_RETRY_S`` (seconds, >= 0), else 10."""
    raw = (os.environ if env is None else env).get(RETRY_ENV, "").strip()
    if not raw:
        return DEFAULT_RETRY_S
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not math.isfinite(value) or value < 0:
        raise ConfigError(f"{RETRY_ENV}={raw[:40]!r}: must be a number of seconds >= 0")
    return value


def is_transient(exc: BaseException) -> bool:
    """True for the cluster troubles that pass by themselves (see the module's doc)."""
    if isinstance(exc, ClusterUnreachable):
        return False  # already retried for the whole bound (a nested call)
    if isinstance(exc, AskError | TryAgainError | ClusterDownError | ClusterError |
                  RedisConnectionError | RedisTimeoutError | SlotNotCoveredError):
        # AskError covers MovedError; ClusterDownError covers MASTERDOWN
        return not _is_auth(exc)
    if isinstance(exc, RedisClusterException):
        if refused_in_chain(exc) is not None:
            return False  # no node accepted the credentials or the ACL: that does not pass
        return str(exc).startswith(_TRANSIENT_MESSAGES)
    return isinstance(exc, ResponseError) and str(exc).startswith("LOADING")


def refused_in_chain(exc: BaseException) -> BaseException | None:
    """The authentication or ACL refusal behind a cluster client's failure to read the
    slot map (redis-py wraps it: "Cluster mode is not enabled on this node" is what a
    NOPERM on CLUSTER SLOTS becomes), if that is what it was."""
    seen: BaseException | None = exc
    for _ in range(8):
        if seen is None:
            return None
        if _is_auth(seen) or _refused(seen):
            return seen
        seen = seen.__cause__ or seen.__context__
    return None


def _is_auth(exc: BaseException) -> bool:
    text = str(exc)
    return type(exc).__name__ in ("AuthenticationError", "AuthorizationError") or any(
        w in text for w in ("WRONGPASS", "NOAUTH", "invalid username-password"))


def one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    name = type(exc).__name__
    return redact_text(f"{name}: {text}" if text else name)[:300]


async def call_with_retry(call: Callable[[], Awaitable[T]], retry_s: float, what: str,
                          before_retry: Callable[[], Awaitable[Any]] | None = None,
                          seen: Counter[str] | None = None) -> T:
    """``await call()``, again after each transient failure until ``retry_s`` seconds have
    passed since the first; then ``ClusterUnreachable``. ``before_retry`` runs before
    each new try (a pipeline re-reads the slot map there); ``seen`` counts the failures
    ridden out, by exception type."""
    deadline: float | None = None  # the first failure + retry_s
    pause = FIRST_PAUSE_S
    last: BaseException | None = None
    while True:
        try:
            if deadline is None:
                return await call()
            # a try after a failure gets what is left of the bound: a node that hangs
            # (stopped, black-holed) must not stretch the bound by a socket timeout per try
            with anyio.fail_after(max(0.0, deadline - time.monotonic())):
                if before_retry is not None:
                    with contextlib.suppress(Exception):  # the try reports what is wrong
                        await before_retry()
                return await call()
        except TimeoutError:
            if deadline is None or time.monotonic() < deadline:
                raise
            exc = last or TimeoutError("no answer")
        except Exception as error:
            if not is_transient(error):
                if isinstance(error, RedisClusterException):
                    raise ClusterCommandError(one_line(error)) from error
                raise
            exc = last = error
            if seen is not None:
                seen[type(error).__name__] += 1
        now = time.monotonic()
        if deadline is None:
            deadline = now + retry_s
        if now + pause >= deadline:
            raise ClusterUnreachable(
                f"no answer for {what} within {RETRY_ENV}={retry_s:g}s; last error "
                f"{one_line(exc)}") from None
        await anyio.sleep(pause)
        pause = min(pause * 2, MAX_PAUSE_S)


class RetryingPipeline(ClusterPipeline):
    """A cluster pipeline (of reads: listings, schedule and flow trees) sent again, whole,
    after cluster trouble, within its client's bound. redis-py empties a pipeline after
    each execute, so the commands are kept here to be queued again."""

    def __init__(self, client: ClusterClient, transaction: Any = None) -> None:
        super().__init__(client, transaction)
        self._client = client
        self._kept: list[tuple[tuple[Any, ...], dict[str, Any]]] = []

    def execute_command(self, *args: Any, **kwargs: Any) -> ClusterPipeline:
        self._kept.append((args, dict(kwargs)))
        return super().execute_command(*args, **kwargs)

    async def execute(self, raise_on_error: bool = True,
                      allow_redirections: bool = True) -> list[Any]:
        kept, self._kept = self._kept, []
        queued = True
        parent_queue = super().execute_command
        parent_execute = super().execute

        async def attempt() -> list[Any]:
            nonlocal queued
            if not queued:
                for args, kwargs in kept:
                    parent_queue(*args, **dict(kwargs))
            queued = False
            return await parent_execute(raise_on_error, allow_redirections)

        return await call_with_retry(attempt, self._client.retry_s, "a pipeline",
                                     self._client.nodes_manager.initialize,
                                     self._client.troubles)


_IN_COMMAND: ContextVar[bool] = ContextVar("streamq_cluster_in_command", default=False)
"""Set while a ``ClusterClient`` command runs: redis-py's own calls to close come from there."""
_CLOSING: ContextVar[bool] = ContextVar("streamq_cluster_closing", default=False)
"""Set while a ``ClusterClient`` closes for good."""


class GentleNodes(NodesManager):
    """redis-py's node manager, whose ``aclose`` outside a real close (redis-py calls it
    when a slot-map read fails) lets the connections in use finish their commands and
    closes only the idle ones, as redis-py does itself when the slot map changes."""

    __slots__ = ()

    async def aclose(self, attr: str = "nodes_cache") -> None:
        if _CLOSING.get():
            await super().aclose(attr)
            return
        for node in list(getattr(self, attr).values()):
            node.update_active_connections_for_reconnect()
            with contextlib.suppress(Exception):
                await node.disconnect_free_connections()


class ClusterClient(RedisCluster):
    """redis-py's cluster client whose commands ride out cluster trouble for up to
    ``retry_s`` seconds (see the module's doc). redis-py's own retries are off: a failed
    try marks the slot map stale, and the next try reads it again."""

    retry_s: float = DEFAULT_RETRY_S
    label: str = ""
    """The URL the cluster was reached at, password removed (for error messages)."""
    troubles: Counter[str]
    """Failures ridden out so far, by exception type (TryAgainError, MovedError,
    ConnectionError...): what a failover or a migration cost this client."""

    async def execute_command(self, *args: Any, **kwargs: Any) -> Any:
        parent = super().execute_command
        token = _IN_COMMAND.set(True)
        try:
            return await call_with_retry(lambda: parent(*args, **kwargs), self.retry_s,
                                         _command_name(args), seen=self.troubles)
        finally:
            _IN_COMMAND.reset(token)

    async def _determine_slot(self, command: str, *args: Any) -> int:
        # XREAD / XREADGROUP name their keys after STREAMS, which redis-py asks the server
        # to find (COMMAND GETKEYS: a round trip per read, and one more ACL grant); the
        # streams of one read of ours always share a slot
        if _text(command).upper() in ("XREAD", "XREADGROUP"):
            words = [_text(a).upper() if isinstance(a, str | bytes) else "" for a in args]
            if "STREAMS" in words:
                at = words.index("STREAMS") + 1
                keys = args[at : at + (len(args) - at) // 2]
                slots = {self.keyslot(k) for k in keys}
                if len(slots) == 1:
                    return slots.pop()
        return await super()._determine_slot(command, *args)

    async def aclose(self) -> None:
        """Close every connection, for good. Called by redis-py itself from within a
        command (to re-read the slot map after MOVED or CLUSTERDOWN), it re-reads the map
        instead: closing would cut the commands other tasks have in flight on every node,
        and a write cut after it ran is sent again (an add of a job that finished in
        between would be a second job)."""
        if _IN_COMMAND.get():
            with contextlib.suppress(Exception):  # the command's next try says what is wrong
                await self.nodes_manager.initialize()
            return
        token = _CLOSING.set(True)
        try:
            await super().aclose()
            # redis-py closes nothing while a failure has marked its slot map stale: close
            # the nodes' connections anyway (a closed queue leaves no socket behind)
            for attr in ("nodes_cache", "startup_nodes"):
                with contextlib.suppress(Exception):
                    await self.nodes_manager.aclose(attr)
        finally:
            _CLOSING.reset(token)

    def pipeline(self, transaction: Any | None = None,
                 shard_hint: Any | None = None) -> ClusterPipeline:
        if transaction or shard_hint:
            return super().pipeline(transaction, shard_hint)
        return RetryingPipeline(self)  # type: ignore[abstract]  # (redis-py's typing)


def retry_bound(client: Any) -> float:
    """How long cluster trouble is ridden out on ``client``: its own bound, or the
    environment's for a client streamq did not make."""
    bound = getattr(client, "retry_s", None)
    return float(bound) if isinstance(bound, int | float) else retry_s_from_env()


def _text(v: Any) -> str:
    return v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v)


def _command_name(args: tuple[Any, ...]) -> str:
    if not args:
        return "a command"
    first = args[0]
    return (first.decode() if isinstance(first, bytes) else str(first)).split()[0].upper()


async def slot_owners(client: RedisCluster, keys: list[str]) -> list[tuple[int, str]]:
    """Each key's slot and the master serving it now (``host:port``)."""
    await client.initialize()
    out = []
    for key in keys:
        node = client.get_node_from_key(key)
        out.append((key_slot(key.encode()), node.name if node is not None else "?"))
    return out


# -- detection ---------------------------------------------------------------------------------
def url_db(url: str) -> int:
    """The database number a redis:// or rediss:// URL selects (0 when it names none)."""
    parts = urlsplit(url)
    values = parse_qs(parts.query).get("db", [])
    path = parts.path.strip("/") if parts.scheme in ("redis", "rediss") else ""
    if path:
        values.append(path)
    return int(values[-1]) if values and values[-1].isdigit() else 0


def check_cluster_url(url: str) -> None:
    """One line when a cluster URL asks for what cluster mode lacks."""
    if url.startswith("unix://"):
        raise ConfigError(f"{redact_url(url)} is a Redis Cluster node: connect to a cluster "
                          "over TCP (redis://host:port or rediss://), not a unix socket")
    db = url_db(url)
    if db != 0:
        raise ConfigError(f"{redact_url(url)} is a Redis Cluster node: a cluster has only "
                          f"database 0, so the URL may end in /0 or nothing, not /{db}")


async def probe_is_cluster(client: Redis, url: str) -> bool:
    """Ask one node whether it runs in cluster mode: ``HELLO 2`` (its ``mode`` field), a
    command least-privilege users are granted anyway; else ``INFO cluster``
    (``cluster_enabled:1``). A user allowed neither is taken to be on one Redis (a
    cluster node then answers MOVED, reported in one line)."""
    try:
        hello = cast(Callable[..., Awaitable[Any]], client.execute_command)
        reply: Any = await hello("HELLO", 2)
        fields = reply if isinstance(reply, dict) else dict(zip(reply[::2], reply[1::2],
                                                                strict=False))
        mode = fields.get(b"mode", fields.get("mode", b""))
        return (mode.decode() if isinstance(mode, bytes) else str(mode)) == "cluster"
    except ResponseError as exc:
        if "not allowed in cluster mode" in str(exc):  # SELECT <db> on a cluster node
            check_cluster_url(url)
        if not _refused(exc):
            raise
    try:
        info = await client.info("cluster")
    except ResponseError as exc:
        if _refused(exc):
            return False
        raise
    return str(info.get("cluster_enabled", "0")) == "1"


def _refused(exc: BaseException) -> bool:
    """NOPERM (an ACL), or a command this server does not know (HELLO before Redis 6)."""
    text = str(exc)
    return (type(exc).__name__ == "NoPermissionError" or "NOPERM" in text
            or "no permissions" in text or "unknown command" in text)


def make_cluster(url: str, options: Mapping[str, Any], retry_s: float | None = None
                 ) -> ClusterClient:
    """The cluster client for ``url`` (any node) with ``make_redis``'s ``options``."""
    check_cluster_url(url)
    opts = {k: v for k, v in options.items()
            if k not in ("connection_class", "retry", "retry_on_error")}
    pack_class = options.get("connection_class")  # hiredis packing, for the URL's scheme
    try:
        client = cast(ClusterClient,
                      ClusterClient.from_url(url, retry=Retry(NoBackoff(), 0), **opts))
    except (ValueError, RedisClusterException) as exc:
        raise ConfigError(f"REDIS_URL {redact_url(url)} cannot be used for a Redis Cluster: "
                          f"{' '.join(str(exc).split())}") from None
    if pack_class is not None:
        # read by the nodes made at each slot-map read (RedisCluster takes no such option)
        client.connection_kwargs["connection_class"] = pack_class
    client.nodes_manager.__class__ = GentleNodes  # same layout: no slots of its own
    client.retry_s = retry_s_from_env() if retry_s is None else retry_s
    client.label = redact_url(url)
    client.troubles = Counter()
    return client


__all__ = ["DEFAULT_RETRY_S", "RETRY_ENV", "Client", "ClusterClient", "ClusterCommandError",
           "ClusterUnreachable",
           "call_with_retry", "check_cluster_url", "is_transient", "make_cluster", "one_line",
           "probe_is_cluster", "refused_in_chain", "retry_bound",
           "retry_s_from_env", "slot_owners", "url_db"]
