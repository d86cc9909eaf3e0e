"""Metrics and health: scraped over HTTP from real worker processes, and in process.

The handlers below are run by worker subprocesses (``--handler tests.test_metrics:handle``).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any

import aiohttp
import anyio
import msgspec
import pytest
from prometheus_client.parser import text_string_to_metric_families
from redis.asyncio import Redis

from streamq import Job, JobOptions, PermanentError, Queue, Worker
from streamq.devredis import free_port, start_redis_server
from streamq.errors import ConfigError
from streamq.metrics import Metrics, current_metrics, record_provider_send, serve_metrics
from tests.support.util import ROOT, running, wait_until

# -- handlers run by the worker subprocesses --------------------------------------------------


async def handle(job: Job) -> Any:
    """Payload keys steer it: fail (permanent), flaky (fails attempt 1), hold (until the
    test pushes to that Redis list), hang (until the worker dies, unless the job was already
    recovered once)."""
    data = job.data
    if data.get("hang") and job.stalls == 0:
        await anyio.sleep_forever()
    if "hold" in data:
        async with Redis.from_url(os.environ["REDIS_URL"]) as r:
            await r.blpop([data["hold"]], timeout=10)
    if data.get("fail"):
        raise PermanentError("refused for good")
    if data.get("flaky") and job.attempt == 1:
        raise RuntimeError("first attempt fails")
    record_provider_send("mock", "sent", 0.02)
    return None


async def noop(job: Job) -> None:
    return None


# -- helpers ------------------------------------------------------------------------------------


def parse(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, frozenset(s.labels.items()))] = s.value
    return out


def val(samples: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str
        ) -> float | None:
    return samples.get((name, frozenset(labels.items())))


@contextmanager
def worker_process(redis_url: str, queue: str, log: Path, *extra: str) -> Iterator[subprocess.Popen[bytes]]:
    env = dict(os.environ, PYTHONPATH=str(ROOT), REDIS_URL=redis_url)
    with open(log, "ab") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "streamq.worker", "--handler", "tests.test_metrics:handle",
             "--queue", queue, "--rate-limit", "0", "--log-format", "json", *extra],
            cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=err,
        )
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


@asynccontextmanager
async def scraper(port: int, proc: subprocess.Popen[bytes], log: Path) -> AsyncIterator[Any]:
    """An HTTP client for the worker's metrics server, once it answers."""
    base = f"http://127.0.0.1:{port}"
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as http:

        async def up() -> bool:
            if proc.poll() is not None:
                tail = (await anyio.Path(log).read_text())[-2000:]
                raise AssertionError(f"worker exited {proc.returncode}: {tail}")
            try:
                async with http.get(base + "/healthz") as r:
                    return r.status == 200
            except aiohttp.ClientConnectionError:
                return False

        await wait_until(up, timeout=15, interval=0.05, message="the worker's /healthz")

        class Scrape:
            async def metrics(self) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
                async with http.get(base + "/metrics") as r:
                    assert r.status == 200
                    assert r.headers["Content-Type"].startswith("text/plain")
                    return parse(await r.text())

            async def health(self) -> tuple[int, dict[str, Any]]:
                async with http.get(base + "/healthz") as r:
                    return r.status, await r.json()

        yield Scrape()


# -- from a worker process ----------------------------------------------------------------------


async def test_metrics_move_as_jobs_flow(redis_url: str, queue_name: str, tmp_path: Path) -> None:
    log = tmp_path / "worker.log"
    port = free_port()
    q = Queue(queue_name, redis_url=redis_url)
    labels = {"queue": queue_name, "type": "unknown"}
    try:
        # A job stranded by a worker killed mid-run: the metrics worker recovers it (stalled).
        with worker_process(redis_url, queue_name, log, "--visibility-timeout", "0.5") as victim:
            await q.add({"hang": True})
            await wait_until(lambda: _count(q, "active", 1), timeout=15, message="the hang job to start")
            victim.kill()
            victim.wait(timeout=10)
        await q.pause()
        await q.add_bulk([{}, {}, {}])
        # vt 8 s: the upkeep sweep re-queues a stranded entry after 2 x vt even while
        # paused, and this worker's start (several seconds on a loaded machine) must not
        # reach that before the paused scrape below
        with worker_process(redis_url, queue_name, log, "--metrics-port", str(port),
                            "--visibility-timeout", "8") as proc:
            async with scraper(port, proc, log) as s:
                # paused: nothing is taken, not even the stranded job (still held by the
                # dead consumer); the backlog is visible as waiting
                async def paused_view() -> Any:
                    m = await s.metrics()
                    return m if val(m, "streamq_queue_paused", queue=queue_name) == 1 else None

                m = await wait_until(paused_view, timeout=15, interval=0.05, message="a scrape")
                assert val(m, "streamq_queue_jobs", queue=queue_name, state="waiting") == 3
                assert val(m, "streamq_queue_jobs", queue=queue_name, state="active") == 1
                assert val(m, "streamq_worker_concurrency", queue=queue_name) == 5
                assert val(m, "streamq_jobs_processed_total", **labels) is None
                assert val(m, "streamq_jobs_stalled_total", **labels) is None

                await q.resume()

                async def flowed() -> Any:
                    m = await s.metrics()
                    return m if val(m, "streamq_jobs_completed_total", **labels) == 4 else None

                # three waiting jobs and the recovered one
                m = await wait_until(flowed, timeout=15, interval=0.05, message="4 completions")
                # on resume the stranded job was taken over from its dead worker (stalled)
                assert val(m, "streamq_jobs_stalled_total", **labels) == 1
                assert val(m, "streamq_queue_jobs", queue=queue_name, state="waiting") == 0
                assert val(m, "streamq_queue_jobs", queue=queue_name, state="completed") == 4
                assert val(m, "streamq_queue_paused", queue=queue_name) == 0
                assert val(m, "streamq_job_wait_seconds_count", **labels) == 4
                assert val(m, "streamq_job_run_seconds_count", **labels) == 4
                # the three paused jobs waited at least until the resume
                assert (val(m, "streamq_job_wait_seconds_sum", **labels) or 0) > 0
                assert val(m, "streamq_provider_send_seconds_count", queue=queue_name,
                           provider="mock", outcome="sent") == 4

                # a held job is in flight and active until released
                hold = f"test:{queue_name}:release"
                await q.add({"hold": hold})

                async def holding() -> Any:
                    m = await s.metrics()
                    return m if val(m, "streamq_worker_in_flight", queue=queue_name) == 1 else None

                m = await wait_until(holding, timeout=10, interval=0.05, message="one in flight")
                assert val(m, "streamq_queue_jobs", queue=queue_name, state="active") == 1
                await q.redis.rpush(hold, b"go")

                # a flaky job retries once; a bad one is dead-lettered at once
                await q.add({"flaky": True}, JobOptions(backoff=0.05))
                await q.add({"fail": True})

                async def settled() -> Any:
                    m = await s.metrics()
                    done = (val(m, "streamq_jobs_completed_total", **labels) == 6
                            and val(m, "streamq_jobs_dead_lettered_total", **labels) == 1)
                    return m if done else None

                m = await wait_until(settled, timeout=15, interval=0.05, message="flaky and bad jobs")
                assert val(m, "streamq_jobs_failed_total", **labels) == 2
                assert val(m, "streamq_jobs_retried_total", **labels) == 1
                assert val(m, "streamq_jobs_processed_total", **labels) == 8  # 6 completed + 2 failed
                assert val(m, "streamq_worker_in_flight", queue=queue_name) == 0
                assert val(m, "streamq_queue_jobs", queue=queue_name, state="dead") == 1
                assert val(m, "streamq_queue_jobs", queue=queue_name, state="failed") == 1
                assert val(m, "streamq_worker_healthy", queue=queue_name) == 1
    finally:
        await q.close()


async def _count(q: Queue, state: str, n: int) -> bool:
    return (await q.counts())[state] == n


async def test_healthz_follows_redis_going_away_and_coming_back(queue_name: str, tmp_path: Path) -> None:
    log = tmp_path / "worker.log"
    port = free_port()
    with start_redis_server() as redis_proc, \
            worker_process(redis_proc.url, queue_name, log, "--metrics-port", str(port)) as proc:
        async with scraper(port, proc, log) as s:
            status, body = await s.health()
            assert (status, body["status"], body["queue"]) == (200, "ok", queue_name)

            await anyio.to_thread.run_sync(redis_proc.kill)

            async def unhealthy() -> Any:
                status, body = await s.health()
                return body if status == 503 else None

            body = await wait_until(unhealthy, timeout=10, interval=0.05, message="503")
            assert body["status"] == "unhealthy"
            assert "Redis" in body["reason"]
            # the metrics page still answers; the queue-wide gauges are left out, not stale
            m = await s.metrics()
            assert val(m, "streamq_queue_jobs", queue=queue_name, state="waiting") is None

            await anyio.to_thread.run_sync(redis_proc.start)  # same port, same directory

            async def healthy() -> Any:
                status, body = await s.health()
                return body if status == 200 else None

            body = await wait_until(healthy, timeout=20, interval=0.1, message="200 again")
            assert body["status"] == "ok" and "reason" not in body
            # the worker works again: a new job completes
            async with Queue(queue_name, redis_url=redis_proc.url) as q:
                await q.add({})
                await wait_until(lambda: _count(q, "completed", 1), timeout=10)
        assert proc.poll() is None  # the outage did not kill the worker


# -- in process ---------------------------------------------------------------------------------


class Ping(msgspec.Struct, tag="ping"):
    n: int


async def test_type_label_stuck_loop_and_provider_outcomes(redis_url: str, queue_name: str) -> None:
    metrics = Metrics(stuck_after_s=5)
    async with Queue(queue_name, redis_url=redis_url, job_type=Ping) as q:
        w = Worker(q, noop, rate_limit=None)
        metrics.attach(w)
        metrics.attach(w)  # attaching twice counts once
        assert current_metrics() is metrics
        async with running(w):
            await q.add(Ping(1))
            await wait_until(lambda: w.processed == 1)
            body, _ = await metrics.scrape()
            m = parse(body.decode())
            await wait_until(lambda: w.healthy)
            h = await metrics.health(w)
            assert h.ok, h.reasons
            # a fetch loop that has not turned for longer than the limit, with free slots
            w.last_loop_at = time.monotonic() - 60
            h = await metrics.health(w)
            assert not h.ok and "fetch loop stuck" in h.as_json()["reason"]

        async def completed() -> bool:
            body, _ = await metrics.scrape()
            return val(parse(body.decode()), "streamq_jobs_completed_total",
                       queue=queue_name, type="ping") == 1

        await wait_until(completed, message="completed counted with its type")
        assert val(m, "streamq_job_wait_seconds_count", queue=queue_name, type="ping") == 1
        # after run() the worker has no Redis connection of its own any more
        assert not (await metrics.health(w)).ok

        record_provider_send("salum", "transient_error", 0.3)
        metrics.record_provider_send("salum", "permanent_error", 0.1, queue="other")
        with pytest.raises(ValueError, match="outcome"):
            metrics.record_provider_send("salum", "weird", 0.1)  # type: ignore[arg-type]
        body, _ = await metrics.scrape()
        m = parse(body.decode())
        assert val(m, "streamq_provider_send_seconds_count", queue=queue_name, provider="salum",
                   outcome="transient_error") == 1
        assert val(m, "streamq_provider_send_seconds_count", queue="other", provider="salum",
                   outcome="permanent_error") == 1
        # the worker counts its rate-limit waits; the collector reports them
        assert val(m, "streamq_rate_limiter_waits_total", queue=queue_name) == 0
        w.rate_limited_waits = 3
        w.rate_limited_s = 1.5
        body, _ = await metrics.scrape()
        m = parse(body.decode())
        assert val(m, "streamq_rate_limiter_waits_total", queue=queue_name) == 3
        assert val(m, "streamq_rate_limiter_wait_seconds_total", queue=queue_name) == 1.5


async def test_serve_metrics_binds_reports_its_port_and_closes(redis_url: str, queue_name: str) -> None:
    async with Queue(queue_name, redis_url=redis_url) as q:
        w = Worker(q, noop, rate_limit=None)
        async with anyio.create_task_group() as tg:
            port = await tg.start(serve_metrics, w, "127.0.0.1", 0)
            async with aiohttp.ClientSession() as http:
                async with http.get(f"http://127.0.0.1:{port}/healthz") as r:
                    body = await r.json()
                    # not running yet: no Redis connection of its own
                    assert r.status == 503 and "no working Redis" in body["reason"]
                async with http.get(f"http://127.0.0.1:{port}/metrics",
                                    headers={"Accept": "application/openmetrics-text"}) as r:
                    assert r.headers["Content-Type"].startswith("application/openmetrics-text")
                    assert "streamq_queue_jobs" in await r.text()
                # a second server on a taken port fails with one clear error
                with pytest.raises(ConfigError, match=f"cannot listen on 127.0.0.1:{port}"):
                    await serve_metrics(w, "127.0.0.1", port)
            tg.cancel_scope.cancel()
        with pytest.raises(OSError):
            await anyio.connect_tcp("127.0.0.1", port)
