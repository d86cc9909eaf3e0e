"""Delivery reports through the processes an operator runs: ``python -m streamq.worker
--delivery-port`` receiving the Africa's Talking stand-in's callbacks, and
``python -m streamq job <id>`` showing the report."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import aiohttp
import pytest

from streamq import JobState, Queue
from streamq.devredis import free_port
from streamq.sms import SMSJob, create_notification_sms_job
from streamq.sms.standin_at import AfricasTalkingStandin
from tests.support.pii import assert_no_pii
from tests.support.sms_workers import WorkerProcs
from tests.support.util import ROOT, wait_until

AT_KEY = "atsk_delivery_worker_SECRET_5"
SECRET = "worker-Secret_abcdef0123456789"
NUMBER = "+254712345673"  # ends in 3: Buffered, then Success


async def _listening(url: str) -> bool:
    try:
        async with aiohttp.ClientSession() as http, http.post(url, data={"x": "1"}) as r:
            return r.status == 400
    except aiohttp.ClientError:
        return False


@pytest.mark.timeout(120)
async def test_the_worker_serves_the_callback_and_the_cli_shows_the_report(
    redis_url: str, queue_name: str, tmp_path: Path
) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}/sms/delivery/{SECRET}"
    procs = WorkerProcs(tmp_path, {"REDIS_URL": redis_url, "AT_USERNAME": "streamq",
                                   "AT_API_KEY": AT_KEY, "AT_DELIVERY_SECRET": SECRET})
    q = Queue(queue_name, redis_url=redis_url, job_type=SMSJob)
    try:
        async with AfricasTalkingStandin(api_key=AT_KEY, callback_url=url) as at:
            procs.start("--queue", queue_name, "--provider", "africastalking", "--rate-limit",
                        "0", "--delivery-port", str(port), env={"AT_API_URL": at.url})
            await wait_until(lambda: _listening(url), 60, 0.1, message="the endpoint listening")
            ref = await create_notification_sms_job(recipient=NUMBER, message="hi", queue=q)
            await wait_until(lambda: sum(c.http_status == 200 for c in at.callbacks) >= 2, 60,
                             message="Buffered and Success answered")
            info = await q.get_job(ref.job_id)
            assert info is not None and info.state is JobState.COMPLETED
            assert info.result["delivery"]["status"] == "Success"
        assert await procs.stop() == [0]
        shown = subprocess.run(
            [sys.executable, "-m", "streamq", "job", ref.job_id, "--queue", queue_name,
             "--redis-url", redis_url], cwd=ROOT, capture_output=True, text=True, timeout=30)
        assert shown.returncode == 0, shown.stderr
        [row] = [ln for ln in shown.stdout.splitlines() if ln.startswith("delivery")]
        assert json.loads(row.split(None, 1)[1])["status"] == "Success"
        logs = procs.all_logs()
        lines = [json.loads(ln) for ln in logs.splitlines() if ln.startswith("{")]
        reports = [ln for ln in lines if ln.get("event") == "sms.delivery_report"]
        assert [r["status"] for r in reports] == ["Buffered", "Success"]
        assert_no_pii(logs + shown.stdout, [SECRET, AT_KEY, NUMBER.lstrip("+")], min_lines=5)
    finally:
        procs.kill_all()
        await q.close()


@pytest.mark.parametrize(("env", "args", "said"), [
    ({}, [], "AT_DELIVERY_SECRET must be set"),
    ({"AT_DELIVERY_SECRET": "short"}, [], "AT_DELIVERY_SECRET must be 16-128 characters"),
    ({"AT_DELIVERY_SECRET": SECRET}, ["--handler", "json:dumps"], "not go with --handler"),
    ({"AT_DELIVERY_TTL": "-3", "AT_DELIVERY_SECRET": SECRET}, [], "AT_DELIVERY_TTL must be"),
])
def test_the_worker_refuses_a_bad_delivery_setting_in_one_line(
    redis_url: str, env: dict[str, str], args: list[str], said: str
) -> None:
    r = subprocess.run(
        [sys.executable, "-m", "streamq.worker", "--delivery-port", str(free_port()),
         "--redis-url", redis_url, *args], cwd=ROOT, capture_output=True, text=True, timeout=30,
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT), **env})
    assert r.returncode == 2, (r.stdout, r.stderr)
    assert said in r.stderr and r.stderr.count("\n") == 1, r.stderr
    assert SECRET not in r.stderr + r.stdout
