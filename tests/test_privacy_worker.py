"""The SMS wiring (SPEC 9.5): with STREAMQ_ENCRYPTION_KEYS set, the job creators' default
queue seals payloads and indexes numbers, and `python -m streamq.worker` opens them."""

from __future__ import annotations

import base64
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from streamq import Queue
from streamq.blind_index import find_jobs
from streamq.crypto import KEYS_ENV, envelope_kid
from streamq.sms import close_sms_queue, create_otp_sms_job, get_sms_queue
from streamq.sms.privacy import phone_term
from tests.support.util import ROOT, wait_until

KEYS = f"w1:{base64.b64encode(b'w' * 32).decode()}"


@pytest.mark.timeout(60)
async def test_sms_queue_and_worker_process_encrypt_when_keys_are_set(
    redis_url: str, queue_name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(KEYS_ENV, KEYS)
    monkeypatch.setenv("STREAMQ_SMS_QUEUE", queue_name)
    monkeypatch.setenv("REDIS_URL", redis_url)
    await close_sms_queue()
    try:
        q = get_sms_queue()
        assert q.codec.encrypt and q.blind_index is not None
        now = await create_otp_sms_job(recipient="0712345678", code="48213377")
        later = await create_otp_sms_job(recipient="+254712345678", code="48213378", delay=300)
        (_, fields), = await q.redis.xrange(q.keys.lanes[0])
        assert envelope_kid(fields[b"d"]) == "w1" and b"48213377" not in fields[b"d"]
        env = dict(os.environ, PYTHONPATH=str(ROOT), STREAMQ_LOG_FORMAT="json")
        log_path = tmp_path / "worker.log"
        with open(log_path, "w") as log:
            proc = subprocess.Popen(
                [sys.executable, "-m", "streamq.worker", "--provider", "mock", "--queue",
                 queue_name, "--rate-limit", "0"],
                cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, text=True)
        try:
            await wait_until(lambda: _completed(q), timeout=20, message="the OTP sent")
        finally:
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(timeout=20) == 0
        assert (await q.counts())["dead"] == 0
        found = {j.id: j.state.value for j in await find_jobs(q, phone_term("0712345678"))}
        assert found == {now.job_id: "completed", later.job_id: "delayed"}
        packed = await q.redis.hget(q.keys.delayed_data, later.job_id)
        assert b"w1" in packed and b"48213378" not in packed
        # the mock's development print-out is off in JSON mode: no code in the output
        assert "48213377" not in log_path.read_text()
    finally:
        await close_sms_queue()


async def _completed(q: Queue) -> bool:
    return (await q.counts())["completed"] == 1
