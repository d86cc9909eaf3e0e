"""The broadcast examples of docs/sms-providers.md work as written: the three-terminal
walkthrough (stand-in, worker with --batch-size, 250 jobs and what the stand-in received)
and the snippet queueing a notification to several numbers."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from streamq import Queue
from streamq.devredis import RedisProcess, free_port, start_redis_server
from streamq.sms import close_sms_queue
from tests.support.pii import assert_no_pii
from tests.support.util import ROOT, background_shell, clean_env, wait_until

DOC = (ROOT / "docs" / "sms-providers.md").read_text()
SECTION = DOC[DOC.index("\n## Broadcasts"):]


@pytest.fixture
def server(tmp_path: Path) -> Iterator[RedisProcess]:
    with start_redis_server(directory=tmp_path / "redis") as proc:
        yield proc


def _walkthrough() -> list[str]:
    m = re.search(r"<!-- example: broadcast -->\n```bash\n(.*?)```", SECTION, re.S)
    assert m is not None
    commands: list[str] = []
    for line in m.group(1).splitlines():
        if line.startswith("#") or not line.strip():
            continue
        if commands and not line.startswith(("python ", "AT_", "curl ")):
            commands[-1] += "\n" + line  # the continuation of python -c '...'
        else:
            commands.append(line)
    return commands


@pytest.mark.timeout(120)
async def test_the_walkthrough_sends_250_jobs_in_three_requests(
    server: RedisProcess, tmp_path: Path
) -> None:
    standin_cmd, worker_cmd, jobs_cmd, curl_cmd = _walkthrough()
    assert "--batch-size 100" in worker_cmd and curl_cmd.startswith("curl ")
    python = f"{sys.executable} "
    api = str(free_port())  # 8090 may be taken
    standin_cmd, worker_cmd, jobs_cmd, curl_cmd = (
        c.replace("8090", api).replace("python ", python)
        for c in (standin_cmd, worker_cmd, jobs_cmd, curl_cmd))
    env = clean_env(REDIS_URL=server.url)
    standin_log, worker_log = tmp_path / "standin.log", tmp_path / "worker.log"
    with background_shell(standin_cmd, standin_log, env), background_shell(worker_cmd, worker_log, env):
        await wait_until(lambda: "listening on" in standin_log.read_text(), 30, 0.05, "stand-in")
        await wait_until(lambda: "worker.started" in worker_log.read_text(), 30, 0.05, "worker")
        made = subprocess.run(["bash", "-c", jobs_cmd], cwd=ROOT, env=env, capture_output=True,
                              text=True, timeout=60)
        assert made.returncode == 0, made.stderr
        assert made.stdout.strip() == "250 jobs"
        async with Queue("sms", redis_url=server.url) as q:
            await wait_until(lambda: _completed(q, 250), 60, 0.1, "250 completed")
        shown = subprocess.run(["bash", "-c", curl_cmd], cwd=ROOT, env=env, capture_output=True,
                               text=True, timeout=30)
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout.strip() == "[100, 100, 50]"
    assert len(re.findall(r"HTTP 200 statusCode=101 to=100 numbers key=bulk-\w+ chars=29",
                          standin_log.read_text())) == 2
    assert re.search(r"sms\.broadcast .*recipients=100 .*sent=100", worker_log.read_text())
    logs = standin_log.read_text() + worker_log.read_text()
    assert_no_pii(logs, ["Water supply resumes", "254712000001"], min_lines=5)


async def _completed(q: Queue, n: int) -> bool:
    return (await q.counts())["completed"] >= n


async def test_the_snippet_queues_one_job_per_number(
    server: RedisProcess, monkeypatch: pytest.MonkeyPatch
) -> None:
    [code] = [c for c in re.findall(r"```python\n(.*?)```", SECTION, re.S)
              if "create_notification_sms_jobs" in c]
    monkeypatch.setenv("REDIS_URL", server.url)
    monkeypatch.delenv("STREAMQ_SMS_QUEUE", raising=False)
    await close_sms_queue()
    scope: dict[str, Any] = {}
    try:
        compiled = compile(code, "docs/sms-providers.md", "exec",
                           flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT)
        await eval(compiled, scope)
        refs = scope["refs"]
        async with Queue("sms", redis_url=server.url) as q:
            assert (await q.counts())["waiting"] == len(refs) == 3
            numbers = []
            for ref in refs:
                payload = await q.job_payload(ref.job_id)
                assert payload is not None
                numbers.append(payload.data["recipient"]["phone_number"])
        assert numbers == ["+254712000001", "+254712000002", "+254712000003"]
    finally:
        await close_sms_queue()
