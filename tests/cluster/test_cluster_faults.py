"""Faults on a cluster during a drain with producers adding: a master SIGKILLed (its
replica takes over), a slot moved to another master, a replica stopped under
``min_replicas``. Nothing that an add returned for is lost; adds are retried, not raised."""

from __future__ import annotations

import math
import uuid
from pathlib import Path

import anyio
import pytest

from streamq import NotReplicated, Queue
from streamq.keys import QueueKeys
from tests.cluster.test_cluster_partitions import spread_name
from tests.support.cluster import LocalCluster
from tests.support.cluster_faults import FaultConfig, run_fault


@pytest.mark.timeout(240)
async def test_a_master_sigkilled_mid_drain_loses_no_returned_add(
    healthy: LocalCluster, tmp_path: Path,
) -> None:
    qn = spread_name(healthy, 3, 3)
    report = await run_fault(healthy, qn, tmp_path, FaultConfig(fault="failover"))
    print("\n" + "\n".join(report.lines()))
    assert report.added > 500
    assert report.lost == []
    assert len(report.duplicated) <= report.in_flight + report.concurrency, report.duplicated
    # a failover is about 2-3 x cluster-node-timeout (1 s here): within the 10 s bound
    assert not report.add_errors, report.add_errors
    assert 0 < report.recovery_s < 10 and not math.isnan(report.recovery_s)
    assert report.troubles, "the producers never met the failover"


@pytest.mark.timeout(240)
async def test_a_slot_moved_mid_drain_loses_nothing_and_adds_are_retried(
    healthy: LocalCluster, tmp_path: Path,
) -> None:
    qn = spread_name(healthy, 3, 3)
    report = await run_fault(healthy, qn, tmp_path, FaultConfig(fault="migrate"))
    print("\n" + "\n".join(report.lines()))
    assert report.added > 500
    assert report.lost == [] and report.duplicated == {}
    assert not report.add_errors, report.add_errors  # retried, never raised
    # the migration was met (a slot half-moved: ASK, then TRYAGAIN on the scripts), and
    # the clients followed and retried (redis-py's own redirects, then streamq's bound)
    met = report.server_errors["TRYAGAIN"] + report.server_errors["ASK"]
    assert met or report.troubles, "the producers never met the migration"


async def test_not_replicated_when_the_replica_is_stopped(healthy: LocalCluster) -> None:
    qn = "r" + uuid.uuid4().hex[:10]
    owner = healthy.master_of_key(QueueKeys(qn).prefix)
    [replica] = healthy.replicas_of(owner)
    async with Queue(qn, redis_url=healthy.url, min_replicas=1, replica_timeout=0.5) as q:
        await q.add({"ok": 1})  # acknowledged by the replica
        await q.add_bulk([{"i": i} for i in range(50)])
        healthy.pause(replica)
        try:
            with pytest.raises(NotReplicated) as info:
                await q.add({"ok": 2})
            assert info.value.acked == 0 and info.value.wanted == 1
            assert "0 of 1 replicas" in str(info.value) and "\n" not in str(info.value)
            with pytest.raises(NotReplicated):
                await q.add_bulk([{"i": i} for i in range(20)])
        finally:
            healthy.resume(replica)
        # the add happened anyway (it is only not known to be replicated)
        assert (await q.counts())["waiting"] == 1 + 50 + 1 + 20
        with anyio.fail_after(30):
            while True:  # the replica catches up; adds are acknowledged again
                try:
                    await q.add({"ok": 3})
                    break
                except NotReplicated:
                    await anyio.sleep(0.2)
