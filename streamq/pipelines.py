"""Script calls sent in pipelines: one pipeline per node, each optionally closed by WAIT.

``add_bulk`` and ``rotate-keys`` send many calls of one transition. On one Redis they go
in pipelines of ``per_trip`` calls on one connection. On a Redis Cluster each call goes
to the master serving its slot (every call names keys of one slot): the calls are
grouped by master, each master's in pipelines on one of its connections, the masters
in parallel. A call keeps its order among the calls of its master.

Replicas (``Queue(min_replicas=k)``): each pipeline ends with ``WAIT k timeout``. WAIT
counts the replicas that acknowledged every write made *on its connection*, so it must
follow the writes on the same connection: that is why the calls are sent here, a
pipeline per connection, and not through a client that picks a connection per command.
Fewer than k acknowledgements raise ``NotReplicated``.

Failures are sorted per call: NOSCRIPT (the master restarted, failed over or flushed
its scripts) loads the script where the call runs and sends the call again; cluster
trouble (MOVED, ASK, TRYAGAIN, CLUSTERDOWN, a master that does not
answer: ``cluster.is_transient``) reads the slot map again and sends the failed calls
again after a pause, until the cluster client's retry bound (``STREAMQ_CLUSTER_RETRY_S``)
has passed since the first failure. Any other error is raised as itself. Only calls
that may be repeated are sent this way: ``enqueue`` (a live job id is not added twice)
and ``rotate_payload`` (it replaces only the bytes it was given).
"""

from __future__ import annotations

import contextlib
import time
from collections import Counter
from collections.abc import Sequence
from typing import Any

import anyio
from redis.asyncio import Redis
from redis.asyncio.cluster import ClusterNode, PipelineCommand, RedisCluster
from redis.crc import key_slot
from redis.exceptions import NoScriptError, SlotNotCoveredError

from .cluster import (
    FIRST_PAUSE_S,
    MAX_PAUSE_S,
    Client,
    ClusterUnreachable,
    is_transient,
    one_line,
    retry_bound,
)
from .errors import NotReplicated
from .scripts import ArgT, KeyT, ScriptRunner

Call = tuple[str, Sequence[KeyT], Sequence[ArgT]]
"""A script call: the script's name, its KEYS, its ARGV."""


class Replicas:
    """What ``min_replicas`` asks of a pipeline: ``count`` acknowledgements within
    ``timeout_ms`` (WAIT's arguments), reported as failing ``where``."""

    __slots__ = ("count", "timeout_ms", "where")

    def __init__(self, count: int, timeout_ms: int, where: str) -> None:
        self.count = count
        self.timeout_ms = timeout_ms
        self.where = where

    def check(self, acked: Any) -> None:
        n = int(acked)
        if n < self.count:
            raise NotReplicated(
                f"{n} of {self.count} replicas acknowledged the write within "
                f"{self.timeout_ms / 1000:g}s at {self.where}: it may have been made (adding "
                "the same jobs again is safe while they are live)", acked=n,
                wanted=self.count)


async def run_calls(client: Client, runner: ScriptRunner, calls: Sequence[Call], *,
                    per_trip: int | None = 8, replicas: Replicas | None = None) -> list[Any]:
    """Send ``calls`` (see the module's doc); their replies in order. ``per_trip``: calls
    per pipeline (None: one pipeline per node)."""
    results: list[Any] = [None] * len(calls)
    todo = list(range(len(calls)))
    noscript: Counter[int] = Counter()  # NOSCRIPT replies per call
    deadline: float | None = None  # the first cluster trouble + the bound
    pause = FIRST_PAUSE_S
    bound = retry_bound(client)
    last: BaseException | None = None
    seen = getattr(client, "troubles", None)
    while todo:
        # a round after cluster trouble gets what is left of the bound (a node that hangs
        # must not stretch it by a socket timeout per round)
        left = None if deadline is None else max(0.0, deadline - time.monotonic())
        try:
            with anyio.fail_after(left):
                if isinstance(client, RedisCluster):
                    if deadline is not None:  # read the slot map again
                        with contextlib.suppress(Exception):  # the round says what is wrong
                            await client.nodes_manager.initialize()
                    failed = await _cluster_round(client, runner, calls, todo, results,
                                                  per_trip, replicas)
                else:
                    failed = await _single_round(client, runner, calls, todo, results,
                                                 per_trip, replicas)
        except TimeoutError:
            if left is None:
                raise
            raise ClusterUnreachable(
                f"{len(todo)} pipelined calls kept failing for {bound:g}s; last error "
                f"{one_line(last or TimeoutError('no answer'))}") from None
        retry: list[int] = []
        troubled = False
        loaded: set[tuple[str, int]] = set()
        for i in failed:
            exc = results[i]
            if isinstance(exc, NoScriptError) and noscript[i] < 3:
                noscript[i] += 1
                name, keys, _ = calls[i]
                where = (name, key_slot(_bytes(keys[0])))
                if where not in loaded:  # load it where the call runs, then send it again
                    loaded.add(where)
                    await runner.load_for(name, keys[0])
                retry.append(i)
            elif isinstance(client, RedisCluster) and is_transient(exc):
                retry.append(i)
                last = exc
                troubled = True
                if isinstance(seen, Counter):
                    seen[type(exc).__name__] += 1
            else:
                raise exc
        todo = retry
        if troubled:  # cluster trouble: wait, then the next round reads the slot map again
            now = time.monotonic()
            if deadline is None:
                deadline = now + bound
            if now + pause >= deadline:
                raise ClusterUnreachable(
                    f"{len(todo)} pipelined calls kept failing for {bound:g}s; last error "
                    f"{one_line(last or TimeoutError('no answer'))}")
            await anyio.sleep(pause)
            pause = min(pause * 2, MAX_PAUSE_S)
    return results


def _args(runner: ScriptRunner, call: Call) -> tuple[Any, ...]:
    name, keys, argv = call
    return runner.command(name, keys, argv)


def _bytes(key: KeyT) -> bytes:
    return key if isinstance(key, bytes) else key.encode()


def _chunks(items: list[int], size: int | None) -> list[list[int]]:
    if size is None or size <= 0:
        return [items] if items else []
    return [items[i : i + size] for i in range(0, len(items), size)]


async def _single_round(client: Redis, runner: ScriptRunner, calls: Sequence[Call],
                        todo: list[int], results: list[Any], per_trip: int | None,
                        replicas: Replicas | None) -> list[int]:
    failed: list[int] = []
    for chunk in _chunks(todo, per_trip):
        pipe = client.pipeline(transaction=False)
        for i in chunk:
            pipe.execute_command(*_args(runner, calls[i]))
        if replicas is not None:
            pipe.execute_command("WAIT", replicas.count, replicas.timeout_ms)
        replies: list[Any] = await pipe.execute(raise_on_error=False)
        for i, r in zip(chunk, replies, strict=False):
            results[i] = r
            if isinstance(r, Exception):
                failed.append(i)
        if replicas is not None and not any(isinstance(results[i], Exception) for i in chunk):
            acked = replies[-1]
            if isinstance(acked, Exception):
                raise acked
            replicas.check(acked)
    return failed


async def _cluster_round(client: RedisCluster, runner: ScriptRunner, calls: Sequence[Call],
                         todo: list[int], results: list[Any], per_trip: int | None,
                         replicas: Replicas | None) -> list[int]:
    groups: dict[str, tuple[ClusterNode, list[int]]] = {}
    failed: list[int] = []
    try:
        await client.initialize()  # a no-op once the slot map is read
    except Exception as exc:  # no slot map (mid-failover): every call is tried again
        if not is_transient(exc):
            raise
        for i in todo:
            results[i] = exc
        return list(todo)
    for i in todo:
        key = calls[i][1][0]
        try:
            node = client.get_node_from_key(key.decode() if isinstance(key, bytes) else key)
            if node is None:
                raise SlotNotCoveredError(f"no master serves the slot of {key!r}")
        except Exception as exc:  # a slot no master serves (mid-failover)
            results[i] = exc
            failed.append(i)
            continue
        groups.setdefault(node.name, (node, []))[1].append(i)
    errors: list[BaseException] = []

    async def send(node: ClusterNode, indexes: list[int]) -> None:
        for chunk in _chunks(indexes, per_trip):
            cmds = [PipelineCommand(n, *_args(runner, calls[i]))
                    for n, i in enumerate(chunk)]
            if replicas is not None:
                cmds.append(PipelineCommand(len(chunk), "WAIT", replicas.count,
                                            replicas.timeout_ms))
            try:
                await node.execute_pipeline(cmds)
            except Exception as exc:  # the connection failed: every call of the chunk
                for cmd in cmds:
                    cmd.result = exc
            for i, cmd in zip(chunk, cmds, strict=False):
                results[i] = cmd.result
                if isinstance(cmd.result, Exception):
                    failed.append(i)
            if replicas is not None and not any(
                    isinstance(results[i], Exception) for i in chunk):
                acked = cmds[-1].result
                try:
                    if isinstance(acked, Exception):
                        raise acked
                    replicas.check(acked)
                except Exception as exc:
                    errors.append(exc)
                    return

    async with anyio.create_task_group() as tg:
        for node, indexes in groups.values():
            tg.start_soon(send, node, indexes)
    if errors:
        raise errors[0]
    return failed


__all__ = ["Call", "Replicas", "run_calls"]
