"""Every command a partitioned queue sends stays in one Cluster slot.

That is what lets a partitioned queue run on Redis Cluster: each Lua transition (and
each plain command) names keys of one partition only, and what spans partitions is one
call per partition. Tested on a single redis-server by recording every command the
producer, the worker and the operator calls send (client-side, below the queue), then
asking the server which arguments are keys (``COMMAND GETKEYS``) and hashing them.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest
import redis
from redis.asyncio.client import Pipeline
from redis.asyncio.client import Redis as AsyncRedis
from redis.crc import key_slot
from redis.exceptions import ResponseError

from streamq import Job, JobOptions, PermanentError, Queue, Worker
from streamq.partitions import grow_partitions
from streamq.routing import partition_of
from tests.support.util import running, wait_until
from tests.test_partitions import ids_in


@pytest.fixture
def recorded(monkeypatch: pytest.MonkeyPatch) -> list[tuple[Any, ...]]:
    sent: list[tuple[Any, ...]] = []
    plain = AsyncRedis.execute_command
    piped = Pipeline.execute_command

    async def record(self: AsyncRedis, *args: Any, **options: Any) -> Any:
        sent.append(args)
        return await plain(self, *args, **options)

    def record_piped(self: Pipeline, *args: Any, **options: Any) -> Any:
        sent.append(args)
        return piped(self, *args, **options)

    monkeypatch.setattr(AsyncRedis, "execute_command", record)
    monkeypatch.setattr(Pipeline, "execute_command", record_piped)
    return sent


def _flat(args: tuple[Any, ...]) -> list[Any]:
    first = args[0]
    name = first.decode() if isinstance(first, bytes) else str(first)
    return [*name.split(), *args[1:]]


def slots_of(url: str, sent: list[tuple[Any, ...]]) -> tuple[Counter[str], list[str]]:
    """Commands seen (by name) and the ones whose keys span several slots."""
    seen: Counter[str] = Counter()
    crossing: list[str] = []
    with redis.Redis.from_url(url) as client:
        for args in sent:
            flat = _flat(args)
            name = str(flat[0]).upper()
            seen[name] += 1
            try:
                keys = client.execute_command("COMMAND GETKEYS", *flat)
            except ResponseError:  # a command without keys (PING, SCRIPT LOAD, CLIENT ...)
                continue
            slots = {key_slot(k if isinstance(k, bytes) else str(k).encode()) for k in keys}
            if len(slots) > 1:
                crossing.append(f"{name} {[str(k)[:60] for k in keys]}")
    return seen, crossing


async def test_every_command_of_a_partitioned_queue_names_one_slot(
    redis_url: str, queue_name: str, recorded: list[tuple[Any, ...]]
) -> None:
    async with Queue(queue_name, redis_url=redis_url, partitions=3) as q:
        await q.add_bulk([{"i": i, "fail": i % 7 == 0} for i in range(60)])
        await q.add({}, JobOptions(delay=0.2, job_id="order-{9}-a"))
        await q.add({}, JobOptions(job_id="order-{9}-b"))
        waiting = ids_in(1, 3, "keep-")[0]
        await q.add({}, JobOptions(job_id=waiting))
        assert await q.cancel(waiting)
        await q.pause()
        await q.resume()
        # schedules: each lives in the partition of its id, its runs too
        for sid in ("s-a", "s-b", "s-c", "s-d"):
            await q.upsert_schedule(sid, every=1.0, limit=1, data={"i": 1})
        await q.run_schedule_now("s-a")
        await q.pause_schedule("s-b")
        await q.resume_schedule("s-b")
        tries: dict[str, int] = {}

        async def handler(job: Job) -> None:
            if job.data.get("fail"):
                raise PermanentError("no")
            tries[job.id] = tries.get(job.id, 0) + 1
            if tries[job.id] == 1 and job.data.get("i", 1) % 5 == 0:
                raise RuntimeError("retry me")

        worker = Worker(q, handler, rate_limit=500.0, reclaim_interval=0.1,
                        heartbeat_interval=0.05)
        async with running(worker):
            await wait_until(lambda: _settled(q), timeout=20)
            await wait_until(lambda: _schedules_ran(q), timeout=20)
        listed = await q.schedules()
        assert len(listed) == 4 and all(s.partition == partition_of(s.id, 3) for s in listed)
        assert await q.remove_schedule("s-c")
        await q.get_job("order-{9}-a")
        await q.read_events(count=50)
        letters = await q.dead_letters(5)
        assert letters
        await q.replay_dead(letters[0].job_id)
        await q.replay_dead()
        await q.purge_dead()
        await q.purge_completed()
        await q.partition_counts()
    async with Queue(queue_name, redis_url=redis_url) as drained:
        for k in drained.layout.all_keys(3):
            for lane in k.lanes:
                await drained.redis.delete(lane)
        await drained.ensure_groups()
        await grow_partitions(drained, 4)
    seen, crossing = slots_of(redis_url, recorded)
    assert crossing == []
    # the run did send what matters: claims, completions, retries, dead letters, wakers
    for name in ("EVALSHA", "XREAD", "SET", "XRANGE", "XGROUP", "HMGET", "ZRANGE"):
        assert seen[name] > 0, (name, seen)


async def _schedules_ran(q: Queue) -> bool:
    return all(s.runs == 1 for s in await q.schedules())


async def _settled(q: Queue) -> bool:
    c = await q.counts()
    return c["waiting"] == c["active"] == c["delayed"] == 0 and c["completed"] > 0
