"""What a newcomer sees from ``python -m streamq.worker``: one-line errors naming the
setting, --version and the program name, the start line (masked Redis URL, provider and
endpoint, paused or not), the hint when redis-server is missing, per-job debug lines and
what a graceful or forced stop says."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from streamq import JobOptions, Queue
from streamq.devredis import RedisProcess, free_port, start_redis_server
from streamq.worker.__main__ import NUMBERS
from tests.support.util import ROOT, wait_until

BIN = Path(sys.executable).parent


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("REDIS_", "STREAMQ_", "SALUM_"))}
    env["PYTHONPATH"] = str(ROOT)
    env.update(extra)
    return env


def _run(*args: str, env: dict[str, str], timeout: float = 20) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "streamq.worker", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=timeout)


def _one_line(r: subprocess.CompletedProcess[str]) -> str:
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert r.returncode == 2, r
    assert len(lines) == 1 and "Traceback" not in r.stderr, r.stderr
    return lines[0]


# -- one-line errors -----------------------------------------------------------------------------
@pytest.mark.parametrize("var", sorted(v[0] for v in NUMBERS.values()))
def test_every_numeric_setting_names_its_variable(var: str, redis_url: str) -> None:
    line = _one_line(_run(env=_env(REDIS_URL=redis_url, **{var: "abc"})))
    assert line.startswith(f"streamq worker: {var}='abc': must be a"), line


@pytest.mark.parametrize("var,value", [("STREAMQ_CONCURRENCY", "0"), ("STREAMQ_RATE_LIMIT", "-1"),
                                       ("STREAMQ_VISIBILITY_TIMEOUT", "0"),
                                       ("STREAMQ_METRICS_PORT", "70000"),
                                       ("STREAMQ_LOCAL_REDIS_PORT", "six"),
                                       ("STREAMQ_LOG_LEVEL", "verbose"),
                                       ("STREAMQ_PROVIDER", "fax")])
def test_out_of_range_settings_name_their_variable(var: str, value: str) -> None:
    # no Redis location: the local port is read too (and must fail before any start-up)
    line = _one_line(_run(env=_env(**{var: value})))
    assert f"{var}='{value}'" in line, line


def test_a_bad_flag_names_the_flag(redis_url: str) -> None:
    r = _run("--concurrency", "abc", env=_env(REDIS_URL=redis_url))
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert "argument --concurrency: must be a whole number >= 1, got 'abc'" in r.stderr


def test_a_database_that_is_not_a_number_is_refused(redis_proc: RedisProcess) -> None:
    base = f"redis://127.0.0.1:{redis_proc.port}"
    line = _one_line(_run(env=_env(REDIS_URL=f"{base}/notadb")))
    assert "REDIS_URL: the database must be a number" in line and "'notadb'" in line
    line = _one_line(_run("--redis-url", f"{base}/x1", env=_env()))
    assert "--redis-url: the database must be a number" in line




def test_the_library_and_the_operator_cli_refuse_a_database_that_is_not_a_number(
    redis_proc: RedisProcess,
) -> None:
    from streamq.errors import ConfigError

    base = f"redis://127.0.0.1:{redis_proc.port}"
    for bad in (f"{base}/notadb", f"{base}/0?db=x", "redis://127.0.0.1:notaport/0"):
        with pytest.raises(ConfigError, match="redis_url"):
            Queue("q", redis_url=bad)
    for good in (f"{base}/3", f"{base}", f"{base}/", "unix:///tmp/redis.sock?db=2"):
        assert Queue("q", redis_url=good).redis_url == good
    r = subprocess.run([sys.executable, "-m", "streamq", "stats", "--redis-url", f"{base}/nodb"],
                       cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=20)
    assert r.returncode == 2 and r.stderr.strip() == ("streamq: --redis-url: the database must "
                                                      "be a number (e.g. redis://127.0.0.1:6379/0), "
                                                      "not 'nodb'"), r.stderr
    r = subprocess.run([sys.executable, "-m", "streamq", "stats", "--redis-url", f"{base}/77"],
                       cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=20)
    assert r.returncode == 2 and "has no such database" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1, r.stderr


def test_missing_redis_server_says_the_auto_start_was_skipped(tmp_path: Path) -> None:
    port = free_port()  # nothing answers there
    env = _env(PATH=str(tmp_path), STREAMQ_LOCAL_REDIS_PORT=str(port))
    line = _one_line(_run(env=env))
    assert f"no Redis answered at redis://127.0.0.1:{port}/0" in line
    assert "redis-server is not installed, so the local auto-start was skipped" in line
    assert "apt-get install redis-server" in line and "REDIS_URL" in line


# -- version and program names ------------------------------------------------------------------
def test_version_and_program_names() -> None:
    import streamq

    r = _run("--version", env=_env())
    assert r.returncode == 0 and r.stdout.startswith(f"streamq {streamq.__version__} ("), r
    assert "python -m streamq.worker" in r.stdout
    r = subprocess.run([sys.executable, "-m", "streamq", "--version"], cwd=ROOT, env=_env(),
                       capture_output=True, text=True, timeout=20)
    assert r.returncode == 0 and f"streamq {streamq.__version__} (python -m streamq," in r.stdout
    for script in ("streamq-worker", "streamq"):
        path = BIN / script
        assert path.exists(), f"{script} is not installed next to {sys.executable}"
        r = subprocess.run([str(path), "--help"], env=_env(), capture_output=True, text=True,
                           timeout=20)
        assert r.returncode == 0 and r.stdout.startswith(f"usage: {script} "), r.stdout[:200]
        r = subprocess.run([str(path), "--version"], env=_env(), capture_output=True, text=True,
                           timeout=20)
        assert r.stdout.strip().startswith(f"streamq {streamq.__version__} ({script},"), r


# -- the start line, paused queues, the production warning --------------------------------------
@contextmanager
def worker_process(*args: str, env: dict[str, str], log: Path
                   ) -> Iterator[subprocess.Popen[bytes]]:
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "streamq.worker", "--log-format", "json",
                                 *args], cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)


def events(log: Path) -> list[dict[str, Any]]:
    out = []
    for line in log.read_text().splitlines():
        if line.startswith("{"):
            out.append(json.loads(line))
    return out


def named(log: Path, name: str) -> list[dict[str, Any]]:
    return [e for e in events(log) if e.get("event") == name]


@pytest.fixture
def password_redis(tmp_path: Path) -> Iterator[RedisProcess]:
    import redis

    with start_redis_server(directory=tmp_path / "redis") as proc:
        boot = redis.Redis(port=proc.port)
        boot.config_set("requirepass", "s3cret-PW")
        boot.close()
        yield proc


def test_a_database_out_of_range_is_one_line(password_redis: RedisProcess) -> None:
    port = password_redis.port
    line = _one_line(_run(env=_env(REDIS_URL=f"redis://:s3cret-PW@127.0.0.1:{port}/99")))
    assert f"Redis at redis://***@127.0.0.1:{port}/99 has no such database" in line
    assert "s3cret-PW" not in line


async def test_start_line_masks_the_password_and_tells_a_paused_queue(
    password_redis: RedisProcess, queue_name: str, tmp_path: Path
) -> None:
    url = f"redis://:s3cret-PW@127.0.0.1:{password_redis.port}/0"
    log = tmp_path / "worker.log"
    async with Queue(queue_name, redis_url=url) as q:
        await q.pause()
        with worker_process("--queue", queue_name, env=_env(REDIS_URL=url), log=log) as proc:
            await wait_until(lambda: named(log, "queue.paused"), 20, 0.05, "the paused warning")
            started = named(log, "worker.started")[0]
            assert started["redis"] == f"redis://***@127.0.0.1:{password_redis.port}/0"
            assert started["provider"] == "mock" and started["paused"] is True
            assert "the mock sends nothing" in started["endpoint"]
            assert f"python -m streamq resume --queue {queue_name}" in named(
                log, "queue.paused")[0]["note"]
            await q.resume()
            await wait_until(lambda: named(log, "queue.resumed"), 10, 0.05, "the resumed line")
            proc.send_signal(signal.SIGTERM)
            proc.wait(15)
    assert proc.returncode == 0
    assert "s3cret-PW" not in log.read_text()


async def test_salum_without_an_api_url_warns_that_it_targets_production(
    redis_url: str, queue_name: str, tmp_path: Path
) -> None:
    log = tmp_path / "worker.log"
    env = _env(REDIS_URL=redis_url, SALUM_API_KEY="k-1", SALUM_PARTNER_ID="1",
               SALUM_SHORTCODE="STREAMQ")
    async with Queue(queue_name, redis_url=redis_url) as q:
        await q.pause()  # nothing can be sent for real, whatever happens
        with worker_process("--queue", queue_name, "--provider", "salum", env=env, log=log) as proc:
            await wait_until(lambda: named(log, "worker.started"), 20, 0.05, "the start line")
            started = named(log, "worker.started")[0]
            assert started["provider"] == "salum"
            assert started["endpoint"] == "https://sms.salum.co.ke/api/services/sendsms/"
            warning = named(log, "provider.production")
            assert warning and warning[0]["level"] == "warning"
            assert "REAL SMS" in warning[0]["note"] and "SALUM_API_URL" in warning[0]["note"]
            proc.send_signal(signal.SIGTERM)
            proc.wait(15)
        # with the stand-in's URL: the endpoint is shown, and no production warning
        log2 = tmp_path / "worker2.log"
        env["SALUM_API_URL"] = "http://user:pw@127.0.0.1:9/api/services/sendsms/?key=x"
        with worker_process("--queue", queue_name, "--provider", "salum", env=env, log=log2) as p2:
            await wait_until(lambda: named(log2, "worker.started"), 20, 0.05, "the start line")
            assert named(log2, "worker.started")[0]["endpoint"] == \
                "http://127.0.0.1:9/api/services/sendsms/"
            assert not named(log2, "provider.production")
            p2.send_signal(signal.SIGTERM)
            p2.wait(15)


# -- per-job lines and shutdown -------------------------------------------------------------------
async def test_debug_logs_a_start_and_a_finish_line_per_job(
    redis_url: str, queue_name: str, tmp_path: Path
) -> None:
    log = tmp_path / "worker.log"
    async with Queue(queue_name, redis_url=redis_url) as q:
        await q.add({"ok": True}, JobOptions(job_id="good-1"))
        await q.add({"ok": False}, JobOptions(job_id="bad-1"))
        await q.add({"ok": "retry"}, JobOptions(job_id="again-1", attempts=2, backoff=0.05))
        with worker_process("--queue", queue_name, "--handler", "tests.support.jobs:check",
                            "--log-level", "debug", env=_env(REDIS_URL=redis_url), log=log) as p:
            await wait_until(lambda: len(named(log, "job.finished")) >= 4, 20, 0.05,
                             "four finish lines")
            p.send_signal(signal.SIGTERM)
            p.wait(15)
    started = {(e["job_id"], e["attempt"]) for e in named(log, "job.started")}
    assert started == {("good-1", 1), ("bad-1", 1), ("again-1", 1), ("again-1", 2)}
    finished = {(e["job_id"], e["attempt"]): e for e in named(log, "job.finished")}
    assert finished["good-1", 1]["outcome"] == "completed"
    assert finished["bad-1", 1]["outcome"] == "dead"
    assert finished["bad-1", 1]["error"] == "not ok"
    assert finished["again-1", 1]["outcome"] == "retrying"
    assert finished["again-1", 1]["retry_in_s"] == 0.05
    assert finished["again-1", 2]["outcome"] == "completed"
    assert all(e["level"] == "debug" and e["duration_s"] >= 0 and e["queue"] == queue_name
               for e in finished.values())


async def test_info_level_has_no_per_job_lines(
    redis_url: str, queue_name: str, tmp_path: Path
) -> None:
    log = tmp_path / "worker.log"
    async with Queue(queue_name, redis_url=redis_url) as q:
        await q.add({"ok": True})
        with worker_process("--queue", queue_name, "--handler", "tests.support.jobs:check",
                            env=_env(REDIS_URL=redis_url), log=log) as p:
            await wait_until(lambda: _completed(q), 20, 0.05, "the job")
            p.send_signal(signal.SIGTERM)
            p.wait(15)
    assert named(log, "worker.started") and not named(log, "job.started")
    assert not named(log, "job.finished")


async def _completed(q: Queue) -> bool:
    return (await q.counts())["completed"] >= 1


async def test_shutdown_says_what_it_waits_for_and_a_second_signal_is_a_forced_stop(
    redis_url: str, queue_name: str, tmp_path: Path
) -> None:
    log = tmp_path / "worker.log"
    async with Queue(queue_name, redis_url=redis_url) as q:
        await q.add({"ok": "hang"}, JobOptions(job_id="long-1"))
        with worker_process("--queue", queue_name, "--handler", "tests.support.jobs:check",
                            "--log-level", "debug", "--shutdown-grace", "60",
                            env=_env(REDIS_URL=redis_url), log=log) as p:
            await wait_until(lambda: named(log, "job.started"), 20, 0.05, "the long job to start")
            p.send_signal(signal.SIGTERM)
            await wait_until(lambda: named(log, "worker.stopping"), 10, 0.05, "the stopping line")
            first = named(log, "worker.signal")[0]
            assert "again" in first["note"] and first["grace_s"] == 60
            stopping = named(log, "worker.stopping")[0]
            assert stopping["waiting_for"] == 1 and stopping["grace_s"] == 60
            p.send_signal(signal.SIGTERM)
            p.wait(15)
        assert p.returncode == 0
        forced = named(log, "worker.forced_stop")
        assert forced and forced[0]["cut"] == 1
        assert not named(log, "worker.grace_expired")
        info = await q.get_job("long-1")
        assert info is not None and info.state.value == "waiting"  # handed back, runs again


async def test_an_expired_grace_period_is_logged_as_such(
    redis_url: str, queue_name: str, tmp_path: Path
) -> None:
    log = tmp_path / "worker.log"
    async with Queue(queue_name, redis_url=redis_url) as q:
        await q.add({"ok": "hang"})
        with worker_process("--queue", queue_name, "--handler", "tests.support.jobs:check",
                            "--log-level", "debug", "--shutdown-grace", "0.2",
                            env=_env(REDIS_URL=redis_url), log=log) as p:
            await wait_until(lambda: named(log, "job.started"), 20, 0.05, "the job to start")
            p.send_signal(signal.SIGTERM)
            p.wait(15)
        assert p.returncode == 0
        expired = named(log, "worker.grace_expired")
        assert expired and expired[0]["cut"] == 1 and expired[0]["grace_s"] == 0.2
        assert not named(log, "worker.forced_stop")


async def test_a_paused_queue_is_said_again_while_it_stays_paused(
    redis_url: str, queue_name: str
) -> None:
    import structlog.testing

    from streamq import Worker
    from tests.support.util import running

    async def never(job: object) -> None:
        raise AssertionError("a paused queue ran a job")

    with structlog.testing.capture_logs() as logs:
        async with Queue(queue_name, redis_url=redis_url) as q:
            await q.pause()
            await q.add({"ok": True})
            worker = Worker(q, never, rate_limit=None)
            worker.paused_log_interval = 0.05  # the default is a minute
            async with running(worker):
                await wait_until(lambda: [e["event"] for e in logs].count("queue.paused") >= 2,
                                 15, 0.05, "a second reminder")
                started = next(e for e in logs if e["event"] == "worker.started")
                assert started["paused"] is True
                assert (await q.counts())["waiting"] == 1  # and nothing ran
    reminders = [e for e in logs if e["event"] == "queue.paused"]
    assert reminders[0]["paused_for_s"] == 0 and reminders[0]["log_level"] == "warning"
