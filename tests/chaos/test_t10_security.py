"""T10: least-privilege ACL users, a wrong password, PII in logs, keys and reasons.

The minimal ACLs below were derived by running the flows with ``-@all`` and adding what
``ACL LOG`` reported, until it stayed empty. Both users need ``+script|load``: the engine
loads its scripts with SCRIPT LOAD at connect and after NOSCRIPT (EVALSHA), so a user
without it cannot start. (Lua still runs under the caller's ACL: a loaded script cannot
reach a command or key the user lacks, as the negative checks show.)
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import pytest
import redis.asyncio as aioredis

from streamq import Job, JobOptions, PermanentError, Queue, RedisUnavailable, Worker
from streamq.devredis import RedisProcess, start_redis_server
from streamq.sms import Recipient, SMSJob, create_otp_sms_job, create_welcome_sms_job
from streamq.sms.delivery import DeliveryReports, parse_report
from streamq.sms.standin import SalumStandin
from tests.chaos.harness import ROOT, poll

pytestmark = pytest.mark.chaos

COMMON = ["-@all", "+ping", "+hello", "+auth", "+client|setname", "resetchannels"]
PRODUCER_ACL = ["+evalsha", "+script|load", "+time", "+exists", "+get", "+set", "+del",
                "+hget", "+hset", "+hdel", "+hexists", "+hmget", "+hincrby",
                "+xadd", "+xdel", "+xlen", "+xrange", "+xpending", "+setbit",
                "+zadd", "+zrange", "+zrem", "+zcard"]
# +get: the SMS delivery report endpoint (which a worker serves) reads message references
WORKER_ACL = ["+evalsha", "+script|load", "+time", "+exists", "+set", "+get", "+pexpire",
              "+hget", "+hset", "+hdel", "+hmget", "+hincrby",
              "+xadd", "+xdel", "+xrange", "+xpending", "+xack", "+xread", "+xreadgroup",
              "+xgroup|create", "+xinfo|stream", "+xinfo|consumers", "+xrevrange",
              "+setbit", "+bitfield_ro",
              "+zadd", "+zrange", "+zrangebyscore", "+zrem", "+zremrangebyrank"]
QUEUE = "acl"
KEYS = "~streamq:{acl}:*"


@asynccontextmanager
async def acl_redis(tmp_path: Path) -> AsyncIterator[tuple[RedisProcess, aioredis.Redis]]:
    server = start_redis_server(directory=tmp_path / "redis")
    boot = aioredis.Redis.from_url(server.url)
    acl = ["ACL", "SETUSER"]
    await boot.execute_command(*acl, "admin", "on", ">admin-pw", "~*", "&*", "+@all")
    await boot.execute_command(*acl, "producer", "reset", "on", ">prod-pw", KEYS, *COMMON,
                               *PRODUCER_ACL)
    await boot.execute_command(*acl, "worker", "reset", "on", ">work-pw", KEYS, *COMMON,
                               *WORKER_ACL)
    await boot.execute_command(*acl, "default", "off")
    await boot.aclose()
    admin = aioredis.Redis(port=server.port, username="admin", password="admin-pw")
    await admin.execute_command("ACL", "LOG", "RESET")
    try:
        yield server, admin
    finally:
        await admin.aclose()
        server.stop()


def url(server: RedisProcess, user: str, password: str) -> str:
    return f"redis://{user}:{password}@127.0.0.1:{server.port}/0"


async def acl_log(admin: aioredis.Redis) -> list[dict[str, Any]]:
    out = []
    for e in await admin.execute_command("ACL", "LOG", "128"):
        d = e if isinstance(e, dict) else dict(zip(e[::2], e[1::2], strict=False))
        out.append({(k.decode() if isinstance(k, bytes) else k):
                    (v.decode() if isinstance(v, bytes) else v) for k, v in d.items()})
    return out


@pytest.mark.timeout(60)
async def test_t10_producer_and_worker_run_with_least_privilege_and_acl_log_stays_empty(
    tmp_path: Path,
) -> None:
    async with acl_redis(tmp_path) as (server, admin):
        p = Queue(QUEUE, redis_url=url(server, "producer", "prod-pw"))
        wq = Queue(QUEUE, redis_url=url(server, "worker", "work-pw"))
        seen: list[tuple[str, int]] = []

        async def handler(job: Job) -> None:
            seen.append((job.id, job.attempt))
            if job.id == "retry" and job.attempt == 1:
                raise RuntimeError("once")
            if job.id == "dead" and len([s for s in seen if s[0] == "dead"]) == 1:
                raise PermanentError("no")

        try:
            await p.connect()
            await p.add({"a": 1}, JobOptions(job_id="ok", priority="high"))
            await p.add(None, JobOptions(job_id="delayed", delay=0.3))
            await p.add(None, JobOptions(job_id="retry", backoff=0.1))
            await p.add(None, JobOptions(job_id="dead"))
            await p.add(None, JobOptions(job_id="cancel", delay=60))
            assert await p.cancel("cancel")
            await p.add(None, JobOptions(job_id="stall"))
            assert (await p.counts())["waiting"] >= 4
            # schedules: upserted, listed, run now, paused and resumed by the producer user,
            # fired by the worker user
            await p.upsert_schedule("tick", every=1.0, limit=2, data={"s": 1})
            assert [s.id for s in await p.schedules()] == ["tick"]
            assert await p.run_schedule_now("tick") is not None
            assert await p.pause_schedule("tick") and await p.resume_schedule("tick")
            worker = Worker(wq, handler, rate_limit=20.0, visibility_timeout=1.0,
                            reclaim_interval=0.2, shutdown_grace=1.0)
            async with anyio.create_task_group() as tg:
                tg.start_soon(worker.run)
                await poll(lambda: {"ok", "delayed", "retry", "dead"} <= {j for j, _ in seen},
                           10, message="every kind of job")
                await poll(lambda: _dead_listed(p, "dead"), 10, message="the dead letter")
                assert await p.replay_dead("dead") == 1
                await poll(lambda: len([s for s in seen if s[0] == "dead"]) == 2, 10)
                await p.pause()
                assert await p.is_paused()
                await p.resume()
                await p.get_job("ok")
                # an SMS delivery report: recorded and applied as the worker user, read
                # back as the producer user
                reports = DeliveryReports(wq)
                await reports.record("africastalking", "ATXid_acl", "ok", 0)
                applied = await reports.apply(parse_report({"id": "ATXid_acl",
                                                            "status": "Success"}))
                assert applied is not None and applied.changed
                info = await p.get_job("ok")
                assert info is not None and info.result["delivery"]["status"] == "Success"
                await poll(lambda: len([j for j, _ in seen if j.startswith("{tick}@")]) >= 3,
                           10, message="two slots and the extra run of the schedule")
                assert await p.remove_schedule("tick")
                await poll(lambda: _drained(p), 10, message="the queue to drain")
                await worker.close()
            assert await acl_log(admin) == []
        finally:
            await p.close()
            await wq.close()


async def _dead_listed(q: Queue, job_id: str) -> bool:
    return any(d.job_id == job_id for d in await q.dead_letters(10))


async def _drained(q: Queue) -> bool:
    c = await q.counts()
    return c["waiting"] == 0 and c["active"] == 0 and c["delayed"] == 0


@pytest.mark.timeout(30)
async def test_t10_worker_user_is_refused_everything_else(tmp_path: Path) -> None:
    async with acl_redis(tmp_path) as (server, admin):
        w = aioredis.Redis(port=server.port, username="worker", password="work-pw")
        try:
            for cmd in (["FLUSHALL"], ["CONFIG", "SET", "maxmemory", "1"], ["KEYS", "*"],
                        ["EVAL", "return 1", "0"], ["GET", "other:key"],
                        ["XADD", "streamq:{other}:lane:normal", "*", "j", "x"]):
                with pytest.raises(aioredis.ResponseError, match=r"(?i)NOPERM|no permissions"):
                    await w.execute_command(*cmd)
            # script|load is granted, but a loaded script still runs under the user's ACL
            sha = await w.script_load("return redis.call('GET', KEYS[1])")
            with pytest.raises(aioredis.ResponseError, match=r"(?i)access|permission"):
                await w.evalsha(sha, 1, "other:key")
            sha = await w.script_load("return redis.call('FLUSHALL')")
            with pytest.raises(aioredis.ResponseError, match=r"(?i)can.t run this command"):
                await w.evalsha(sha, 0)
            reasons = {e["reason"] for e in await acl_log(admin)}
            assert reasons <= {"command", "key"} and reasons
        finally:
            await w.aclose()


@pytest.mark.timeout(30)
async def test_t10_wrong_password_is_one_clear_line(tmp_path: Path) -> None:
    async with acl_redis(tmp_path) as (server, _admin):
        bad = url(server, "worker", "not-the-pw-1234")
        q = Queue(QUEUE, redis_url=bad)
        t0 = time.monotonic()
        with pytest.raises(RedisUnavailable) as info:
            await q.connect()
        assert time.monotonic() - t0 <= 1.0
        msg = str(info.value)
        assert "AUTH failed" in msg and "not-the-pw-1234" not in msg and "\n" not in msg
        await q.close()
        env = dict(os.environ, REDIS_URL=bad, PYTHONPATH=str(ROOT))
        proc = await anyio.to_thread.run_sync(lambda: subprocess.run(
            [sys.executable, "-m", "streamq.worker", "--queue", QUEUE], cwd=ROOT, env=env,
            capture_output=True, text=True, timeout=20))
        assert proc.returncode != 0
        lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
        assert len(lines) == 1, proc.stderr
        assert "AUTH failed" in lines[0] and "not-the-pw-1234" not in proc.stderr
        assert "Traceback" not in proc.stderr


# -- PII ---------------------------------------------------------------------------------------
NUMBER = "+254712345678"
OTP = "482913"
API_KEY = "sk-pii-SECRET-55aa"
REDIS_PW = "redis-PW-8c1d"
E164 = re.compile(r"\+\d{8,15}")


@pytest.mark.timeout(60)
async def test_t10_no_pii_or_secret_in_logs_keys_or_reasons(tmp_path: Path) -> None:
    server = start_redis_server(directory=tmp_path / "redis")
    boot = aioredis.Redis(port=server.port)
    await boot.config_set("requirepass", REDIS_PW)
    await boot.aclose()
    redis_url = f"redis://:{REDIS_PW}@127.0.0.1:{server.port}/0"
    admin = aioredis.Redis(port=server.port, password=REDIS_PW)
    standin = SalumStandin(api_key=API_KEY, partner_id="9")
    await standin.start()
    q = Queue("pii", redis_url=redis_url, job_type=SMSJob)
    errlog = tmp_path / "worker.err"
    proc: subprocess.Popen[bytes] | None = None
    try:
        await create_welcome_sms_job(recipient=Recipient(phone_number=NUMBER), user_name="Alice",
                                     queue=q)
        await create_otp_sms_job(recipient=NUMBER, code=OTP, queue=q)
        await create_otp_sms_job(recipient="0712345678", code=OTP, queue=q)
        standin.script("ok", "ok", "1003")  # the third is refused: invalid mobile
        env = dict(os.environ, REDIS_URL=redis_url, PYTHONPATH=str(ROOT), SALUM_API_KEY=API_KEY,
                   SALUM_PARTNER_ID="9", SALUM_SHORTCODE="STREAMQ", SALUM_API_URL=standin.url)
        with open(errlog, "wb") as err:
            proc = subprocess.Popen(
                [sys.executable, "-m", "streamq.worker", "--queue", "pii", "--provider", "salum",
                 "--log-format", "json", "--log-level", "debug", "--rate-limit", "0"],
                cwd=ROOT, env=env, stdout=err, stderr=subprocess.STDOUT)
        await poll(lambda: _finished(q, 3), 20, 0.05, "the three SMS jobs")
        dead = await q.dead_letters(10)
        assert len(dead) == 1 and "1003" in dead[0].error
        keys = [k.decode("utf-8", "replace") async for k in admin.scan_iter(count=1000)]
    finally:
        if proc is not None and proc.poll() is None:
            proc.terminate()
            await anyio.to_thread.run_sync(lambda: proc.wait(15))
        await q.close()
        await admin.aclose()
        await standin.stop()
        server.stop()
    logs = errlog.read_text(errors="replace")
    assert logs.count("\n") >= 6, "the worker logged (almost) nothing: the scan would prove nothing"
    for secret in (OTP, API_KEY, REDIS_PW, "254712345678", "712345678"):
        assert secret not in logs, f"{secret!r} leaked into the worker's output"
        assert secret not in dead[0].error
    assert E164.findall(logs) == []
    assert keys and [k for k in keys if re.search(r"\d{7,}", k)] == []


async def _finished(q: Queue, n: int) -> bool:
    c = await q.counts()
    return c["completed"] + c["failed"] >= n


def test_t10_log_timestamps_survive_the_redaction(capsys: pytest.CaptureFixture[str]) -> None:
    import io

    import structlog

    from streamq.logs import configure_logging

    out = io.StringIO()
    configure_logging("json", "info", stream=out)
    try:
        structlog.get_logger("streamq.test").info("probe", to="+2547****678")
        line = json.loads(out.getvalue().splitlines()[-1])
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z", line["timestamp"]), line
    finally:
        structlog.reset_defaults()
