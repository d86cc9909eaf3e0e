"""``python -m streamq.worker`` as users run it: help, clear errors, the SMS path end to end."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

from streamq import Queue
from streamq.sms import (
    Recipient,
    SMSJob,
    create_notification_sms_job,
    create_otp_sms_job,
    create_welcome_sms_job,
)
from streamq.sms.standin import SalumStandin
from tests.support.util import ROOT, wait_until

API_KEY = "sk-test-0f9e8d7c6b5a"


def _run(*args: str, env: dict[str, str] | None = None, timeout: float = 20
         ) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "streamq.worker", *args], cwd=ROOT,
                          env=env or dict(os.environ), capture_output=True, text=True,
                          timeout=timeout)


def test_help_documents_every_option_with_its_env_twin() -> None:
    out = _run("--help").stdout
    for flag, env in [("--queue", "STREAMQ_QUEUE"), ("--concurrency", "STREAMQ_CONCURRENCY"),
                      ("--rate-limit", "STREAMQ_RATE_LIMIT"), ("--provider", "STREAMQ_PROVIDER"),
                      ("--metrics-port", "STREAMQ_METRICS_PORT"),
                      ("--log-format", "STREAMQ_LOG_FORMAT")]:
        assert flag in out and env in out, flag


def test_unreachable_redis_url_is_one_line_and_fast() -> None:
    env = dict(os.environ, REDIS_URL="redis://user:hunter2@127.0.0.1:1/0")
    t0 = time.monotonic()
    r = _run(env=env)
    assert time.monotonic() - t0 < 10
    assert r.returncode == 2
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert lines == [lines[-1]] and "Traceback" not in r.stderr
    assert "Redis unreachable at redis://user:***@127.0.0.1:1/0" in lines[-1]
    assert "hunter2" not in r.stderr


def test_bad_settings_are_clear_errors(redis_url: str) -> None:
    env = dict(os.environ, REDIS_URL=redis_url, STREAMQ_CONCURRENCY="lots")
    r = _run(env=env)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    env = dict(os.environ, REDIS_URL=redis_url)
    env.pop("SALUM_API_KEY", None)
    r = _run("--provider", "salum", env=env)
    assert r.returncode == 2 and "SALUM_API_KEY" in r.stderr and "Traceback" not in r.stderr
    r = _run("--provider", "fax", env=env)
    assert r.returncode == 2 and "unknown provider 'fax'" in r.stderr
    assert r.stderr.count("\n") == 1 and "Traceback" not in r.stderr


async def test_sms_worker_process_delivers_all_three_kinds_to_the_standin(
    redis_url: str, queue_name: str, tmp_path: Path
) -> None:
    async with SalumStandin(api_key=API_KEY, partner_id="42") as standin:
        env = dict(os.environ, REDIS_URL=redis_url, SALUM_API_URL=standin.url,
                   SALUM_API_KEY=API_KEY, SALUM_PARTNER_ID="42", SALUM_SHORTCODE="STREAMQ",
                   STREAMQ_LOG_FORMAT="json", PYTHONPATH=str(ROOT))
        log_path = tmp_path / "worker.log"
        async with Queue(queue_name, redis_url=redis_url, job_type=SMSJob) as q:
            await create_welcome_sms_job(recipient=Recipient(phone_number="0712345678"),
                                         user_name="Wanjiru", queue=q)
            await create_otp_sms_job(recipient="+254733111222", code="493817",
                                     expiry_minutes=5, queue=q)
            await create_notification_sms_job(recipient="+254722000111",
                                              message="Your order has shipped", queue=q)
            with open(log_path, "w") as log:
                proc = subprocess.Popen(
                    [sys.executable, "-m", "streamq.worker", "--provider", "salum",
                     "--queue", queue_name, "--rate-limit", "0"],
                    cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, text=True)
            try:
                await wait_until(lambda: len(standin.received) >= 3, timeout=20,
                                 message="three requests at the stand-in")
                await wait_until(lambda: _completed(q, 3), timeout=10)
            finally:
                proc.send_signal(signal.SIGTERM)
                code = proc.wait(timeout=20)
            assert code == 0
        bodies = [r.body or {} for r in standin.received]
        got = sorted((b["mobile"], b["message"]) for b in bodies)  # type: ignore[index]
        assert [m for m, _ in got] == ["254712345678", "254722000111", "254733111222"]
        texts = dict(got)
        assert "Wanjiru" in texts["254712345678"]
        assert "493817" in texts["254733111222"] and "5 minutes" in texts["254733111222"]
        assert texts["254722000111"] == "Your order has shipped"
        assert all(b["shortcode"] == "STREAMQ" and b["partnerID"] == "42" and b["clientsmsid"]
                   for b in bodies)
        logs = log_path.read_text()
        assert '"event": "worker.started"' in logs
        # no full number, no OTP code, no API key in any log line
        for secret in ("712345678", "733111222", "722000111", "493817", API_KEY):
            assert secret not in logs, secret
        assert re.search(r"\+2547\*\*\*\*\d{3}", logs)


async def _completed(q: Queue, n: int) -> bool:
    return (await q.counts())["completed"] == n


async def test_default_local_setup_starts_its_own_redis_and_says_so(
    queue_name: str, tmp_path: Path
) -> None:
    from streamq.devredis import free_port

    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("REDIS_")}
    env.update(STREAMQ_LOCAL_REDIS_PORT=str(port), STREAMQ_LOCAL_REDIS_DIR=str(tmp_path / "r"),
               PYTHONPATH=str(ROOT))
    log_path = tmp_path / "worker.log"
    with open(log_path, "w") as log:
        proc = subprocess.Popen([sys.executable, "-m", "streamq.worker", "--queue", queue_name],
                                cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, text=True)
    try:
        await wait_until(lambda: "worker.started" in log_path.read_text(), timeout=20)
        url = f"redis://127.0.0.1:{port}/0"
        async with Queue(queue_name, redis_url=url, job_type=SMSJob) as q:
            await create_otp_sms_job(recipient="0712345678", code="1234", queue=q)
            await wait_until(lambda: _completed(q, 1), timeout=10)
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0
    out = log_path.read_text()
    assert f"started a local redis-server on 127.0.0.1:{port}" in out
    assert "stopped the local redis-server" in out
    assert (tmp_path / "r" / "appendonlydir").exists()


def test_taken_metrics_port_is_a_one_line_error(redis_url: str) -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        env = dict(os.environ, REDIS_URL=redis_url)
        r = _run("--metrics-port", str(port), "--handler", "tests.test_worker_cli:noop", env=env)
    assert r.returncode == 2, r.stderr
    assert "Traceback" not in r.stderr and str(port) in r.stderr.strip().splitlines()[-1]


async def noop(job: object) -> None:
    return None
