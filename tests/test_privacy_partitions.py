"""Encryption at rest on a partitioned queue (SPEC 9.5 with docs/partitions.md): each job's
blind-index entries live in its own partition and are written by its enqueue call, find
asks every partition, rotate-keys rewrites every partition's delayed jobs, lanes and dead
letters, and no command of any of it names keys of more than one slot."""

from __future__ import annotations

import base64
import io
from collections.abc import Callable
from typing import Any, TypeVar

import anyio.to_thread
import pytest

from streamq import Job, JobOptions, JobState, PermanentError, Queue, QueueDefaults, Worker
from streamq.blind_index import find_job_ids, find_jobs
from streamq.cli import main as cli_main
from streamq.cli.output import Console
from streamq.crypto import KEYS_ENV, KeyRing, envelope_kid
from streamq.keys import QueueKeys
from streamq.rotation import _cmsgpack_first_two, rotate_keys
from streamq.routing import partition_of
from streamq.sms import Recipient, SMSJob, WelcomeSMS, create_otp_sms_job
from streamq.sms.privacy import phone_term, phone_terms
from tests.support.util import running, wait_until
from tests.test_partitions import ids_in
from tests.test_partitions_slots import recorded, slots_of

__all__ = ["recorded"]  # the fixture, used by name

T = TypeVar("T")
N = 3
K1 = base64.b64encode(b"\x31" * 32).decode()
K2 = base64.b64encode(b"\x32" * 32).decode()
OLD, BOTH, NEW = f"k1:{K1}", f"k2:{K2},k1:{K1}", f"k2:{K2}"
A, A_NATIONAL, B = "+254712345678", "0712345678", "+254733000111"


@pytest.fixture(autouse=True)
def no_env_keys(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(KEYS_ENV, raising=False)


def make_queue(name: str, url: str, keys: str, **kw: Any) -> Queue:
    return Queue(name, redis_url=url, keyring=KeyRing.parse(keys), encrypt=True,
                 blind_index=phone_terms, partitions=N, **kw)


def payload(job_id: str, number: str = A) -> dict[str, Any]:
    return {"id": job_id, "recipient": {"phone_number": number}, "text": f"secret of {job_id}"}


async def index_members(q: Queue, kid: str) -> dict[int, set[str]]:
    """partition -> job ids in the queue's index sets under key ``kid`` there."""
    out: dict[int, set[str]] = {}
    r: Any = q.redis  # untyped replies (bytes)
    for p in range(N):
        k = QueueKeys(q.name, p)
        async for key in r.scan_iter(match=f"{k.prefix}bidx:{kid}:*"):
            out.setdefault(p, set()).update(m.decode() for m in await r.zrange(key, 0, -1))
    return out


def by_partition(ids: list[str]) -> dict[int, set[str]]:
    out: dict[int, set[str]] = {}
    for job_id in ids:
        out.setdefault(partition_of(job_id, N), set()).add(job_id)
    return out


async def test_find_by_phone_spans_the_partitions_and_entries_live_with_their_jobs(
    redis_url: str, queue_name: str, monkeypatch: pytest.MonkeyPatch,
    recorded: list[tuple[Any, ...]],
) -> None:
    q = make_queue(queue_name, redis_url, OLD, job_type=SMSJob)
    # entries outlive their jobs by 2 + 2 s: long enough for the adds and the check below on
    # a loaded machine (a waiting job's entry counts from its add), short enough to wait out
    short = QueueDefaults(completed_ttl_s=2.0, failed_ttl_s=2.0, index_live_s=2.0)
    brief = make_queue(queue_name + "x", redis_url, OLD, job_type=SMSJob, defaults=short)
    try:
        # A's jobs in every partition: one by one, in bulk, delayed; B's in one
        singles = [ids_in(p, N, "one-")[0] for p in range(N)]
        bulk = [ids_in(p, N, "bulk-")[0] for p in range(N)]
        for job_id in singles:
            await q.add(_welcome(job_id, A), JobOptions(job_id=job_id))
        await q.add_bulk([(_welcome(job_id, A), JobOptions(job_id=job_id)) for job_id in bulk])
        later = await create_otp_sms_job(recipient=A_NATIONAL, code="55501234", delay=60,
                                         queue=q)
        other = ids_in(2, N, "b-")[0]
        await q.add(_welcome(other, B), JobOptions(job_id=other))
        a_ids = [*singles, *bulk, later.job_id]

        # each entry is in its own job's partition (the enqueue call's slot), nowhere else
        expected = by_partition(a_ids)
        expected.setdefault(2, set()).add(other)
        assert await index_members(q, "k1") == expected
        found = {j.id: j.state for j in await find_jobs(q, phone_term(A))}
        assert found == {**dict.fromkeys(singles + bulk, JobState.WAITING),
                         later.job_id: JobState.DELAYED}
        assert await find_job_ids(q, phone_term(B)) == [other]
        horizon = q.blind_index.horizon_ms  # type: ignore[union-attr]
        for p in range(N):  # every set expires: a TTL no longer than its entries need
            k = QueueKeys(q.name, p)
            async for key in q.redis.scan_iter(match=f"{k.prefix}bidx:*"):
                assert 0 < await q.redis.pttl(key) <= 60_000 + horizon

        # the operator CLI adopts the stored count and asks every partition
        monkeypatch.setenv(KEYS_ENV, OLD)
        code, out, err = await _cli(redis_url, queue_name, "find", "--phone", A_NATIONAL)
        assert code == 0, err
        assert all(job_id in out for job_id in a_ids) and other not in out
        assert f"{len(a_ids)} jobs of that number" in out and "712345678" not in out

        # entries expire with their jobs, in every partition (a queue keeping records and
        # entries 2 s): all but the delayed job's
        await brief.add_bulk([(_welcome(job_id, A), JobOptions(job_id=job_id)) for job_id in bulk])
        kept = await create_otp_sms_job(recipient=A, code="55501234", delay=60, queue=brief)
        assert set(await index_members(brief, "k1")) == set(range(N))

        async def handler(job: Job) -> None:
            return None

        async with running(Worker(brief, handler, rate_limit=None)):
            await wait_until(lambda: _completed(brief, N), 10, message="the jobs to complete")
        await wait_until(lambda: _index_left_only(brief, kept.job_id), 10,
                         message="the finished jobs' index entries to expire")
    finally:
        await q.close()
        await brief.close()
    # enqueue (one by one and in bulk), find and the worker stayed in one slot per command
    seen, crossing = slots_of(redis_url, recorded)
    assert crossing == []
    assert seen["EVALSHA"] > 0


async def _completed(q: Queue, n: int) -> bool:
    return (await q.counts())["completed"] == n


async def _index_left_only(q: Queue, job_id: str) -> bool:
    """Only ``job_id``'s entry is left, and only its partition holds an index set."""
    if await find_job_ids(q, phone_term(A)) != [job_id] or await find_job_ids(q, phone_term(B)):
        return False
    sets = [k async for k in q.redis.scan_iter(match="streamq:{" + q.name + "*}:bidx:*")]
    return len(sets) == 1 and sets[0].decode().startswith(
        QueueKeys(q.name, partition_of(job_id, N)).prefix)


def _welcome(job_id: str, number: str) -> WelcomeSMS:
    return WelcomeSMS(id=job_id, timestamp=1, recipient=Recipient(phone_number=number),
                      user_name="Ann")


@pytest.mark.timeout(60)
async def test_rotation_walks_every_partition_in_single_slot_transitions(
    redis_url: str, queue_name: str, recorded: list[tuple[Any, ...]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    old = make_queue(queue_name, redis_url, OLD, defaults=QueueDefaults(backoff_s=0.01))
    both = make_queue(queue_name, redis_url, BOTH)
    new = make_queue(queue_name, redis_url, NEW)
    try:
        # in every partition: a dead letter, a waiting job, a delayed job
        dead = [ids_in(p, N, "dead-")[0] for p in range(N)]
        waiting = [ids_in(p, N, "wait-")[0] for p in range(N)]
        delayed = [ids_in(p, N, "later-")[0] for p in range(N)]
        await old.add_bulk([(payload(j), JobOptions(job_id=j)) for j in dead])

        async def refuse(job: Job) -> None:
            raise PermanentError("refused")

        async with running(Worker(old, refuse, rate_limit=None)):
            await wait_until(lambda: _dead(old, N), 10, message="the dead letters")
        await old.add_bulk([(payload(j), JobOptions(job_id=j, priority="low")) for j in waiting])
        for j in delayed:
            await old.add(payload(j), JobOptions(job_id=j, delay=30))
        # and one active job in partition 2, held by a worker that goes silent
        active = ids_in(2, N, "held-")[0]
        await old.add(payload(active), JobOptions(job_id=active, priority="high"))
        holder = Worker(old, refuse, name="holder")
        (held,) = await holder.claim_now(1, partition=2)
        assert held.id == active
        assert set(await index_members(old, "k1")) == set(range(N))  # all three partitions

        progress: list[tuple[str, int, int]] = []
        rep = await rotate_keys(both, progress=lambda *a: progress.append(a))
        assert rep.rotated == {"delayed": N, "waiting": N, "dead": N, "schedules": 0, "flows": 0}
        assert rep.reindexed == 3 * N and rep.current == 0
        assert rep.left == {"active: held by a worker (rotated once it moves; a completed "
                            "job's payload is deleted)": 1}
        # one progress bar per place over all partitions
        assert ("waiting", N + 1, N + 1) in progress and ("dead", N, N) in progress
        assert ("delayed", N, N) in progress

        # every payload is under k2 where it was, the active one untouched
        r: Any = both.redis  # untyped replies (bytes)
        for p in range(N):
            k = QueueKeys(queue_name, p)
            (_, f), = await r.xrange(k.lanes[2])
            assert f[b"j"].decode() == waiting[p] and envelope_kid(f[b"d"]) == "k2"
            (_, f), = await r.xrange(k.dead)
            assert f[b"j"].decode() == dead[p] and envelope_kid(f[b"d"]) == "k2"
            packed = await r.hget(k.delayed_data, delayed[p])
            parsed = _cmsgpack_first_two(packed)
            assert parsed is not None and envelope_kid(parsed[1]) == "k2"
        (_, f), = await r.xrange(QueueKeys(queue_name, 2).lanes[0])
        assert f[b"j"].decode() == active and envelope_kid(f[b"d"]) == "k1"
        # the index moved with them, in each job's partition; the active job's stays on k1
        rotated = dead + waiting + delayed
        assert await index_members(both, "k2") == by_partition(rotated)
        assert await index_members(both, "k1") == {2: {active}}
        assert set(await find_job_ids(new, phone_term(A))) == set(rotated)

        # the CLI's report covers the partitions too: everything left is current
        monkeypatch.setenv(KEYS_ENV, BOTH)
        code, out, err = await _cli(redis_url, queue_name, "rotate-keys")
        assert code == 0, err
        assert "0 payloads re-encrypted" in out and f"already under k2: {3 * N}" in out
        # an operator without the keys sees a marker, not bytes or a crash
        monkeypatch.delenv(KEYS_ENV)
        code, out, err = await _cli(redis_url, queue_name, "dead", "--show", dead[1])
        assert code == 0, err
        assert ("<encrypted payload (key k2, " in out and "bytes): payload is encrypted and no "
                "key is configured (set STREAMQ_ENCRYPTION_KEYS)>" in out)

        # replay the dead letters and drain with only the new key (the held job aside)
        assert await new.replay_dead() == N
        seen: dict[str, Any] = {}

        async def drain(job: Job) -> None:
            seen[job.id] = job.data

        for k in new.layout.all_keys(N):  # the delayed jobs are due now
            due = {j: 0 for j in delayed if partition_of(j, N) == k.partition}
            await new.redis.zadd(k.delayed, due)
        async with running(Worker(new, drain, rate_limit=None)):
            await wait_until(lambda: len(seen) == 3 * N, 10, message="the rotated jobs drained")
        assert seen == {j: payload(j) for j in rotated}
        assert (await new.counts())["dead"] == 0
    finally:
        for q in (old, both, new):
            await q.close()
    seen_cmds, crossing = slots_of(redis_url, recorded)
    assert crossing == []
    assert seen_cmds["EVALSHA"] > 0 and seen_cmds["HSCAN"] >= N


async def _dead(q: Queue, n: int) -> bool:
    return (await q.counts())["dead"] == n


async def _cli(url: str, queue: str, *argv: str) -> tuple[int, str, str]:
    def run() -> tuple[int, str, str]:
        out, err = io.StringIO(), io.StringIO()
        code = cli_main([*argv, "--queue", queue, "--redis-url", url],
                        console=Console(out=out, err=err))
        return code, out.getvalue(), err.getvalue()

    return await _in_thread(run)


async def _in_thread(fn: Callable[[], T]) -> T:
    # the CLI runs its own event loop (anyio.run): give it a thread
    return await anyio.to_thread.run_sync(fn)
