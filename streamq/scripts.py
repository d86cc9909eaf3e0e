"""The Lua registry: every atomic transition of ``lua/``, called by SHA.

Scripts are static files (never built from strings), loaded once per client (on a
cluster: on every master) and called with EVALSHA. A Redis restart, a failover to a
replica or ``SCRIPT FLUSH`` empties a script cache; the NOSCRIPT reply is answered by
loading the script where the call runs (on a cluster: on the master serving its keys'
slot) and repeating the call, which did not run. SCRIPT LOAD rather than EVAL of the
source: least-privilege ACL users are granted ``+evalsha +script|load`` only.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Awaitable, Callable, Sequence
from importlib import resources
from pathlib import Path
from typing import Any, cast

from redis.asyncio.cluster import RedisCluster
from redis.exceptions import NoScriptError

from .cluster import Client, call_with_retry, retry_bound
from .errors import ConfigError

KeyT = str | bytes
ArgT = str | bytes | int | float

SCRIPT_NAMES: tuple[str, ...] = (
    "adopt_partitions",
    "breaker_admit",
    "breaker_close",
    "breaker_failure",
    "breaker_success",
    "cancel",
    "claim",
    "complete",
    "counts",
    "dead_letter",
    "defer",
    "delivery_report",
    "due_schedules",
    "enqueue",
    "extend",
    "fire_schedule",
    "flow_add",
    "flow_cancel",
    "flow_complete",
    "flow_dead_letter",
    "flow_link",
    "get_job",
    "get_payload",
    "grow_partitions",
    "index_lookup",
    "limiter_take",
    "progress",
    "reclaim",
    "release",
    "remove_schedule",
    "replay",
    "resume",
    "retry",
    "rotate_payload",
    "route_begin",
    "route_pin",
    "route_settle",
    "run_schedule_now",
    "take_tokens",
    "upsert_schedule",
)

_HEADER_RE = re.compile(r"^#!lua(?: flags=([\w,-]+))?\n--\[\[ (\w+):", re.MULTILINE)


def lua_dir() -> Path:
    """Where the scripts are: inside the installed package, else the source tree's ``lua/``."""
    packaged = resources.files("streamq").joinpath("lua")
    if packaged.is_dir():
        return Path(str(packaged))
    source = Path(__file__).resolve().parent.parent / "lua"
    if source.is_dir():
        return source
    raise ConfigError("streamq's Lua scripts are missing: reinstall the package")


SHARED = "shared"
"""lua/shared.lua: helpers every transition starts with, put after its '#!lua' line."""
FLOW_SHARED = "flow_shared"
"""lua/flow_shared.lua: helpers of the flow transitions (``flow_*``), put after shared.lua."""


class Script:
    __slots__ = ("flags", "name", "sha", "source", "text")

    def __init__(self, name: str, text: str, shared: str = "") -> None:
        m = _HEADER_RE.match(text)
        if m is None or m.group(2) != name:
            raise ConfigError(f"lua/{name}.lua lacks its '#!lua' line and '--[[ {name}:' header")
        self.name = name
        self.text = text
        """The file as written (header contract first)."""
        shebang, _, body = text.partition("\n")
        self.source = f"{shebang}\n{shared}{body}" if shared else text
        """What Redis runs: the shebang (flags must be on line one), the shared helpers, the file."""
        self.flags = tuple((m.group(1) or "").split(",")) if m.group(1) else ()
        self.sha = hashlib.sha1(self.source.encode()).hexdigest()


def load_scripts() -> dict[str, Script]:
    base = lua_dir()
    shared = (base / f"{SHARED}.lua").read_text(encoding="utf-8")
    flow = shared + (base / f"{FLOW_SHARED}.lua").read_text(encoding="utf-8")
    return {n: Script(n, (base / f"{n}.lua").read_text(encoding="utf-8"),
                      flow if n.startswith("flow_") else shared)
            for n in SCRIPT_NAMES}


_SCRIPTS: dict[str, Script] | None = None


def scripts() -> dict[str, Script]:
    global _SCRIPTS
    if _SCRIPTS is None:
        _SCRIPTS = load_scripts()
    return _SCRIPTS


class ScriptRunner:
    """Calls scripts by SHA on one client (a Redis, or a Redis Cluster: each call goes to
    the master serving its keys' slot), sending a script's source after NOSCRIPT."""

    def __init__(self, redis: Client) -> None:
        self._redis = redis
        self._scripts = scripts()
        # execute_command is untyped in redis-py; EVALSHA's typed wrapper is too narrow
        self._exec = cast(Callable[..., Awaitable[Any]], redis.execute_command)
        # on a cluster the whole call (a NOSCRIPT's load included) rides out cluster
        # trouble; streamq's client also does it per command, a client passed in does not
        self._retry_s = retry_bound(redis) if isinstance(redis, RedisCluster) else None

    async def load_all(self) -> None:
        """Load every script (on a cluster: on every master). Not needed for correctness:
        a master without a script is sent its source at the first NOSCRIPT."""
        for s in self._scripts.values():
            await self._redis.script_load(s.source)

    def command(self, name: str, keys: Sequence[KeyT], args: Sequence[ArgT]) -> tuple[Any, ...]:
        """The EVALSHA of a call, for a pipeline."""
        s = self._scripts[name]
        return ("EVALSHA", s.sha, len(keys), *keys, *args)

    async def load_for(self, name: str, key: KeyT) -> None:
        """Load one script where a call with ``key`` runs: on one Redis, there; on a
        cluster, on the master serving the key's slot (a promoted replica, a restarted
        master or a new one lacks what the others were given)."""
        source = self._scripts[name].source
        client = self._redis
        if isinstance(client, RedisCluster):
            text = key.decode() if isinstance(key, bytes) else key
            load = cast(Callable[..., Awaitable[Any]], client.execute_command)

            async def load_there() -> None:
                await client.initialize()  # the slot map, if a failure made it stale
                node = client.get_node_from_key(text)
                await load("SCRIPT LOAD", source, target_nodes=node)

            await call_with_retry(load_there, retry_bound(client), "SCRIPT LOAD")
        else:
            await client.script_load(source)

    async def __call__(self, name: str, keys: Sequence[KeyT], args: Sequence[ArgT]) -> Any:
        if self._retry_s is not None:
            return await call_with_retry(lambda: self._call(name, keys, args), self._retry_s,
                                         f"script {name}")
        return await self._call(name, keys, args)

    async def _call(self, name: str, keys: Sequence[KeyT], args: Sequence[ArgT]) -> Any:
        s = self._scripts[name]
        try:
            return await self._exec("EVALSHA", s.sha, len(keys), *keys, *args)
        except NoScriptError:
            if keys:
                await self.load_for(name, keys[0])
            else:
                await self._redis.script_load(s.source)
            return await self._exec("EVALSHA", s.sha, len(keys), *keys, *args)
