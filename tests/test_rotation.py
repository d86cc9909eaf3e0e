"""Key rotation (SPEC 9.5): re-encrypt stored payloads under the active key with jobs in
every state, keep each job's place and state, move blind-index entries, then drain with
only the new key."""

from __future__ import annotations

import base64
import io
from collections.abc import Callable
from typing import Any, TypeVar

import anyio.to_thread
import pytest

from streamq import Job, JobOptions, JobState, PermanentError, Queue, QueueDefaults, Worker
from streamq.blind_index import find_job_ids
from streamq.cli import main as cli_main
from streamq.cli.output import Console
from streamq.crypto import KEYS_ENV, KeyRing, envelope_kid
from streamq.rotation import rotate_keys
from streamq.sms.privacy import phone_term, phone_terms
from tests.support.util import running, wait_until

T = TypeVar("T")
K1 = base64.b64encode(b"\x21" * 32).decode()
K2 = base64.b64encode(b"\x22" * 32).decode()
OLD = f"k1:{K1}"
BOTH = f"k2:{K2},k1:{K1}"
NEW = f"k2:{K2}"
NUMBER = "+254712345678"


@pytest.fixture(autouse=True)
def no_env_keys(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(KEYS_ENV, raising=False)


def payload(job_id: str) -> dict[str, Any]:
    return {"id": job_id, "recipient": {"phone_number": NUMBER}, "text": f"secret of {job_id}"}


def make_queue(name: str, url: str, keys: str | None, **kw: Any) -> Queue:
    ring = KeyRing.parse(keys) if keys else None
    return Queue(name, redis_url=url, keyring=ring, encrypt=ring is not None,
                 blind_index=phone_terms if ring is not None else None,
                 defaults=QueueDefaults(backoff_s=0.01), **kw)


async def lane_entries(q: Queue) -> dict[str, tuple[int, str, bytes]]:
    """job id -> (lane, entry id, payload) of every lane entry."""
    out = {}
    for lane_no, lane in enumerate(q.keys.lanes):
        for entry_id, f in await q.redis.xrange(lane):
            out[f[b"j"].decode()] = (lane_no, entry_id.decode(), f[b"d"])
    return out


@pytest.mark.timeout(60)
async def test_rotation_with_jobs_in_every_state_then_a_drain_with_only_the_new_key(
    redis_url: str, queue_name: str
) -> None:
    old = make_queue(queue_name, redis_url, OLD)
    both = make_queue(queue_name, redis_url, BOTH)
    new = make_queue(queue_name, redis_url, NEW)
    clear = make_queue(queue_name, redis_url, None)
    try:
        # completed and dead: through a worker holding the old key
        await old.add(payload("done1"), JobOptions(job_id="done1"))
        await old.add(payload("dead1"), JobOptions(job_id="dead1"))

        async def first(job: Job) -> None:
            if job.id == "dead1":
                raise PermanentError("refused")

        # (a short sweep period: the sweeper below must get the sweep lock soon)
        async with running(Worker(old, first, rate_limit=None, reclaim_interval=0.2)):
            await wait_until(lambda: _state(old, "dead1", JobState.FAILED))
            await wait_until(lambda: _state(old, "done1", JobState.COMPLETED))
        # active: claimed by a worker that then goes silent (it never finishes)
        await old.add(payload("act"), JobOptions(job_id="act", priority="high"))
        holder = Worker(old, first, visibility_timeout=0.1, name="holder")
        (held,) = await holder.claim_now(1)
        assert held.id == "act"
        # waiting in each lane, delayed, and one in clear (added before encryption)
        for job_id, prio in (("w_h", "high"), ("w_n1", "normal"), ("w_n2", "normal"),
                             ("w_l", "low")):
            await old.add(payload(job_id), JobOptions(job_id=job_id, priority=prio))  # type: ignore[arg-type]
        await old.add(payload("dl"), JobOptions(job_id="dl", delay=2.0))
        await clear.add(payload("clear1"), JobOptions(job_id="clear1"))

        before = await lane_entries(old)
        info_before = {j: await old.get_job(j) for j in ("w_h", "w_n1", "w_n2", "w_l", "dl")}
        due_before = await old.redis.zscore(old.keys.delayed, "dl")
        dead_before = (await old.dead_letters())[0]
        assert {envelope_kid(p) for j, (_, _, p) in before.items() if j != "clear1"} == {"k1"}

        progress: list[tuple[str, int, int]] = []
        rep = await rotate_keys(both, progress=lambda *a: progress.append(a))

        assert rep.rotated == {"delayed": 1, "waiting": 4, "dead": 1, "schedules": 0, "flows": 0}
        assert rep.reindexed == 6 and rep.current == 0
        assert rep.left == {
            "active: held by a worker (rotated once it moves; a completed job's payload is "
            "deleted)": 1,
            "not encrypted (use --include-plaintext to encrypt it)": 1}
        assert {p for p, _, _ in progress} == {"delayed", "waiting", "dead", "schedules", "flows"}
        after = await lane_entries(both)
        for job_id in ("w_h", "w_n1", "w_n2", "w_l"):
            lane, entry_id, p = after[job_id]
            assert envelope_kid(p) == "k2" and lane == before[job_id][0]  # same lane
            assert entry_id != before[job_id][1]  # re-added: streams cannot edit in place
            info = await both.get_job(job_id)
            assert info is not None and info.state is JobState.WAITING
            assert info.priority == info_before[job_id].priority  # type: ignore[union-attr]
            assert info.created_at == info_before[job_id].created_at  # type: ignore[union-attr]
        assert _id(after["w_n1"][1]) < _id(after["w_n2"][1])  # order kept among the rotated
        assert after["act"] == before["act"]  # the active entry is untouched (old key)
        assert envelope_kid(after["clear1"][2]) is None
        assert await both.redis.zscore(both.keys.delayed, "dl") == due_before
        assert (await both.get_job("dl")).state is JobState.DELAYED  # type: ignore[union-attr]
        dead_after = (await both.dead_letters())[0]
        assert dead_after.entry_id != dead_before.entry_id and dead_after.data == payload("dead1")
        raw_dead = await both.redis.xrange(both.keys.dead)
        assert envelope_kid(raw_dead[0][1][b"d"]) == "k2"
        assert (dead_after.error, dead_after.attempts, dead_after.failed_at) == (
            dead_before.error, dead_before.attempts, dead_before.failed_at)
        # the blind index moved with the payloads: the new key alone finds the rotated jobs
        rotated = {"w_h", "w_n1", "w_n2", "w_l", "dl", "dead1"}
        assert set(await find_job_ids(new, phone_term(NUMBER))) == rotated
        assert set(await find_job_ids(both, phone_term(NUMBER))) >= rotated | {"act"}

        # the active job moves (its worker died: the sweep puts it back in its lane)
        sweeper = Worker(both, first, visibility_timeout=0.1, reclaim_interval=0.2)
        await wait_until(lambda: sweeper.reclaim_once(), 5, interval=0.05,
                         message="the silent worker's job to be re-queued")
        again = await rotate_keys(both, include_plaintext=True)
        # the re-queued active job and the clear one; everything else is current
        assert again.rotated == {"delayed": 0, "waiting": 2, "dead": 0, "schedules": 0, "flows": 0}
        assert again.left == {} and again.current == 6
        assert await both.replay_dead("dead1") == 1  # the record points at the new letter

        # drain with only the new key: everything runs, nothing is dead-lettered
        seen: dict[str, Any] = {}

        async def drain(job: Job) -> None:
            seen[job.id] = job.data

        async with running(Worker(new, drain, rate_limit=None)):
            await wait_until(lambda: len(seen) == 8, 10, message="all jobs drained")
        assert seen == {j: payload(j) for j in
                        ("w_h", "w_n1", "w_n2", "w_l", "dl", "dead1", "act", "clear1")}
        counts = await new.counts()
        assert counts["dead"] == 0 and counts["waiting"] == counts["delayed"] == 0
    finally:
        for q in (old, both, new, clear):
            await q.close()


def _id(entry_id: str) -> tuple[int, int]:
    ms, _, seq = entry_id.partition("-")
    return int(ms), int(seq)


async def _state(q: Queue, job_id: str, state: JobState) -> bool:
    info = await q.get_job(job_id)
    return info is not None and info.state is state


async def test_rotation_leaves_what_it_cannot_open_and_says_why(
    redis_url: str, queue_name: str
) -> None:
    stranger = make_queue(queue_name, redis_url, f"kX:{K1}")
    old = make_queue(queue_name, redis_url, OLD)
    q = make_queue(queue_name, redis_url, BOTH)
    try:
        await stranger.add(payload("u1"), JobOptions(job_id="u1"))
        await q.add(payload("c1"), JobOptions(job_id="c1"))
        await q.ensure_groups()
        lane = q.keys.lanes[1]
        await old.add(payload("t1"), JobOptions(job_id="t1"))  # tampered under the old key
        entries = await q.redis.xrange(lane)
        entry_id, fields = entries[-1]
        d = fields[b"d"]
        await q.redis.xdel(lane, entry_id)
        await q.redis.xadd(lane, {**fields, b"d": d[:-1] + bytes([d[-1] ^ 1])})
        rep = await rotate_keys(q)
        assert rep.total_rotated == 0 and rep.current == 1
        assert rep.left == {"unknown key id kX": 1, "payload authentication failed": 1}
    finally:
        for each in (stranger, old, q):
            await each.close()


async def test_cli_rotate_keys_reports_progress_and_what_was_left(
    redis_url: str, queue_name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    old = make_queue(queue_name, redis_url, OLD)
    try:
        await old.add_bulk([(payload(f"j{i}"), JobOptions(job_id=f"j{i}")) for i in range(5)])
        await old.add(payload("d"), JobOptions(job_id="d", delay=60))
    finally:
        await old.close()
    monkeypatch.setenv(KEYS_ENV, BOTH)

    def run(*argv: str) -> tuple[int, str, str]:
        out, err = io.StringIO(), io.StringIO()
        code = cli_main([*argv, "--queue", queue_name, "--redis-url", redis_url],
                        console=Console(out=out, err=err))
        return code, out.getvalue(), err.getvalue()

    code, out, err = await _in_thread(run, "rotate-keys", "--index-terms",
                                      "streamq.sms.privacy:phone_terms")
    assert code == 0, err
    assert "6 payloads re-encrypted under key k2" in out
    assert "blind-index entries moved to k2: 6 jobs" in out
    assert "nothing left under an old key" in out
    assert "rotating " + queue_name + " waiting: 5/5" in err
    assert "rotating " + queue_name + " delayed: 1/1" in err
    code, out, _ = await _in_thread(run, "rotate-keys")
    assert code == 0 and "0 payloads re-encrypted" in out and "already under k2: 6" in out
    assert "no terms function" in out  # not the SMS queue, and no --index-terms
    monkeypatch.delenv(KEYS_ENV)
    code, _, err = await _in_thread(run, "rotate-keys")
    assert code == 2 and "STREAMQ_ENCRYPTION_KEYS" in err


async def _in_thread(fn: Callable[..., T], *args: Any) -> T:
    # the CLI runs its own event loop (anyio.run): give it a thread
    return await anyio.to_thread.run_sync(lambda: fn(*args))


async def test_rotation_keeps_waiting_jobs_in_their_lanes_and_in_order(
    redis_url: str, queue_name: str
) -> None:
    old = make_queue(queue_name, redis_url, OLD)
    both = make_queue(queue_name, redis_url, BOTH)
    try:
        await old.add_bulk([(payload(f"n{i:03d}"), JobOptions(job_id=f"n{i:03d}"))
                            for i in range(450)])  # more than one batch
        await old.add_bulk([(payload(f"h{i}"), JobOptions(job_id=f"h{i}", priority="high"))
                            for i in range(5)])
        order_before = [[f[b"j"] for _, f in await old.redis.xrange(lane)]
                        for lane in old.keys.lanes]
        rep = await rotate_keys(both)
        assert rep.rotated["waiting"] == 455
        lanes_after = [await both.redis.xrange(lane) for lane in both.keys.lanes]
        assert [[f[b"j"] for _, f in lane] for lane in lanes_after] == order_before
        assert {envelope_kid(f[b"d"]) for lane in lanes_after for _, f in lane} == {"k2"}
        # each job's location points at its new entry: cancel finds and removes it
        assert await both.cancel("n123") and await both.cancel("h3")
        assert (await both.counts())["waiting"] == 453
    finally:
        await old.close()
        await both.close()


async def test_a_rotated_waiting_job_keeps_its_creation_time_to_the_millisecond(
    redis_url: str, queue_name: str
) -> None:
    old = make_queue(queue_name, redis_url, OLD)
    both = make_queue(queue_name, redis_url, BOTH)
    try:
        await old.add(payload("w1"), JobOptions(job_id="w1"))
        before = await old.get_job("w1")
        # the lane's last generated id is ahead of the clock (an entry added, then deleted,
        # with an id 5 s ahead): a re-added entry gets a later id than "now", and its
        # creation time must still come out the same
        s, us = await old.redis.time()
        ahead = f"{s * 1000 + us // 1000 + 5000}-0"
        lane = old.keys.lanes[1]
        await old.redis.xadd(lane, {"j": "ghost", "d": b""}, id=ahead)
        await old.redis.xdel(lane, ahead)
        rep = await rotate_keys(both)
        assert rep.rotated["waiting"] == 1
        (entry_id, _), = await both.redis.xrange(lane)
        assert int(entry_id.split(b"-")[0]) >= int(ahead.split("-")[0])  # after the ghost
        after = await both.get_job("w1")
        assert before is not None and after is not None
        assert after.created_at == before.created_at
    finally:
        await old.close()
        await both.close()
