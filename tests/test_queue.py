"""The producer side against a real Redis: add, dedup, validation, cancel, pause, counts."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import anyio
import msgspec
import pytest

from streamq import (
    ConfigError,
    JobIdError,
    JobOptions,
    JobState,
    PayloadError,
    Queue,
    QueueDefaults,
    RedisUnavailable,
)


class Ping(msgspec.Struct, tag="ping", tag_field="type"):
    n: int


class Pong(msgspec.Struct, tag="pong", tag_field="type"):
    word: str


async def test_add_returns_ref_and_job_is_waiting(redis_url: str, queue_name: str) -> None:
    async with Queue(queue_name, redis_url=redis_url) as q:
        ref = await q.add({"hello": "world"})
        assert ref.queue_name == queue_name
        info = await q.get_job(ref.job_id)
        assert info is not None
        assert info.state is JobState.WAITING
        assert info.max_attempts == 3
        assert info.priority == "normal"
        assert (await q.counts())["waiting"] == 1


async def test_unknown_job_is_none(redis_url: str, queue_name: str) -> None:
    async with Queue(queue_name, redis_url=redis_url) as q:
        assert await q.get_job("nope") is None


async def test_custom_id_dedup_under_concurrent_adds(redis_url: str, queue_name: str) -> None:
    async with Queue(queue_name, redis_url=redis_url) as q:
        refs = []

        async def add() -> None:
            refs.append(await q.add({"x": 1}, JobOptions(job_id="order-42")))

        async with anyio.create_task_group() as tg:
            for _ in range(200):
                tg.start_soon(add)
        assert {r.job_id for r in refs} == {"order-42"}
        assert (await q.counts())["waiting"] == 1


async def test_typed_queue_validates_at_add_and_writes_nothing(
    redis_url: str, queue_name: str
) -> None:
    async with Queue(queue_name, redis_url=redis_url, job_type=Ping | Pong) as q:
        await q.add(Ping(n=1))
        with pytest.raises(PayloadError, match="validate"):
            await q.add({"type": "fax", "n": 1})
        with pytest.raises(PayloadError):
            await q.add({"type": "ping", "n": "not an int"})
        assert (await q.counts())["waiting"] == 1


async def test_oversize_payload_rejected(redis_url: str, queue_name: str) -> None:
    q = Queue(queue_name, redis_url=redis_url, defaults=QueueDefaults(max_payload_bytes=1024))
    async with q:
        with pytest.raises(PayloadError, match=r"exceeds limit 1024 B"):
            await q.add({"blob": "x" * 5000})
        assert (await q.counts())["waiting"] == 0


@pytest.mark.parametrize("bad", ["", "a b", "x" * 129, "línea", "a\nb", "a\x00b", "a|b", "a*b"])
async def test_bad_job_ids_rejected(redis_url: str, queue_name: str, bad: str) -> None:
    async with Queue(queue_name, redis_url=redis_url) as q:
        with pytest.raises(JobIdError):
            await q.add({}, JobOptions(job_id=bad))


async def test_bad_options_rejected(redis_url: str, queue_name: str) -> None:
    async with Queue(queue_name, redis_url=redis_url) as q:
        with pytest.raises(ConfigError, match="priority"):
            await q.add({}, JobOptions(priority="urgent"))  # type: ignore[arg-type]
        with pytest.raises(ConfigError, match="attempts"):
            await q.add({}, JobOptions(attempts=0))
        with pytest.raises(ConfigError, match="delay"):
            await q.add({}, JobOptions(delay=-1))


async def test_unreachable_redis_is_a_clear_error() -> None:
    async with Queue("x", redis_url="redis://127.0.0.1:1/0") as q:
        with pytest.raises(RedisUnavailable, match=r"Redis unreachable at redis://127\.0\.0\.1:1/0"):
            await q.add({"a": 1})


async def test_delayed_job_and_cancel(redis_url: str, queue_name: str) -> None:
    async with Queue(queue_name, redis_url=redis_url) as q:
        ref = await q.add({"a": 1}, JobOptions(delay=timedelta(minutes=5)))
        info = await q.get_job(ref.job_id)
        assert info is not None and info.state is JobState.DELAYED and info.due_at is not None
        waiting = await q.add({"a": 2})
        assert await q.cancel(ref.job_id) is True
        assert await q.cancel(waiting.job_id) is True
        assert await q.cancel(waiting.job_id) is False
        assert await q.cancel("never-added") is False
        c = await q.counts()
        assert (c["waiting"], c["delayed"], c["cancelled"]) == (0, 0, 2)
        cancelled = await q.get_job(ref.job_id)
        assert cancelled is not None and cancelled.state is JobState.CANCELLED


async def test_add_bulk_in_order_with_options(redis_url: str, queue_name: str) -> None:
    async with Queue(queue_name, redis_url=redis_url) as q:
        items = [({"i": i}, JobOptions(priority="high")) if i % 2 else {"i": i}
                 for i in range(1200)]
        refs = await q.add_bulk(items)
        assert len(refs) == 1200 and len({r.job_id for r in refs}) == 1200
        first, second = await q.get_job(refs[0].job_id), await q.get_job(refs[1].job_id)
        assert first is not None and first.priority == "normal"
        assert second is not None and second.priority == "high"
        assert (await q.counts())["waiting"] == 1200


async def test_add_bulk_validates_everything_before_sending(
    redis_url: str, queue_name: str
) -> None:
    async with Queue(queue_name, redis_url=redis_url, job_type=Ping) as q:
        with pytest.raises(PayloadError):
            await q.add_bulk([Ping(n=1), {"type": "ping", "n": "x"}])
        assert (await q.counts())["waiting"] == 0


async def test_pause_flag(redis_url: str, queue_name: str) -> None:
    async with Queue(queue_name, redis_url=redis_url) as q:
        await q.pause()
        assert await q.is_paused()
        assert (await q.counts())["paused"] == 1
        await q.resume()
        assert not await q.is_paused()


async def test_payload_with_lua_metacharacters_round_trips(
    redis_url: str, queue_name: str
) -> None:
    nasty = "\"]]..redis.call('FLUSHALL')--\r\n\x00end"
    async with Queue(queue_name, redis_url=redis_url) as q:
        ref = await q.add({"text": nasty}, JobOptions(job_id="inj-1"))
        await q.add({"other": 1})
        assert (await q.counts())["waiting"] == 2
        info = await q.get_job(ref.job_id)
        assert info is not None and info.state is JobState.WAITING


async def test_a_command_the_acl_denies_is_a_one_line_refusal(redis: Any, redis_url: str,
                                                              queue_name: str) -> None:
    # redis-py raises NoPermissionError without the NOPERM prefix: it must still be named
    user = "u" + queue_name
    await redis.execute_command("ACL", "SETUSER", user, "on", ">pw", "~*", "+ping",
                                "+script|load", "+evalsha")
    url = redis_url.replace("redis://", f"redis://{user}:pw@")
    try:
        async with Queue(queue_name, redis_url=url) as q:
            with pytest.raises(RedisUnavailable, match=r"refused access at .*NOPERM") as info:
                await q.is_paused()  # EXISTS is not granted
            assert "\n" not in str(info.value) and ":pw@" not in str(info.value)
            with pytest.raises(RedisUnavailable, match=r"refused access at .*script") as info:
                await q.add({"n": 1})  # the enqueue script's writes are not granted
            assert "\n" not in str(info.value) and ":pw@" not in str(info.value)
    finally:
        await redis.execute_command("ACL", "DELUSER", user)
