"""Failover, breakers, holds and per-provider rate limits with real worker processes
(``python -m streamq.worker``), real Redis and both stand-ins on loopback."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator
from pathlib import Path

import anyio
import pytest

from streamq import JobState, Queue
from streamq.devredis import free_port
from streamq.sms import (
    NotificationSMS,
    Recipient,
    SMSJob,
    create_notification_sms_job,
    create_otp_sms_job,
)
from streamq.sms.standin import SalumStandin
from streamq.sms.standin_at import AfricasTalkingStandin
from tests.support.failover_run import FailoverConfig, run_failover
from tests.support.pii import assert_no_pii
from tests.support.sms_workers import WorkerProcs
from tests.support.util import ROOT, wait_until

SALUM_KEY = "sk-proc-SECRET-5150"
AT_KEY = "atsk_proc_SECRET_6160"
PARTNER = "88"
NUMBER = "+254712345678"
CODE = "604218"
SECRETS = (SALUM_KEY, AT_KEY, CODE, "254712345678", "712345678")


@pytest.fixture
async def salum() -> AsyncIterator[SalumStandin]:
    async with SalumStandin(api_key=SALUM_KEY, partner_id=PARTNER) as s:
        yield s


@pytest.fixture
async def at() -> AsyncIterator[AfricasTalkingStandin]:
    async with AfricasTalkingStandin(api_key=AT_KEY, username="streamq") as s:
        yield s


@pytest.fixture
async def queue(redis_url: str, queue_name: str) -> AsyncIterator[Queue]:
    async with Queue(queue_name, redis_url=redis_url, job_type=SMSJob) as q:
        yield q


def provider_env(redis_url: str, salum_url: str, at_url: str, **extra: str) -> dict[str, str]:
    return {"REDIS_URL": redis_url, "SALUM_API_URL": salum_url, "SALUM_API_KEY": SALUM_KEY,
            "SALUM_PARTNER_ID": PARTNER, "SALUM_SHORTCODE": "STREAMQ", "SALUM_TIMEOUT": "1",
            "SALUM_CONNECT_TIMEOUT": "0.5", "AT_API_URL": at_url, "AT_USERNAME": "streamq",
            "AT_API_KEY": AT_KEY, "AT_TIMEOUT": "1", "AT_CONNECT_TIMEOUT": "0.5", **extra}


def worker_args(queue: Queue, providers: str, *extra: str) -> list[str]:
    return ["--queue", queue.name, "--provider", providers, "--rate-limit", "0",
            "--log-level", "debug", *extra]


async def completed(q: Queue) -> int:
    return (await q.counts())["completed"]


async def breaker_due(q: Queue, provider: str) -> bool:
    """The breaker is open and its cool-down is over (the next message probes)."""
    fields = await q.redis.hgetall(q.keys.breaker(provider))
    sec, usec = await q.redis.time()
    until = int(fields.get(b"until", b"0"))
    return fields.get(b"st") == b"open" and sec * 1000 + usec // 1000 >= until


async def breaker_states(q: Queue, provider: str) -> list[str]:
    return [(e.fields or {}).get("state", "") for e in await q.read_events(count=2000)
            if e.name == "breaker" and (e.fields or {}).get("provider") == provider]


@pytest.mark.timeout(90)
async def test_breaker_is_shared_by_two_workers_and_closes_after_probes(
    redis_url: str, queue: Queue, salum: SalumStandin, at: AfricasTalkingStandin, tmp_path: Path
) -> None:
    salum.set_mode("1006")  # Salum refuses our credentials
    procs = WorkerProcs(tmp_path, provider_env(redis_url, salum.url, at.url))
    args = worker_args(queue, "salum,africastalking", "--concurrency", "1")
    try:
        a = procs.start(*args, env={"SMS_BREAKER_COOLDOWN": "6"})
        first = await create_otp_sms_job(recipient=NUMBER, code=CODE, queue=queue)
        await wait_until(lambda: len(at.received) >= 1, 20, message="worker A's failover")
        assert len(salum.received) == 1 and at.received[0].idempotency_key == first.job_id
        # worker B, started now, learns of the open breaker from Redis: straight to the backup
        b = procs.start(*args, env={"SMS_BREAKER_COOLDOWN": "0.5"})
        await wait_until(lambda: "worker.started" in procs.log(1), 20, message="worker B")
        assert (await procs.stop([a])) == [0]
        later = [await create_notification_sms_job(recipient=NUMBER, message=f"b{i}", queue=queue)
                 for i in range(3)]
        await wait_until(lambda: len(at.received) >= 4, 20, message="B's three messages")
        assert len(salum.received) == 1, "worker B never tried Salum while its breaker was open"
        assert [r.idempotency_key for r in at.received[1:]] == [r.job_id for r in later]
        # the cool-down ends; B's probe finds Salum still refusing: open again (B's 0.5 s)
        await wait_until(lambda: breaker_due(queue, "salum"), 20, message="A's cool-down")
        probe1 = await create_notification_sms_job(recipient=NUMBER, message="p1", queue=queue)
        await wait_until(lambda: len(at.received) >= 5, 20, message="the failed probe")
        assert len(salum.received) == 2 and at.received[4].idempotency_key == probe1.job_id
        salum.set_mode("ok")  # the key is fixed on Salum's side
        await wait_until(lambda: breaker_due(queue, "salum"), 20, message="B's cool-down")
        rest = [await create_notification_sms_job(recipient=NUMBER, message=f"s{i}", queue=queue)
                for i in range(3)]
        await wait_until(lambda: len(salum.received) >= 5, 20,
                         message="the probe closes the breaker; Salum takes the rest")
        await wait_until(lambda: _all_done(queue, 8), 20, message="all 8 completed")
        assert [r.body["clientsmsid"] for r in salum.received[2:] if r.body] == [
            r.job_id for r in rest]
        assert len(at.received) == 5
        assert (await procs.stop([b])) == [0]
    finally:
        procs.kill_all()
    assert await breaker_states(queue, "salum") == [
        "open", "half_open", "open", "half_open", "closed"]
    assert await queue.dead_letters(10) == []
    logs = procs.all_logs()
    assert logs.count('"sms.breaker_opened"') == 1
    assert '"sms.breaker_probe_failed"' in logs and '"sms.breaker_closed"' in logs
    assert_no_pii(logs, SECRETS, min_lines=20)


async def _all_done(q: Queue, n: int) -> bool:
    return await completed(q) >= n


def _get(port: int, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=2) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()
    except urllib.error.URLError:
        return 0, ""  # not listening yet


@pytest.mark.timeout(90)
async def test_single_provider_with_a_wrong_key_holds_and_resumes(
    redis_url: str, queue: Queue, salum: SalumStandin, tmp_path: Path
) -> None:
    """Issue 10.3: 0 dead letters, 0 attempts used, no churn, loud once, /healthz and
    metrics say so, and delivery resumes by itself when the key is accepted again."""
    salum.api_key = "sk-the-one-salum-expects"  # the worker's SALUM_API_KEY is wrong
    port = free_port()
    procs = WorkerProcs(tmp_path, provider_env(redis_url, salum.url, "http://127.0.0.1:9",
                                               SMS_BREAKER_COOLDOWN="0.4"))
    refs = [await create_notification_sms_job(recipient=NUMBER, message=f"m{i}", attempts=1,
                                              queue=queue) for i in range(20)]
    try:
        procs.start(*worker_args(queue, "salum", "--concurrency", "3", "--metrics-port",
                                 str(port)))
        await wait_until(lambda: anyio.to_thread.run_sync(lambda: "degraded" in _get(
            port, "/healthz")[1]), 20, interval=0.1, message="/healthz degraded")
        status, body = await anyio.to_thread.run_sync(lambda: _get(port, "/healthz"))
        health = json.loads(body)
        assert status == 200 and health["status"] == "degraded"
        assert "1006" in health["reason"] and SALUM_KEY not in body
        assert (await anyio.to_thread.run_sync(lambda: _get(port, "/healthz?strict=1")))[0] == 503
        # hold for a while: one probe per cool-down, not a claim per job
        seen = len(salum.received)
        t0 = anyio.current_time()
        await anyio.sleep(1.6)  # a window to count probes in (the assertion is a bound)
        probes = len(salum.received) - seen
        assert probes <= (anyio.current_time() - t0) / 0.4 + 2, probes
        counts = await queue.counts()
        assert counts["failed"] == 0 and counts["completed"] == 0
        assert counts["waiting"] + counts["delayed"] + counts["active"] == 20
        page = (await anyio.to_thread.run_sync(lambda: _get(port, "/metrics")))[1]
        assert f'streamq_worker_held{{queue="{queue.name}"}} 1.0' in page
        assert 'streamq_sms_breaker_state{provider="salum"' in page
        assert "streamq_jobs_deferred_total" in page
        salum.api_key = SALUM_KEY  # fixed
        await wait_until(lambda: _all_done(queue, 20), 20, message="delivery resumed")
        await wait_until(lambda: anyio.to_thread.run_sync(lambda: '"ok"' in _get(
            port, "/healthz")[1]), 10, interval=0.1, message="/healthz ok again")
        assert (await procs.stop()) == [0]
    finally:
        procs.kill_all()
    assert await queue.dead_letters(10) == []
    for ref in refs:
        info = await queue.get_job(ref.job_id)
        assert info is not None and info.state is JobState.COMPLETED and info.attempts == 1
    logs = procs.log(0)
    assert logs.count('"worker.held"') == 1, "loud once"
    assert logs.count('"sms.breaker_opened"') == 1
    assert logs.count('"sms.breaker_probe_failed"') <= 1, "then at most one a minute"
    assert '"worker.hold_released"' in logs
    assert_no_pii(logs, SECRETS, min_lines=10)


def _rate(times: list[float], burst: int) -> float:
    steady = sorted(times)[burst:]
    return (len(steady) - 1) / (steady[-1] - steady[0])


@pytest.mark.timeout(90)
@pytest.mark.parametrize("case", ["backup after failover", "primary"])
async def test_per_provider_rate_limit_holds_across_workers(
    redis_url: str, queue: Queue, salum: SalumStandin, at: AfricasTalkingStandin,
    tmp_path: Path, case: str
) -> None:
    """Two workers, no queue-wide limit: each provider gets its own limit and no more,
    also when every message fails over to the backup at once."""
    rate, jobs = 8.0, 40
    if case == "primary":
        env = provider_env(redis_url, salum.url, at.url, SALUM_RATE_LIMIT=str(rate),
                           AT_RATE_LIMIT="1")
        stand = salum
    else:  # Salum refuses connections: everything fails over to Africa's Talking
        dead = f"http://127.0.0.1:{free_port()}/api/services/sendsms/"
        env = provider_env(redis_url, dead, at.url, SALUM_RATE_LIMIT="100",
                           AT_RATE_LIMIT=str(rate))
        stand = at  # type: ignore[assignment]
    await queue.add_bulk([_notification(i) for i in range(jobs)])
    procs = WorkerProcs(tmp_path, env)
    try:
        for _ in range(2):
            procs.start(*worker_args(queue, "salum,africastalking", "--concurrency", "4"))
        await wait_until(lambda: len(stand.received) >= jobs, 40, interval=0.05,
                         message=f"{jobs} messages at the {case}")
        assert (await procs.stop()) == [0, 0]
    finally:
        procs.kill_all()
    times = [r.at for r in stand.received]
    measured = _rate(times, burst=int(rate))
    assert abs(measured - rate) / rate <= 0.10, f"{measured:.2f}/s against a limit of {rate}/s"
    assert len({_key(r) for r in stand.received}) == jobs, "no duplicates"


def _key(r: object) -> str:
    body = getattr(r, "body", None)
    if isinstance(body, dict):
        return str(body.get("clientsmsid"))
    return str(getattr(r, "idempotency_key", ""))


def _notification(i: int) -> SMSJob:
    return NotificationSMS(id=f"r{i:03d}", timestamp=int(time.time() * 1000),
                           recipient=Recipient(phone_number=NUMBER), message=f"rate {i}")


@pytest.mark.timeout(120)
async def test_failover_run_never_sends_a_message_through_two_providers(tmp_path: Path) -> None:
    """The note's figure at CI size: Salum goes down and comes back, a worker is killed,
    Salum times out on a few replies. Every message is delivered, each through one
    provider only (measured at the stand-ins)."""
    cfg = FailoverConfig(jobs=150, workers=2, rate=30.0, outage_s=1.5, slow_replies=3)
    figures = await run_failover(cfg, tmp_path)
    print("\n".join(figures.lines()))
    assert figures.completed == cfg.jobs and figures.dead == 0
    assert figures.cross_provider == 0
    assert figures.via["salum"] + figures.via["africastalking"] == cfg.jobs
    assert figures.via["salum"] > 0 and figures.via["africastalking"] > 0
    assert figures.failovers.get("unreachable", 0) > 0
    assert figures.breaker[:1] == ["open"] and figures.breaker[-1] == "closed"
    # ambiguous retries stay on their provider: the late replies, plus what the killed
    # worker had in flight
    assert figures.same_provider_repeats <= cfg.slow_replies + cfg.concurrency


async def test_check_provider_prints_one_line_each_and_sends_nothing(
    salum: SalumStandin, at: AfricasTalkingStandin
) -> None:
    procs_env = dict(os.environ, PYTHONPATH=str(ROOT),
                     **provider_env("redis://127.0.0.1:1/0", salum.url, at.url))

    def check(key: str) -> subprocess.CompletedProcess[str]:
        env = {**procs_env, "AT_API_KEY": key}
        return subprocess.run([sys.executable, "-m", "streamq.worker", "--provider",
                               "salum,africastalking", "--check-provider"], cwd=ROOT, env=env,
                              capture_output=True, text=True, timeout=30)

    good = await anyio.to_thread.run_sync(lambda: check(AT_KEY))
    assert good.returncode == 0, good.stderr
    assert good.stdout.splitlines() == [
        f"provider salum: ok: {salum.url} answers (HTTP 405); the credentials are verified by "
        "the first message (Salum has no call that checks them)",
        "provider africastalking: ok: KES 1785.50"]
    bad = await anyio.to_thread.run_sync(lambda: check("atsk_wrong"))
    assert bad.returncode == 2
    assert bad.stdout.splitlines()[1].startswith(
        "provider africastalking: FAILED: Africa's Talking HTTP 401: credentials refused")
    assert "atsk_wrong" not in bad.stdout + bad.stderr
    assert salum.received == [] and at.received == [], "a check sends no message"
