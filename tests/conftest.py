"""Shared fixtures: one private redis-server per test session, unique queue names per test."""

from __future__ import annotations

import inspect
import uuid
from collections.abc import AsyncIterator, Iterator

import pytest

from streamq.devredis import RedisProcess, start_redis_server


@pytest.hookimpl(tryfirst=True)
def pytest_pycollect_makeitem(collector: pytest.Collector, name: str, obj: object) -> None:
    """Mark every ``async def test_*`` for anyio before parametrization happens."""
    if name.startswith("test") and inspect.iscoroutinefunction(obj):
        marks = list(getattr(obj, "pytestmark", []))
        if not any(m.name == "anyio" for m in marks):
            obj.pytestmark = [*marks, pytest.mark.anyio]  # type: ignore[attr-defined]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="session")
def redis_proc() -> Iterator[RedisProcess]:
    with start_redis_server() as proc:
        yield proc


@pytest.fixture(scope="session")
def redis_url(redis_proc: RedisProcess) -> str:
    return redis_proc.url


_NO_DIGITS = str.maketrans("0123456789", "ghijklmnop")


@pytest.fixture
def queue_name() -> str:
    # letters only: a name with a run of 8+ digits would be masked as phone-like wherever
    # it appears in free text (flash messages, error reasons), and a test comparing the
    # text would fail for ~2% of random names
    return "t" + uuid.uuid4().hex[:10].translate(_NO_DIGITS)


@pytest.fixture
async def redis(redis_url: str) -> AsyncIterator[object]:
    import redis.asyncio as aioredis

    client = aioredis.Redis.from_url(redis_url)
    try:
        yield client
    finally:
        await client.aclose()
