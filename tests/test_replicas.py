"""``Queue(min_replicas=k)`` on one Redis with a replica: adds return once the replica
acknowledged them (WAIT on the connection that wrote), and raise ``NotReplicated`` when
it does not (stopped, or none at all). The cluster case is in tests/cluster."""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from streamq import ConfigError, JobOptions, NotReplicated, Queue
from streamq.devredis import RedisProcess, start_redis_server


@pytest.fixture
def replica(redis_proc: RedisProcess, tmp_path: Path) -> Iterator[RedisProcess]:
    proc = start_redis_server(directory=tmp_path / "replica",
                              extra_args=["--replicaof", "127.0.0.1", str(redis_proc.port)])
    try:
        deadline = time.monotonic() + 30
        with redis.Redis(port=proc.port) as c:
            while c.info("replication").get("master_link_status") != "up":
                assert time.monotonic() < deadline, "the replica never synced"
                time.sleep(0.05)
        yield proc
    finally:
        if proc.proc is not None and proc.proc.poll() is None:
            proc.proc.send_signal(signal.SIGCONT)
        proc.stop()
        with redis.Redis(port=redis_proc.port) as c:  # the master forgets it soon enough
            deadline = time.monotonic() + 30
            while int(c.info("replication")["connected_slaves"]) and time.monotonic() < deadline:
                time.sleep(0.05)


async def test_adds_wait_for_the_replica_and_raise_when_it_is_stopped(
    redis_url: str, queue_name: str, replica: RedisProcess
) -> None:
    async with Queue(queue_name, redis_url=redis_url, min_replicas=1,
                     replica_timeout=0.3) as q:
        await q.add({"a": 1})
        await q.add_bulk([{"i": i} for i in range(1200)])  # three pipelines, each WAITed
        with redis.Redis(port=replica.port) as c:  # on the replica already, not eventually
            assert c.xlen(q.keys.lanes[1]) == 1201
        assert replica.proc is not None
        replica.proc.send_signal(signal.SIGSTOP)
        try:
            started = time.monotonic()
            with pytest.raises(NotReplicated) as info:
                await q.add({"a": 2}, JobOptions(job_id="maybe"))
            assert 0.25 <= time.monotonic() - started < 5
            assert info.value.acked == 0 and info.value.wanted == 1
            text = str(info.value)
            assert "\n" not in text and "0 of 1 replicas" in text and "0.3s" in text
            with pytest.raises(NotReplicated):
                await q.add_bulk([{"i": i} for i in range(10)])
        finally:
            replica.proc.send_signal(signal.SIGCONT)
        # it was added anyway, and adding it again once replicated is safe (one job)
        assert (await q.add({"a": 2}, JobOptions(job_id="maybe"))).job_id == "maybe"
        assert (await q.counts())["waiting"] == 1 + 1200 + 1 + 10


async def test_without_any_replica_every_add_raises(redis_url: str, queue_name: str) -> None:
    async with Queue(queue_name, redis_url=redis_url, min_replicas=1,
                     replica_timeout=0.05) as q:
        with pytest.raises(NotReplicated, match="0 of 1 replicas acknowledged"):
            await q.add({})
    async with Queue(queue_name, redis_url=redis_url) as q:  # the default asks for none
        await q.add({})
        assert (await q.counts())["waiting"] == 2


def test_min_replicas_is_checked_at_construction() -> None:
    with pytest.raises(ConfigError, match="min_replicas"):
        Queue("q", min_replicas=-1)
    with pytest.raises(ConfigError, match="replica_timeout"):
        Queue("q", min_replicas=1, replica_timeout=0)
