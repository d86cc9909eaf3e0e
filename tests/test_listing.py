"""Queue.list_jobs and friends (listing.py): each state, exact cursor paging, the capped
completed index, payloads where they live, events, workers; the queue registry and the
audit entries the dashboard writes."""

from __future__ import annotations

from typing import Any

import anyio
import pytest

from streamq import ConfigError, Job, JobOptions, JobState, PermanentError, Queue, QueueDefaults, Worker
from streamq.audit import record_action
from streamq.discovery import find_queues
from streamq.keys import QueueKeys
from streamq.listing import list_jobs
from tests.support.util import running, wait_until


async def all_pages(q: Queue, state: str, limit: int) -> list[str]:
    ids: list[str] = []
    cursor = None
    while True:
        page = await q.list_jobs(state, cursor=cursor, limit=limit)
        assert len(page.jobs) <= limit
        ids += [j.info.id for j in page.jobs]
        if page.next_cursor is None:
            return ids
        assert len(page.jobs) == limit
        cursor = page.next_cursor


async def test_waiting_is_listed_in_claim_order_across_lanes_and_pages(
        redis_url: str, queue_name: str) -> None:
    async with Queue(queue_name, redis_url=redis_url) as q:
        await q.ensure_groups()
        low = await q.add_bulk([({"i": i}, JobOptions(priority="low")) for i in range(4)])
        normal = await q.add_bulk([{"i": i} for i in range(5)])
        high = await q.add_bulk([({"i": i}, JobOptions(priority="high")) for i in range(3)])
        expected = [r.job_id for r in high + normal + low]
        for limit in (1, 2, 5, 12, 50):
            assert await all_pages(q, "waiting", limit) == expected, limit
        first = (await q.list_jobs("waiting", limit=1)).jobs[0]
        assert first.info.state is JobState.WAITING and first.info.priority == "high"
        assert first.info.max_attempts == 3 and first.info.created_at is not None


async def test_a_job_taken_between_pages_is_neither_repeated_nor_skipping_others(
        redis_url: str, queue_name: str) -> None:
    """Keyset paging: jobs leaving the state (taken by a worker) between two page reads
    do not shift the rest, and new jobs appear at the end."""
    async with Queue(queue_name, redis_url=redis_url) as q:
        await q.ensure_groups()
        refs = [r.job_id for r in await q.add_bulk([{"i": i} for i in range(10)])]
        page = await q.list_jobs("waiting", limit=4)
        assert [j.info.id for j in page.jobs] == refs[:4]
        # a worker takes the first six (claims them: they become active)
        taken: list[str] = []
        started, release = anyio.Event(), anyio.Event()

        async def hold(job: Job) -> None:
            taken.append(job.id)
            if len(taken) == 6:
                started.set()
            await release.wait()

        async with running(Worker(q, hold, concurrency=6, rate_limit=None)):
            await started.wait()
            later = await q.add({"i": "late"})
            rest = await q.list_jobs("waiting", cursor=page.next_cursor, limit=10)
            assert [j.info.id for j in rest.jobs] == [*refs[6:], later.job_id]
            active = await all_pages(q, "active", 4)
            assert sorted(active) == sorted(taken) == sorted(refs[:6])
            one = (await q.list_jobs("active", limit=1)).jobs[0]
            assert one.worker and one.deliveries == 1 and one.idle_s is not None
            release.set()


async def test_delayed_pages_by_due_time_even_with_equal_due_times(
        redis_url: str, queue_name: str) -> None:
    async with Queue(queue_name, redis_url=redis_url) as q:
        # one add_bulk call: up to 500 jobs share one due millisecond
        same = await q.add_bulk([({"i": i}, JobOptions(delay=100)) for i in range(30)])
        early = await q.add({"i": "early"}, JobOptions(delay=50))
        expected = [early.job_id, *sorted(r.job_id for r in same)]
        for limit in (1, 7, 31, 100):
            assert await all_pages(q, "delayed", limit) == expected, limit
        # the cursor's job leaves the set (cancelled) before the next page is read
        page = await q.list_jobs("delayed", limit=5)
        assert await q.cancel(page.jobs[-1].info.id)
        rest = await all_pages_from(q, "delayed", page.next_cursor, 5)
        assert rest == expected[5:]
        info = (await q.list_jobs("delayed", limit=1)).jobs[0].info
        assert info.due_at is not None and info.max_attempts == 3 and info.priority == "normal"


async def all_pages_from(q: Queue, state: str, cursor: str | None, limit: int) -> list[str]:
    ids: list[str] = []
    while cursor is not None:
        page = await q.list_jobs(state, cursor=cursor, limit=limit)
        ids += [j.info.id for j in page.jobs]
        cursor = page.next_cursor
    return ids


async def test_completed_and_failed_newest_first_and_the_index_stays_capped(
        redis_url: str, queue_name: str) -> None:
    defaults = QueueDefaults(completed_index_max=25)
    async with Queue(queue_name, redis_url=redis_url, defaults=defaults) as q:
        refs = await q.add_bulk([({"i": i}, JobOptions(attempts=1)) for i in range(40)])
        fail = {r.job_id for i, r in enumerate(refs) if i % 5 == 0}

        async def handler(job: Job) -> None:
            if job.id in fail:
                raise PermanentError("no such number +254712345678")

        async with running(Worker(q, handler, concurrency=1, rate_limit=None)):
            await wait_until(lambda: _done(q, 40), 20, 0.02, "all 40 finished")
        counts = await q.counts()
        assert counts["completed"] == 32 and counts["failed"] == 8
        assert await q.redis.zcard(q.keys.completed_index) == 25  # capped
        done = await all_pages(q, "completed", 7)
        assert len(done) == 25 and not set(done) & fail
        # newest first: Redis's reverse (finish ms, id) order, the same over any page size
        assert done == [m.decode() for m in await q.redis.zrevrange(q.keys.completed_index, 0, -1)]
        assert await all_pages(q, "completed", 100) == done
        finished = [j.info.finished_at for j in (await q.list_jobs("completed", limit=25)).jobs]
        assert finished == sorted(finished, reverse=True)  # type: ignore[type-var]
        # the cap dropped the oldest: the last jobs completed (concurrency 1) are all kept
        order = [r.job_id for r in refs if r.job_id not in fail]
        assert set(order[-10:]) <= set(done) and not set(order[:5]) & set(done)
        first = (await q.list_jobs("completed", limit=1)).jobs[0].info
        assert first.state is JobState.COMPLETED and first.finished_at is not None
        failed = await all_pages(q, "failed", 3)
        assert failed == [r.job_id for r in reversed(refs) if r.job_id in fail]
        f = (await q.list_jobs("failed", limit=1)).jobs[0].info
        assert f.error == "no such number +2547****678" and f.attempts == 1
        # an expired record leaves its id with a note
        await q.redis.delete(q.keys.job(done[0]))
        top = (await q.list_jobs("completed", limit=1)).jobs[0]
        assert top.info.id == done[0] and top.note and "expired" in top.note


async def _done(q: Queue, n: int) -> bool:
    c = await q.counts()
    return bool(c["completed"] + c["failed"] == n)


async def test_an_index_of_zero_keeps_none(redis_url: str, queue_name: str) -> None:
    async with Queue(queue_name, redis_url=redis_url,
                     defaults=QueueDefaults(completed_index_max=0)) as q:
        await q.add({"a": 1})

        async def ok(job: Job) -> None:
            return None

        async with running(Worker(q, ok, rate_limit=None)):
            await wait_until(lambda: _done(q, 1), 10, 0.02)
        assert not await q.redis.exists(q.keys.completed_index)
        assert (await q.list_jobs("completed")).jobs == []


async def test_bad_states_limits_and_cursors_are_one_line_errors(
        redis_url: str, queue_name: str) -> None:
    async with Queue(queue_name, redis_url=redis_url) as q:
        with pytest.raises(ConfigError, match="unknown"):
            await q.list_jobs("sleeping")
        with pytest.raises(ConfigError, match="counted, not listed"):
            await q.list_jobs("cancelled")
        with pytest.raises(ConfigError, match="limit"):
            await q.list_jobs("waiting", limit=0)
        for bad in ("garbage", "d0.1:2-3", "w0.12:1-0", "w0.a:1-0", "w7.1:1-0", "w0.1:x-y", "c0.abc:j"):
            with pytest.raises(ConfigError):
                await q.list_jobs("waiting" if bad.startswith("w") else "completed", cursor=bad)


async def test_pages_of_several_partitions_merge_exactly(redis_url: str, queue_name: str) -> None:
    """The merge a partitioned queue uses: two keyspaces listed as one, paged exactly
    (here the partitions are two queues' keys; sort ties go to the lower partition)."""
    a = Queue(queue_name, redis_url=redis_url)
    b = Queue(queue_name + "b", redis_url=redis_url)
    async with a, b:
        await a.ensure_groups()
        await b.ensure_groups()
        ids_a = [r.job_id for r in await a.add_bulk([{"i": i} for i in range(6)])]
        ids_b = [r.job_id for r in await b.add_bulk([{"i": i} for i in range(5)])]
        da = [r.job_id for r in await a.add_bulk([({"i": i}, JobOptions(delay=60)) for i in range(4)])]
        db = [r.job_id for r in await b.add_bulk([({"i": i}, JobOptions(delay=60)) for i in range(3)])]
        parts = [a.keys, b.keys]

        async def pages(state: str, limit: int) -> list[str]:
            out: list[str] = []
            cursor = None
            while True:
                page = await list_jobs(a, parts, state, cursor, limit)
                out += [j.info.id for j in page.jobs]
                if page.next_cursor is None:
                    return out
                cursor = page.next_cursor

        whole = await pages("waiting", 100)
        assert sorted(whole) == sorted(ids_a + ids_b) and len(whole) == 11
        for limit in (1, 2, 3, 4):
            assert await pages("waiting", limit) == whole
        delayed = await pages("delayed", 100)
        assert sorted(delayed) == sorted(da + db)
        for limit in (1, 2, 5):
            assert await pages("delayed", limit) == delayed
        cursor = (await list_jobs(a, parts, "waiting", None, 3)).next_cursor
        assert cursor is not None
        with pytest.raises(ConfigError, match="partition"):
            await list_jobs(a, [a.keys], "waiting", cursor.replace("w0.", "w1.", 1)
                            if cursor.startswith("w0.") else cursor.replace("w1.", "w2.", 1), 3)


async def test_payloads_are_read_where_each_job_lives(redis_url: str, queue_name: str) -> None:
    async with Queue(queue_name, redis_url=redis_url) as q:
        waiting = await q.add({"to": "+254712345678"}, JobOptions(attempts=1))
        delayed = await q.add({"later": True}, JobOptions(delay=60))
        p = await q.job_payload(waiting.job_id)
        assert p is not None and p.where == "lane" and p.data == {"to": "+254712345678"}
        p = await q.job_payload(delayed.job_id)
        assert p is not None and p.where == "delayed" and p.data == {"later": True}
        assert await q.job_payload("nosuchjob") is None

        async def fail(job: Job) -> None:
            raise PermanentError("bad")

        async with running(Worker(q, fail, rate_limit=None)):
            await wait_until(lambda: _done(q, 1), 10, 0.02)
        p = await q.job_payload(waiting.job_id)
        assert p is not None and p.where == "dead" and p.data == {"to": "+254712345678"}
        await q.purge_dead()
        assert await q.job_payload(waiting.job_id) is None
        await q.redis.xadd(q.keys.lanes[1], {"j": "raw1", "d": b"\xc1not msgpack", "m": "1|0|0|0||"})
        await q.redis.hset(q.keys.bucket("raw1"), "raw1", "1:" + (
            await q.redis.xrevrange(q.keys.lanes[1], count=1))[0][0].decode())
        p = await q.job_payload("raw1")
        assert p is not None and not p.decoded and p.data == b"\xc1not msgpack"


async def test_job_events_and_workers(redis_url: str, queue_name: str) -> None:
    async with Queue(queue_name, redis_url=redis_url) as q:
        ref = await q.add({"a": 1})
        await q.add({"a": 2})
        done = anyio.Event()

        async def ok(job: Job) -> None:
            if job.id == ref.job_id:
                done.set()

        async with running(Worker(q, ok, rate_limit=None, name="w-one")):
            await done.wait()
            workers = await wait_until(q.workers, 5, 0.02, "a worker listed")
            assert [w.name for w in workers] == ["w-one"]
            assert workers[0].pending >= 0 and workers[0].idle_s >= 0
            await wait_until(lambda: _done(q, 2), 10, 0.02)
        names = [e.name for e in await q.job_events(ref.job_id)]
        assert names == ["added", "active", "completed"]


async def test_queues_are_found_by_scan_and_partition_keys_are_not_queues(
        redis_url: str, queue_name: str) -> None:
    async with Queue(queue_name, redis_url=redis_url) as q:
        assert queue_name not in await find_queues(q.redis)
        await q.add({"a": 1})
        other = queue_name + "w"
        async with Queue(other, redis_url=redis_url) as w:
            await w.ensure_groups()  # a worker that started on an empty queue
        urgent = queue_name + "h"
        async with Queue(urgent, redis_url=redis_url) as h:  # high-priority jobs only
            await h.add({"a": 1}, JobOptions(priority="high"))
            assert not await h.redis.exists(h.keys.lanes[1])
        # a partition's own tag and a foreign key look alike but are no queue names
        await q.redis.xadd(f"streamq:{{{queue_name}~1}}:lane:normal", {"j": "x"})
        await q.redis.xadd("streamq:{bad name}:lane:normal", {"j": "x"})
        found = await find_queues(q.redis)
        assert {queue_name, other, urgent} <= set(found)
        assert not [n for n in found if "~" in n or " " in n]


async def test_actions_are_written_to_the_events_stream(redis_url: str, queue_name: str) -> None:
    async with Queue(queue_name, redis_url=redis_url,
                     defaults=QueueDefaults(events_max=0)) as q:  # events off: still written
        await record_action(q, "replay", "operator", "job-1", 1)
        await record_action(q, "purge", "operator", "*", 0, error="Redis said no to +254712345678")
        events = await q.read_events()
        assert [(e.name, e.job_id, (e.fields or {}).get("act"), (e.fields or {}).get("actor"))
                for e in events] == [("action", "job-1", "replay", "operator"),
                                     ("action", "*", "purge", "operator")]
        assert events[1].error == "Redis said no to +2547****678"
        with pytest.raises(ConfigError):
            await record_action(q, "explode", "operator")
        with pytest.raises(ConfigError):
            await record_action(q, "replay", "Operator Name")


def test_the_completed_index_shares_the_queue_slot() -> None:
    from redis.crc import key_slot

    k = QueueKeys("sms")
    assert key_slot(k.completed_index.encode()) == key_slot(k.lanes[0].encode())
    assert k.completed_index in k.all_fixed()


_: Any = None
