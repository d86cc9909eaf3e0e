"""Stored results: a handler's return value kept with its completed record (JobInfo.result)."""

from __future__ import annotations

import io
from typing import Any

import anyio
import pytest
import structlog

from streamq import ConfigError, Job, JobOptions, JobState, Queue, QueueDefaults, Worker
from streamq.cli import main as cli_main
from streamq.cli.output import Console
from tests.support.util import running, wait_until


async def _completed(q: Queue, ids: list[str]) -> bool:
    for job_id in ids:
        info = await q.get_job(job_id)
        if info is None or info.state is not JobState.COMPLETED:
            return False
    return True


async def _run_all(q: Queue, handler: Any, ids: list[str]) -> None:
    async with running(Worker(q, handler, rate_limit=None)):
        await wait_until(lambda: _completed(q, ids), 10, message="every job to complete")


async def test_results_are_read_back_with_the_record(redis_url: str, queue_name: str) -> None:
    values: dict[str, Any] = {
        "none": None,
        "dict": {"provider": "mock", "message_id": "m-1", "segments": 2, "ok": True},
        "list": [1, 2.5, "three", None],
        "bytes": b"\x00|\xff|r|",  # separators and non-UTF-8 bytes inside the result
        "text": "x|y\nz",
    }
    async with Queue(queue_name, redis_url=redis_url) as q:
        for name in values:
            await q.add({"name": name}, JobOptions(job_id=name))

        async def handler(job: Job) -> Any:
            return values[job.data["name"]]

        await _run_all(q, handler, list(values))
        for name, value in values.items():
            info = await q.get_job(name)
            assert info is not None and info.state is JobState.COMPLETED
            assert info.result == value, name
            assert info.result_error is None and info.error is None, name
            assert info.attempts == 1 and info.max_attempts == 3


async def test_an_oversize_or_unencodable_result_completes_the_job_without_it(
    redis_url: str, queue_name: str
) -> None:
    defaults = QueueDefaults(max_result_bytes=100)
    async with Queue(queue_name, redis_url=redis_url, defaults=defaults) as q:
        await q.add({"kind": "big"}, JobOptions(job_id="big"))
        await q.add({"kind": "odd"}, JobOptions(job_id="odd"))
        await q.add({"kind": "fits"}, JobOptions(job_id="fits"))
        runs: list[str] = []

        async def handler(job: Job) -> Any:
            runs.append(job.id)
            kind = job.data["kind"]
            if kind == "big":
                return "x" * 500
            if kind == "odd":
                return object()
            return "y" * 90

        with structlog.testing.capture_logs() as logs:
            await _run_all(q, handler, ["big", "odd", "fits"])
        # the side effect happened once: completed, never run again for its result
        assert sorted(runs) == ["big", "fits", "odd"]
        big, odd, fits = [await q.get_job(i) for i in ("big", "odd", "fits")]
        assert big is not None and big.state is JobState.COMPLETED and big.result is None
        assert big.result_error is not None and "exceeds limit 100 B" in big.result_error
        assert odd is not None and odd.state is JobState.COMPLETED and odd.result is None
        assert odd.result_error is not None and "cannot be encoded" in odd.result_error
        assert fits is not None and fits.result == "y" * 90 and fits.result_error is None
        dropped = [e for e in logs if e["event"] == "job.result_dropped"]
        assert sorted(e["job_id"] for e in dropped) == ["big", "odd"]
        assert all(e["log_level"] == "warning" for e in dropped)
        counts = await q.counts()
        assert counts["completed"] == 3 and counts["failed"] == 0


async def test_results_off_keeps_none(redis_url: str, queue_name: str) -> None:
    async with Queue(queue_name, redis_url=redis_url,
                     defaults=QueueDefaults(max_result_bytes=0)) as q:
        await q.add({}, JobOptions(job_id="r"))

        async def handler(job: Job) -> dict[str, int]:
            return {"a": 1}

        await _run_all(q, handler, ["r"])
        info = await q.get_job("r")
        assert info is not None and info.result is None and info.result_error is None


async def test_a_result_expires_with_its_record(redis_url: str, queue_name: str) -> None:
    async with Queue(queue_name, redis_url=redis_url,
                     defaults=QueueDefaults(completed_ttl_s=1.0)) as q:
        await q.add({}, JobOptions(job_id="short"))

        async def handler(job: Job) -> dict[str, str]:
            return {"kept": "as long as the record"}

        await _run_all(q, handler, ["short"])
        info = await q.get_job("short")
        assert info is not None and info.result == {"kept": "as long as the record"}
        ttl = await q.redis.pttl(q.keys.job("short"))
        assert 0 < ttl <= 1000
        await wait_until(lambda: _gone(q, "short"), 5, 0.05, "the record to expire")
        # nothing of the result is left anywhere under the queue's keys
        leftovers = [k async for k in q.redis.scan_iter(match=f"streamq:{{{queue_name}}}:*short*")]
        assert leftovers == []


async def _gone(q: Queue, job_id: str) -> bool:
    return await q.get_job(job_id) is None


async def test_listing_completed_jobs_reads_records_holding_results(
    redis_url: str, queue_name: str
) -> None:
    async with Queue(queue_name, redis_url=redis_url) as q:
        await q.add({}, JobOptions(job_id="with-result"))

        async def handler(job: Job) -> str:
            return "a|b|c"  # the record's separator inside the result

        await _run_all(q, handler, ["with-result"])
        page = await q.list_jobs("completed")
        assert [j.info.id for j in page.jobs] == ["with-result"]
        assert page.jobs[0].info.error is None and page.jobs[0].note is None


def test_queue_defaults_validate_the_caps() -> None:
    for bad in ({"max_result_bytes": -1}, {"max_result_bytes": True},
                {"max_result_bytes": 1 << 30}, {"max_progress_bytes": 4},
                {"progress_interval_s": -0.1}):
        with pytest.raises(ConfigError):
            QueueDefaults(**bad)  # type: ignore[arg-type]
    assert QueueDefaults().max_result_bytes == 64 * 1024


async def test_the_cli_shows_a_result(redis_url: str, queue_name: str) -> None:
    async with Queue(queue_name, redis_url=redis_url) as q:
        await q.add({}, JobOptions(job_id="shown"))
        await q.add({}, JobOptions(job_id="dropped"))

        async def handler(job: Job) -> Any:
            return {"message_id": "m-42"} if job.id == "shown" else object()

        await _run_all(q, handler, ["shown", "dropped"])

    def show(job_id: str) -> str:
        out, err = io.StringIO(), io.StringIO()
        code = cli_main(["job", job_id, "--queue", queue_name, "--redis-url", redis_url],
                        Console(out=out, err=err))
        assert code == 0, err.getvalue()
        return out.getvalue()

    text = await anyio.to_thread.run_sync(show, "shown")
    assert '{"message_id":"m-42"}' in text and "result" in text
    text = await anyio.to_thread.run_sync(show, "dropped")
    assert "not kept: result cannot be encoded" in text
