"""The SMS path on a partitioned queue: failover, breakers and per-provider buckets stay
queue-wide (in the queue's home), a job's provider pin lives in the job's partition, and
every command stays in one Cluster slot."""

from __future__ import annotations

from typing import Any

from streamq import JobState, Queue, QueueDefaults
from streamq.devredis import free_port
from streamq.routing import partition_of
from streamq.sms import SMSJob, create_notification_sms_job
from streamq.sms.breaker import BreakerPolicy
from streamq.sms.failover import ProviderRouter
from streamq.sms.standin_at import AfricasTalkingStandin
from tests.sms.test_sms_failover import (
    AT_KEY,
    AT_USER,
    NUMBER,
    Run,
    at_provider,
    events_of,
    salum_at,
)
from tests.support.util import running, wait_until
from tests.test_partitions_slots import recorded, slots_of

__all__ = ["recorded"]  # the fixture, used below by name


async def test_failover_on_a_partitioned_queue_keeps_every_command_in_one_slot(
    redis_url: str, queue_name: str, recorded: list[tuple[Any, ...]]
) -> None:
    q = Queue(queue_name, redis_url=redis_url, job_type=SMSJob, partitions=3,
              defaults=QueueDefaults(backoff_s=0.01))
    async with AfricasTalkingStandin(api_key=AT_KEY, username=AT_USER) as at, q:
        salum = salum_at(f"http://127.0.0.1:{free_port()}/api/services/sendsms/")  # down
        router = ProviderRouter(q, [salum, at_provider(at)],
                                rate_limits={"africastalking": 500.0},
                                policy=BreakerPolicy(errors=3, window_s=30, cooldown_s=60))
        refs = [await create_notification_sms_job(recipient=NUMBER, message=f"p{i}", queue=q)
                for i in range(15)]
        assert {partition_of(r.job_id, 3) for r in refs} == {0, 1, 2}
        run = Run(q, router, concurrency=3)
        try:
            async with running(run.worker):
                await wait_until(lambda: run.count("completed") >= 15, 20, message="15 sent")
        finally:
            await router.aclose()
        assert sorted(r.idempotency_key or "" for r in at.received) == sorted(
            r.job_id for r in refs)
        for ref in refs:
            info = await q.get_job(ref.job_id)
            assert info is not None and info.state is JobState.COMPLETED
            # the pin sits next to the job, in its partition
            own = q.layout.keys(partition_of(ref.job_id, 3))
            assert await q.redis.exists(own.route(ref.job_id))
        # the breaker is queue-wide: one, in the home
        assert await q.redis.hget(q.keys.breaker("salum"), "st") == b"open"
        assert len(await events_of(q, "failover")) == 15
    _, crossing = slots_of(redis_url, recorded)
    assert crossing == []


async def test_a_broadcast_on_a_partitioned_queue_keeps_every_command_in_one_slot(
    redis_url: str, queue_name: str, recorded: list[tuple[Any, ...]]
) -> None:
    """One request for jobs of three partitions: each job's pin and delivery reference
    name its own partition; every Redis command (the pipelined reference writes too)
    stays in one slot."""
    from streamq import BatchOptions, Worker
    from streamq.sms import create_notification_sms_jobs, make_sms_batch_handler

    q = Queue(queue_name, redis_url=redis_url, job_type=SMSJob, partitions=3,
              defaults=QueueDefaults(backoff_s=0.01))
    async with AfricasTalkingStandin(api_key=AT_KEY, username=AT_USER) as at, q:
        salum = salum_at(f"http://127.0.0.1:{free_port()}/api/services/sendsms/")  # unused
        router = ProviderRouter(q, [at_provider(at), salum],
                                rate_limits={"africastalking": 500.0})
        numbers = [f"+2547120000{i:02d}" for i in range(30)]
        refs = await create_notification_sms_jobs(recipients=numbers, message="p", queue=q)
        assert {partition_of(r.job_id, 3) for r in refs} == {0, 1, 2}
        worker = Worker(q, make_sms_batch_handler(router), rate_limit=None,
                        batch=BatchOptions(size=100, max_wait=0.2))
        done: list[str] = []
        worker.on("completed", lambda e: done.append(e.job_id))
        try:
            async with running(worker):
                await wait_until(lambda: len(done) >= 30, 20, message="30 sent")
        finally:
            await router.aclose()
        assert len(at.received) == 1 and len(at.received[0].form["to"].split(",")) == 30
        for ref in refs:
            info = await q.get_job(ref.job_id)
            assert info is not None and info.state is JobState.COMPLETED
            own = partition_of(ref.job_id, 3)
            assert await q.redis.exists(q.layout.keys(own).route(ref.job_id))
            assert await router.delivery.find("africastalking", info.result["message_id"]) == (
                own, ref.job_id)
    _, crossing = slots_of(redis_url, recorded)
    assert crossing == []
