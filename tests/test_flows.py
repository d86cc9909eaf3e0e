"""Flows: a parent waits for its children (across queues, nested, partitioned), both
failure policies, atomic creation, exactly one release per child, cancel, the cluster rule."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any

import anyio
import msgspec
import pytest
from redis.asyncio.cluster import RedisCluster

import streamq.flows.create as flow_create
from streamq import (
    ChildFailed,
    ConfigError,
    FlowJob,
    Job,
    JobOptions,
    JobState,
    PayloadError,
    Queue,
    Worker,
)
from streamq.routing import partition_of
from tests.support.util import running, wait_until

Handler = Callable[[Job], Any]


class Recorder:
    """A handler that notes each run, returns a result naming the job, fails on demand,
    and reports its children's results when it has children."""

    def __init__(self) -> None:
        self.ran: list[str] = []
        self.seen: dict[str, dict[str, Any]] = {}
        self.gates: dict[str, anyio.Event] = {}
        self.fail: dict[str, int] = {}  # job id -> attempts that fail

    async def __call__(self, job: Job) -> Any:
        self.ran.append(job.id)
        gate = self.gates.get(job.id)
        if gate is not None:
            await gate.wait()
        if job.attempt <= self.fail.get(job.id, 0):
            raise RuntimeError(f"boom {job.attempt}")
        kids = await job.children_results()
        if kids:
            self.seen[job.id] = kids
        return {"done": job.id, "kids": sorted(kids)}


@asynccontextmanager
async def workers(handler: Handler, *queues: Queue, **options: Any) -> AsyncIterator[None]:
    async with AsyncExitStack() as stack:
        for q in queues:
            await stack.enter_async_context(running(Worker(q, handler, rate_limit=None,
                                                           **options)))
        yield


async def state_of(q: Queue, job_id: str) -> JobState | None:
    info = await q.get_job(job_id)
    return None if info is None else info.state


async def until_state(q: Queue, job_id: str, state: JobState, timeout: float = 10) -> None:
    async def check() -> bool:
        return await state_of(q, job_id) is state

    await wait_until(check, timeout, 0.02, f"{job_id} to be {state.value}")


def opts(job_id: str, **more: Any) -> JobOptions:
    return JobOptions(job_id=job_id, **more)


@pytest.fixture
async def two(redis_url: str, queue_name: str) -> AsyncIterator[tuple[Queue, Queue]]:
    async with Queue(queue_name + "a", redis_url=redis_url) as qa, \
            Queue(queue_name + "b", redis_url=redis_url) as qb:
        yield qa, qb


async def events_named(q: Queue, job_id: str, name: str) -> int:
    return sum(1 for e in await q.job_events(job_id) if e.name == name)


# -- the happy path ---------------------------------------------------------------------------
async def test_a_parent_runs_once_after_its_children_on_two_queues(
    two: tuple[Queue, Queue]
) -> None:
    qa, qb = two
    rec = Recorder()
    ref = await qa.add_flow(FlowJob(data={"report": 1}, options=opts("root"), children=[
        FlowJob(data={"part": 1}, queue=qb, options=opts("c1")),
        FlowJob(data={"part": 2}, options=opts("c2")),
    ]), on_child_failure="fail")
    assert ref.job_id == "root" and ref.queue_name == qa.name
    assert [(c.job_id, c.queue_name) for c in ref.children] == [("c1", qb.name), ("c2", qa.name)]
    assert ref.ids() == ["root", "c1", "c2"]
    info = await qa.get_job("root")
    assert info is not None and info.state is JobState.WAITING_CHILDREN
    assert info.pending_children == 2 and info.max_attempts == 3
    payload = await qa.job_payload("root")
    assert payload is not None and payload.data == {"report": 1} and payload.where == "flow"
    assert await state_of(qb, "c1") is JobState.WAITING and await state_of(qa, "c2") is JobState.WAITING

    async with workers(rec, qa, qb):
        await until_state(qa, "root", JobState.COMPLETED)
    assert rec.ran.count("root") == 1 and rec.ran[-1] == "root"
    assert sorted(rec.ran[:2]) == ["c1", "c2"]
    assert list(rec.seen["root"]) == ["c1", "c2"]  # in the order they were given
    assert rec.seen["root"]["c1"] == {"done": "c1", "kids": []}
    root = await qa.get_job("root")
    assert root is not None and root.result == {"done": "root", "kids": ["c1", "c2"]}
    assert await events_named(qa, "root", "children_done") == 1


async def test_children_results_of_a_job_without_children_is_empty(
    redis_url: str, queue_name: str
) -> None:
    async with Queue(queue_name, redis_url=redis_url) as q:
        await q.add({}, opts("plain"))
        rec = Recorder()
        async with workers(rec, q):
            await until_state(q, "plain", JobState.COMPLETED)
        assert "plain" not in rec.seen


async def test_a_nested_flow_runs_bottom_up(two: tuple[Queue, Queue]) -> None:
    qa, qb = two
    rec = Recorder()
    await qa.add_flow(FlowJob(data={}, options=opts("top"), children=[
        FlowJob(data={}, queue=qb, options=opts("mid"), children=[
            FlowJob(data={}, queue=qa, options=opts("g1")),
            FlowJob(data={}, options=opts("g2")),  # the parent's queue: qb
        ]),
        FlowJob(data={}, options=opts("leaf")),
    ]), on_child_failure="fail")
    assert await state_of(qb, "mid") is JobState.WAITING_CHILDREN
    assert await state_of(qb, "g2") is JobState.WAITING
    async with workers(rec, qa, qb):
        await until_state(qa, "top", JobState.COMPLETED)
    order = rec.ran
    assert order.index("mid") > max(order.index("g1"), order.index("g2"))
    assert order.index("top") > max(order.index("mid"), order.index("leaf"))
    assert sorted(order) == ["g1", "g2", "leaf", "mid", "top"]
    assert rec.seen["mid"] == {"g1": {"done": "g1", "kids": []}, "g2": {"done": "g2", "kids": []}}
    assert rec.seen["top"]["mid"] == {"done": "mid", "kids": ["g1", "g2"]}


async def test_a_delayed_parent_waits_its_delay_after_its_children(
    redis_url: str, queue_name: str
) -> None:
    async with Queue(queue_name, redis_url=redis_url) as q:
        await q.add_flow(FlowJob(data={}, options=opts("p", delay=30), children=[
            FlowJob(data={}, options=opts("k"))]), on_child_failure="fail")
        async with workers(Recorder(), q):
            await until_state(q, "p", JobState.DELAYED)
        info = await q.get_job("p")
        assert info is not None and info.due_at is not None


# -- failure policies --------------------------------------------------------------------------
async def test_policy_fail_dead_letters_the_parent_and_cancels_the_children_not_started(
    two: tuple[Queue, Queue]
) -> None:
    qa, qb = two
    rec = Recorder()
    rec.fail["bad"] = 9
    rec.gates["busy"] = anyio.Event()
    rec.gates["bad"] = anyio.Event()  # fails once busy runs
    await qa.add_flow(FlowJob(data={}, options=opts("p"), children=[
        FlowJob(data={}, queue=qb, options=opts("bad", attempts=1)),
        FlowJob(data={}, options=opts("busy")),
        FlowJob(data={}, options=opts("later", delay=60)),
        FlowJob(data={}, queue=qb, options=opts("sub"), children=[
            FlowJob(data={}, queue=qb, options=opts("deep", delay=60))]),
    ]), on_child_failure="fail")
    async with workers(rec, qa, qb):
        await wait_until(lambda: "busy" in rec.ran, 10, message="busy to start")
        rec.gates["bad"].set()
        await until_state(qa, "p", JobState.FAILED)
        info = await qa.get_job("p")
        assert info is not None and info.error == "child bad failed: RuntimeError: boom 1"
        # not started: cancelled, with the waiting sub-parent's own children
        for q, job_id in ((qa, "later"), (qb, "sub"), (qb, "deep")):
            assert await state_of(q, job_id) is JobState.CANCELLED, job_id
        # running: left to finish; its success changes nothing for the failed parent
        rec.gates["busy"].set()
        await until_state(qa, "busy", JobState.COMPLETED)
    assert "p" not in rec.ran
    assert await state_of(qa, "p") is JobState.FAILED
    letters = await qa.dead_letters()
    assert [(d.job_id, d.error) for d in letters] == [("p", "child bad failed: RuntimeError: boom 1")]
    assert letters[0].data == {}
    counts = await qa.counts()
    assert counts["failed"] == 1 and counts["cancelled"] == 1 and counts["completed"] == 1
    assert (await qb.counts())["cancelled"] == 2


async def test_policy_continue_runs_the_parent_with_the_failures(
    two: tuple[Queue, Queue]
) -> None:
    qa, qb = two
    rec = Recorder()
    rec.fail["bad"] = 9
    await qa.add_flow(FlowJob(data={}, options=opts("p"), children=[
        FlowJob(data={}, queue=qb, options=opts("bad", attempts=2, backoff=0.01)),
        FlowJob(data={}, options=opts("good")),
    ]), on_child_failure="continue")
    async with workers(rec, qa, qb):
        await until_state(qa, "p", JobState.COMPLETED)
    kids = rec.seen["p"]
    assert kids["good"] == {"done": "good", "kids": []}
    failed = kids["bad"]
    assert isinstance(failed, ChildFailed)
    assert (failed.job_id, failed.state, failed.error) == ("bad", "failed", "RuntimeError: boom 2")
    assert rec.ran.count("bad") == 2 and rec.ran.count("p") == 1


async def test_a_nested_fail_climbs_until_a_continue(two: tuple[Queue, Queue]) -> None:
    """mid fails because its child failed (its policy: fail); top continues with that."""
    qa, qb = two
    rec = Recorder()
    rec.fail["g"] = 9
    await qa.add_flow(FlowJob(data={}, options=opts("top"), children=[
        FlowJob(data={}, queue=qb, options=opts("mid"), on_child_failure="fail", children=[
            FlowJob(data={}, options=opts("g", attempts=1))]),
        FlowJob(data={}, options=opts("ok")),
    ]), on_child_failure="continue")
    async with workers(rec, qa, qb):
        await until_state(qa, "top", JobState.COMPLETED)
    assert await state_of(qb, "mid") is JobState.FAILED
    mid = rec.seen["top"]["mid"]
    assert isinstance(mid, ChildFailed)
    assert mid.error == "child g failed: RuntimeError: boom 1"
    assert "mid" not in rec.ran


async def test_a_child_that_fails_twice_then_succeeds_releases_its_parent_once(
    redis_url: str, queue_name: str
) -> None:
    async with Queue(queue_name, redis_url=redis_url) as q:
        rec = Recorder()
        rec.fail["flaky"] = 2
        rec.gates["slow"] = anyio.Event()
        await q.add_flow(FlowJob(data={}, options=opts("p"), children=[
            FlowJob(data={}, options=opts("flaky", attempts=3, backoff=0.01)),
            FlowJob(data={}, options=opts("slow")),
        ]), on_child_failure="fail")
        async with workers(rec, q):
            await until_state(q, "flaky", JobState.COMPLETED)
            # three runs of flaky counted once: the parent still waits for slow
            info = await q.get_job("p")
            assert info is not None and info.state is JobState.WAITING_CHILDREN
            assert info.pending_children == 1
            rec.gates["slow"].set()
            await until_state(q, "p", JobState.COMPLETED)
        assert rec.ran.count("flaky") == 3 and rec.ran.count("p") == 1
        assert rec.seen["p"]["flaky"] == {"done": "flaky", "kids": []}
        assert await events_named(q, "p", "children_done") == 1


async def test_a_replayed_child_never_releases_its_parent_again(
    redis_url: str, queue_name: str
) -> None:
    async with Queue(queue_name, redis_url=redis_url) as q:
        rec = Recorder()
        rec.fail["x"] = 1
        await q.add_flow(FlowJob(data={}, options=opts("p"), children=[
            FlowJob(data={}, options=opts("x", attempts=1))]), on_child_failure="continue")
        async with workers(rec, q):
            await until_state(q, "p", JobState.COMPLETED)
            assert await q.replay_dead("x") == 1  # now it succeeds (attempt 1 of a new set)
            rec.fail["x"] = 0
            await until_state(q, "x", JobState.COMPLETED)
        assert rec.ran.count("p") == 1
        assert await events_named(q, "p", "children_done") == 1


async def test_a_child_dead_lettered_for_stalling_settles_its_parent(
    redis_url: str, queue_name: str
) -> None:
    """A worker that dies holding a child: the take-over dead-letters it (max_stalled 1)
    without knowing it is a flow's job; the dead-letter transition sends it through the
    flow's path, so the parent hears of it."""
    async with Queue(queue_name, redis_url=redis_url) as q:
        await q.add_flow(FlowJob(data={}, options=opts("p"), children=[
            FlowJob(data={}, options=opts("lost"))]), on_child_failure="continue")
        rec = Recorder()
        dead_worker = Worker(q, rec, rate_limit=None, visibility_timeout=0.2)
        await q.ensure_groups()
        assert [j.id for j in await dead_worker.claim_now(1)] == ["lost"]  # and never runs it
        async with workers(rec, q, visibility_timeout=0.2, max_stalled=1):
            await until_state(q, "p", JobState.COMPLETED)
        lost = rec.seen["p"]["lost"]
        assert isinstance(lost, ChildFailed) and lost.error == "stalled 1 times"
        assert "lost" not in rec.ran


# -- atomic creation --------------------------------------------------------------------------
async def _nothing_added(q: Queue) -> None:
    counts = await q.counts()
    assert counts["waiting"] == counts["delayed"] == counts["active"] == 0, counts
    keys = [k async for k in q.redis.scan_iter(match=f"streamq:{{{q.name}}}:*")]
    kinds = {k.decode().split(":")[2] for k in keys}
    assert kinds <= {"lane", "meta", "events", "stats", "idx"}, kinds
    for k in keys:
        if b":idx:" in k:
            assert await q.redis.hlen(k) == 0


async def test_a_bad_child_adds_nothing(redis_url: str, queue_name: str) -> None:
    class Order(msgspec.Struct):
        n: int

    async with Queue(queue_name + "t", redis_url=redis_url, job_type=Order) as typed, \
            Queue(queue_name, redis_url=redis_url) as q:
        await q.add({}, opts("taken"))
        before = await q.counts()
        with pytest.raises(PayloadError):
            await q.add_flow(FlowJob(data={}, options=opts("r1"), children=[
                FlowJob(data={"n": "not an int"}, queue=typed)]), on_child_failure="fail")
        with pytest.raises(ConfigError, match="'taken' is live already"):
            await q.add_flow(FlowJob(data={}, options=opts("r2"), children=[
                FlowJob(data={}, options=opts("fine")), FlowJob(data={}, options=opts("taken"))]),
                on_child_failure="fail")
        with pytest.raises(ConfigError, match="appears twice"):
            await q.add_flow(FlowJob(data={}, options=opts("r3"), children=[
                FlowJob(data={}, options=opts("d")), FlowJob(data={}, options=opts("d"))]),
                on_child_failure="fail")
        with pytest.raises(ConfigError, match="priority"):
            await q.add_flow(FlowJob(data={}, children=[
                FlowJob(data={}, options=JobOptions(priority="urgent"))]),  # type: ignore[arg-type]
                on_child_failure="fail")
        with pytest.raises(ConfigError, match="on_child_failure"):
            await q.add_flow(FlowJob(data={}), on_child_failure="ignore")  # type: ignore[arg-type]
        with pytest.raises(TypeError):
            await q.add_flow(FlowJob(data={}))  # type: ignore[call-arg]  # the policy is required
        assert await q.counts() == before
        for job_id in ("r1", "r2", "r3", "fine", "d"):
            assert await q.get_job(job_id) is None, job_id
        await _nothing_added(typed)


async def test_adding_a_flow_again_is_deduplicated_on_its_root(
    redis_url: str, queue_name: str
) -> None:
    async with Queue(queue_name, redis_url=redis_url) as q:
        flow = FlowJob(data={}, options=opts("once"), children=[FlowJob(data={}, options=opts("k"))])
        first = await q.add_flow(flow, on_child_failure="fail")
        again = await q.add_flow(flow, on_child_failure="fail")
        assert first == again
        assert (await q.counts())["waiting"] == 1
        # generated ids: the second call answers with the ids of the flow that is there
        nested = FlowJob(data={}, options=opts("gen"), children=[
            FlowJob(data={}), FlowJob(data={}, children=[FlowJob(data={}), FlowJob(data={})])])
        first = await q.add_flow(nested, on_child_failure="fail")
        again = await q.add_flow(nested, on_child_failure="fail")
        assert again == first and len(set(first.ids())) == 5
        assert [len(c.children) for c in again.children] == [0, 2]
        assert (await q.counts())["waiting"] == 1 + 3


async def test_a_flow_too_deep_is_refused(redis_url: str, queue_name: str) -> None:
    async with Queue(queue_name, redis_url=redis_url) as q:
        chain = FlowJob(data={})
        for _ in range(101):
            chain = FlowJob(data={}, children=[chain])
        with pytest.raises(ConfigError, match="nests at most 100 levels"):
            await q.add_flow(chain, on_child_failure="fail")
        await _nothing_added(q)


# -- cancel -----------------------------------------------------------------------------------
async def test_cancelling_a_waiting_parent_cancels_what_has_not_started(
    two: tuple[Queue, Queue]
) -> None:
    qa, qb = two
    rec = Recorder()
    rec.gates["running"] = anyio.Event()
    await qa.add_flow(FlowJob(data={}, options=opts("p"), children=[
        FlowJob(data={}, options=opts("running")),
        FlowJob(data={}, queue=qb, options=opts("queued")),  # no worker on qb
        FlowJob(data={}, options=opts("later", delay=60)),
    ]), on_child_failure="fail")
    async with workers(rec, qa):
        await wait_until(lambda: "running" in rec.ran, 10, message="a child to start")
        assert await qa.cancel("p") is True
        assert await state_of(qa, "p") is JobState.CANCELLED
        assert await state_of(qb, "queued") is JobState.CANCELLED
        assert await state_of(qa, "later") is JobState.CANCELLED
        assert await qa.cancel("p") is False  # finished now
        rec.gates["running"].set()
        await until_state(qa, "running", JobState.COMPLETED)
    assert "p" not in rec.ran and "queued" not in rec.ran


@pytest.mark.parametrize("policy", ["fail", "continue"])
async def test_cancelling_a_child_settles_its_parent_by_the_policy(
    redis_url: str, queue_name: str, policy: str
) -> None:
    async with Queue(queue_name, redis_url=redis_url) as q:
        await q.add_flow(FlowJob(data={}, options=opts("p"), children=[
            FlowJob(data={}, options=opts("c1")),
            FlowJob(data={}, options=opts("c2", delay=60))]),
            on_child_failure=policy)  # type: ignore[arg-type]
        assert await q.cancel("c2") is True
        rec = Recorder()
        async with workers(rec, q):
            final = JobState.FAILED if policy == "fail" else JobState.COMPLETED
            await until_state(q, "p", final)
            if policy == "fail":
                await until_state(q, "c1", JobState.CANCELLED)  # cancelled with the parent
        info = await q.get_job("p")
        assert info is not None
        if policy == "fail":
            assert info.error == "child c2 was cancelled" and "p" not in rec.ran
        else:
            c2 = rec.seen["p"]["c2"]
            assert isinstance(c2, ChildFailed) and c2.state == "cancelled"


# -- partitions and the cluster rule ----------------------------------------------------------
async def test_a_flow_on_a_partitioned_queue(redis_url: str, queue_name: str) -> None:
    async with Queue(queue_name, redis_url=redis_url, partitions=3) as q:
        kids = [FlowJob(data={"i": i}, options=opts(f"k{i}")) for i in range(8)]
        await q.add_flow(FlowJob(data={}, options=opts("spread"), children=kids),
                         on_child_failure="fail")
        assert len({partition_of(f"k{i}", 3) for i in range(8)} | {partition_of("spread", 3)}) > 1
        # generated ids of a tagged root's children share its tag, hence its partition
        tagged = await q.add_flow(FlowJob(data={}, options=opts("order-{77}"), children=[
            FlowJob(data={}), FlowJob(data={}, children=[FlowJob(data={})])]),
            on_child_failure="fail")
        ids = tagged.ids()
        assert all(i.endswith("-{77}") for i in ids[1:]), ids
        assert {partition_of(i, 3) for i in ids} == {partition_of("order-{77}", 3)}
        rec = Recorder()
        async with workers(rec, q):
            await until_state(q, "spread", JobState.COMPLETED)
            await until_state(q, "order-{77}", JobState.COMPLETED)
        assert sorted(rec.seen["spread"]) == sorted(f"k{i}" for i in range(8))
        assert rec.ran.count("spread") == 1


async def test_on_a_cluster_a_flow_must_live_in_one_slot(
    redis_url: str, queue_name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert flow_create._is_cluster(RedisCluster(host="127.0.0.1", port=1)) is True
    monkeypatch.setattr(flow_create, "_is_cluster", lambda client: True)
    async with Queue(queue_name + "a", redis_url=redis_url) as qa, \
            Queue(queue_name + "b", redis_url=redis_url) as qb, \
            Queue(queue_name + "p", redis_url=redis_url, partitions=3) as qp:
        with pytest.raises(ConfigError, match="on a Redis Cluster a flow must live in one slot"):
            await qa.add_flow(FlowJob(data={}, children=[FlowJob(data={}, queue=qb)]),
                              on_child_failure="fail")
        spread = [FlowJob(data={}, options=opts(f"u{i}")) for i in range(6)]
        with pytest.raises(ConfigError, match="one slot"):
            await qp.add_flow(FlowJob(data={}, options=opts("u"), children=spread),
                              on_child_failure="fail")
        await _nothing_added(qb)
        assert await qp.get_job("u") is None
        # one queue, one partition (ids sharing a {tag}): allowed
        ref = await qp.add_flow(FlowJob(data={}, options=opts("t-{x}"), children=[
            FlowJob(data={}, options=opts("c-{x}")), FlowJob(data={})]), on_child_failure="fail")
        assert await state_of(qp, ref.job_id) is JobState.WAITING_CHILDREN
        ref = await qa.add_flow(FlowJob(data={}, children=[FlowJob(data={})]),
                                on_child_failure="fail")
        assert await state_of(qa, ref.job_id) is JobState.WAITING_CHILDREN


async def test_a_childs_own_timeout_rides_along_with_its_flow_link(
    redis_url: str, queue_name: str
) -> None:
    """The entry's spec carries both the job's timeout and its flow link."""
    async with Queue(queue_name, redis_url=redis_url) as q:
        await q.add_flow(FlowJob(data={}, options=opts("p"), children=[
            FlowJob(data={}, options=opts("slow", timeout=0.2, attempts=1, backoff=0.01))]),
            on_child_failure="continue")
        rec = Recorder()
        rec.gates["slow"] = anyio.Event()  # never set: only the timeout ends it
        async with workers(rec, q):
            await until_state(q, "p", JobState.COMPLETED)
        slow = rec.seen["p"]["slow"]
        assert isinstance(slow, ChildFailed) and "timed out" in slow.error, slow
