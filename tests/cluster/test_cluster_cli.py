"""The command lines on a cluster URL: ``python -m streamq.worker`` (the SMS path, jobs
made by the SMS creators from ``REDIS_URL``, and ``--handler``) and every ``python -m
streamq`` command, all pointed at a node that does not serve the queue."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

import streamq.sms.jobs as sms_jobs
from streamq import JobOptions, JobState, Queue
from streamq.keys import QueueKeys
from streamq.sms import Recipient, create_otp_sms_job, create_welcome_sms_job
from tests.support.cluster import LocalCluster
from tests.support.util import ROOT, wait_until
from tests.test_cli import cli, row, run_process


def name() -> str:
    return "c" + uuid.uuid4().hex[:10]


@contextmanager
def worker_process(url: str, log: Path, *args: str, **env: str) -> Iterator[subprocess.Popen[bytes]]:
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "streamq.worker", "--redis-url", url, "--rate-limit", "0",
             "--log-format", "json", *args],
            cwd=ROOT, env=dict(os.environ, PYTHONPATH=str(ROOT), **env), stdout=out,
            stderr=subprocess.STDOUT)
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        proc.wait(30)


async def _completed(q: Queue, n: int) -> bool:
    return (await q.counts())["completed"] >= n


async def test_the_sms_worker_and_the_sms_creators_on_a_cluster_url(
    healthy: LocalCluster, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    qn = name()
    url = healthy.non_owner_of(QueueKeys(qn).prefix).url
    # the creators' default queue, from the environment
    monkeypatch.setenv("REDIS_URL", url)
    monkeypatch.setenv("STREAMQ_SMS_QUEUE", qn)
    monkeypatch.setattr(sms_jobs, "_default_queue", None)
    try:
        await create_welcome_sms_job(recipient=Recipient(phone_number="0712345678"),
                                     user_name="Wanjiru")
        await create_otp_sms_job(recipient="+254733111222", code="493817", expiry_minutes=5)
        assert sms_jobs.get_sms_queue().is_cluster
    finally:
        await sms_jobs.close_sms_queue()
    log = tmp_path / "worker.log"
    with worker_process(url, log, "--queue", qn) as proc:
        async with Queue(qn, redis_url=url) as q:
            await wait_until(lambda: _completed(q, 2), 60, 0.1, "2 SMS delivered")
    assert proc.returncode == 0, log.read_text()[-3000:]
    text = log.read_text()
    assert "Traceback" not in text and '"worker.started"' in text


async def test_every_operator_command_on_a_cluster_url(healthy: LocalCluster,
                                                       tmp_path: Path) -> None:
    qn = name()
    url = healthy.non_owner_of(QueueKeys(qn).prefix).url
    async with Queue(qn, redis_url=url, partitions=3) as q:
        await q.add_bulk([{"ok": True} for _ in range(20)] +
                         [({"ok": False}, JobOptions(job_id=f"bad-{i}", attempts=1))
                          for i in range(3)])
        await q.add({"ok": True}, JobOptions(job_id="later", delay=3600))
        await q.upsert_schedule("hourly", every=3600, data={"ok": True})
        with worker_process(url, tmp_path / "w.log", "--queue", qn,
                            "--handler", "tests.support.jobs:check") as proc:
            await wait_until(lambda: _dead_count(q, 3), 60, 0.1, "3 dead letters")
            await wait_until(lambda: _completed(q, 20), 60, 0.1, "20 jobs completed")
        assert proc.returncode == 0, (tmp_path / "w.log").read_text()[-3000:]

        r = await cli(url, qn, "stats")
        assert r.code == 0 and row(r.out, "completed")[1] == "20", r.out
        assert "3 partitions" in r.out and url in r.out
        r = await cli(url, qn, "partitions")
        assert r.code == 0 and "slot" in r.out and "master" in r.out, r.out
        assert "serve these partitions" in r.out
        r = await cli(url, qn, "job", "later")
        assert r.code == 0 and "delayed" in r.out
        r = await cli(url, qn, "dead")
        assert r.code == 0 and all(f"bad-{i}" in r.out for i in range(3)), r.out
        r = await cli(url, qn, "dead", "--show", "bad-0")
        assert r.code == 0 and "not ok" in r.out
        r = await cli(url, qn, "replay", "bad-0")
        assert r.code == 0
        info = await q.get_job("bad-0")
        assert info is not None and info.state is JobState.WAITING
        r = await cli(url, qn, "replay", "--all", "--yes")
        assert r.code == 0 and "2" in r.out
        r = await cli(url, qn, "cancel", "later", "--yes")
        assert r.code == 0
        r = await cli(url, qn, "pause")
        assert r.code == 0 and await q.is_paused()
        r = await cli(url, qn, "resume")
        assert r.code == 0 and not await q.is_paused()
        r = await cli(url, qn, "events", "--limit", "5")
        assert r.code == 0 and len(r.out.splitlines()) >= 5
        r = await cli(url, qn, "schedules")
        assert r.code == 0 and "hourly" in r.out
        r = await cli(url, qn, "purge", "--completed", "--yes")
        assert r.code == 0
        r = await cli(url, qn, "purge", "--yes")
        assert r.code == 0
        assert (await q.counts())["dead"] == 0
    # as a process, as an operator types it
    p = run_process("stats", "--queue", qn, env={"REDIS_URL": url})
    assert p.returncode == 0 and "3 partitions" in p.stdout, p.stderr
    # and a refused db number: one line, exit 2
    p = run_process("stats", "--queue", qn, "--redis-url", url.rsplit("/", 1)[0] + "/5")
    assert p.returncode == 2 and p.stderr.count("\n") == 1 and "database 0" in p.stderr


async def _dead_count(q: Queue, n: int) -> bool:
    return (await q.counts())["dead"] >= n
