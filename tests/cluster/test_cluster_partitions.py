"""A partitioned queue on a cluster: its partitions live on every master and each master
does its partitions' share of the work; the queue-wide rate limit holds across
partitions (on several masters) and two worker processes."""

from __future__ import annotations

import uuid
from pathlib import Path

from redis.crc import key_slot

from streamq import Job, Queue, Worker
from streamq.keys import QueueKeys
from streamq.routing import partition_of
from tests.support.cluster import LocalCluster
from tests.support.util import running, wait_until
from tests.test_partitions_worker import check_rate_limit_across_processes


def spread_name(cluster: LocalCluster, partitions: int, masters: int) -> str:
    """A fresh queue name whose partitions' hash tags land on ``masters`` masters. A
    queue's N tags hash to N slots at random, so N = 3 covers 3 masters for about 2 names
    in 9 (docs/partitions.md); a test that wants all of them picks such a name."""
    owners = cluster.slot_owners()
    while True:
        name = "s" + uuid.uuid4().hex[:10]
        ports = {owners[key_slot(QueueKeys(name, p).prefix.encode())] for p in range(partitions)}
        if len(ports) == masters:
            return name


async def test_partitions_spread_over_all_three_masters_and_share_the_work(
    healthy: LocalCluster,
) -> None:
    masters = healthy.masters()
    assert len(masters) == 3
    qn = spread_name(healthy, 3, 3)
    calls_before = {m.port: healthy.command_calls(m) for m in masters}
    async with Queue(qn, redis_url=healthy.url, partitions=3) as q:
        refs = await q.add_bulk([{"i": i} for i in range(900)])
        per_partition = [sum(1 for r in refs if partition_of(r.job_id, 3) == p)
                         for p in range(3)]
        # every master holds one partition's keys and jobs
        for p in range(3):
            k = q.layout.keys(p)
            owner = healthy.master_of_key(k.prefix)
            with healthy.client(owner) as c:
                assert c.xlen(k.lanes[1]) == per_partition[p]
                assert c.execute_command("CLUSTER COUNTKEYSINSLOT",
                                         key_slot(k.prefix.encode())) > 0
        ran: list[int] = []

        async def handler(job: Job) -> None:
            ran.append(job.partition)

        async with running(Worker(q, handler, rate_limit=None, concurrency=30)):
            await wait_until(lambda: len(ran) == 900, 90, 0.05, "900 jobs")
        assert sorted(ran.count(p) for p in range(3)) == sorted(per_partition)
    # each master ran the transitions (enqueue, claim, complete: batched, so a few dozen)
    # of its partition: the work is spread, none does it all
    grew = {m.port: healthy.command_calls(m) - calls_before[m.port] for m in masters}
    assert min(grew.values()) >= 10 and min(grew.values()) >= max(grew.values()) / 3, grew


async def test_rate_limit_within_10_percent_across_partitions_and_two_processes(
    healthy: LocalCluster, tmp_path: Path,
) -> None:
    qn = spread_name(healthy, 3, 3)  # the three partitions on three masters
    measured = await check_rate_limit_across_processes(healthy.url, qn, tmp_path, rate=25.0)
    assert abs(measured - 25.0) / 25.0 <= 0.10
