"""The README as a newcomer uses it: its snippets run as written (the engine script, the
OTP walkthrough with its stand-in, worker and asyncio REPL), and every setting the code
reads is in its settings table and in ``--help``."""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from streamq.cli.env import SETTINGS
from streamq.devredis import RedisProcess, free_port, start_redis_server
from tests.support.util import ROOT, background_shell, clean_env, wait_until

README = (ROOT / "README.md").read_text()
ENV_NAME = re.compile(r"[\"']((?:REDIS|STREAMQ|SALUM)_[A-Z][A-Z_]*)[\"']")


def section(title: str) -> str:
    start = README.index(f"\n## {title}\n")
    end = README.find("\n## ", start + 1)
    return README[start:end if end > 0 else None]


def blocks(text: str, lang: str) -> list[str]:
    return re.findall(rf"```{lang}\n(.*?)```", text, re.S)



@pytest.fixture
def server(tmp_path: Path) -> Iterator[RedisProcess]:
    with start_redis_server(directory=tmp_path / "redis") as proc:
        yield proc


# -- settings -------------------------------------------------------------------------------
def test_every_setting_the_code_reads_is_in_the_table_the_readme_and_the_help() -> None:
    read: set[str] = set()
    for path in (ROOT / "streamq").rglob("*.py"):
        if path.name == "env.py" and path.parent.name == "cli":
            continue  # the table itself
        read |= set(ENV_NAME.findall(path.read_text()))
    assert len(read) >= 30, read  # the scan works
    documented = {s.name for s in SETTINGS}
    assert read <= documented, f"read but not documented: {sorted(read - documented)}"
    table = section("Settings")
    help_text = subprocess.run([sys.executable, "-m", "streamq.worker", "--help"], cwd=ROOT,
                               env=clean_env(), capture_output=True, text=True, timeout=20).stdout
    for name in documented:
        assert f"| `{name}` |" in table, name
        assert re.search(rf"^\s+{name}\s", help_text, re.M), name


# -- the engine snippet ---------------------------------------------------------------------------
def test_the_engine_snippet_runs_as_a_script(server: RedisProcess, tmp_path: Path) -> None:
    code = blocks(section("Using the engine"), "python")[0]  # the first; subsections follow
    script = tmp_path / "emails.py"
    script.write_text(code)
    r = subprocess.run([sys.executable, str(script)], cwd=tmp_path,
                       env=clean_env(REDIS_URL=server.url), capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert "'waiting': 2" in lines[0] and "'delayed': 1" in lines[0], lines[0]
    assert lines.index("sent to b@example.com") < lines.index("sent to a@example.com")
    assert any(re.fullmatch(r"dead letter: \w+ no recipient", ln) for ln in lines), lines
    assert "state=<JobState.COMPLETED: 'completed'>" in lines[-1], lines[-1]


# -- the OTP walkthrough ---------------------------------------------------------------------------
async def test_the_otp_walkthrough_works_as_written(server: RedisProcess, tmp_path: Path) -> None:
    [shell] = blocks(section("Enqueue an OTP from a Python shell and watch it delivered"), "bash")
    shell = shell.replace("\\\n", " ")
    commands = [ln for ln in shell.splitlines() if ln.strip() and not ln.startswith(("#", ">>>"))]
    standin_cmd, worker_cmd, repl_cmd, expected = commands
    assert repl_cmd == "python -m asyncio"
    repl = [ln[4:] for ln in shell.splitlines() if ln.startswith(">>> ")]
    port = str(free_port())  # the walkthrough's 8089 may be taken on a shared machine
    standin_cmd, worker_cmd = (c.replace("8089", port).replace("python ", f"{sys.executable} ", 1)
                               for c in (standin_cmd, worker_cmd))
    env = clean_env(REDIS_URL=server.url)
    standin_log, worker_log = tmp_path / "standin.log", tmp_path / "worker.log"
    with background_shell(standin_cmd, standin_log, env), background_shell(worker_cmd, worker_log, env):
        await wait_until(lambda: "listening on" in standin_log.read_text(), 20, 0.05, "stand-in")
        await wait_until(lambda: "worker.started" in worker_log.read_text(), 20, 0.05, "worker")
        r = subprocess.run([sys.executable, "-m", "asyncio"], input="\n".join(repl) + "\n",
                           cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
        printed = re.search(r"JobRef\(job_id='(\w+)', queue_name='sms'\)", r.stdout)
        assert printed and expected.startswith("JobRef(job_id="), (r.stdout, r.stderr)
        await wait_until(lambda: "HTTP 200 code=200 (Success)" in standin_log.read_text(), 20,
                         0.05, "the OTP at the stand-in")
    assert f"clientsmsid={printed.group(1)}" in standin_log.read_text()
    assert "sms.sent" in worker_log.read_text() and "123456" not in worker_log.read_text()
