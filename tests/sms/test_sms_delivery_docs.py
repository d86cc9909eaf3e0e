"""The delivery-report examples of docs/sms-providers.md work as written: the three-terminal
walkthrough (stand-in, worker, a job and ``python -m streamq job``) and the snippet that
mounts the endpoint into an aiohttp application."""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from streamq.devredis import RedisProcess, free_port, start_redis_server
from streamq.sms import close_sms_queue
from tests.support.pii import assert_no_pii
from tests.support.util import ROOT, background_shell, clean_env, wait_until

DOC = (ROOT / "docs" / "sms-providers.md").read_text()
SECTION = DOC[DOC.index("\n## Delivery reports\n"):DOC.index("\n## Broadcasts")]



@pytest.fixture
def server(tmp_path: Path) -> Iterator[RedisProcess]:
    with start_redis_server(directory=tmp_path / "redis") as proc:
        yield proc



def _walkthrough() -> list[str]:
    m = re.search(r"<!-- example: delivery -->\n```bash\n(.*?)```", SECTION, re.S)
    assert m is not None
    commands: list[str] = []
    for line in m.group(1).splitlines():
        if line.startswith("#") or not line.strip():
            continue
        if commands and not line.startswith(("export ", "python ", "AT_", "JOB=")):
            commands[-1] += "\n" + line  # the continuation of JOB=$(python -c '...')
        else:
            commands.append(line)
    return commands


@pytest.mark.timeout(120)
async def test_the_walkthrough_runs_as_written(server: RedisProcess, tmp_path: Path) -> None:
    export, standin_cmd, worker_cmd, job_cmd, show_cmd = _walkthrough()
    assert export.startswith("export AT_DELIVERY_SECRET=$(python -c")
    python = f"{sys.executable} "
    secret = subprocess.run(["bash", "-c", f"{export.replace('python ', python)}\n"
                             "echo $AT_DELIVERY_SECRET"], capture_output=True, text=True,
                            check=True).stdout.strip()
    assert len(secret) >= 40
    api, endpoint = str(free_port()), str(free_port())  # 8090 and 8095 may be taken
    standin_cmd, worker_cmd = (
        c.replace("8090", api).replace("8095", endpoint).replace("python ", python)
        for c in (standin_cmd, worker_cmd))
    env = clean_env(REDIS_URL=server.url, AT_DELIVERY_SECRET=secret)
    standin_log, worker_log = tmp_path / "standin.log", tmp_path / "worker.log"
    with background_shell(standin_cmd, standin_log, env), background_shell(worker_cmd, worker_log, env):
        await wait_until(lambda: "listening on" in standin_log.read_text(), 30, 0.05, "stand-in")
        await wait_until(lambda: "worker.started" in worker_log.read_text(), 30, 0.05, "worker")
        shell = f"{job_cmd.replace('python ', python)}\necho $JOB"
        job = subprocess.run(["bash", "-c", shell], cwd=ROOT, env=env, capture_output=True,
                             text=True, timeout=60)
        assert job.returncode == 0, job.stderr
        job_id = job.stdout.split()[-1]
        await wait_until(lambda: "delivery report Success" in standin_log.read_text(), 30, 0.05,
                         "the stand-in's callback")
        show = show_cmd.replace("$JOB", job_id).replace("python ", python)
        shown = subprocess.run(["bash", "-c", show], cwd=ROOT, env=env, capture_output=True,
                               text=True, timeout=30)
    assert shown.returncode == 0, shown.stderr
    [row] = [ln for ln in shown.stdout.splitlines() if ln.startswith("delivery ")]
    assert '"status":"Success"' in row and '"network_code":"63902"' in row
    # what the page says the stand-in and the worker print
    assert re.search(r"delivery report Success for ATXid_\w+ to=\+2547\*\*\*\*678 -> HTTP 200 "
                     r"\(retryCount 0\)", standin_log.read_text())
    assert "sms.delivery_report" in worker_log.read_text()
    logs = standin_log.read_text() + worker_log.read_text() + shown.stdout
    assert_no_pii(logs, [secret, "254712345678"], min_lines=5)


async def test_the_mounting_snippet_serves_the_endpoint(
    server: RedisProcess, monkeypatch: pytest.MonkeyPatch
) -> None:
    code = re.findall(r"```python\n(.*?)```", SECTION, re.S)[0]
    secret = "mounted-Secret_0123456789abcdef"
    monkeypatch.setenv("AT_DELIVERY_SECRET", secret)
    monkeypatch.setenv("REDIS_URL", server.url)
    monkeypatch.delenv("STREAMQ_SMS_QUEUE", raising=False)
    await close_sms_queue()
    scope: dict[str, Any] = {}
    exec(compile(code, "docs/sms-providers.md", "exec"), scope)
    runner = web.AppRunner(scope["app"], access_log=None)
    await runner.setup()
    port = free_port()
    try:
        await web.TCPSite(runner, "127.0.0.1", port).start()
        url = f"http://127.0.0.1:{port}/sms/delivery/{secret}"
        async with aiohttp.ClientSession() as http:
            async with http.post(url, data={"id": "ATXid_nobody", "status": "Success"}) as r:
                assert (r.status, await r.json()) == (404, {"error": "unknown message id"})
            async with http.post(url, data={"status": "Success"}) as r:
                assert r.status == 400
            async with http.post(url + "x", data={"id": "a", "status": "Success"}) as r:
                assert r.status == 404
    finally:
        await runner.cleanup()
        await close_sms_queue()
