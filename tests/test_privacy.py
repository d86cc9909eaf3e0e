"""Encryption at rest (SPEC 9.5, RELIABILITY T10): envelopes, the key ring, the worker's
clear errors, AAD binding, error reasons without plaintext, stored values."""

from __future__ import annotations

import base64
import os
from collections.abc import AsyncIterator
from typing import Any

import msgspec
import pytest

from streamq import ConfigError, Job, JobOptions, PermanentError, Queue, QueueDefaults, Worker
from streamq.codec import Codec
from streamq.crypto import KEYS_ENV, KeyRing, envelope_kid, is_envelope
from streamq.errors import DecryptError, PayloadError
from tests.support.util import running, wait_until

K1 = base64.b64encode(b"\x01" * 32).decode()
K2 = base64.b64encode(b"\x02" * 32).decode()
SECRET = {"to": "+254712345678", "code": "73910254", "name": "Wanjiku Kamau"}


def ring(text: str = f"k2:{K2},k1:{K1}") -> KeyRing:
    return KeyRing.parse(text)


@pytest.fixture(autouse=True)
def no_env_keys(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(KEYS_ENV, raising=False)


# -- the key ring ------------------------------------------------------------------------------
def test_key_ring_parses_ids_and_the_first_is_active() -> None:
    r = ring(f" k2:{K2} , k1:{K1.rstrip('=')} ")  # spaces and missing padding are fine
    assert r.active == "k2" and r.kids == ("k2", "k1")
    url_safe = base64.urlsafe_b64encode(b"\xfb" * 32).decode()
    assert KeyRing.parse(f"a_1-b:{url_safe}").active == "a_1-b"
    assert "k2" in repr(r) and K2 not in repr(r)


@pytest.mark.parametrize(("text", "says"), [
    (K1, "entry 1 is not 'kid:base64key'"),
    (f"k1:{K1},{K2}", "entry 2 is not 'kid:base64key'"),
    (f"k 1:{K1}", "entry 1 has an invalid key id"),
    (f"{K1}:{K1}", "entry 1 has an invalid key id"),
    ("k1:!!notbase64!!", "key k1 is not valid base64"),
    (f"k1:{base64.b64encode(b'x' * 16).decode()}", "key k1 must be 32 bytes"),
    (f"k1:{K1},k1:{K2}", "key id k1 appears twice"),
    (" , ", "holds no key"),
])
def test_a_malformed_key_ring_is_one_clear_error_naming_the_variable_never_the_key(
    text: str, says: str
) -> None:
    with pytest.raises(ConfigError) as err:
        KeyRing.parse(text)
    msg = str(err.value)
    assert KEYS_ENV in msg and says in msg and "\n" not in msg
    for key in (K1, K2, K1.rstrip("="), "!!notbase64!!"):
        assert key not in msg


def test_from_env_reads_the_variable_and_unset_means_no_ring() -> None:
    assert KeyRing.from_env({}) is None
    assert KeyRing.from_env({KEYS_ENV: "  "}) is None
    assert KeyRing.from_env({KEYS_ENV: f"k1:{K1}"}).active == "k1"  # type: ignore[union-attr]
    with pytest.raises(ConfigError, match=KEYS_ENV):
        KeyRing.from_env({KEYS_ENV: "garbage"})


# -- envelopes ---------------------------------------------------------------------------------
def test_envelope_round_trip_carries_the_key_id_and_a_fresh_nonce_each_time() -> None:
    r = ring()
    a = r.seal(b"hello", queue="q", job_id="j1")
    b = r.seal(b"hello", queue="q", job_id="j1")
    assert a[:5] == b[:5] == b"\xc1\x01\x02k2"  # same header (version, kid)
    assert a[5:17] != b[5:17] and a[17:] != b[17:]  # a fresh nonce, so another ciphertext
    assert is_envelope(a) and envelope_kid(a) == "k2" and b"hello" not in a
    assert len(a) == len(b"hello") + 3 + 2 + 12 + 16
    assert r.open(a, queue="q", job_id="j1") == b"hello"
    old = ring(f"k1:{K1}").seal(b"older", queue="q", job_id="j1")
    assert r.open(old, queue="q", job_id="j1") == b"older"  # older keys still decrypt


@pytest.mark.parametrize(("change", "reason"), [
    ("job", "payload authentication failed"),
    ("queue", "payload authentication failed"),
    ("purpose", "payload authentication failed"),
    ("bit", "payload authentication failed"),
    ("kid_in_header", "payload authentication failed"),
    ("unknown_kid", "unknown key id k9"),
    ("no_ring", "payload is encrypted and no key is configured"),
    ("truncated", "payload envelope is truncated"),
])
def test_an_envelope_opens_only_for_its_queue_job_and_purpose(change: str, reason: str) -> None:
    r = ring()
    sealed = r.seal(msgspec.msgpack.encode(SECRET), queue="q", job_id="j1")
    args: dict[str, Any] = {"queue": "q", "job_id": "j1"}
    opener: KeyRing | None = r
    if change == "job":
        args["job_id"] = "j2"
    elif change == "queue":
        args["queue"] = "other"
    elif change == "purpose":
        args["purpose"] = "result"
    elif change == "bit":
        sealed = sealed[:-5] + bytes([sealed[-5] ^ 1]) + sealed[-4:]
    elif change == "kid_in_header":  # claim the other key: the header is authenticated too
        sealed = ring(f"k1:{K2},k2:{K2}").seal(b"x", queue="q", job_id="j1")
        sealed = sealed.replace(b"k1", b"k2", 1)
    elif change == "unknown_kid":
        sealed = ring(f"k9:{K1}").seal(b"x", queue="q", job_id="j1")
    elif change == "no_ring":
        opener = None
    elif change == "truncated":
        sealed = sealed[:20]
    codec = Codec(queue=args["queue"], keyring=opener)
    with pytest.raises(DecryptError) as err:
        if "purpose" in args:
            codec.decode_value(sealed, args["job_id"], args["purpose"])
        else:
            codec.decode(sealed, args["job_id"])
    assert str(err.value).startswith(reason)
    assert isinstance(err.value, PayloadError)
    for secret in SECRET.values():
        assert secret not in str(err.value)


def test_codec_encrypts_only_when_asked_and_caps_the_sealed_size() -> None:
    plain = Codec(queue="q", keyring=ring())
    assert not is_envelope(plain.encode(SECRET, "j1"))  # keys alone only open envelopes
    sealing = Codec(max_bytes=200, queue="q", keyring=ring(), encrypt=True)
    sealed = sealing.encode(SECRET, "j1")
    assert envelope_kid(sealed) == "k2" and sealing.decode(sealed, "j1") == SECRET
    assert plain.decode(sealed, "j1") == SECRET
    near_cap = {"x": "y" * 180}  # fits in clear (~186 B), not with the envelope's 33 B
    assert len(Codec(max_bytes=200).encode(near_cap)) <= 200
    with pytest.raises(PayloadError, match=r"\(encrypted\) exceeds limit 200 B"):
        sealing.encode(near_cap, "j1")
    with pytest.raises(ConfigError, match="encrypt=True but no encryption key"):
        Codec(queue="q", encrypt=True)


def test_stored_values_such_as_results_are_sealed_for_their_job_and_purpose() -> None:
    codec = Codec(queue="q", keyring=ring(), encrypt=True)
    sealed = codec.encode_value({"message_id": "m-1", "code": "73910254"}, "j1")
    assert b"73910254" not in sealed and envelope_kid(sealed) == "k2"
    assert codec.decode_value(sealed, "j1") == {"message_id": "m-1", "code": "73910254"}
    with pytest.raises(DecryptError, match="authentication failed"):
        codec.decode_value(sealed, "j2")
    with pytest.raises(DecryptError, match="authentication failed"):
        codec.decode(sealed, "j1")  # a result is not a payload
    clear = Codec(queue="q").encode_value([1, 2], "j1")
    assert Codec(queue="q").decode_value(clear, "j1") == [1, 2]


def test_redact_error_masks_the_payloads_own_values_only_for_an_encrypting_codec() -> None:
    data = {"type": "notification", "recipient": {"phone_number": "+254712345678"},
            "code": "4821", "message": "Meet Kamau at Riverside gate", "n": 98765}
    text = ("ValueError: code 4821 for +254712345678 rejected: 'Meet Kamau at Riverside "
            "gate' (Kamau unknown at riverside, n=98765) notification")
    out = Codec(queue="q", keyring=ring(), encrypt=True).redact_error(text, data)
    for secret in ("4821", "254712345678", "Kamau", "Riverside", "riverside", "98765", "Meet"):
        assert secret not in out
    assert out.startswith("ValueError: code *** for *** rejected: '***' (*** unknown at ***")
    assert Codec(queue="q", keyring=ring()).redact_error(text, data) == text
    # a plain queue that asks (the SMS queue without keys): the same masking, no key needed
    assert Codec(queue="q", redact_errors=True).redact_error(text, data) == out


def test_the_sms_queue_masks_payload_values_out_of_errors_with_or_without_keys() -> None:
    from streamq.sms.privacy import sms_queue_options

    assert sms_queue_options({}) == {"redact_errors": True}
    assert Queue("sms", **sms_queue_options({})).codec.redact_errors
    assert not Queue("other").codec.redact_errors


# -- through Redis and a worker --------------------------------------------------------------
@pytest.fixture
async def enc_queue(redis_url: str, queue_name: str) -> AsyncIterator[Queue]:
    q = Queue(queue_name, redis_url=redis_url, encrypt=True, keyring=ring(),
              defaults=QueueDefaults(backoff_s=0.01))
    try:
        yield q
    finally:
        await q.close()


def test_encrypt_true_without_keys_fails_at_construction(redis_url: str) -> None:
    with pytest.raises(ConfigError, match=r"encrypt=True but no encryption key.*"
                       r"STREAMQ_ENCRYPTION_KEYS"):
        Queue("sms", redis_url=redis_url, encrypt=True)


def test_a_malformed_variable_fails_any_queue_at_construction(
    redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(KEYS_ENV, f"k1:{K1[:20]}")
    with pytest.raises(ConfigError, match=f"{KEYS_ENV}: key k1 must be 32 bytes"):
        Queue("sms", redis_url=redis_url)


async def test_payloads_rest_encrypted_in_lanes_and_delayed_data_and_the_worker_opens_them(
    enc_queue: Queue, monkeypatch: pytest.MonkeyPatch
) -> None:
    q = enc_queue
    await q.add(SECRET, JobOptions(job_id="now"))
    await q.add_bulk([(SECRET, JobOptions(job_id=f"b{i}", priority="high")) for i in range(3)])
    await q.add(SECRET, JobOptions(job_id="later", delay=0.2))
    raw = [f for lane in q.keys.lanes for _, f in await q.redis.xrange(lane)]
    raw_delayed = await q.redis.hget(q.keys.delayed_data, "later")
    assert len(raw) == 4 and all(envelope_kid(f[b"d"]) == "k2" for f in raw)
    for blob in [*(f[b"d"] for f in raw), raw_delayed]:
        for secret in SECRET.values():
            assert secret.encode() not in blob
    seen: list[Any] = []

    async def handler(job: Job) -> None:
        seen.append(job.data)

    # a worker of the same queue with the keys from the environment
    monkeypatch.setenv(KEYS_ENV, f"k2:{K2},k1:{K1}")
    wq = Queue(q.name, redis_url=q.redis_url)
    try:
        async with running(Worker(wq, handler, rate_limit=None)):
            await wait_until(lambda: len(seen) == 5)
    finally:
        await wq.close()
    assert seen == [SECRET] * 5


async def _dead(q: Queue, n: int) -> dict[str, Any]:
    await wait_until(lambda: _count_dead(q, n), message=f"{n} dead letters")
    return {d.job_id: d for d in await q.dead_letters()}


async def _count_dead(q: Queue, n: int) -> bool:
    return (await q.counts())["dead"] >= n


async def test_a_worker_without_keys_dead_letters_each_encrypted_job_and_keeps_going(
    enc_queue: Queue, redis_url: str
) -> None:
    await enc_queue.add_bulk([(SECRET, JobOptions(job_id=f"e{i}")) for i in range(3)])
    plain = Queue(enc_queue.name, redis_url=redis_url)  # no keys anywhere
    done: list[str] = []

    async def handler(job: Job) -> None:
        done.append(job.id)

    try:
        await plain.add({"hello": 1}, JobOptions(job_id="clear"))
        async with running(Worker(plain, handler, rate_limit=None)):
            dead = await _dead(plain, 3)
            await wait_until(lambda: done == ["clear"])
        assert set(dead) == {"e0", "e1", "e2"}
        for d in dead.values():
            assert d.error == ("payload is encrypted and no key is configured "
                               "(set STREAMQ_ENCRYPTION_KEYS)")
            assert d.attempts == 1 and isinstance(d.data, bytes)  # still sealed
        info = await plain.get_job("e0")
        assert info is not None and info.error is not None and "no key" in info.error
    finally:
        await plain.close()


async def _one_dead_after(q: Queue, tamper: Any) -> Any:
    await q.ensure_groups()
    await tamper()
    attempts: list[int] = []

    async def handler(job: Job) -> None:
        attempts.append(job.attempt)

    async with running(Worker(q, handler, rate_limit=None)):
        return await _dead(q, 1), attempts


async def test_tampered_ciphertext_is_dead_lettered_at_once_without_retry(enc_queue: Queue) -> None:
    q = enc_queue
    lane = q.keys.lanes[1]

    async def tamper() -> None:
        await q.add(SECRET, JobOptions(job_id="t1", attempts=5))
        (entry_id, fields), = await q.redis.xrange(lane)
        d = fields[b"d"]
        await q.redis.xdel(lane, entry_id)
        await q.redis.xadd(lane, {**fields, b"d": d[:30] + bytes([d[30] ^ 0x40]) + d[31:]})

    dead, ran = await _one_dead_after(q, tamper)
    assert dead["t1"].error == "payload authentication failed"
    assert dead["t1"].attempts == 1 and ran == []
    assert (await q.counts())["delayed"] == 0  # no retry scheduled


async def test_a_payload_swapped_between_two_jobs_fails_to_open_aad(enc_queue: Queue) -> None:
    q = enc_queue
    lane = q.keys.lanes[1]

    async def swap() -> None:
        await q.add({"for": "a"}, JobOptions(job_id="a"))
        await q.add({"for": "b"}, JobOptions(job_id="b"))
        (ia, fa), (ib, fb) = await q.redis.xrange(lane)
        await q.redis.xdel(lane, ia, ib)
        await q.redis.xadd(lane, {**fa, b"d": fb[b"d"]})
        await q.redis.xadd(lane, {**fb, b"d": fa[b"d"]})

    await _one_dead_after(q, swap)
    dead = await _dead(q, 2)
    assert {j: d.error for j, d in dead.items()} == {
        "a": "payload authentication failed", "b": "payload authentication failed"}


async def test_a_payload_copied_to_another_queue_fails_to_open(
    enc_queue: Queue, redis_url: str, queue_name: str
) -> None:
    other = Queue(queue_name + "x", redis_url=redis_url, keyring=ring())
    try:
        await enc_queue.add(SECRET, JobOptions(job_id="same"))
        (_, fields), = await enc_queue.redis.xrange(enc_queue.keys.lanes[1])
        await other.ensure_groups()
        await other.redis.xadd(other.keys.lanes[1], fields)
        ran: list[str] = []

        async def handler(job: Job) -> None:
            ran.append(job.id)

        async with running(Worker(other, handler, rate_limit=None)):
            dead = await _dead(other, 1)
        assert dead["same"].error == "payload authentication failed" and ran == []
    finally:
        await other.close()


async def test_an_unknown_key_id_is_dead_lettered_naming_the_id(
    redis_url: str, queue_name: str
) -> None:
    producer = Queue(queue_name, redis_url=redis_url, encrypt=True, keyring=ring(f"kidX:{K1}"))
    worker_q = Queue(queue_name, redis_url=redis_url, keyring=ring())
    try:
        await producer.add(SECRET, JobOptions(job_id="u1"))

        async def handler(job: Job) -> None:
            raise AssertionError("must not run")

        async with running(Worker(worker_q, handler, rate_limit=None)):
            dead = await _dead(worker_q, 1)
        assert dead["u1"].error == "unknown key id kidX"
    finally:
        await producer.close()
        await worker_q.close()


async def test_error_reasons_written_to_redis_hold_no_payload_value(enc_queue: Queue) -> None:
    q = enc_queue

    async def handler(job: Job) -> None:
        d = job.data
        msg = f"provider said: no route to {d['to']} for {d['name']} with code {d['code']}"
        if job.attempt == 1:
            raise RuntimeError(msg)  # retried: the reason goes to the delayed entry
        raise PermanentError(msg)  # then dead: dead letter, record, events

    await q.add(SECRET, JobOptions(job_id="r1", attempts=3, backoff=0.01))
    async with running(Worker(q, handler, rate_limit=None)):
        dead = await _dead(q, 1)
    assert dead["r1"].error.startswith("provider said: no route to ***")
    from tests.support.redis_dump import dump_all, findings

    pairs = [(k, v) for k, v in await dump_all(q.redis) if q.name.encode() in k]
    needles = {n: v.encode() for n, v in SECRET.items()} | {
        "digits": b"254712345678", "surname": b"Kamau", "first name": b"Wanjiku"}
    assert any(k == q.keys.events.encode() for k, _ in pairs)
    assert findings(pairs, needles) == []


async def test_a_plain_queue_with_redact_errors_keeps_the_code_out_of_reasons_and_events(
    redis_url: str, queue_name: str
) -> None:
    q = Queue(queue_name, redis_url=redis_url, redact_errors=True)
    data = {"to": "+254712345678", "text": "Your login code is 730194"}

    async def handler(job: Job) -> None:
        raise PermanentError(f"provider refused text {job.data['text']!r}")

    try:
        await q.add(data, JobOptions(job_id="p1"))
        async with running(Worker(q, handler, rate_limit=None)):
            dead = await _dead(q, 1)
        assert dead["p1"].error == "provider refused text '***'"
        events = [e for e in await q.read_events(count=100) if e.job_id == "p1"]
        assert events and not any("730194" in str(e) for e in events)
        assert any("***" in str(e) for e in events)
    finally:
        await q.close()


def test_keys_generate_a_usable_key() -> None:
    key = KeyRing.generate_key()
    assert len(base64.b64decode(key)) == 32
    assert KeyRing.parse(f"new:{key}").active == "new"
    assert os.environ.get(KEYS_ENV) is None


async def test_every_transition_that_moves_a_job_keeps_its_envelope_byte_for_byte(
    enc_queue: Queue,
) -> None:
    """promotion (claim), release, take-over of a silent worker's entry, retry, dead
    letter, replay: each copies the sealed payload as it is, and it still opens."""
    from streamq.rotation import _cmsgpack_first_two

    q = enc_queue
    lanes = q.keys.lanes

    async def lane_payloads() -> list[bytes]:
        return [f[b"d"] for lane in lanes for _, f in await q.redis.xrange(lane)]

    await q.add(SECRET, JobOptions(job_id="m1", delay=0.05, attempts=2))
    parsed = _cmsgpack_first_two(await q.redis.hget(q.keys.delayed_data, "m1"))
    assert parsed is not None and parsed[0] == b"m1"
    sealed = parsed[1]
    assert envelope_kid(sealed) == "k2"

    async def noop(job: Job) -> None:
        return None

    await q.ensure_groups()
    w1 = Worker(q, noop, rate_limit=None, visibility_timeout=0.1, name="w1")
    jobs = await wait_until(lambda: w1.claim_now(1), message="promotion")  # promote + claim
    assert await lane_payloads() == [sealed]
    await w1._release(jobs, "test")  # handed back: re-added at the tail
    assert await lane_payloads() == [sealed]
    await w1.claim_now(1)  # w1 takes it again, then goes silent
    w2 = Worker(q, noop, rate_limit=None, visibility_timeout=0.1, name="w2",
                reclaim_interval=0.05)
    (job,) = await wait_until(lambda: w2.claim_now(1), message="take-over")  # in place
    assert job.stalls == 1 and await lane_payloads() == [sealed]
    await w2._failed(job, RuntimeError("boom"), retry=True, delay=0.05)  # retry
    parsed = _cmsgpack_first_two(await q.redis.hget(q.keys.delayed_data, "m1"))
    assert parsed is not None and parsed[1] == sealed
    (job,) = await wait_until(lambda: w2.claim_now(1), message="the retry")
    await w2._dead(job, "given up")  # dead letter
    (_, dead_fields), = await q.redis.xrange(q.keys.dead)
    assert dead_fields[b"d"] == sealed
    assert await q.replay_dead("m1") == 1  # replay
    assert await lane_payloads() == [sealed]
    seen: list[Any] = []

    async def handler(job: Job) -> None:
        seen.append(job.data)

    async with running(Worker(q, handler, rate_limit=None)):
        await wait_until(lambda: seen == [SECRET])
