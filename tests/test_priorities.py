"""Priorities 1-10 (SPEC 9.3): strict order across every level, the names as aliases, bad
values refused at add time, and every transition that moves a job keeps its level."""

from __future__ import annotations

import random
import re
from typing import Any

import anyio
import anyio.lowlevel
import pytest

from streamq import (
    ConfigError,
    FlowJob,
    Job,
    JobOptions,
    JobState,
    PermanentError,
    Queue,
    Worker,
)
from streamq.keys import QueueKeys
from streamq.priority import (
    LANE_OF_LEVEL,
    LANE_ORDER,
    LEVEL_OF_LANE,
    lane_of,
    level_of,
    priority_of_lane,
)
from streamq.scripts import lua_dir
from tests.support.util import running, wait_until


def test_the_lua_lane_table_is_the_python_one() -> None:
    shared = (lua_dir() / "shared.lua").read_text()
    m = re.search(r"local LANE_ORDER = \{([\d, ]+)\}", shared)
    assert m is not None
    assert tuple(int(x) for x in m.group(1).split(",")) == LANE_ORDER
    assert re.search(r"local LANES = 10\b", shared)
    # lane numbers 0, 1, 2 keep high, normal, low (references stored before ten levels)
    assert LEVEL_OF_LANE[:3] == (2, 5, 8)
    assert sorted(LANE_ORDER) == list(range(10))
    assert [LEVEL_OF_LANE[n] for n in LANE_ORDER] == list(range(1, 11))


def test_names_are_aliases_of_levels_2_5_8() -> None:
    for name, level in (("high", 2), ("normal", 5), ("low", 8)):
        assert level_of(name) == level
        assert lane_of(name) == lane_of(level) == LANE_OF_LEVEL[level]
        assert priority_of_lane(lane_of(level)) == name
    assert priority_of_lane(lane_of(3)) == 3 and priority_of_lane(lane_of(10)) == 10
    k = QueueKeys("sms")
    # the named levels keep their stream names (lane:normal is how queues are discovered)
    assert k.lanes[lane_of("high")] == "streamq:{sms}:lane:high"
    assert k.lanes[lane_of(5)] == "streamq:{sms}:lane:normal"
    assert k.lanes[lane_of("low")] == "streamq:{sms}:lane:low"
    assert k.lanes[lane_of(1)] == "streamq:{sms}:lane:1"
    assert len(set(k.lanes)) == 10 and k.lane_map == "streamq:{sms}:lanemap"


@pytest.mark.parametrize("bad", [0, 11, -1, 5.0, True, False, None, "urgent", "HIGH", "5", b"high"])
def test_a_bad_priority_is_one_clear_line_when_the_options_are_built(bad: Any) -> None:
    with pytest.raises(ConfigError, match="priority") as e:
        JobOptions(priority=bad)
    assert "\n" not in str(e.value) and "1 (most urgent) to 10" in str(e.value)


async def test_a_bad_priority_writes_nothing(redis_url: str, queue_name: str) -> None:
    async with Queue(queue_name, redis_url=redis_url) as q:
        with pytest.raises(ConfigError, match="priority"):
            await q.add_bulk([({"i": 1}, JobOptions(priority=3)),
                              ({"i": 2}, JobOptions(priority=12))])
        assert (await q.counts())["waiting"] == 0


async def test_strict_order_across_all_ten_levels(redis_url: str, queue_name: str) -> None:
    rng = random.Random(7)
    # each level 6 times, names and numbers mixed, added in a shuffled order
    wanted: list[Any] = [lv for lv in range(1, 11) for _ in range(6)]
    wanted += ["high", "normal", "low"] * 2
    rng.shuffle(wanted)
    async with Queue(queue_name, redis_url=redis_url) as q:
        await q.pause()
        await q.add_bulk([({"n": i, "p": p}, JobOptions(priority=p)) for i, p in enumerate(wanted)])
        assert (await q.counts())["waiting"] == len(wanted)
        order: list[tuple[int, int, Any]] = []

        async def handler(job: Job) -> None:
            order.append((level_of(job.data["p"]), job.data["n"], job.priority))

        async with running(Worker(q, handler, concurrency=3, rate_limit=None)):
            await q.resume()
            await wait_until(lambda: len(order) == len(wanted), 60)
        # level by level, and first in first out within a level
        assert [(lv, n) for lv, n, _ in order] == sorted((lv, n) for lv, n, _ in order)
        assert {(lv, shown) for lv, _, shown in order} == {
            (lv, {2: "high", 5: "normal", 8: "low"}.get(lv, lv)) for lv in range(1, 11)}


async def test_an_urgent_job_overtakes_a_backlog(redis_url: str, queue_name: str) -> None:
    """A level-1 job added while level 9 drains runs within one claim: the add marks its
    lane, which the next claim reads first."""
    async with Queue(queue_name, redis_url=redis_url) as q:
        await q.add_bulk([({"n": i}, JobOptions(priority=9)) for i in range(300)])
        order: list[str] = []

        async def handler(job: Job) -> None:
            order.append(job.id)
            if len(order) == 20:
                await q.add({"urgent": True}, JobOptions(priority=1, job_id="urgent"))
            await anyio.lowlevel.checkpoint()

        async with running(Worker(q, handler, concurrency=2, rate_limit=None)):
            await wait_until(lambda: "urgent" in order, 60)
        # at most the jobs already claimed (concurrency) ran between its add and its start
        assert order.index("urgent") <= 20 + 2


async def test_every_transition_keeps_the_level(redis_url: str, queue_name: str) -> None:
    """Delayed then promoted, retried, dead-lettered and replayed, cancelled, listed:
    the job stays at its level (3 and 7, levels without a name)."""
    async with Queue(queue_name, redis_url=redis_url) as q:
        await q.add({"kind": "delayed"}, JobOptions(priority=3, delay=0.2, job_id="d3"))
        await q.add({"kind": "retry"}, JobOptions(priority=7, job_id="r7", attempts=2, backoff=0.05))
        await q.add({"kind": "dead"}, JobOptions(priority=4, job_id="x4", attempts=1))
        await q.add({"kind": "cancel"}, JobOptions(priority=10, job_id="c10", delay=60))
        waiting = await q.get_job("r7")
        assert waiting is not None and waiting.priority == 7 and waiting.state is JobState.WAITING
        delayed = await q.get_job("d3")
        assert delayed is not None and delayed.priority == 3 and delayed.state is JobState.DELAYED
        seen: list[tuple[str, int, Any]] = []

        async def handler(job: Job) -> None:
            seen.append((job.id, job.attempt, job.priority))
            if job.id == "r7" and job.attempt == 1:
                raise RuntimeError("once")
            if job.id == "x4" and len([s for s in seen if s[0] == "x4"]) == 1:
                raise PermanentError("no")

        async with running(Worker(q, handler, concurrency=2, rate_limit=None)):
            await wait_until(lambda: {s[0] for s in seen} >= {"d3", "r7", "x4"}
                             and ("r7", 2, 7) in seen, 30)
            await wait_until(lambda: _state(q, "x4", JobState.FAILED), 30)
        # a dead letter goes back to its own lane
        assert await q.replay_dead("x4") == 1
        replayed = await q.get_job("x4")
        assert replayed is not None and replayed.state is JobState.WAITING
        assert replayed.priority == 4
        async with running(Worker(q, handler, concurrency=2, rate_limit=None)):
            await wait_until(lambda: len([s for s in seen if s[0] == "x4"]) == 2, 30)
        assert ("d3", 1, 3) in seen and ("r7", 1, 7) in seen and ("r7", 2, 7) in seen
        assert [s for s in seen if s[0] == "x4"] == [("x4", 1, 4), ("x4", 1, 4)]
        assert await q.cancel("c10")


async def _state(q: Queue, job_id: str, state: JobState) -> bool:
    info = await q.get_job(job_id)
    return info is not None and info.state is state


async def test_listing_pages_through_the_levels_in_order(redis_url: str, queue_name: str) -> None:
    async with Queue(queue_name, redis_url=redis_url) as q:
        levels = [10, 1, 8, 3, 5, 2, 9, 4, 7, 6] * 2
        refs = await q.add_bulk([({"i": i}, JobOptions(priority=lv)) for i, lv in enumerate(levels)])
        by_id = {r.job_id: lv for r, lv in zip(refs, levels, strict=True)}
        got: list[str] = []
        cursor = None
        while True:
            page = await q.list_jobs("waiting", cursor=cursor, limit=3)
            got += [j.info.id for j in page.jobs]
            cursor = page.next_cursor
            if cursor is None:
                break
        assert sorted(by_id[i] for i in got) == [by_id[i] for i in got]
        assert len(got) == 20
        c = await q.counts()
        assert c["waiting"] == 20


async def test_the_lane_map_follows_the_lanes(redis_url: str, queue_name: str) -> None:
    """A lane's bit is set by an add and cleared by the claim that emptied it; an entry
    written without its bit (by hand) is still found once the marked lanes are empty."""
    async with Queue(queue_name, redis_url=redis_url) as q:
        k = q.keys
        await q.add({"a": 1}, JobOptions(priority=6))
        assert await q.redis.getbit(k.lane_map, lane_of(6)) == 1
        assert await q.redis.getbit(k.lane_map, lane_of(1)) == 0
        # an entry added by hand to an unmarked lane
        await q.ensure_groups()
        await q.redis.xadd(k.lanes[lane_of(1)], {"j": "byhand", "d": b"\xc0", "m": "1|0|0|0||"})
        seen: list[str] = []

        async def handler(job: Job) -> None:
            seen.append(job.id)

        async with running(Worker(q, handler, concurrency=1, rate_limit=None)):
            await wait_until(lambda: len(seen) == 2, 30)

            async def unmarked() -> bool:
                return int(await q.redis.getbit(k.lane_map, lane_of(6))) == 0

            await wait_until(unmarked, 30)
        assert seen[1] == "byhand"  # the marked lane went first, then the net found it


async def test_flows_and_schedules_take_levels(redis_url: str, queue_name: str) -> None:
    async with Queue(queue_name, redis_url=redis_url) as q:
        await q.add_flow(FlowJob(data={"p": "parent"}, options=JobOptions(job_id="fp", priority=9),
                                 children=[FlowJob(data={"c": 1}, options=JobOptions(
                                     job_id="fc", priority=1))]),
                         on_child_failure="fail")
        await q.upsert_schedule("s3", every=3600, data={"s": 1},
                                options=JobOptions(priority=3))
        sched = await q.get_schedule("s3")
        assert sched is not None and sched.priority == 3
        run = await q.run_schedule_now("s3")
        assert run is not None
        info = await q.get_job(run.job_id)
        assert info is not None and info.priority == 3
        seen: list[tuple[str, Any]] = []

        async def handler(job: Job) -> None:
            seen.append((job.id, job.priority))

        async with running(Worker(q, handler, concurrency=1, rate_limit=None,
                                  fire_schedules=False)):
            await wait_until(lambda: len(seen) == 3, 30)
        assert seen[0] == ("fc", 1) and (run.job_id, 3) in seen and seen[-1] == ("fp", 9)
