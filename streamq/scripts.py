"""The Lua registry: every atomic transition of ``lua/``, called by SHA.

Scripts are static files (never built from strings), loaded once per connection pool
and called with EVALSHA. A Redis restart or ``SCRIPT FLUSH`` empties the script cache;
the NOSCRIPT reply is answered by loading the script again and repeating the call, which
is safe because every transition is either idempotent or fenced.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Awaitable, Callable, Sequence
from importlib import resources
from pathlib import Path
from typing import Any, cast

from redis.asyncio import Redis
from redis.asyncio.client import Pipeline
from redis.exceptions import NoScriptError

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
    """Calls scripts by SHA on one client, reloading them after NOSCRIPT."""

    def __init__(self, redis: Redis) -> None:
        self._redis = redis
        self._scripts = scripts()
        # execute_command is untyped in redis-py; EVALSHA's typed wrapper is too narrow
        self._exec = cast(Callable[..., Awaitable[Any]], redis.execute_command)

    async def load_all(self) -> None:
        for s in self._scripts.values():
            await self._redis.script_load(s.source)

    async def __call__(self, name: str, keys: Sequence[KeyT], args: Sequence[ArgT]) -> Any:
        s = self._scripts[name]
        try:
            return await self._exec("EVALSHA", s.sha, len(keys), *keys, *args)
        except NoScriptError:
            await self._redis.script_load(s.source)
            return await self._exec("EVALSHA", s.sha, len(keys), *keys, *args)

    def queue_call(
        self, pipe: Pipeline, name: str, keys: Sequence[KeyT], args: Sequence[ArgT]
    ) -> None:
        """Add a call to a pipeline; the caller handles NOSCRIPT in the results (see ``run_pipeline``)."""
        s = self._scripts[name]
        pipe.execute_command("EVALSHA", s.sha, len(keys), *keys, *args)

    async def run_pipeline(self, pipe: Pipeline) -> list[Any]:
        """Execute a pipeline of script calls; on NOSCRIPT, load every script and run it again.

        Only idempotent scripts (enqueue with its job-id dedup) may be pipelined.
        """
        commands = list(pipe.command_stack)
        results: list[Any] = await pipe.execute(raise_on_error=False)
        if any(isinstance(r, NoScriptError) for r in results):
            await self.load_all()
            pipe.command_stack = commands
            results = await pipe.execute(raise_on_error=False)
        for r in results:
            if isinstance(r, Exception):
                raise r
        return results
