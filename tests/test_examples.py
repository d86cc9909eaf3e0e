"""Every script of examples/ run as a user runs it (a process of its own, the URL given with
--redis-url or REDIS_URL) against a private redis-server, checking what each one does:
jobs delivered, the provider's side of the story, the HTTP answers, a clean stop."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import aiohttp
import pytest

from streamq.devredis import RedisProcess, free_port, start_redis_server
from tests.support.util import ROOT, wait_until

EXAMPLES = ROOT / "examples"


@pytest.fixture(scope="module")
def server() -> Iterator[RedisProcess]:
    with start_redis_server() as proc:
        yield proc


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("REDIS_", "STREAMQ_", "SALUM_"))}
    env["PYTHONPATH"] = str(ROOT)
    env.update(extra)
    return env


@contextmanager
def background(argv: list[str], log: Path, *, env: dict[str, str], cwd: Path = ROOT
               ) -> Iterator[subprocess.Popen[bytes]]:
    """A long-running example (worker, stand-in, app), its output in ``log``; killed if
    the test leaves it running."""
    with open(log, "wb") as out:
        proc = subprocess.Popen(argv, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)


def stop(proc: subprocess.Popen[bytes], sig: int = signal.SIGINT) -> int:
    proc.send_signal(sig)
    return proc.wait(20)


def run_example(*argv: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, *argv], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=60)


async def wait_for_line(log: Path, text: str) -> None:
    await wait_until(lambda: text in log.read_text(errors="replace"), 20, 0.05, repr(text))


async def test_emails_worker_and_producer(server: RedisProcess, tmp_path: Path) -> None:
    log = tmp_path / "worker.log"
    with background([sys.executable, "examples/emails_worker.py", "--redis-url", server.url],
                    log, env=_env()) as worker:
        await wait_for_line(log, "worker ready")
        r = run_example("examples/emails_producer.py", "--count", "5",
                        env=_env(REDIS_URL=server.url))
        assert r.returncode == 0, r.stderr
        assert r.stdout.splitlines()[0] == "added 8 jobs to queue 'emails'; waiting for a worker"
        assert r.stdout.splitlines()[-1] == "completed 7, failed 1, of 8"
        assert r.stdout.count(": completed after 1 attempt(s)") == 7
        assert "failed after 1 attempt(s) (no recipient)" in r.stdout
        assert stop(worker) == 0
    out = log.read_text()
    for i in range(5):
        assert f"to user{i}@example.com: 'Hello #{i}'" in out
    assert "to ops@example.com" in out and "to later@example.com: 'Reminder'" in out
    assert out.count("sent email ") == 7 and "dead letter" in out and ": no recipient" in out
    assert out.rstrip().endswith("worker stopped after 8 jobs")


async def test_emails_handler_under_the_worker_command_line(
    server: RedisProcess, tmp_path: Path
) -> None:
    log = tmp_path / "worker.log"
    url = server.url.replace("/0", "/1")  # a queue of the same name, another database
    argv = [sys.executable, "-m", "streamq.worker", "--queue", "emails",
            "--handler", "emails_worker:send_email", "--rate-limit", "0", "--log-format", "json"]
    with background(argv, log, env=_env(REDIS_URL=url), cwd=EXAMPLES) as worker:
        await wait_for_line(log, "worker.started")
        r = run_example("examples/emails_producer.py", "--redis-url", url, env=_env())
        assert r.returncode == 0, r.stderr
        assert r.stdout.splitlines()[-1] == "completed 7, failed 1, of 8"
        assert stop(worker, signal.SIGTERM) == 0
    assert log.read_text().count("sent email ") == 7


async def test_sms_worker_and_producer_with_the_mock(server: RedisProcess, tmp_path: Path) -> None:
    log = tmp_path / "worker.log"
    with background([sys.executable, "examples/sms_worker.py", "--queue", "ex-mock"], log,
                    env=_env(REDIS_URL=server.url)) as worker:
        await wait_for_line(log, "SMS worker ready")
        r = run_example("examples/sms_producer.py", "--queue", "ex-mock", "--redis-url",
                        server.url, env=_env())
        assert r.returncode == 0, r.stderr
        assert "refused at creation: invalid phone number" in r.stdout
        for kind in ("welcome", "otp", "notification"):
            assert any(ln.startswith(f"{kind} job ") and ln.endswith(": completed")
                       for ln in r.stdout.splitlines()), (kind, r.stdout)
        assert stop(worker) == 0
    out = log.read_text()
    assert out.count("via mock (message id ") == 3
    assert "[mock sms] to +2547****678: Welcome Wanjiru!" in out
    assert "0712345678" not in out and "254712345678" not in out


async def test_sms_worker_and_producer_through_the_salum_standin(
    server: RedisProcess, tmp_path: Path
) -> None:
    port = free_port()
    standin_log, worker_log = tmp_path / "standin.log", tmp_path / "worker.log"
    standin_argv = [sys.executable, "-m", "streamq.sms.standin", "--port", str(port),
                    "--api-key", "dev-key", "--partner-id", "1"]
    api = f"http://127.0.0.1:{port}/api/services/sendsms/"
    salum = _env(REDIS_URL=server.url, SALUM_API_URL=api, SALUM_API_KEY="dev-key",
                 SALUM_PARTNER_ID="1", SALUM_SHORTCODE="STREAMQ")
    with background(standin_argv, standin_log, env=_env()) as standin:
        await wait_for_line(standin_log, "listening on")
        with background([sys.executable, "examples/sms_worker.py", "--provider", "salum",
                         "--queue", "ex-salum"], worker_log, env=salum) as worker:
            await wait_for_line(worker_log, "SMS worker ready")
            r = run_example("examples/sms_producer.py", "--queue", "ex-salum",
                            env=_env(REDIS_URL=server.url))
            assert r.returncode == 0, r.stderr
            assert r.stdout.count(": completed") == 3
            async with aiohttp.ClientSession() as http, \
                    http.get(f"http://127.0.0.1:{port}/_standin/received") as resp:
                received = await resp.json()
            assert stop(worker) == 0
        assert stop(standin) == 0
    job_ids = {ln.split()[2].rstrip(":") for ln in r.stdout.splitlines() if " job " in ln}
    assert {req["body"]["clientsmsid"] for req in received} == job_ids
    assert [(req["status"], req["code"]) for req in received] == [(200, 200)] * 3
    assert {req["body"]["mobile"] for req in received} == {"2547****678", "2547****222",
                                                           "2547****111"}
    assert standin_log.read_text().count("HTTP 200 code=200 (Success)") == 3
    assert worker_log.read_text().count("via salum (message id ") == 3


async def test_aiohttp_app_creates_jobs_and_runs_its_worker(
    server: RedisProcess, tmp_path: Path
) -> None:
    port = free_port()
    log = tmp_path / "app.log"
    base = f"http://127.0.0.1:{port}"
    argv = [sys.executable, "examples/aiohttp_app.py", "--port", str(port), "--redis-url",
            server.url]
    with background(argv, log, env=_env()) as app:
        await wait_for_line(log, json.dumps({"listening": base}))
        async with aiohttp.ClientSession() as http:
            async with http.post(base + "/signup",
                                 json={"phone": "0712345678", "name": "Wanjiru"}) as resp:
                assert resp.status == 202
                job_id = (await resp.json())["job_id"]
            async with http.post(base + "/signup", json={"phone": "12", "name": "x"}) as resp:
                assert resp.status == 400
                assert "invalid phone number '**'" in (await resp.json())["error"]

            async def state() -> str | None:
                async with http.get(f"{base}/jobs/{job_id}") as r:
                    doc = await r.json()
                return doc["state"] if doc["state"] == "completed" else None

            await wait_until(state, 20, 0.05, "the signup SMS")
            async with http.get(f"{base}/jobs/nope") as resp:
                assert resp.status == 404
        assert stop(app, signal.SIGTERM) == 0
    out = log.read_text()
    assert "[mock sms] to +2547****678: Welcome Wanjiru!" in out
    assert "worker.stopped" in out and "Traceback" not in out
