"""The keyed blind index (SPEC 9.5): find a number's jobs with no plaintext number in Redis;
entries expire with their jobs and are pruned on read and on write."""

from __future__ import annotations

import base64
import io
import re
from collections.abc import AsyncIterator, Callable
from typing import Any, TypeVar

import anyio.to_thread
import pytest

from streamq import ConfigError, Job, JobOptions, JobState, Queue, QueueDefaults, Worker
from streamq.blind_index import find_job_ids, find_jobs, lookup_keys
from streamq.cli import main as cli_main
from streamq.cli.output import Console
from streamq.crypto import KEYS_ENV, KeyRing
from streamq.sms import (
    Recipient,
    SMSJob,
    WelcomeSMS,
    create_otp_sms_job,
    create_welcome_sms_job,
)
from streamq.sms.privacy import phone_term, phone_terms, sms_queue_options
from tests.support.util import running, wait_until

K1 = base64.b64encode(b"\x11" * 32).decode()
T = TypeVar("T")
A, A_NATIONAL, B = "+254712345678", "0712345678", "+254733000111"


def ring() -> KeyRing:
    return KeyRing.parse(f"k1:{K1}")


@pytest.fixture(autouse=True)
def no_env_keys(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(KEYS_ENV, raising=False)


@pytest.fixture
async def sms_q(redis_url: str, queue_name: str) -> AsyncIterator[Queue]:
    q = Queue(queue_name, redis_url=redis_url, job_type=SMSJob, encrypt=True, keyring=ring(),
              blind_index=phone_terms)
    try:
        yield q
    finally:
        await q.close()


def test_sms_queue_options_encrypt_and_index_with_the_keys_only() -> None:
    assert sms_queue_options({}) == {"redact_errors": True}  # masking needs no keys
    opts = sms_queue_options({KEYS_ENV: f"k1:{K1}"})
    assert opts["encrypt"] is True and opts["blind_index"] is phone_terms
    assert phone_terms({"recipient": {"phone_number": A}}) == ["e164:" + A]
    assert phone_terms({"no": "recipient"}) == []
    assert phone_term(A_NATIONAL) == phone_term(A) == "e164:" + A


async def test_find_lists_a_numbers_jobs_without_the_number_in_redis(sms_q: Queue) -> None:
    a1 = await create_welcome_sms_job(recipient=Recipient(phone_number=A), user_name="Ann",
                                      queue=sms_q)
    a2 = await create_otp_sms_job(recipient=A_NATIONAL, code="55501234", queue=sms_q, delay=30)
    b1 = await create_welcome_sms_job(recipient=B, user_name="Bob", queue=sms_q)
    found = await find_jobs(sms_q, phone_term(A))
    assert {j.id: j.state for j in found} == {a1.job_id: JobState.WAITING,
                                              a2.job_id: JobState.DELAYED}
    assert [j.created_at for j in found] == sorted(j.created_at for j in found)  # type: ignore[type-var]
    assert [j.id for j in await find_jobs(sms_q, phone_term(B))] == [b1.job_id]
    assert await find_jobs(sms_q, phone_term("+254700000001")) == []
    index_keys = [k.decode() async for k in sms_q.redis.scan_iter(match=f"streamq:{{{sms_q.name}}}:bidx:*")]
    assert len(index_keys) == 2
    for key in index_keys:
        token = key.rsplit(":", 1)[1]
        assert re.fullmatch(r"[a-p]{32}", token)  # HMAC letters: no digit run in key names
        assert "712345678" not in key and "733000111" not in key
        members = await sms_q.redis.zrange(key, 0, -1)
        assert set(members) <= {r.job_id.encode() for r in (a1, a2, b1)}
    # another queue's tokens for the same number differ: no linking across queues
    assert ring().token("k1", "other", phone_term(A)) != index_keys[0].rsplit(":", 1)[1]


async def test_a_duplicate_add_of_a_live_id_does_not_index_another_number(sms_q: Queue) -> None:
    await create_welcome_sms_job(recipient=A, user_name="Ann", job_id="same", queue=sms_q)
    await create_welcome_sms_job(recipient=B, user_name="Bob", job_id="same", queue=sms_q)
    assert await find_job_ids(sms_q, phone_term(A)) == ["same"]
    assert await find_job_ids(sms_q, phone_term(B)) == []


async def test_index_entries_expire_with_their_jobs(redis_url: str, queue_name: str) -> None:
    short = QueueDefaults(completed_ttl_s=0.3, failed_ttl_s=0.3, index_live_s=0.3)
    q = Queue(queue_name, redis_url=redis_url, job_type=SMSJob, encrypt=True, keyring=ring(),
              blind_index=phone_terms, defaults=short)
    try:
        refs = [await create_welcome_sms_job(recipient=A, user_name=f"U{i}", queue=q)
                for i in range(3)]
        (key,) = lookup_keys(q, phone_term(A))
        assert 0 < await q.redis.pttl(key) <= 600

        async def handler(job: Job) -> None:
            return None

        async with running(Worker(q, handler, rate_limit=None)):
            await wait_until(lambda: _all_done(q, [r.job_id for r in refs]))
        assert len(await find_jobs(q, phone_term(A))) == 3  # completed, records kept 0.3 s
        await wait_until(lambda: _none_found(q), 5, message="entries to expire")
        await wait_until(lambda: _gone(q, key), 5, message="the index set to expire")
    finally:
        await q.close()


async def _all_done(q: Queue, ids: list[str]) -> bool:
    infos = [await q.get_job(i) for i in ids]
    return all(i is not None and i.state is JobState.COMPLETED for i in infos)


async def _none_found(q: Queue) -> bool:
    return await find_job_ids(q, phone_term(A)) == []


async def _gone(q: Queue, key: str) -> bool:
    return not await q.redis.exists(key)


async def test_expired_entries_are_pruned_on_write(redis_url: str, queue_name: str) -> None:
    short = QueueDefaults(completed_ttl_s=0.1, failed_ttl_s=0.1, index_live_s=0.1)
    q = Queue(queue_name, redis_url=redis_url, job_type=SMSJob, encrypt=True, keyring=ring(),
              blind_index=phone_terms, defaults=short)
    try:
        await create_welcome_sms_job(recipient=A, user_name="Far", queue=q, delay=30,
                                     job_id="far")
        await create_welcome_sms_job(recipient=A, user_name="Near", queue=q, job_id="near")
        (key,) = lookup_keys(q, phone_term(A))
        near = float(await q.redis.zscore(key, "near"))
        await wait_until(lambda: _redis_ms_past(q, near), 5, message="near's expiry")
        assert await q.redis.zcard(key) == 2  # nothing read it yet
        await create_welcome_sms_job(recipient=A, user_name="New", queue=q, job_id="new")
        assert set(await q.redis.zrange(key, 0, -1)) == {b"far", b"new"}
    finally:
        await q.close()


async def _redis_ms_past(q: Queue, ms: float) -> bool:
    s, us = await q.redis.time()
    return s * 1000 + us // 1000 > ms


async def test_find_needs_the_keys(redis_url: str, queue_name: str) -> None:
    with pytest.raises(ConfigError, match="blind index but no key"):
        Queue(queue_name, redis_url=redis_url, blind_index=phone_terms)
    async with Queue(queue_name, redis_url=redis_url) as q:
        with pytest.raises(ConfigError, match="STREAMQ_ENCRYPTION_KEYS"):
            await find_jobs(q, phone_term(A))


async def test_cli_find_by_phone(
    sms_q: Queue, redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    ref = await create_welcome_sms_job(recipient=A, user_name="Ann", queue=sms_q)
    # another number's job is not listed
    await sms_q.add(WelcomeSMS(id="x", timestamp=1, recipient=Recipient(phone_number=B),
                               user_name="Bob"), JobOptions(job_id="other"))
    monkeypatch.setenv(KEYS_ENV, f"k1:{K1}")

    def run(*argv: str) -> tuple[int, str, str]:
        out, err = io.StringIO(), io.StringIO()
        code = cli_main([*argv, "--queue", sms_q.name, "--redis-url", redis_url],
                        console=Console(out=out, err=err))
        return code, out.getvalue(), err.getvalue()

    code, out, _ = await _in_thread(run, "find", "--phone", A_NATIONAL)
    assert code == 0 and ref.job_id in out and "waiting" in out and "other" not in out
    assert "1 job of that number" in out and "712345678" not in out
    code, _, err = await _in_thread(run, "find", "--phone", "+254700000001")
    assert code == 1 and "no jobs of that number" in err
    code, _, err = await _in_thread(run, "find", "--phone", "+1")
    assert code == 2 and "invalid phone number" in err


async def _in_thread(fn: Callable[..., T], *args: Any) -> T:
    # the CLI runs its own event loop (anyio.run): give it a thread
    return await anyio.to_thread.run_sync(lambda: fn(*args))


def test_the_sms_package_declares_its_search_terms_as_an_entry_point(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from streamq.blind_index import search_terms
    from streamq.sms.privacy import SEARCH_TERMS

    assert search_terms() == [SEARCH_TERMS]  # found through the installed metadata
    assert SEARCH_TERMS.to_term(A_NATIONAL) == "e164:" + A
    assert list(SEARCH_TERMS.queues()) == ["sms"]
    monkeypatch.setenv("STREAMQ_SMS_QUEUE", "notify")
    assert list(SEARCH_TERMS.queues()) == ["notify"]
