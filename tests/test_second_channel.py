"""A second notification channel (email) on the engine, with no engine change.

The channel is defined right here: its own tagged union, its own queue and handler,
run in-process and through ``python -m streamq.worker --handler``.
"""

from __future__ import annotations

import ast
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Literal

import msgspec
import pytest

from streamq import Job, JobOptions, PayloadError, PermanentError, Queue, Worker
from tests.support.util import ROOT, running, wait_until


class WelcomeEmail(msgspec.Struct, tag="welcome", tag_field="type"):
    to: str
    name: str


class ResetEmail(msgspec.Struct, tag="reset", tag_field="type"):
    to: str
    link: str


EmailJob = WelcomeEmail | ResetEmail
OUTBOX = Path(os.environ.get("EMAIL_OUTBOX", "/nonexistent"))


def render(job: EmailJob) -> tuple[str, str]:
    match job:
        case WelcomeEmail(to=to, name=name):
            return to, f"Welcome, {name}!"
        case ResetEmail(to=to, link=link):
            if not link.startswith("https://"):
                raise PermanentError("reset link must be https")
            return to, f"Reset your password: {link}"


async def handle_email(job: Job) -> Literal["sent"]:
    to, body = render(job.data)
    with OUTBOX.open("a") as f:
        f.write(f"{job.data.__struct_config__.tag} {to} {body}\n")
    return "sent"


def test_engine_modules_do_not_import_the_sms_domain() -> None:
    for path in (ROOT / "streamq").rglob("*.py"):
        rel = path.relative_to(ROOT / "streamq")
        if rel.parts[0] == "sms" or rel == Path("worker/__main__.py"):
            continue  # the domain itself, and the one place that wires it in
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom):
                mod = node.module or ""
                assert "sms" not in mod.split("."), f"{rel} imports {mod}"


async def test_email_queue_with_its_own_union_and_handler(
    redis_url: str, queue_name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    outbox = tmp_path / "outbox.txt"
    monkeypatch.setattr(sys.modules[__name__], "OUTBOX", outbox)
    async with Queue(queue_name, redis_url=redis_url, job_type=EmailJob) as q:
        await q.add(WelcomeEmail(to="amina@example.com", name="Amina"))
        bad = await q.add(ResetEmail(to="amina@example.com", link="http://x"))
        await q.add(ResetEmail(to="amina@example.com", link="https://x/r"),
                    JobOptions(priority="high"))
        with pytest.raises(PayloadError):
            await q.add({"type": "fax", "to": "x"})
        async with running(Worker(q, handle_email, rate_limit=None)):
            await wait_until(lambda: (_n(q, "completed", 2)))
            await wait_until(lambda: (_n(q, "failed", 1)))
        lines = outbox.read_text().splitlines()
        assert sorted(lines) == ["reset amina@example.com Reset your password: https://x/r",
                                 "welcome amina@example.com Welcome, Amina!"]
        info = await q.get_job(bad.job_id)
        assert info is not None and info.error == "reset link must be https"
        assert info.job_type == "reset"


async def _n(q: Queue, state: str, n: int) -> bool:
    return (await q.counts())[state] == n


async def test_email_worker_from_the_command_line(
    redis_url: str, queue_name: str, tmp_path: Path
) -> None:
    outbox = tmp_path / "outbox.txt"
    env = dict(os.environ, REDIS_URL=redis_url, EMAIL_OUTBOX=str(outbox), PYTHONPATH=str(ROOT))
    async with Queue(queue_name, redis_url=redis_url, job_type=EmailJob) as q:
        await q.add(WelcomeEmail(to="juma@example.com", name="Juma"))
        proc = subprocess.Popen(
            [sys.executable, "-m", "streamq.worker", "--queue", queue_name, "--handler",
             "tests.test_second_channel:handle_email", "--job-type",
             "tests.test_second_channel:EmailJob"],
            cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            await wait_until(lambda: _n(q, "completed", 1), timeout=20)
        finally:
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(timeout=20) == 0
    assert outbox.read_text() == "welcome juma@example.com Welcome, Juma!\n"
