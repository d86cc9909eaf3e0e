"""Schedules on an encrypting queue (SPEC 9.5 with docs/schedules.md): a schedule's stored
payload is sealed for the schedule, each run's payload is sealed again for the run's own
job id when it is fired (by a worker or "run now"), an unchanged upsert still writes
nothing, a worker without the key leaves the slot to one that has it, and rotate-keys
rewrites the stored payloads."""

from __future__ import annotations

import base64
from typing import Any

import pytest

from streamq import Job, Queue, Worker
from streamq.crypto import KEYS_ENV, PURPOSE_SCHEDULE, KeyRing, envelope_kid
from streamq.errors import DecryptError
from streamq.keys import QueueKeys
from streamq.rotation import rotate_keys
from streamq.routing import partition_of
from tests.support.util import running, wait_until

K1 = base64.b64encode(b"\x41" * 32).decode()
K2 = base64.b64encode(b"\x42" * 32).decode()
OLD, BOTH, NEW = f"k1:{K1}", f"k2:{K2},k1:{K1}", f"k2:{K2}"
DATA = {"to": "+254712345678", "text": "your parcel is at gate 4471"}


@pytest.fixture(autouse=True)
def no_env_keys(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(KEYS_ENV, raising=False)


def make_queue(name: str, url: str, keys: str | None, **kw: Any) -> Queue:
    ring = KeyRing.parse(keys) if keys else None
    return Queue(name, redis_url=url, keyring=ring, encrypt=ring is not None, partitions=3,
                 **kw)


async def stored_payload(q: Queue, schedule_id: str) -> bytes:
    k = QueueKeys(q.name, partition_of(schedule_id, 3))
    raw: Any = await q.redis.hget(k.schedule(schedule_id), "d")
    assert isinstance(raw, bytes)
    return raw


@pytest.mark.timeout(60)
async def test_runs_of_an_encrypted_schedule_are_sealed_for_their_own_ids(
    redis_url: str, queue_name: str
) -> None:
    q = make_queue(queue_name, redis_url, OLD)
    try:
        s = await q.upsert_schedule("reminder", every=1.0, data=DATA)
        stored = await stored_payload(q, "reminder")
        assert envelope_kid(stored) == "k1" and b"254712345678" not in stored
        assert b"4471" not in stored
        # bound to the schedule: it does not open as a job's payload, even one of that id
        with pytest.raises(DecryptError, match="authentication failed"):
            q.codec.decode(stored, "reminder")
        assert q.codec.decode_value(stored, "reminder", PURPOSE_SCHEDULE) == DATA
        # an unchanged upsert writes nothing (the fresh envelope holds the same bytes)
        again = await q.upsert_schedule("reminder", every=1.0, data=DATA)
        assert again.version == s.version and await stored_payload(q, "reminder") == stored
        changed = await q.upsert_schedule("reminder", every=1.0, data={**DATA, "text": "x"})
        assert changed.version != s.version
        await q.upsert_schedule("reminder", every=1.0, data=DATA)

        extra = await q.run_schedule_now("reminder")
        assert extra is not None
        seen: dict[str, Any] = {}

        async def handler(job: Job) -> None:
            seen[job.id] = job.data

        async with running(Worker(q, handler, rate_limit=None)):
            await wait_until(lambda: len(seen) >= 2, 10, message="the run now and a slot")
        assert extra.job_id in seen
        assert all(v == DATA for v in seen.values())  # every run opened, nothing dead
        assert (await q.counts())["dead"] == 0
    finally:
        await q.close()


@pytest.mark.timeout(60)
async def test_a_worker_without_the_key_leaves_the_slot_to_one_that_has_it(
    redis_url: str, queue_name: str
) -> None:
    keyed = make_queue(queue_name, redis_url, OLD)
    keyless = make_queue(queue_name, redis_url, None)
    try:
        await keyed.upsert_schedule("nightly", every=1.0, data=DATA)
        with pytest.raises(DecryptError, match="no key is configured"):
            await keyless.run_schedule_now("nightly")  # one clear line, nothing added

        async def handler(job: Job) -> None:
            return None

        blind = Worker(keyless, handler, rate_limit=None)
        async with running(blind):
            assert blind.schedules is not None
            await wait_until(lambda: _tried(blind), 10, message="the keyless worker's try")
        info = await keyed.get_schedule("nightly")
        assert info is not None and info.runs == 0  # nothing fired, nothing dead
        counts = await keyed.counts()
        assert counts["waiting"] == counts["dead"] == 0

        seen: list[Any] = []

        async def opened(job: Job) -> None:
            seen.append(job.data)

        async with running(Worker(keyed, opened, rate_limit=None)):
            await wait_until(lambda: len(seen) >= 1, 10, message="a run by the keyed worker")
        assert seen[0] == DATA
    finally:
        await keyed.close()
        await keyless.close()


async def _tried(w: Worker) -> bool:
    assert w.schedules is not None
    return "nightly" in w.schedules._sealed_warned


async def test_rotate_keys_rewrites_stored_schedule_payloads(
    redis_url: str, queue_name: str
) -> None:
    old = make_queue(queue_name, redis_url, OLD)
    both = make_queue(queue_name, redis_url, BOTH)
    new = make_queue(queue_name, redis_url, NEW)
    try:
        for sid in ("a", "b", "c"):
            await old.upsert_schedule(sid, cron="0 8 * * *", data={**DATA, "id": sid})
        versions = {sid: (await old.get_schedule(sid)).version for sid in "abc"}  # type: ignore[union-attr]
        rep = await rotate_keys(both)
        assert rep.rotated["schedules"] == 3 and rep.left == {}
        for sid in "abc":
            raw = await stored_payload(both, sid)
            assert envelope_kid(raw) == "k2"
            assert new.codec.decode_value(raw, sid, PURPOSE_SCHEDULE) == {**DATA, "id": sid}
            assert (await both.get_schedule(sid)).version == versions[sid]  # type: ignore[union-attr]
        again = await rotate_keys(both)
        assert again.rotated["schedules"] == 0 and again.current == 3
        # the new key alone runs them
        ref = await new.run_schedule_now("b")
        assert ref is not None
        seen: list[Any] = []

        async def handler(job: Job) -> None:
            seen.append(job.data)

        async with running(Worker(new, handler, rate_limit=None, fire_schedules=False)):
            await wait_until(lambda: len(seen) == 1, 10, message="the run")
        assert seen == [{**DATA, "id": "b"}]
    finally:
        for q in (old, both, new):
            await q.close()
