"""At-rest scan (SPEC 9.5, RELIABILITY T10): after a mixed run of SMS jobs through a real
worker with the mock provider (completed, failed-and-retried, delayed, dead-lettered),
no phone number (E.164 or national digits), OTP code, name or message text is anywhere in
Redis (every key and value, type by type) nor in its AOF (appendfsync always). A control
run without keys on the same server must be found by the same scan."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis

from streamq import JobState, Queue, QueueDefaults, Worker
from streamq.crypto import KEYS_ENV
from streamq.devredis import RedisProcess, start_redis_server
from streamq.keys import QueueKeys
from streamq.routing import partition_of
from streamq.sms import (
    MockSMSProvider,
    NotificationSMS,
    Recipient,
    SMSJob,
    create_notification_sms_job,
    create_otp_sms_job,
    create_welcome_sms_job,
    make_sms_handler,
)
from streamq.sms.breaker import BreakerPolicy
from streamq.sms.failover import ProviderRouter
from streamq.sms.privacy import sms_queue_options
from streamq.sms.providers.base import (
    ProviderPermanentError,
    ProviderTransientError,
    SendResult,
)
from tests.support.redis_dump import aof_bytes, dump_all, findings
from tests.support.util import running, wait_until

KEYS = f"k1:{base64.b64encode(bytes(range(32))).decode()}"
# number -> (national digits, subscriber digits)
NUMBERS = ["+254712345678", "+254733111222", "+254722987654", "+254701234567", "+254799000111"]
OTP_NOW, OTP_LATER = "73910254", "60412987"
NAME = "Wanjiku Kamau"
TEXT = "Collect parcel Riverside gate 4471 before Friday"


class ScriptedMock(MockSMSProvider):
    """The mock provider, failing on cue with errors that quote the number and the text
    (as real gateways do): transient once for some jobs, permanent for others."""

    def __init__(self) -> None:
        super().__init__(echo=False)
        self.fail_once: set[str] = set()
        self.reject: set[str] = set()

    async def send(self, to: str, message: str, *, idempotency_key: str) -> SendResult:
        if idempotency_key in self.fail_once:
            self.fail_once.discard(idempotency_key)
            raise ProviderTransientError(f"gateway timeout sending to {to}: {message!r}",
                                         provider="mock")
        if idempotency_key in self.reject:
            raise ProviderPermanentError(f"rejected {to} ({message!r})", provider="mock",
                                         code=1003)
        return await super().send(to, message, idempotency_key=idempotency_key)


def needles() -> dict[str, bytes]:
    out: dict[str, bytes] = {}
    for n in NUMBERS:
        out[f"E.164 {n}"] = n.encode()
        out[f"digits {n}"] = n[1:].encode()  # 254712345678
        out[f"national {n}"] = ("0" + n[4:]).encode()  # 0712345678
        out[f"subscriber {n}"] = n[4:].encode()  # 712345678
    out |= {"otp now": OTP_NOW.encode(), "otp later": OTP_LATER.encode(),
            "name": NAME.encode(), "surname": b"Kamau", "text": b"Riverside gate",
            "text word": b"parcel"}
    return out


@pytest.fixture
def aof_redis(tmp_path: Path) -> Iterator[RedisProcess]:
    with start_redis_server(directory=tmp_path / "redis", appendonly=True,
                            appendfsync="always") as proc:
        yield proc


async def mixed_run(url: str, name: str, options: dict[str, Any],
                    partitions: int = 1) -> dict[str, str]:
    """Jobs of every outcome through a real worker; returns job id -> expected state."""
    q = Queue(name, redis_url=url, job_type=SMSJob,
              defaults=QueueDefaults(backoff_s=0.01), partitions=partitions, **options)
    provider = ScriptedMock()
    try:
        done = await create_welcome_sms_job(recipient=NUMBERS[0], user_name=NAME, queue=q)
        retried = await create_notification_sms_job(recipient=NUMBERS[1], message=TEXT,
                                                    metadata={"ref": "Riverside gate"}, queue=q)
        otp = await create_otp_sms_job(recipient="0" + NUMBERS[2][4:], code=OTP_NOW, queue=q)
        later = await create_otp_sms_job(recipient=NUMBERS[3], code=OTP_LATER, delay=600,
                                         expiry_minutes=60, queue=q)
        dead = await create_notification_sms_job(recipient=NUMBERS[4], message=TEXT, queue=q)
        # a schedule keeps its runs' payload in its own hash (paused: it never fires here)
        await q.upsert_schedule("reminder", cron="0 8 * * *", paused=True, data=NotificationSMS(
            id="reminder", timestamp=1, recipient=Recipient(phone_number=NUMBERS[0]),
            message=TEXT))
        provider.fail_once |= {retried.job_id, otp.job_id}
        provider.reject.add(dead.job_id)
        # as the worker runs it: through the router, whose breaker keeps the last error;
        # one error opens it here, so the error the gateway quoted is stored (and an event)
        router = ProviderRouter(q, [provider], policy=BreakerPolicy(errors=1, cooldown_s=0.05))
        try:
            async with running(Worker(q, make_sms_handler(router), rate_limit=None)):
                await wait_until(lambda: _counts(q, completed=3, dead=1), 15,
                                 message="3 completed, 1 dead")
        finally:
            await router.aclose()
        expected = {done.job_id: JobState.COMPLETED, retried.job_id: JobState.COMPLETED,
                    otp.job_id: JobState.COMPLETED, later.job_id: JobState.DELAYED,
                    dead.job_id: JobState.FAILED}
        for job_id, state in expected.items():
            info = await q.get_job(job_id)
            assert info is not None and info.state is state, (job_id, info)
        assert (await q.get_job(retried.job_id)).attempts == 2  # type: ignore[union-attr]
        events = [e.name for e in await q.read_events(count=1000)]
        assert "breaker" in events, events  # the breaker opened (its reason was stored)
        assert {m.to for m in provider.sent} == set(NUMBERS[:3])  # really sent
        letter = (await q.dead_letters())[0]
        assert letter.error.startswith("rejected ")
        return {j: s.value for j, s in expected.items()}
    finally:
        await q.close()


async def _counts(q: Queue, **want: int) -> bool:
    c = await q.counts()
    return all(c[k] == v for k, v in want.items())


@pytest.mark.timeout(60)
@pytest.mark.parametrize("partitions", [1, 3])
async def test_nothing_personal_in_redis_or_its_aof_after_a_mixed_encrypted_run(
    aof_redis: RedisProcess, monkeypatch: pytest.MonkeyPatch, partitions: int
) -> None:
    monkeypatch.setenv(KEYS_ENV, KEYS)
    r = aioredis.Redis.from_url(aof_redis.url)
    try:
        states = await mixed_run(aof_redis.url, "sms", sms_queue_options(), partitions)
        pairs = await dump_all(r)
        kinds = {(await r.type(k)).decode() for k, _ in pairs}
        assert {"stream", "hash", "zset", "string"} <= kinds  # the scan saw every kind
        assert len(pairs) > 100
        assert any(b":schedule:" in k for k, _ in pairs)  # the schedule's hash was scanned
        # the blind index is there, each entry in its job's partition
        indexed: dict[str, bytes] = {}
        for key in {k for k, _ in pairs if b":bidx:" in k}:
            indexed |= {m.decode(): key for m in await r.zrange(key, 0, -1)}
        assert set(indexed) == set(states)
        for job_id, key in indexed.items():
            assert key.startswith(QueueKeys("sms", partition_of(job_id, partitions))
                                  .prefix.encode()), (job_id, key)
        if partitions > 1:  # the jobs did spread: keys of several partitions were scanned
            assert len({k.split(b"}")[0] for k, _ in pairs}) > 1
        assert findings(pairs, needles()) == []
        assert findings([(b"AOF", aof_bytes(aof_redis.directory))], needles()) == []

        # control: the same run without keys, on the same server, is found by both scans
        monkeypatch.delenv(KEYS_ENV)
        plain = await mixed_run(aof_redis.url, "plain", {}, partitions)
        dead = next(j for j, st in plain.items() if st == "failed")
        later = next(j for j, st in plain.items() if st == "delayed")
        dead_key = QueueKeys("plain", partition_of(dead, partitions)).dead.encode()
        later_key = QueueKeys("plain", partition_of(later, partitions)).delayed_data.encode()
        sched_key = QueueKeys("plain", partition_of("reminder", partitions)
                              ).schedule("reminder").encode()
        control = findings(await dump_all(r), needles())
        assert {f"E.164 +254799000111 in {dead_key!r}",  # the dead job's payload
                f"text in {dead_key!r}",
                f"E.164 +254701234567 in {later_key!r}",  # the delayed one
                f"otp later in {later_key!r}",
                f"E.164 {NUMBERS[0]} in {sched_key!r}"} <= set(control), control
        assert all("{sms" not in f for f in control)
        aof_hits = findings([(b"AOF", aof_bytes(aof_redis.directory))], needles())
        assert {"E.164 +254712345678 in b'AOF'", "otp now in b'AOF'"} <= set(aof_hits)
    finally:
        await r.aclose()


@pytest.mark.timeout(90)
def test_the_readme_privacy_example_runs(tmp_path: Path) -> None:
    """The README's shell example, as written: key, OTP job, find, rotate, find again."""
    import os
    import subprocess
    import sys

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    block = readme.split("<!-- privacy-example -->\n```bash\n", 1)[1].split("\n```\n", 1)[0]
    with start_redis_server(directory=tmp_path / "redis") as proc:
        env = {k: v for k, v in os.environ.items()
               if not k.startswith(("STREAMQ_", "REDIS_"))}
        env |= {"REDIS_URL": proc.url, "PATH": f"{Path(sys.executable).parent}:{env['PATH']}",
                "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
        run = subprocess.run(["bash", "-euo", "pipefail", "-c", block], env=env, text=True,
                             capture_output=True, timeout=80)
        assert run.returncode == 0, run.stderr
        out = run.stdout
        assert out.count("1 job of that number in queue sms") == 2, out
        assert "1 payload re-encrypted under key k2" in out
        assert "blind-index entries moved to k2: 1 job" in out
        assert "rotating sms waiting: 1/1" in run.stderr
        import redis

        with redis.Redis(port=proc.port) as r:
            names = b" ".join(r.scan_iter())
        assert b"streamq:{sms}:bidx:k2:" in names and b"712345678" not in names
