"""Turning redis-py's exceptions into the clear one-line errors users see."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from redis.exceptions import (
    AskError,
    AuthenticationError,
    AuthorizationError,
    ClusterError,
    MovedError,
    NoPermissionError,
    RedisClusterException,
    ResponseError,
    TryAgainError,
)
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from .cluster import ClusterCommandError, ClusterUnreachable, one_line, refused_in_chain
from .errors import ConfigError, QueueFull, RedisUnavailable
from .redact import redact_url


def _is_auth_error(exc: BaseException) -> bool:
    text = str(exc)
    return isinstance(exc, AuthenticationError | AuthorizationError) or any(
        w in text for w in ("WRONGPASS", "NOAUTH", "invalid username-password"))


@contextmanager
def translate_redis_errors(url: str) -> Iterator[None]:
    """Map connection, auth and OOM failures to RedisUnavailable / QueueFull naming the URL,
    and cluster trouble that outlasted its retries (``cluster.py``) to RedisUnavailable
    naming the cluster, each in one line."""
    try:
        yield
    except ClusterUnreachable as exc:
        raise RedisUnavailable(f"Redis Cluster at {redact_url(url)} is unavailable: {exc}") from None
    except AskError as exc:  # MOVED or ASK reaching a client for one Redis
        kind = "MOVED" if isinstance(exc, MovedError) else "ASK"
        raise RedisUnavailable(
            f"Redis at {redact_url(url)} answered {kind} (slot {exc.slot_id} is served by "
            f"{exc.host}:{exc.port}): it is a Redis Cluster node; streamq uses a cluster "
            "client when the URL names one, and a client passed in as redis= must be a "
            "RedisCluster") from None
    except (TryAgainError, ClusterError) as exc:  # on a cluster client the caller built
        raise RedisUnavailable(f"Redis Cluster at {redact_url(url)}: {one_line(exc)}") from None
    except (RedisClusterException, ClusterCommandError) as exc:
        refused = refused_in_chain(exc)
        if refused is not None and not _is_auth_error(refused):
            raise RedisUnavailable(
                f"Redis Cluster at {redact_url(url)} refused access: {one_line(refused)} (a "
                "cluster client reads the slot map and the command table: the ACL user "
                "needs +cluster|slots and +command)") from None
        if refused is not None:
            raise RedisUnavailable(f"Redis AUTH failed at {redact_url(url)}: "
                                   f"{one_line(refused)}") from None
        cause = exc.__cause__ if isinstance(exc, ClusterCommandError) else exc
        raise RedisUnavailable(f"Redis Cluster at {redact_url(url)}: "
                               f"{one_line(cause or exc)}") from None
    except (AuthenticationError, AuthorizationError) as exc:
        raise RedisUnavailable(f"Redis AUTH failed at {redact_url(url)}: {exc}") from None
    except RedisConnectionError as exc:
        if "AUTH" in str(exc) or "WRONGPASS" in str(exc) or "NOAUTH" in str(exc):
            raise RedisUnavailable(f"Redis AUTH failed at {redact_url(url)}: {exc}") from None
        raise RedisUnavailable(f"Redis unreachable at {redact_url(url)}: {exc}") from None
    except RedisTimeoutError as exc:
        raise RedisUnavailable(f"Redis timed out at {redact_url(url)}: {exc}") from None
    except NoPermissionError as exc:
        # redis-py strips the NOPERM prefix of this reply ("this user has no permissions...")
        raise RedisUnavailable(f"Redis refused access at {redact_url(url)}: NOPERM {exc}") from None
    except ResponseError as exc:
        text = str(exc)
        if text.startswith("OOM") or "maxmemory" in text:
            raise QueueFull(f"Redis out of memory (maxmemory) at {redact_url(url)}") from None
        if text.startswith(("NOPERM", "WRONGPASS", "NOAUTH")) or "user executing the script" in text:
            # the last: a command inside a Lua transition that the ACL user may not run
            raise RedisUnavailable(f"Redis refused access at {redact_url(url)}: {text}") from None
        if "DB index is out of range" in text:
            raise ConfigError(f"Redis at {redact_url(url)} has no such database (DB index is out "
                              "of range: the server has `databases` 16 unless configured, "
                              "so 0-15)") from None
        raise
