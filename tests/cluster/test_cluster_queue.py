"""Every public Queue operation on a real Redis Cluster, through a node that does NOT serve
the queue's slot: streamq must find the cluster from that node's URL and follow it.
Also: a RedisCluster passed in, the db number rule, and one-line errors naming the cluster."""

from __future__ import annotations

import uuid
from typing import Any

import anyio
import pytest
from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster

from streamq import (
    ConfigError,
    FlowJob,
    Job,
    JobOptions,
    JobState,
    PermanentError,
    Queue,
    RedisUnavailable,
    Worker,
)
from streamq.keys import QueueKeys
from streamq.partitions import grow_partitions
from tests.support.cluster import LocalCluster
from tests.support.util import running, wait_until


def name() -> str:
    return "c" + uuid.uuid4().hex[:10]


def non_owner_url(cluster: LocalCluster, queue: str) -> str:
    """The URL of a master that does not serve the queue's home slot."""
    return cluster.non_owner_of(QueueKeys(queue).prefix).url


async def _state(q: Queue, job_id: str, state: JobState) -> bool:
    info = await q.get_job(job_id)
    return info is not None and info.state is state


async def test_every_queue_operation_through_a_node_that_does_not_serve_the_queue(
    healthy: LocalCluster,
) -> None:
    qn = name()
    url = non_owner_url(healthy, qn)
    async with Queue(qn, redis_url=url) as q:
        await q.connect()
        assert isinstance(q.redis, RedisCluster) and q.is_cluster
        assert await q.partition_count() == 1
        await q.ensure_groups()

        # adding
        a = await q.add({"n": 1}, JobOptions(job_id="job-a"))
        assert (await q.add({"n": 1}, JobOptions(job_id="job-a"))).job_id == a.job_id
        later = await q.add({"n": 2}, JobOptions(delay=3600))
        refs = await q.add_bulk([{"i": i} for i in range(30)] +
                                [({"i": "hi"}, JobOptions(priority="high", job_id="hi"))])
        assert len(refs) == 31
        counts = await q.counts()
        assert counts["waiting"] == 32 and counts["delayed"] == 1
        assert (await q.partition_counts())[0]["waiting"] == 32
        info = await q.get_job("job-a")
        assert info is not None and info.state is JobState.WAITING
        page = await q.list_jobs("waiting", limit=5)
        assert len(page.jobs) == 5 and page.jobs[0].info.id == "hi" and page.next_cursor
        assert (await q.list_jobs("delayed")).jobs[0].info.id == later.job_id
        payload = await q.job_payload("job-a")
        assert payload is not None and payload.data == {"n": 1}
        assert [e.name for e in await q.job_events("job-a")] == ["added"]
        events = await q.read_events("0-0", count=100)
        assert len(events) >= 33 and events[0].name == "added"
        assert await q.cancel(later.job_id) is True
        assert await _state(q, later.job_id, JobState.CANCELLED)

        # pause / resume
        await q.pause()
        assert await q.is_paused() and (await q.counts())["paused"] == 1
        await q.resume()
        assert not await q.is_paused()

        # schedules
        s = await q.upsert_schedule("tick", every=3600, data={"s": 1})
        assert [x.id for x in await q.schedules()] == ["tick"]
        got = await q.get_schedule("tick")
        assert got is not None and got.id == s.id
        assert await q.pause_schedule("tick") and await q.resume_schedule("tick")
        run = await q.run_schedule_now("tick")
        assert run is not None

        # a flow in the queue's slot; one across queues is refused at add time
        flow = await q.add_flow(FlowJob(data={"f": "parent"}, children=[
            FlowJob(data={"f": "c1"}), FlowJob(data={"f": "c2"})]), on_child_failure="fail")
        other = Queue(name(), redis_url=url)
        with pytest.raises(ConfigError, match="on a Redis Cluster a flow must live in one slot"):
            await q.add_flow(FlowJob(data={}, children=[FlowJob(data={}, queue=other)]),
                             on_child_failure="fail")
        await other.close()

        # a worker drains it all (and fires a schedule due every second); one job fails
        await q.upsert_schedule("fast", every=1, data={"s": "fast"})
        bad = await q.add({"fail": True}, JobOptions(job_id="bad", attempts=1))
        ran: list[str] = []
        fired: list[str] = []

        async def handler(job: Job) -> Any:
            ran.append(job.id)
            if job.data == {"s": "fast"}:
                fired.append(job.id)
            if isinstance(job.data, dict) and job.data.get("fail"):
                raise PermanentError("no")
            return {"ok": job.id}

        async with running(Worker(q, handler, rate_limit=None, concurrency=8)) as w:
            await wait_until(lambda: flow.job_id in ran, 60, 0.05, "the flow's parent")
            await wait_until(lambda: "bad" in ran, 30, 0.05, "the failing job")
            await wait_until(lambda: len(fired) >= 2, 30, 0.05, "two runs of the schedule")
            assert await q.remove_schedule("fast")
            assert [x.name for x in await q.workers()] == [w.consumer]
            await wait_until(lambda: _idle(q), 30, 0.05, "a drained queue")
        parent = await q.get_job(flow.job_id)
        assert parent is not None and parent.state is JobState.COMPLETED
        assert parent.result == {"ok": flow.job_id}
        done = await q.get_job("job-a")
        assert done is not None and done.state is JobState.COMPLETED
        assert (await q.list_jobs("completed", limit=100)).jobs

        # dead letters: list, replay one, replay all, purge
        [letter] = await q.dead_letters()
        assert letter.job_id == bad.job_id and "no" in letter.error
        assert await q.replay_dead(bad.job_id) == 1
        assert await _state(q, "bad", JobState.WAITING)
        async with running(Worker(q, handler, rate_limit=None)):
            await wait_until(lambda: _dead(q, 1), 30, 0.05, "the failure again")
        assert await q.replay_dead() == 1
        async with running(Worker(q, handler, rate_limit=None)):
            await wait_until(lambda: _dead(q, 1), 30, 0.05, "the failure again")
        assert await q.purge_dead() == 1
        assert await q.purge_completed() >= 30
        assert await q.remove_schedule("tick")


async def _idle(q: Queue) -> bool:
    c = await q.counts()
    return c["waiting"] == 0 and c["active"] == 0 and c["delayed"] == 0


async def _dead(q: Queue, n: int) -> bool:
    return len(await q.dead_letters()) == n


async def test_a_partitioned_queue_through_a_replica_node_spans_the_masters(
    healthy: LocalCluster,
) -> None:
    qn = name()
    replica = next(n for n in healthy.nodes if healthy.role(n) == "slave")
    async with Queue(qn, redis_url=replica.url, partitions=6) as q:
        refs = await q.add_bulk([{"i": i} for i in range(600)])
        per = await q.partition_counts()
        assert sum(p["waiting"] for p in per) == 600 and all(p["waiting"] for p in per)
        # a flow on a partitioned queue: children without ids inherit the root's tag
        flow = await q.add_flow(FlowJob(data={"f": 0}, options=JobOptions(job_id="o-{7}"),
                                        children=[FlowJob(data={"f": i}) for i in (1, 2)]),
                                on_child_failure="continue")
        events = await q.read_events("0-0", count=1000)
        assert len(events) >= 603 and "," in events[-1].id  # one position per partition
        ran: set[str] = set()

        async def handler(job: Job) -> None:
            ran.add(job.id)

        async with running(Worker(q, handler, rate_limit=None, concurrency=20)):
            await wait_until(lambda: len(ran) == 603, 60, 0.05, "603 jobs")
            later = await q.read_events(events[-1].id, count=5000, block=1.0)
            assert {e.name for e in later} >= {"active", "completed"}
        assert ran >= {r.job_id for r in refs} | {flow.job_id}
        assert (await q.counts())["completed"] == 603
        # growing the count works on a cluster too (every partition its own slot)
        assert await grow_partitions(q, 8) == 6
        await q.add_bulk([{} for _ in range(50)])
        assert len(await q.partition_counts()) == 8


async def test_a_redis_cluster_passed_in_works_and_errors_name_it(healthy: LocalCluster) -> None:
    qn = name()
    node = healthy.non_owner_of(QueueKeys(qn).prefix)
    rc = RedisCluster(host="127.0.0.1", port=node.port)
    try:
        async with Queue(qn, redis=rc, partitions=3) as q:
            assert q.redis_url == f"redis://127.0.0.1:{node.port}"
            refs = await q.add_bulk([{"i": i} for i in range(1200)])
            assert (await q.counts())["waiting"] == 1200
            info = await q.get_job(refs[-1].job_id)
            assert info is not None and info.state is JobState.WAITING
    finally:
        await rc.aclose()


async def test_a_cluster_url_may_name_db_0_but_no_other(healthy: LocalCluster) -> None:
    base = healthy.url.rsplit("/", 1)[0]
    async with Queue(name(), redis_url=base) as q:  # no db at all
        await q.connect()
        assert q.is_cluster
    async with Queue(name(), redis_url=base + "/0") as q:
        await q.connect()
    for url in (base + "/3", base + "?db=2"):
        async with Queue(name(), redis_url=url) as q:
            with pytest.raises(ConfigError) as info:
                await q.connect()
        text = str(info.value)
        assert "Redis Cluster" in text and "database 0" in text and "\n" not in text


async def test_a_single_node_client_on_a_cluster_is_a_one_line_error(
    healthy: LocalCluster,
) -> None:
    qn = name()
    node = healthy.non_owner_of(QueueKeys(qn).prefix)
    plain = Redis(host="127.0.0.1", port=node.port)
    try:
        async with Queue(qn, redis=plain) as q:
            with pytest.raises(RedisUnavailable) as info:
                await q.add({"x": 1})
        text = str(info.value)
        assert "\n" not in text and f"127.0.0.1:{node.port}" in text
        assert "MOVED" in text and "RedisCluster" in text
    finally:
        await plain.aclose()


async def test_a_cluster_that_does_not_answer_fails_within_the_bound_in_one_line(
    healthy: LocalCluster, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The master of the queue's slot and its replica stopped (SIGSTOP: connections hang,
    no failover can happen): the add is retried for STREAMQ_CLUSTER_RETRY_S, then one
    RedisUnavailable line names the cluster."""
    monkeypatch.setenv("STREAMQ_CLUSTER_RETRY_S", "2")
    qn = name()
    url = non_owner_url(healthy, qn)
    owner = healthy.master_of_key(QueueKeys(qn).prefix)
    async with Queue(qn, redis_url=url) as q:
        await q.add({})
        group = [*healthy.replicas_of(owner), owner]
        for node in group:
            healthy.pause(node)
        try:
            started = anyio.current_time()
            with pytest.raises(RedisUnavailable) as info:
                await q.add({})
            took = anyio.current_time() - started
        finally:
            for node in group:
                healthy.resume(node)
    text = str(info.value)
    assert "\n" not in text and text.startswith(f"Redis Cluster at {url}")
    assert "STREAMQ_CLUSTER_RETRY_S=2s" in text
    # the first try (cut by the socket timeout, 4 s), then the bound: each later try gets
    # what is left of it
    assert 2 <= took <= 4 + 2 + 2, took


async def test_least_privilege_users_work_on_a_cluster_with_an_empty_acl_log(
    healthy: LocalCluster,
) -> None:
    """The T10 producer and worker grants plus what a cluster client needs (HELLO to find
    the cluster, CLUSTER SLOTS and COMMAND to read the slot map and the command table),
    set on every node (ACLs are per node): everything runs and no node logs a refusal.
    Without +cluster|slots: one line naming the grants, at once."""
    from tests.chaos.test_t10_security import COMMON, PRODUCER_ACL, WORKER_ACL

    qn = name()
    keys = [f"~streamq:{{{qn}}}:*", f"~streamq:{{{qn}~*}}:*"]
    grants = ["+cluster|slots", "+command"]
    tag = uuid.uuid4().hex[:6]
    for node in healthy.nodes:
        with healthy.client(node) as c:
            c.execute_command("ACL", "SETUSER", f"p{tag}", "on", ">pw", *keys, *COMMON,
                              *grants, *PRODUCER_ACL)
            c.execute_command("ACL", "SETUSER", f"w{tag}", "on", ">pw", *keys, *COMMON,
                              *grants, *WORKER_ACL)
            c.execute_command("ACL", "SETUSER", f"n{tag}", "on", ">pw", *keys, *COMMON,
                              *PRODUCER_ACL)
            c.execute_command("ACL", "LOG", "RESET")
    base = healthy.url.split("://", 1)[1]
    async with Queue(qn, redis_url=f"redis://p{tag}:pw@{base}", partitions=3) as q:
        await q.add_bulk([{} for _ in range(30)])
        await q.add({})
    ran: list[str] = []

    async def handler(job: Job) -> None:
        ran.append(job.id)

    async with (Queue(qn, redis_url=f"redis://w{tag}:pw@{base}") as q,
                running(Worker(q, handler, rate_limit=None))):
        await wait_until(lambda: len(ran) == 31, 30, 0.05, "31 jobs")
    for node in healthy.nodes:
        with healthy.client(node) as c:
            assert c.acl_log() == [], (node.port, c.acl_log())
    started = anyio.current_time()
    async with Queue(qn, redis_url=f"redis://n{tag}:pw@{base}") as q:
        with pytest.raises(RedisUnavailable) as info:
            await q.add({})
    assert anyio.current_time() - started < 5
    text = str(info.value)
    assert "\n" not in text and "+cluster|slots" in text and ":pw@" not in text
