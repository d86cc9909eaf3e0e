"""Stored results and flows on encrypting queues (SPEC 9.5 with docs/workflows.md): a
handler's result is sealed for its job, a flow parent opens its children's results even
when they ran on another encrypted queue, a parent's payload waits sealed in its flow
hash, a reader without the key gets a clear result_error, and rotate-keys rewrites the
payloads waiting parents keep."""

from __future__ import annotations

import base64
from typing import Any

import pytest

from streamq import FlowJob, Job, JobOptions, JobState, Queue, Worker
from streamq.crypto import KEYS_ENV, KeyRing, envelope_kid
from streamq.rotation import rotate_keys
from tests.support.util import running, wait_until

K1 = base64.b64encode(b"\x51" * 32).decode()
K2 = base64.b64encode(b"\x52" * 32).decode()
OLD, BOTH, NEW = f"k1:{K1}", f"k2:{K2},k1:{K1}", f"k2:{K2}"
NUMBER = "+254712345678"


@pytest.fixture(autouse=True)
def no_env_keys(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(KEYS_ENV, raising=False)


def make_queue(name: str, url: str, keys: str | None) -> Queue:
    ring = KeyRing.parse(keys) if keys else None
    return Queue(name, redis_url=url, keyring=ring, encrypt=ring is not None)


class Recorder:
    """Returns a result holding a phone number; a parent notes its children's results."""

    def __init__(self) -> None:
        self.seen: dict[str, dict[str, Any]] = {}
        self.data: dict[str, Any] = {}

    async def __call__(self, job: Job) -> Any:
        self.data[job.id] = job.data
        kids = await job.children_results()
        if kids:
            self.seen[job.id] = kids
        return {"sent_to": NUMBER, "job": job.id}


async def done(q: Queue, job_id: str) -> bool:
    info = await q.get_job(job_id)
    return info is not None and info.state is JobState.COMPLETED


@pytest.mark.timeout(60)
async def test_results_and_flows_across_two_encrypted_queues(
    redis_url: str, queue_name: str
) -> None:
    qa = make_queue(queue_name + "a", redis_url, OLD)
    qb = make_queue(queue_name + "b", redis_url, OLD)
    keyless = make_queue(queue_name + "b", redis_url, None)
    try:
        await qa.add_flow(FlowJob(data={"to": NUMBER, "n": 0}, options=JobOptions(job_id="root"),
                                  children=[
            FlowJob(data={"to": NUMBER, "n": 1}, queue=qb, options=JobOptions(job_id="c1")),
            FlowJob(data={"to": NUMBER, "n": 2}, options=JobOptions(job_id="c2")),
        ]), on_child_failure="fail")
        # the parent's payload waits sealed in its flow hash, and still shows
        held: Any = await qa.redis.hget(qa.keys.flow("root"), "d")
        assert envelope_kid(held) == "k1" and b"712345678" not in held
        shown = await qa.job_payload("root")
        assert shown is not None and shown.where == "flow" and shown.data == {"to": NUMBER, "n": 0}

        rec = Recorder()
        async with running(Worker(qa, rec, rate_limit=None)), \
                running(Worker(qb, rec, rate_limit=None)):
            await wait_until(lambda: done(qa, "root"), 10, message="the root to complete")
        # c1 ran on queue b: its result was sealed for b, and the parent on a opened it
        assert rec.seen["root"] == {"c1": {"sent_to": NUMBER, "job": "c1"},
                                    "c2": {"sent_to": NUMBER, "job": "c2"}}
        assert rec.data["root"] == {"to": NUMBER, "n": 0}
        for q, job_id in ((qa, "root"), (qb, "c1"), (qa, "c2")):
            record: Any = await q.redis.get(q.keys.job(job_id))
            assert b"712345678" not in record  # the stored result is sealed
            info = await q.get_job(job_id)
            assert info is not None and info.result == {"sent_to": NUMBER, "job": job_id}
        outcome: Any = await qa.redis.hget(qa.keys.flow("root"), "r:c1")
        assert outcome is None or b"712345678" not in outcome
        # a reader without the key: no result, and why
        info = await keyless.get_job("c1")
        assert info is not None and info.result is None
        assert info.result_error == ("payload is encrypted and no key is configured (set "
                                     "STREAMQ_ENCRYPTION_KEYS)")
    finally:
        for q in (qa, qb, keyless):
            await q.close()


@pytest.mark.timeout(60)
async def test_rotate_keys_rewrites_a_waiting_parents_payload(
    redis_url: str, queue_name: str
) -> None:
    old = make_queue(queue_name, redis_url, OLD)
    both = make_queue(queue_name, redis_url, BOTH)
    new = make_queue(queue_name, redis_url, NEW)
    try:
        await old.add_flow(FlowJob(data={"to": NUMBER, "n": 0}, options=JobOptions(job_id="root"),
                                   children=[
            FlowJob(data={"n": 1}, options=JobOptions(job_id="c1")),
            FlowJob(data={"n": 2}, options=JobOptions(job_id="c2")),
        ]), on_child_failure="continue")
        rep = await rotate_keys(both)
        assert rep.rotated["flows"] == 1 and rep.rotated["waiting"] == 2 and rep.left == {}
        held: Any = await both.redis.hget(both.keys.flow("root"), "d")
        assert envelope_kid(held) == "k2"
        assert (await rotate_keys(both)).current == 3

        rec = Recorder()
        async with running(Worker(new, rec, rate_limit=None)):
            await wait_until(lambda: done(new, "root"), 10, message="the root to complete")
        assert rec.data == {"c1": {"n": 1}, "c2": {"n": 2}, "root": {"to": NUMBER, "n": 0}}
        assert set(rec.seen["root"]) == {"c1", "c2"}
        assert (await new.counts())["dead"] == 0
    finally:
        for q in (old, both, new):
            await q.close()
