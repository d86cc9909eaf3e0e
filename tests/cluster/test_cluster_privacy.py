"""Encryption at rest on a partitioned queue spread over a cluster's masters: the blind
index is written with each job in its partition's slot, find asks every partition,
rotate-keys rewrites every partition's payloads (each rewrite one single-slot call,
pipelined per master)."""

from __future__ import annotations

import base64

import pytest

from streamq import JobOptions, Queue
from streamq.blind_index import find_job_ids
from streamq.crypto import KEYS_ENV, KeyRing, envelope_kid
from streamq.rotation import rotate_keys
from streamq.sms.privacy import phone_term, phone_terms
from tests.cluster.test_cluster_partitions import spread_name
from tests.support.cluster import LocalCluster

K1 = base64.b64encode(b"\x31" * 32).decode()
K2 = base64.b64encode(b"\x32" * 32).decode()
A, B = "+254712345678", "+254733000111"


def make(name: str, url: str, keys: str) -> Queue:
    return Queue(name, redis_url=url, keyring=KeyRing.parse(keys), encrypt=True,
                 blind_index=phone_terms, partitions=3)


async def test_find_and_rotate_keys_over_partitions_on_three_masters(
    healthy: LocalCluster, monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv(KEYS_ENV, raising=False)
    qn = spread_name(healthy, 3, 3)
    old = make(qn, healthy.url, f"k1:{K1}")
    both = make(qn, healthy.url, f"k2:{K2},k1:{K1}")
    try:
        jobs = [({"recipient": {"phone_number": A if i % 2 else B}, "text": f"t{i}"},
                 JobOptions(job_id=f"j{i}")) for i in range(60)]
        await old.add_bulk(jobs)
        await old.add({"recipient": {"phone_number": A}, "text": "later"},
                      JobOptions(job_id="later", delay=3600))
        want_a = {f"j{i}" for i in range(60) if i % 2} | {"later"}
        assert set(await find_job_ids(old, phone_term(A))) == want_a
        report = await rotate_keys(both)
        assert report.rotated["waiting"] == 60 and report.rotated["delayed"] == 1
        for job_id in ("j1", "j2", "later"):
            found = await both.job_payload(job_id)
            assert found is not None and found.decoded and found.sealed_with == "k2"
        assert set(await find_job_ids(both, phone_term(A))) == want_a
        raw = await both.redis.xrange(both.layout.keys(0).lanes[1], count=1)
        assert raw and envelope_kid(raw[0][1][b"d"]) == "k2"
    finally:
        await old.close()
        await both.close()
