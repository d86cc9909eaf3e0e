"""Partitioned queues, the worker side: drains without loss or duplicates, fairness
between partitions, the queue-wide rate limit across partitions and processes, pause,
retries and crash take-over in the job's own partition."""

from __future__ import annotations

import collections
import signal
import subprocess
import time
from pathlib import Path

import anyio
import anyio.lowlevel

from streamq import Defer, Job, JobOptions, JobState, Queue, QueueDefaults, Worker
from streamq.routing import partition_of
from tests.support.ledger import read_ledger
from tests.support.util import running, spawn_ledger_worker, wait_until
from tests.test_partitions import ids_in


async def _equal(q: Queue, name: str, value: int) -> bool:
    return (await q.counts())[name] == value


def _stop(proc: subprocess.Popen[str]) -> None:
    if proc.poll() is None:
        proc.kill()
    proc.wait(timeout=10)


async def test_two_workers_drain_three_partitions_with_nothing_lost_or_run_twice(
    redis_url: str, queue_name: str
) -> None:
    async with Queue(queue_name, redis_url=redis_url, partitions=3) as q:
        refs = await q.add_bulk([{"i": i} for i in range(600)])
        runs: list[tuple[str, int, str]] = []

        def handler_for(name: str):  # type: ignore[no-untyped-def]
            async def handler(job: Job) -> None:
                runs.append((job.id, job.partition, name))
                await anyio.lowlevel.checkpoint()

            return handler

        a = Worker(q, handler_for("a"), concurrency=10, rate_limit=None)
        b = Worker(q, handler_for("b"), concurrency=10, rate_limit=None)
        async with running(a), running(b):
            await wait_until(lambda: _equal(q, "completed", 600), timeout=30)
        ids = [r for r, _, _ in runs]
        assert len(ids) == len(set(ids)) == 600  # none twice
        assert set(ids) == {r.job_id for r in refs}  # none lost
        assert all(p == partition_of(j, 3) for j, p, _ in runs)
        assert {p for _, p, _ in runs} == {0, 1, 2}
        assert {n for _, _, n in runs} == {"a", "b"}
        c = await q.counts()
        assert (c["waiting"], c["active"], c["delayed"], c["failed"]) == (0, 0, 0, 0)


async def test_a_backlog_in_one_partition_does_not_starve_another(
    redis_url: str, queue_name: str
) -> None:
    async with Queue(queue_name, redis_url=redis_url, partitions=3) as q:
        await q.pause()
        big = ids_in(0, 3, "big-", 300)
        small = ids_in(2, 3, "small-", 30)
        await q.add_bulk([({}, JobOptions(job_id=j)) for j in big])
        await q.add_bulk([({}, JobOptions(job_id=j)) for j in small])
        starts: list[int] = []

        async def handler(job: Job) -> None:
            starts.append(job.partition)
            await anyio.sleep(0.001)

        async with running(Worker(q, handler, concurrency=4, rate_limit=None)):
            await q.resume()
            await wait_until(lambda: len(starts) == 330, timeout=30)
        # starts per partition over time, in windows of 20 starts
        windows = [collections.Counter(starts[i:i + 20]) for i in range(0, 80, 20)]
        # both partitions are served from the start: the small one in about every other
        # start until it is empty (fair shares), the big one not held back either
        first_60 = collections.Counter(starts[:60])
        assert first_60[2] == 30, windows
        assert first_60[0] >= 24, windows
        assert windows[0][2] >= 8 and windows[0][0] >= 8, windows


async def test_priority_order_holds_within_each_partition(
    redis_url: str, queue_name: str
) -> None:
    async with Queue(queue_name, redis_url=redis_url, partitions=3) as q:
        await q.pause()
        await q.add_bulk([({"p": "normal"}, JobOptions(priority="normal")) for _ in range(30)])
        await q.add_bulk([({"p": "high"}, JobOptions(priority="high")) for _ in range(30)])
        order: dict[int, list[str]] = collections.defaultdict(list)

        async def handler(job: Job) -> None:
            order[job.partition].append(job.data["p"])

        async with running(Worker(q, handler, concurrency=1, rate_limit=None)):
            await q.resume()
            await wait_until(lambda: sum(map(len, order.values())) == 60)
        assert set(order) == {0, 1, 2}
        for seen in order.values():
            highs = seen.count("high")
            assert seen == ["high"] * highs + ["normal"] * (len(seen) - highs), seen


async def test_paused_partitioned_queue_is_not_worked_until_resumed(
    redis_url: str, queue_name: str
) -> None:
    async with Queue(queue_name, redis_url=redis_url, partitions=3) as q:
        done: list[int] = []

        async def handler(job: Job) -> None:
            done.append(job.partition)

        async with running(Worker(q, handler, rate_limit=None)) as w:
            await q.pause()
            await q.add_bulk([{"i": i} for i in range(30)])
            turned = w.last_loop_at
            # the fetch loop went round (it saw every partition paused): nothing ran
            await wait_until(lambda: w.last_loop_at > turned + 0.3, timeout=5)
            assert done == []
            assert (await q.counts())["waiting"] == 30
            t0 = time.monotonic()
            await q.resume()
            await wait_until(lambda: len(done) == 30, timeout=5)
            assert time.monotonic() - t0 < 1.0  # each partition's idle waker wakes on resume
            assert set(done) == {0, 1, 2}


async def test_retries_and_delays_stay_in_the_jobs_partition(
    redis_url: str, queue_name: str
) -> None:
    async with Queue(queue_name, redis_url=redis_url, partitions=3) as q:
        ids = [ids_in(p, 3, "r-")[0] for p in range(3)]
        for job_id in ids:
            await q.add({}, JobOptions(job_id=job_id, backoff=0.05))
        later = ids_in(1, 3, "later-")[0]
        await q.add({}, JobOptions(job_id=later, delay=0.3))
        attempts: list[tuple[str, int, int]] = []

        async def handler(job: Job) -> None:
            attempts.append((job.id, job.attempt, job.partition))
            if job.attempt == 1 and job.id != later:
                raise RuntimeError("once")

        async with running(Worker(q, handler, rate_limit=None)):
            await wait_until(lambda: _equal(q, "completed", 4), timeout=10)
        for p, job_id in enumerate(ids):
            assert [(a, part) for j, a, part in attempts if j == job_id] == [(1, p), (2, p)]
            info = await q.get_job(job_id)
            assert info is not None and info.state is JobState.COMPLETED
        assert [(a, part) for j, a, part in attempts if j == later] == [(1, 1)]


async def test_rate_limit_holds_across_partitions_and_two_worker_processes(
    redis_url: str, queue_name: str, tmp_path: Path
) -> None:
    await check_rate_limit_across_processes(redis_url, queue_name, tmp_path)


async def check_rate_limit_across_processes(redis_url: str, queue_name: str, tmp_path: Path,
                                            rate: float = 25.0) -> float:
    """150 jobs over 3 partitions, two worker processes sharing the queue's rate: the
    steady pace is within 10 % of the rate (also run on a cluster: tests/cluster).
    Returns the pace measured."""
    async with Queue(queue_name, redis_url=redis_url, partitions=3) as q:
        refs = await q.add_bulk([{} for _ in range(150)])
        assert {partition_of(r.job_id, 3) for r in refs} == {0, 1, 2}
        # one told the count, one adopting it
        procs = [
            spawn_ledger_worker(redis_url, queue_name, tmp_path, "--concurrency", "20",
                                "--rate-limit", str(rate), "--burst", str(rate), *extra)
            for extra in (["--partitions", "3"], [])
        ]
        try:
            await wait_until(lambda: len(read_ledger(tmp_path).starts) >= 150, timeout=30)
        finally:
            for p in procs:
                p.send_signal(signal.SIGTERM)
            for p in procs:
                p.wait(timeout=15)
                _stop(p)
        view = read_ledger(tmp_path)
        assert {pid for _, _, pid, _ in view.starts} == {p.pid for p in procs}
        assert view.duplicated == {}
        times = sorted(t for _, _, _, t in view.starts)
        # after the initial burst (one second of tokens) the pace is the rate
        steady = times[int(rate):]
        measured = (len(steady) - 1) / (steady[-1] - steady[0])
        assert abs(measured - rate) / rate <= 0.10, measured
        # and no 1 s window holds more than burst + rate starts
        j = 0
        for i, t in enumerate(times):
            while times[j] < t - 1.0:
                j += 1
            assert i - j + 1 <= 2 * rate
    return measured


async def test_a_worker_killed_mid_job_in_partition_2_is_taken_over(
    redis_url: str, queue_name: str, tmp_path: Path
) -> None:
    async with Queue(queue_name, redis_url=redis_url, partitions=3) as q:
        job_id = ids_in(2, 3, "crash-")[0]
        await q.add({"sleep": 30}, JobOptions(job_id=job_id))
        victim = spawn_ledger_worker(redis_url, queue_name, tmp_path, "--vt", "0.5")
        try:
            await wait_until(lambda: read_ledger(tmp_path).starts, timeout=10,
                             message="the job to start in the victim")
            victim.send_signal(signal.SIGKILL)
            victim.wait(timeout=10)
        finally:
            _stop(victim)
        info = await q.get_job(job_id)
        assert info is not None and info.state is JobState.ACTIVE  # orphaned in partition 2
        finished: list[tuple[str, int, int]] = []

        async def handler(job: Job) -> None:
            finished.append((job.id, job.attempt, job.partition))

        w = Worker(q, handler, rate_limit=None, visibility_timeout=0.5, reclaim_interval=0.1)
        stalled: list[int] = []
        w.on("stalled", lambda e: stalled.append(e.stalls))
        t_kill = time.monotonic()
        async with running(w):
            await wait_until(lambda: finished, timeout=5, message="the take-over")
            await wait_until(lambda: _equal(q, "completed", 1))
        assert time.monotonic() - t_kill < 3.0
        assert finished == [(job_id, 1, 2)]  # the crash did not use up an attempt
        assert stalled == [1]
        c = await q.counts()
        assert (c["completed"], c["active"], c["waiting"]) == (1, 0, 0)


async def test_jobs_cut_at_shutdown_go_back_to_their_own_partitions(
    redis_url: str, queue_name: str
) -> None:
    async with Queue(queue_name, redis_url=redis_url, partitions=3) as q:
        ids = [j for p in range(3) for j in ids_in(p, 3, "cut-", 4)]
        await q.add_bulk([({}, JobOptions(job_id=j)) for j in ids])
        held: list[int] = []

        async def hold(job: Job) -> None:
            held.append(job.partition)
            await anyio.sleep(60)

        # 9 slots for 4 jobs a partition: the claims reach all three partitions
        a = Worker(q, hold, concurrency=9, rate_limit=None, shutdown_grace=0.1)
        async with running(a):
            await wait_until(lambda: len(held) == 9)
            assert (await q.counts())["active"] == 9
        assert set(held) == {0, 1, 2}
        c = await q.counts()
        assert (c["active"], c["waiting"]) == (0, 12)  # all handed back at once
        runs: list[tuple[str, int, int]] = []

        async def quick(job: Job) -> None:
            runs.append((job.id, job.attempt, job.partition))

        async with running(Worker(q, quick, rate_limit=None)):
            await wait_until(lambda: _equal(q, "completed", 12))
        assert sorted(r[0] for r in runs) == sorted(ids)  # each once
        assert {a for _, a, _ in runs} == {1}  # a cut run uses up no attempt
        assert all(p == partition_of(j, 3) for j, _, p in runs)


async def test_a_fetch_hold_spans_partitions_and_deferred_jobs_stay_in_theirs(
    redis_url: str, queue_name: str
) -> None:
    async with Queue(queue_name, redis_url=redis_url, partitions=3,
                     defaults=QueueDefaults(attempts=1)) as q:
        refs = await q.add_bulk([{"i": i} for i in range(40)])
        down = True
        calls = 0
        hold_s = 0.2
        ran: list[tuple[str, int]] = []

        async def handler(job: Job) -> None:
            nonlocal calls
            calls += 1
            if down:
                raise Defer(hold_s, "every provider is down", hold=True)
            ran.append((job.id, job.partition))

        worker = Worker(q, handler, concurrency=4, rate_limit=None)
        async with running(worker):
            await wait_until(lambda: worker.fetch_hold.held, 5, message="the hold")
            started = anyio.current_time()
            await wait_until(lambda: worker.fetch_hold.holds >= 6, 10, message="hold periods")
            periods = (anyio.current_time() - started) / hold_s
            # no churn over the partitions either: one probe per period after the first claim
            assert calls <= 4 + periods + 2, (calls, periods)
            for p in range(3):  # a deferred job waits in its own partition's delayed set
                for job_id in await q.redis.zrange(q.layout.keys(p).delayed, 0, -1):
                    assert partition_of(job_id.decode(), 3) == p
            down = False
            await wait_until(lambda: _equal(q, "completed", 40), 10, message="all 40 jobs")
        assert sorted(j for j, _ in ran) == sorted(r.job_id for r in refs)
        assert all(p == partition_of(j, 3) for j, p in ran)
        assert (await q.counts())["failed"] == 0
