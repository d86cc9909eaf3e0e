"""Settings from the environment, with the seed's defaults, and the Redis client built on purpose.

Redis client choices (docs/reliability.md, part 2): redis-py 8 defaults to a 5 s socket
timeout, RESP3 and 10 automatic retries. We set each explicitly: blocking reads stay
well below the socket timeout, RESP2 keeps Lua replies in one shape, and retries are
few and short because every write is idempotent (enqueue dedups on the job id) or
fenced (complete/retry/dead-letter check ownership first).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from datetime import timedelta
from typing import Any
from urllib.parse import parse_qs, quote, urlsplit

import msgspec
from redis.asyncio import ConnectionPool, Redis
from redis.asyncio.connection import Connection, SSLConnection
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from .cluster import Client, make_cluster, probe_is_cluster
from .errors import ConfigError
from .validate import int_value, seconds_value

DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"

SOCKET_TIMEOUT_S = 4.0
CONNECT_TIMEOUT_S = 5.0
# Queue.connect()'s first PING, retries included: a misconfiguration fails fast
STARTUP_TIMEOUT_S = 1.5
HEALTH_CHECK_INTERVAL_S = 5
# A Queue runs at most CONCURRENT_CALLS commands at once (more callers wait their turn);
# the pool's cap is above it, for users who share the client.
CONCURRENT_CALLS = 64
MAX_CONNECTIONS = 256
# The longest a worker blocks in XREAD; must stay well below SOCKET_TIMEOUT_S.
MAX_BLOCK_MS = 2000


MAX_STORED_VALUE_BYTES = 16 * 1024 * 1024
"""A stored result travels in one script call and one record: far below Redis's 512 MB
bulk limit, and far above what a record should hold."""
MIN_PROGRESS_BYTES = 16


class QueueDefaults(msgspec.Struct, frozen=True, kw_only=True):
    """Per-queue defaults (seed: attempts 3, backoff 2 s, completed 24 h, failed 7 days).

    Checked when built (a bad value is a ``ConfigError`` naming the field). A TTL of 0
    keeps no record: the job is still counted, its events written and its hooks called,
    but ``get_job`` answers None once it has finished (a dead letter is still kept).
    """

    attempts: int = 3
    backoff_s: float = 2.0
    completed_ttl_s: float = 24 * 3600.0
    failed_ttl_s: float = 7 * 24 * 3600.0
    max_payload_bytes: int = 64 * 1024
    dead_letter_max: int = 100_000
    completed_index_max: int = 10_000
    """Completed job ids kept listable (``Queue.list_jobs("completed")``), newest first;
    0 keeps none. Their records still expire after ``completed_ttl_s``."""
    events_max: int = 2_000
    """Entries (approximate) kept in the queue's events stream; 0 turns events off. The
    batch transitions write one entry per 100 jobs, so memory stays under ~5 MB."""
    max_result_bytes: int = 64 * 1024
    """Cap on a handler's encoded return value, kept with the completed record
    (``JobInfo.result``) for as long as the record (``completed_ttl_s``); 0 keeps none.
    A result over the cap, or one msgpack cannot encode, is dropped with a warning: the
    job still completes and ``JobInfo.result_error`` says why (docs/workflows.md)."""
    max_progress_bytes: int = 1024
    """Cap on one ``Job.progress`` value (a dict, encoded as JSON)."""
    progress_interval_s: float = 0.5
    """At most one progress write per job per this many seconds; the last value waits for
    the next interval (or the job's end) instead of being dropped."""
    index_live_s: float = 24 * 3600.0
    """A blind-index entry (see blind_index.py) lives this long past its job's due time
    plus the longest record retention: an allowance for time spent waiting or running."""

    def __post_init__(self) -> None:
        int_value("QueueDefaults.attempts", self.attempts, minimum=1)
        seconds_value("QueueDefaults.backoff_s", self.backoff_s)
        seconds_value("QueueDefaults.completed_ttl_s", self.completed_ttl_s)
        seconds_value("QueueDefaults.failed_ttl_s", self.failed_ttl_s)
        # Redis refuses a bulk string over 512 MB (proto-max-bulk-len)
        int_value("QueueDefaults.max_payload_bytes", self.max_payload_bytes, minimum=1,
                  maximum=512 * 1024 * 1024)
        int_value("QueueDefaults.dead_letter_max", self.dead_letter_max, minimum=1)
        int_value("QueueDefaults.completed_index_max", self.completed_index_max, minimum=0)
        int_value("QueueDefaults.events_max", self.events_max, minimum=0)
        int_value("QueueDefaults.max_result_bytes", self.max_result_bytes, minimum=0,
                  maximum=MAX_STORED_VALUE_BYTES)
        int_value("QueueDefaults.max_progress_bytes", self.max_progress_bytes,
                  minimum=MIN_PROGRESS_BYTES, maximum=MAX_STORED_VALUE_BYTES)
        seconds_value("QueueDefaults.progress_interval_s", self.progress_interval_s,
                      maximum=3600.0)
        seconds_value("QueueDefaults.index_live_s", self.index_live_s)

    @property
    def completed_ttl_ms(self) -> int:
        """completed_ttl_s for the Lua scripts: 0 = keep no record, else at least 1 ms."""
        return _ttl_ms(self.completed_ttl_s)

    @property
    def failed_ttl_ms(self) -> int:
        """failed_ttl_s for the Lua scripts: 0 = keep no record, else at least 1 ms."""
        return _ttl_ms(self.failed_ttl_s)


def _ttl_ms(ttl_s: float) -> int:
    return 0 if ttl_s <= 0 else max(1, round(ttl_s * 1000))


def seconds(value: float | int | timedelta | None) -> float:
    if value is None:
        return 0.0
    if isinstance(value, timedelta):
        return value.total_seconds()
    return float(value)


def redis_url_from_env(env: Mapping[str, str] | None = None) -> str:
    """``REDIS_URL``, else built from ``REDIS_HOST``/``REDIS_PORT``/``REDIS_PASSWORD``/``REDIS_DB``."""
    env = os.environ if env is None else env
    url = env.get("REDIS_URL", "").strip()
    if url:
        if not url.startswith(("redis://", "rediss://", "unix://")):
            raise ConfigError("REDIS_URL must start with redis://, rediss:// or unix://")
        return check_redis_url(url)
    host = env.get("REDIS_HOST", "").strip()
    if not host:
        return DEFAULT_REDIS_URL
    port = env.get("REDIS_PORT", "6379").strip()
    if not port.isdigit():
        raise ConfigError("REDIS_PORT must be a number")
    db = env.get("REDIS_DB", "0").strip()
    if not db.isdigit():
        raise ConfigError("REDIS_DB must be a number")
    password = env.get("REDIS_PASSWORD", "")
    user = env.get("REDIS_USERNAME", "")
    auth = ""
    if password:
        auth = f"{quote(user, safe='')}:{quote(password, safe='')}@"
    scheme = "rediss" if env.get("REDIS_TLS", "").lower() in ("1", "true", "yes") else "redis"
    return f"{scheme}://{auth}{host}:{port}/{db}"


def check_redis_url(url: str, source: str = "REDIS_URL") -> str:
    """``url`` if its port and database parts are numbers, else a ConfigError naming
    ``source``. redis-py silently ignores a database it cannot read (``/notadb`` would
    select database 0); whether the number exists is up to the server, which refuses
    one beyond its ``databases`` setting (16 by default: 0-15) when we connect."""
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError for a port that is not a number
    except ValueError:
        raise ConfigError(f"{source} is malformed: the port must be a number") from None
    db_values = parse_qs(parts.query).get("db", [])
    if parts.scheme in ("redis", "rediss"):
        path = parts.path.strip("/")
        if path:
            db_values.append(path)
    for db in db_values:
        if not db.isdigit():
            raise ConfigError(f"{source}: the database must be a number (e.g. "
                              f"redis://127.0.0.1:6379/0), not {db[:20]!r}")
    return url


def env_is_default_local(env: Mapping[str, str] | None = None) -> bool:
    """True when no Redis location is configured: the only case where we may start one."""
    env = os.environ if env is None else env
    return not env.get("REDIS_URL", "").strip() and not env.get("REDIS_HOST", "").strip()


try:  # hiredis packs commands in C; redis.asyncio still packs them in Python
    from hiredis import pack_command as _hiredis_pack

    HAVE_HIREDIS_PACK = True
except ImportError:  # pragma: no cover - hiredis is a declared dependency
    HAVE_HIREDIS_PACK = False


class _PackMixin:
    def pack_command(self, *args: Any) -> list[bytes]:
        first = args[0]
        if isinstance(first, str):
            args = (*first.encode().split(), *args[1:])
        elif b" " in first:
            args = (*first.split(), *args[1:])
        return [_hiredis_pack(args)]


class HiredisPackConnection(_PackMixin, Connection):
    """A TCP connection whose commands are packed by hiredis (the hot path packs
    thousands of script arguments per second)."""


class HiredisPackSSLConnection(_PackMixin, SSLConnection):
    """The TLS twin of HiredisPackConnection."""


def redis_options(url: str, **overrides: Any) -> dict[str, Any]:
    """The client options of ``make_redis``, for one Redis or a cluster's nodes."""
    options: dict[str, Any] = {
        "protocol": 2,
        "decode_responses": False,
        "socket_timeout": SOCKET_TIMEOUT_S,
        "socket_connect_timeout": CONNECT_TIMEOUT_S,
        "socket_keepalive": True,
        "health_check_interval": HEALTH_CHECK_INTERVAL_S,
        "retry": Retry(ExponentialBackoff(cap=0.5, base=0.02), 2),
        "retry_on_error": [RedisConnectionError, RedisTimeoutError],
        "max_connections": MAX_CONNECTIONS,
    }
    if url.startswith("rediss://") and os.environ.get("STREAMQ_TLS_INSECURE") != "1":
        options["ssl_cert_reqs"] = "required"
    if HAVE_HIREDIS_PACK and "connection_class" not in overrides:
        if url.startswith("redis://"):
            options["connection_class"] = HiredisPackConnection
        elif url.startswith("rediss://"):
            options["connection_class"] = HiredisPackSSLConnection
    options.update(overrides)
    insecure_ok = os.environ.get("STREAMQ_TLS_INSECURE") == "1"
    if options.get("ssl_cert_reqs") in ("none", None) and url.startswith("rediss://") and not insecure_ok:
        raise ConfigError(
            "refusing rediss:// without certificate verification; "
            "set STREAMQ_TLS_INSECURE=1 to allow it"
        )
    return options


def make_redis(url: str, **overrides: Any) -> Redis:
    """A redis.asyncio client for one Redis with every reliability-relevant option set
    explicitly."""
    options = redis_options(url, **overrides)
    try:
        # a plain pool: redis-py's blocking pool costs ~50 us a call; Queue bounds its own
        # concurrent calls (CONCURRENT_CALLS) so a burst waits instead of failing
        pool = ConnectionPool.from_url(url, **options)
        return Redis.from_pool(pool)
    except ValueError as exc:
        raise ConfigError(f"REDIS_URL is malformed: {exc}") from None


def make_client(url: str, cluster: bool, **overrides: Any) -> Client:
    """The client for ``url``, for a Redis Cluster node (``cluster``) or one Redis, with
    the same options either way."""
    if cluster:
        return make_cluster(url, redis_options(url, **overrides))
    return make_redis(url, **overrides)


async def open_client(url: str, **overrides: Any) -> Client:
    """The client for ``url``: a Redis Cluster client when the node it names runs in
    cluster mode (asked: ``HELLO``, else ``INFO cluster``), else a client for one Redis
    (the one that asked). The caller translates connection errors
    (``translate_redis_errors``). Asked anew each time, never remembered: a URL may name
    another server later (a restart, a reused port)."""
    probe = make_redis(url, **overrides)
    try:
        cluster = await probe_is_cluster(probe, url)
    except BaseException:
        await probe.aclose()
        raise
    if not cluster:
        return probe
    await probe.aclose()
    return make_client(url, True, **overrides)
