"""The cost of delivery reports, measured side by side in one run.

    python -m benchmarks.delivery --jobs 2000 --rounds 3

On a private redis-server, against the Africa's Talking stand-in on loopback (a process
of its own; no added latency, so the Redis side is as large a share of a send as it can
be):

* **send**: an SMS worker (in-process, ``ProviderRouter`` over Africa's Talking,
  concurrency 20, no rate limit) drains ``--jobs`` notifications with message-id
  recording on (``AT_DELIVERY_TTL`` default) and off (``AT_DELIVERY_TTL=0``), in
  alternating rounds: jobs/s (median, min-max) and the ratio on/off, the worker
  process's CPU time per job (less sensitive to a busy machine than the rate), the Redis
  commands per job (``INFO commandstats``) and the memory one reference takes (``MEMORY USAGE``
  and the ``used_memory`` growth per job);
* **callback**: ``--jobs`` delivery reports POSTed to the endpoint (20 at a time) for
  the messages just sent, then the same reports again (repeats, which change nothing):
  reports/s and the Redis commands per report.
"""

from __future__ import annotations

import argparse
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import aiohttp
import anyio

from streamq import JobState, Queue, Worker
from streamq.devredis import free_port, start_redis_server
from streamq.sms import SMSJob, make_sms_handler
from streamq.sms.delivery import DeliveryReports
from streamq.sms.delivery_http import DELIVERY_PATH, serve_delivery
from streamq.sms.failover import ProviderRouter
from streamq.sms.jobs import create_notification_sms_job
from streamq.sms.providers import AfricasTalkingSMSProvider

SECRET = "bench-Secret_0123456789abcdef"
WORK_COMMANDS = frozenset({
    "evalsha", "exists", "get", "hdel", "hincrby", "hmget", "hset", "pexpire", "set", "time",
    "xack", "xadd", "xdel", "xpending", "xreadgroup", "xclaim", "zadd", "zrangebyscore",
    "zremrangebyrank", "zrem"})
"""The commands of the job's own work (not start-up: script loads, group creation)."""


async def _commands(q: Queue) -> dict[str, int]:
    stats: dict[str, Any] = await q.redis.info("commandstats")
    return {k.removeprefix("cmdstat_"): int(v["calls"]) for k, v in stats.items()}


def _delta(after: dict[str, int], before: dict[str, int], per: int) -> dict[str, float]:
    out = {k: (v - before.get(k, 0)) / per for k, v in after.items()}
    return {k: round(v, 2) for k, v in sorted(out.items()) if v >= 0.005 and k != "info"}


async def drain_counted(q: Queue, worker: Worker, jobs: int
                        ) -> tuple[float, float, dict[str, float]]:
    """Run ``worker`` until ``jobs`` jobs completed: (jobs/s from the first completion to
    the last, this process's CPU ms per job, Redis commands per job)."""
    done = 0
    first = last = 0.0

    def on_completed(_: Any) -> None:
        nonlocal done, first, last
        done += 1
        last = time.perf_counter()
        if done == 1:
            first = last
        if done == jobs:
            worker.stop()

    worker.on("completed", on_completed)
    before = await _commands(q)
    cpu0 = time.process_time()
    await worker.run()
    cpu_ms = (time.process_time() - cpu0) * 1000 / jobs
    used = _delta(await _commands(q), before, jobs)
    rate = (jobs - 1) / (last - first) if last > first else 0.0
    return rate, cpu_ms, used


@contextmanager
def standin_process() -> Iterator[str]:
    """The Africa's Talking stand-in in a process of its own (not competing with the
    worker for this process's CPU); yields its URL."""
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "streamq.sms.standin_at", "--port",
                             str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise RuntimeError("the stand-in did not start") from None
                time.sleep(0.05)
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(10)


async def _drain(url: str, at_url: str, name: str, jobs: int, record: bool
                 ) -> tuple[float, float, dict[str, float], Queue]:
    """(jobs/s, worker CPU ms per job, Redis commands per job, the queue)."""
    q = Queue(name, redis_url=url, job_type=SMSJob)
    for i in range(jobs):
        await create_notification_sms_job(recipient=f"+25471{i % 10_000_000:07d}",
                                          message="Your order has shipped.", queue=q)
    provider = AfricasTalkingSMSProvider("bench", "key", api_url=at_url, timeout_total=10)
    router = ProviderRouter(q, [provider], delivery_ttl_s=259200.0 if record else 0.0)
    worker = Worker(q, make_sms_handler(router), concurrency=20, rate_limit=None)
    rate, cpu_ms, used = await drain_counted(q, worker, jobs)
    await router.aclose()
    return rate, cpu_ms, used, q


async def _sent(q: Queue) -> list[tuple[str, str]]:
    """(job id, message id) of every completed job of ``q``."""
    out = []
    members: list[Any] = await q.redis.zrange(q.keys.completed_index, 0, -1)
    for raw in members:
        info = await q.get_job(raw.decode())
        if info is not None and info.state is JobState.COMPLETED:
            out.append((info.id, str(info.result["message_id"])))
    return out


async def _callbacks(q: Queue, message_ids: list[str]) -> tuple[float, float, dict[str, float]]:
    """Reports/s for new reports and for repeats, and the Redis commands per repeat."""
    rates = []
    cmds: dict[str, float] = {}
    async with anyio.create_task_group() as tg:
        port = await tg.start(serve_delivery, DeliveryReports(q), SECRET, "127.0.0.1", 0)
        url = f"http://127.0.0.1:{port}{DELIVERY_PATH}/{SECRET}"
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=20)) as http:

            async def post(mid: str, limiter: anyio.Semaphore) -> None:
                async with limiter, http.post(url, data={"id": mid, "status": "Success",
                                                         "networkCode": "63902"}) as r:
                    assert r.status == 200, r.status

            for _ in range(2):  # the reports, then the same again (repeats: no change)
                before = await _commands(q)
                t0 = time.perf_counter()
                limiter = anyio.Semaphore(20)
                async with anyio.create_task_group() as posts:
                    for mid in message_ids:
                        posts.start_soon(post, mid, limiter)
                rates.append(len(message_ids) / (time.perf_counter() - t0))
                cmds = _delta(await _commands(q), before, len(message_ids))
        tg.cancel_scope.cancel()
    return rates[0], rates[1], cmds


async def _reference_memory(q: Queue) -> tuple[int, float, int]:
    """MEMORY USAGE of one reference, used_memory freed per reference when all are
    deleted, and their count (the references are recorded again afterwards)."""
    keys = [k async for k in q.redis.scan_iter(match=q.keys.prefix + "dlr:*", count=1000)]
    one = int(await q.redis.memory_usage(keys[0]) or 0)
    saved: dict[Any, Any] = {k: await q.redis.get(k) for k in keys}
    before = int((await q.redis.info("memory"))["used_memory"])
    await q.redis.delete(*keys)
    after = int((await q.redis.info("memory"))["used_memory"])
    for k, v in saved.items():
        await q.redis.set(k, v, px=259_200_000)
    return one, (before - after) / len(keys), len(keys)


async def run(jobs: int, rounds: int) -> None:
    rates: dict[bool, list[float]] = {True: [], False: []}
    cpu: dict[bool, list[float]] = {True: [], False: []}
    cmds: dict[bool, dict[str, float]] = {}
    kept: Queue | None = None
    with start_redis_server() as proc:
        with standin_process() as at_url:
            for r in range(rounds):
                for record in (False, True) if r % 2 == 0 else (True, False):
                    rate, cpu_ms, used, q = await _drain(proc.url, at_url, f"b{r}{int(record)}", jobs,
                                                 record)
                    rates[record].append(rate)
                    cpu[record].append(cpu_ms)
                    cmds[record] = used
                    if record and kept is None:
                        kept = q
                    else:
                        await q.close()
        assert kept is not None
        one, per_ref, refs = await _reference_memory(kept)
        first, repeat, cb_cmds = await _callbacks(kept, [m for _, m in await _sent(kept)])
        await kept.close()

    def med(v: list[float]) -> str:
        return f"{statistics.median(v):.0f} ({min(v):.0f}-{max(v):.0f})"

    off = statistics.median(rates[False])
    print(f"send: {jobs} jobs x {rounds} rounds each way, concurrency 20, "
          "Africa's Talking stand-in on loopback")
    cpu_off = statistics.median(cpu[False])
    print(f"{'recording':<11}{'jobs/s median (min-max)':<26}{'ratio':<7}"
          f"{'worker CPU ms/job':<19}{'ratio':<7}Redis commands/job  of which SET")
    for record in (False, True):
        ratio = statistics.median(rates[record]) / off if off else 0.0
        c = statistics.median(cpu[record])
        total = sum(v for k, v in cmds[record].items() if k in WORK_COMMANDS)
        print(f"{'on' if record else 'off':<11}{med(rates[record]):<26}{ratio:<7.3f}"
              f"{c:<19.3f}{c / cpu_off if cpu_off else 0:<7.3f}{total:<20.2f}"
              f"{cmds[record].get('set', 0):.2f}")
    print(f"one reference: MEMORY USAGE {one} B; used_memory {per_ref:.0f} B per reference "
          f"({refs} references)")
    print(f"callback: {refs} reports, 20 in flight: new {first:.0f}/s, repeats {repeat:.0f}/s; "
          f"Redis commands per repeat {cb_cmds}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.delivery", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--jobs", type=int, default=2000)
    p.add_argument("--rounds", type=int, default=3)
    a = p.parse_args(argv)
    anyio.run(run, a.jobs, a.rounds)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
