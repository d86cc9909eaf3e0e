"""Partitioned queues, the producer side: routing, keys, the stored count, growing, and
the queue-wide operations (counts, cancel, dead letters, events) over partitions."""

from __future__ import annotations

import collections
import itertools
from typing import Any

import anyio
import pytest
from redis.crc import key_slot

from streamq import ConfigError, Job, JobOptions, JobState, PermanentError, Queue, Worker
from streamq.fanout import dead_bounds, event_positions
from streamq.keys import QueueKeys, check_queue_name
from streamq.partitions import RECHECK_S, Layout, grow_partitions
from streamq.queue import new_job_id
from streamq.routing import lookup_order, partition_of, routing_tag
from tests.support.util import running, wait_until


def ids_in(partition: int, n: int, prefix: str, how_many: int = 1) -> list[str]:
    """Job ids (``prefix0``, ``prefix1``, ...) that route to ``partition`` of ``n``."""
    gen = (f"{prefix}{i}" for i in itertools.count())
    return list(itertools.islice((i for i in gen if partition_of(i, n) == partition), how_many))


# -- routing ---------------------------------------------------------------------------------
def test_routing_is_pinned_across_versions() -> None:
    # a job added by one version is looked up by the next: this mapping must never change
    expected = {
        "a": [1, 1, 3, 2, 11],
        "order-42": [1, 2, 1, 1, 5],
        "order-{42}-sms": [1, 0, 1, 0, 9],
        "hqihrhersctvgemo": [1, 0, 3, 2, 15],
    }
    for job_id, parts in expected.items():
        assert [partition_of(job_id, n) for n in (2, 3, 4, 7, 16)] == parts, job_id
    assert all(partition_of(new_job_id(), 1) == 0 for _ in range(100))


def test_routing_tag_follows_the_redis_cluster_rule() -> None:
    cases = {"order-{42}-sms": "42", "{a}{b}": "a", "x{}y": "x{}y", "{y": "{y", "a}b{c}": "c",
             "plain": "plain", "{}{z}": "{}{z}"}
    for job_id, tag in cases.items():
        assert routing_tag(job_id) == tag, job_id
        # the same part Redis Cluster hashes for a key: the slots agree
        assert key_slot(job_id.encode()) == key_slot(tag.encode()), job_id
    assert partition_of("order-{42}-sms", 5) == partition_of("order-{42}-email", 5)
    assert partition_of("order-{42}-sms", 5) == partition_of("42", 5)


def test_partitions_spread_evenly_and_independently_of_index_buckets() -> None:
    ids = [new_job_id() for _ in range(24_000)]
    for n in (2, 3, 4, 8):
        per: dict[int, list[str]] = collections.defaultdict(list)
        for i in ids:
            per[partition_of(i, n)].append(i)
        assert sorted(per) == list(range(n))
        for p, members in per.items():
            assert abs(len(members) / len(ids) - 1 / n) < 0.1 / n, (n, p, len(members))
            # inside one partition the index buckets are still spread over every residue:
            # with one hash for both, partition p of n would only use buckets = p (mod n)
            residues = collections.Counter(QueueKeys("q").bucket(i).rsplit(":", 1)[1]
                                           for i in members)
            by_residue = collections.Counter(int(b) % n for b in residues.elements())
            for r in range(n):
                assert abs(by_residue[r] / len(members) - 1 / n) < 0.25 / n, (n, p, r)


def test_lookup_order_tries_earlier_counts_after_the_current_one() -> None:
    job_id = next(i for i in (f"j{k}" for k in itertools.count())
                  if partition_of(i, 3) != 0 and partition_of(i, 6) not in (0, partition_of(i, 3)))
    assert lookup_order(job_id, 6, (1, 3)) == [partition_of(job_id, 6), partition_of(job_id, 3), 0]
    assert lookup_order(job_id, 3) == [partition_of(job_id, 3)]


# -- keys ------------------------------------------------------------------------------------
def test_partition_keys_each_share_one_slot_and_partition_0_is_the_old_layout() -> None:
    home = QueueKeys("sms")
    assert home.prefix == "streamq:{sms}:" and home.lanes[1] == "streamq:{sms}:lane:normal"
    assert QueueKeys("sms", 3).prefix == "streamq:{sms~3}:"
    for p in range(4):
        k = QueueKeys("sms", p)
        slots = {key_slot(x.encode()) for x in [*k.all_fixed(), k.job("order-{42}-sms"),
                                                  k.bucket("order-{42}-sms")]}
        assert len(slots) == 1, p  # a job id's own {...} never becomes the key's tag
    with pytest.raises(ConfigError):
        check_queue_name("sms~1")  # no queue can take another queue's partition tag
    for bad in (0, 129, "3", True):
        with pytest.raises(ConfigError, match="partitions"):
            Queue("x", partitions=bad)  # type: ignore[arg-type]


def test_cursor_helpers() -> None:
    assert dead_bounds("-", 3) == ["-", "-", "-"]
    # after (5-0, partition 1): partition 2 may still hold 5-0 itself
    assert dead_bounds("(5-0@1", 3) == ["(5-0", "(5-0", "5-0"]
    assert dead_bounds("5-0@1", 3) == ["(5-0", "5-0", "5-0"]
    assert dead_bounds("(5-0", 2) == ["(5-0", "5-0"]
    assert event_positions("0-0", 3) == ["0-0"] * 3
    assert event_positions("1-0,2-0", 3) == ["1-0", "2-0", "0-0"]  # read before the queue grew
    with pytest.raises(ConfigError):
        event_positions("1-0,2-0,3-0", 2)


# -- the stored count --------------------------------------------------------------------------
async def test_stored_count_is_adopted_and_a_different_one_fails_in_one_line(
    redis_url: str, queue_name: str, redis: Any
) -> None:
    async with Queue(queue_name, redis_url=redis_url) as reader:
        assert (await reader.counts())["waiting"] == 0
        assert not await redis.exists(reader.keys.meta)  # reading stores nothing
    async with Queue(queue_name, redis_url=redis_url, partitions=3) as q:
        await q.add({"a": 1})
        assert await redis.hget(q.keys.meta, "partitions") == b"3"
    async with Queue(queue_name, redis_url=redis_url) as adopter:
        assert await adopter.partition_count() == 3
        refs = await adopter.add_bulk([{"i": i} for i in range(60)])
        assert len({partition_of(r.job_id, 3) for r in refs}) == 3
        per = await adopter.partition_counts()
        assert sum(c["waiting"] for c in per) == 61
        for p in range(3):
            waiting = await _waiting_ids(adopter, p)
            assert per[p]["waiting"] == len(waiting)
            assert all(partition_of(j, 3) == p for j in waiting)
    for wrong in (2, 4):
        async with Queue(queue_name, redis_url=redis_url, partitions=wrong) as bad:
            with pytest.raises(ConfigError) as err:
                await bad.connect()
            msg = str(err.value)
            assert "\n" not in msg and "has 3 partitions stored" in msg, msg
            with pytest.raises(ConfigError, match="has 3 partitions stored"):
                await bad.add({"x": 1})
    async with Queue(queue_name, redis_url=redis_url) as q:
        assert (await q.counts())["waiting"] == 61


async def _waiting_ids(q: Queue, partition: int) -> set[str]:
    k = q.layout.keys(partition)
    out: set[str] = set()
    for lane in k.lanes:
        for _, f in await q.redis.xrange(lane):
            out.add(f[b"j"].decode())
    return out


async def test_first_writer_wins(redis_url: str, queue_name: str) -> None:
    outcomes: dict[int, str] = {}

    async def first_use(n: int) -> None:
        async with Queue(queue_name, redis_url=redis_url, partitions=n) as q:
            try:
                await q.add({"n": n})
                outcomes[n] = "ok"
            except ConfigError:
                outcomes[n] = "refused"

    async with anyio.create_task_group() as tg:
        for n in (2, 3, 5):
            tg.start_soon(first_use, n)
    assert sorted(outcomes.values()) == ["ok", "refused", "refused"]
    winner = next(n for n, o in outcomes.items() if o == "ok")
    async with Queue(queue_name, redis_url=redis_url) as q:
        assert await q.partition_count() == winner


async def test_a_one_partition_queue_keeps_exactly_its_old_keys(
    redis_url: str, queue_name: str, redis: Any
) -> None:
    async with Queue(queue_name, redis_url=redis_url) as q:
        refs = await q.add_bulk([{"i": i} for i in range(50)])
        await q.add({"d": 1}, JobOptions(delay=60))

        async def handler(job: Job) -> None:
            return None

        async with running(Worker(q, handler, rate_limit=5000.0)):
            await wait_until(lambda: _equal(q, "completed", 50))
        assert (await q.get_job(refs[0].job_id)).state is JobState.COMPLETED  # type: ignore[union-attr]
    assert [k async for k in redis.scan_iter(match=f"streamq:{{{queue_name}~*")] == []
    found = {k.decode() async for k in redis.scan_iter(match=f"streamq:{{{queue_name}}}:*")}
    home = QueueKeys(queue_name)
    assert home.meta in found and await redis.hgetall(home.meta) == {b"partitions": b"1"}
    assert home.limiter in found  # the claim keeps taking its tokens itself


async def test_a_queue_with_live_jobs_from_before_is_not_spread_under_them(
    redis_url: str, queue_name: str, redis: Any
) -> None:
    async with Queue(queue_name, redis_url=redis_url) as old:
        await old.add({"old": 1}, JobOptions(job_id="legacy-1"))
        await redis.delete(old.keys.meta)  # as written before counts were stored
    async with Queue(queue_name, redis_url=redis_url, partitions=3) as q:
        with pytest.raises(ConfigError, match="holds 1 jobs from before"):
            await q.add({"x": 1})
    async with Queue(queue_name, redis_url=redis_url) as adopt:
        await adopt.add({"x": 1})  # adopting stores 1: the queue goes on as it was
        assert await adopt.partition_count() == 1
        assert (await adopt.get_job("legacy-1")).state is JobState.WAITING  # type: ignore[union-attr]


# -- per-job operations by id ------------------------------------------------------------------
async def test_get_job_and_cancel_by_id_find_every_partition(
    redis_url: str, queue_name: str, redis: Any
) -> None:
    async with Queue(queue_name, redis_url=redis_url, partitions=3) as q:
        ids = [ids_in(p, 3, "job-")[0] for p in range(3)]
        for job_id in ids:
            await q.add({"id": job_id}, JobOptions(job_id=job_id))
        delayed = ids_in(2, 3, "later-")[0]
        await q.add({}, JobOptions(job_id=delayed, delay=60))
        for p, job_id in enumerate(ids):
            assert job_id in await _waiting_ids(q, p)
            info = await q.get_job(job_id)
            assert info is not None and info.state is JobState.WAITING
        assert await redis.zscore(q.layout.keys(2).delayed, delayed) is not None
        assert (await q.get_job(delayed)).state is JobState.DELAYED  # type: ignore[union-attr]
        # a duplicate add of a live custom id is no second job, in whichever partition
        await q.add({"again": 1}, JobOptions(job_id=ids[1]))
        assert (await q.counts())["waiting"] == 3
        assert await q.cancel(ids[2]) and await q.cancel(delayed)
        assert (await q.get_job(ids[2])).state is JobState.CANCELLED  # type: ignore[union-attr]
        assert not await q.cancel(ids[2])
        assert not await q.cancel("never-added")
        c = await q.counts()
        assert (c["waiting"], c["delayed"], c["cancelled"]) == (2, 0, 2)
        # ids with the same routing tag share a partition
        await q.add({}, JobOptions(job_id="order-{7}-sms"))
        await q.add({}, JobOptions(job_id="order-{7}-email"))
        p7 = partition_of("7", 3)
        assert {"order-{7}-sms", "order-{7}-email"} <= await _waiting_ids(q, p7)


async def test_counts_dead_letters_replay_and_events_span_partitions(
    redis_url: str, queue_name: str
) -> None:
    async with Queue(queue_name, redis_url=redis_url, partitions=3) as q:
        refs = await q.add_bulk([{"i": i, "fail": i % 3 == 0} for i in range(30)])
        failing = {r.job_id for i, r in enumerate(refs) if i % 3 == 0}
        assert len({partition_of(j, 3) for j in failing}) >= 2

        async def handler(job: Job) -> None:
            if job.data["fail"] and job.data.get("replayed") is None:
                raise PermanentError("no")

        async with running(Worker(q, handler, rate_limit=None)):
            await wait_until(lambda: _equal(q, "completed", 20))
            await wait_until(lambda: _equal(q, "failed", 10))
        c = await q.counts()
        assert (c["completed"], c["failed"], c["dead"], c["waiting"], c["active"]) == (
            20, 10, 10, 0, 0)
        letters = await q.dead_letters(100)
        assert {d.job_id for d in letters} == failing
        order = [(int(d.entry_id.split("-")[0]), int(d.entry_id.split("-")[1]), d.partition)
                 for d in letters]
        assert order == sorted(order)
        assert all(d.partition == partition_of(d.job_id, 3) for d in letters)
        # paging through the merged letters, two at a time, meets each one once
        paged: list[str] = []
        after = "-"
        while page := await q.dead_letters(2, after=after):
            paged += [d.job_id for d in page]
            after = "(" + page[-1].ref
        assert paged == [d.job_id for d in letters]
        one = letters[-1]
        assert [d.job_id for d in await q.dead_letters(5, partition=one.partition)] == [
            d.job_id for d in letters if d.partition == one.partition][:5]
        # events: every job's added and completed/dead event, read in pages of 7 entries
        seen: list[tuple[str, str]] = []
        cursor = "0-0"
        while batch := await q.read_events(cursor, count=7):
            seen += [(e.name, e.job_id) for e in batch]
            cursor = batch[-1].id
            assert cursor.count(",") == 2
        assert collections.Counter(seen) == collections.Counter(
            [("added", r.job_id) for r in refs] + [("active", r.job_id) for r in refs]
            + [("completed", r.job_id) for r in refs if r.job_id not in failing]
            + [("failed", j) for j in failing] + [("dead", j) for j in failing])
        # replay by id goes back to work in the job's own partition
        assert await q.replay_dead(one.job_id) == 1
        info = await q.get_job(one.job_id)
        assert info is not None and info.state is JobState.WAITING
        assert one.job_id in await _waiting_ids(q, one.partition)
        assert await q.replay_dead() == 9
        c = await q.counts()
        assert (c["waiting"], c["failed"], c["dead"]) == (10, 0, 0)
        # "$": only what comes next, from whichever partition
        got: list[str] = []
        blocked_before = await _blocked_reads(q)

        async def follow() -> None:
            got.extend(e.job_id for e in await q.read_events("$", block=3))

        async with anyio.create_task_group() as tg:
            tg.start_soon(follow)
            # one blocking read per partition: "$" was resolved, what comes next is seen
            await wait_until(lambda: _more_blocked_reads(q, blocked_before + 3), timeout=5)
            late = ids_in(2, 3, "late-")[0]
            await q.add({}, JobOptions(job_id=late))
        assert got == [late]
        assert await q.purge_dead() == 0


async def _blocked_reads(q: Queue) -> int:
    return sum(1 for c in await q.redis.client_list() if c.get("cmd") == "xread")


async def _more_blocked_reads(q: Queue, at_least: int) -> bool:
    return await _blocked_reads(q) >= at_least


async def test_dead_letter_paging_is_exact_when_partitions_share_entry_ids(
    redis_url: str, queue_name: str, redis: Any
) -> None:
    async with Queue(queue_name, redis_url=redis_url, partitions=3) as q:
        await q.add({})
        # two partitions' dead streams may hold the same id (same millisecond, seq 0)
        for p in (0, 2):
            for i in (1, 2):
                await redis.xadd(q.layout.keys(p).dead, {"j": f"p{p}-{i}", "e": "x", "n": 1},
                                 id=f"{1000 + i}-0")
        paged: list[str] = []
        after = "-"
        while page := await q.dead_letters(1, after=after):
            paged.append(page[0].job_id)
            after = "(" + page[0].ref
        assert paged == ["p0-1", "p2-1", "p0-2", "p2-2"]
        assert (await q.dead_letters(1, after="1001-0@2"))[0].job_id == "p2-1"
        assert await q.purge_dead() == 4


async def test_pause_and_resume_set_every_partition(
    redis_url: str, queue_name: str, redis: Any
) -> None:
    async with Queue(queue_name, redis_url=redis_url, partitions=3) as q:
        await q.pause()
        assert await q.is_paused()
        assert [await redis.exists(q.layout.keys(p).paused) for p in range(3)] == [1, 1, 1]
        assert (await q.counts())["paused"] == 1
        await q.resume()
        assert not await q.is_paused()
        assert [await redis.exists(q.layout.keys(p).paused) for p in range(3)] == [0, 0, 0]
        # each partition's idle workers are woken through its own control stream
        assert [await redis.xlen(q.layout.keys(p).control) for p in range(3)] == [1, 1, 1]


# -- growing -----------------------------------------------------------------------------------
async def test_grow_only_when_no_job_is_live_and_earlier_jobs_are_still_found(
    redis_url: str, queue_name: str, redis: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("streamq.partitions.RECHECK_S", 0.2)
    done: list[tuple[str, int]] = []

    async def handler(job: Job) -> None:
        if job.data.get("fail"):
            raise PermanentError("bad")
        done.append((job.id, job.partition))

    # a finished and a dead job of the one-partition queue; both route elsewhere under 3
    old_ok = next(i for i in (f"ok{k}" for k in itertools.count()) if partition_of(i, 3) != 0)
    old_dead = next(i for i in (f"dd{k}" for k in itertools.count()) if partition_of(i, 3) != 0)
    async with Queue(queue_name, redis_url=redis_url) as q:
        worker = Worker(q, handler, rate_limit=None, reclaim_interval=0.1)
        async with running(worker):
            await q.add({}, JobOptions(job_id=old_ok))
            await q.add({"fail": True}, JobOptions(job_id=old_dead))
            await wait_until(lambda: _equal(q, "failed", 1))
            await wait_until(lambda: _equal(q, "completed", 1))
            await q.pause()
            await q.add({"live": 1})
            with pytest.raises(ConfigError, match="1 live jobs"):
                await grow_partitions(q, 3)
            with pytest.raises(ConfigError, match="can only grow"):
                await grow_partitions(q, 1)
            await q.resume()
            await wait_until(lambda: _equal(q, "completed", 2))
            assert await grow_partitions(q, 3) == 1
            assert await redis.hgetall(q.keys.meta) == {b"partitions": b"3", b"history": b"1"}
            # the running worker picks the new count up and works every partition
            refs = await q.add_bulk([{"i": i} for i in range(30)])
            assert {partition_of(r.job_id, 3) for r in refs} == {0, 1, 2}
            await wait_until(lambda: _equal(q, "completed", 32), timeout=10)
            assert {p for _, p in done} == {0, 1, 2}
        info = await q.get_job(old_ok)
        assert info is not None and info.state is JobState.COMPLETED
        assert (await q.get_job(old_dead)).state is JobState.FAILED  # type: ignore[union-attr]
        assert await q.replay_dead(old_dead) == 1  # back to work where its letter was: 0
        assert old_dead in await _waiting_ids(q, 0)
        assert await q.cancel(old_dead)
    async with Queue(queue_name, redis_url=redis_url, partitions=3) as again:
        assert await again.partition_count() == 3


async def _equal(q: Queue, name: str, value: int) -> bool:
    return (await q.counts())[name] == value


async def test_a_process_reads_the_count_again_after_recheck_s(
    redis_url: str, queue_name: str
) -> None:
    now = [0.0]
    async with Queue(queue_name, redis_url=redis_url, partitions=2) as q, \
            Queue(queue_name, redis_url=redis_url) as operator:
        q.layout = Layout(queue_name, 2, clock=lambda: now[0])
        assert await q.partition_count(store=True) == 2
        assert await grow_partitions(operator, 5) == 2
        now[0] = RECHECK_S - 0.01
        assert await q.partition_count() == 2  # trusted until RECHECK_S has passed
        now[0] = RECHECK_S + 0.01
        assert await q.partition_count() == 5  # an explicit 2 adopts a count grown since
        refs = await q.add_bulk([{} for _ in range(100)])
        assert {partition_of(r.job_id, 5) for r in refs} == set(range(5))
        assert sum(c["waiting"] for c in (await q.partition_counts())[2:]) > 0


async def test_an_outage_is_one_clear_error_not_an_exception_group(
    redis_url: str, queue_name: str
) -> None:
    from streamq import RedisUnavailable
    from streamq.devredis import free_port
    from streamq.settings import make_redis

    async with Queue(queue_name, redis_url=redis_url, partitions=3) as q:
        await q.add({})
        dead = f"redis://127.0.0.1:{free_port()}/0"
        await q.redis.aclose()
        q._redis, q._scripts, q.redis_url = make_redis(dead), None, dead
        for call in (q.counts, q.read_events, q.dead_letters, q.partition_counts):
            with pytest.raises(RedisUnavailable, match="unreachable at"):
                await call()
