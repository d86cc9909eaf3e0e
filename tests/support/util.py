"""Test helpers: poll with a deadline (never fixed sleeps), run a worker for a block."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any

import anyio

from streamq import Worker

ROOT = Path(__file__).resolve().parents[2]
# Deadlines are for a quiet machine; a loaded one (CI on 2 shared cores) gets this factor
# more. Only a failing wait lasts longer: a passing one returns as soon as it holds.
SLACK = float(os.environ.get("STREAMQ_TEST_SLACK", "3"))


async def wait_until(
    predicate: Callable[[], Any | Awaitable[Any]], timeout: float = 10.0, interval: float = 0.01,
    message: str = "condition",
) -> Any:
    timeout *= SLACK
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if isinstance(value, Awaitable):
            value = await value
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {message}")
        await anyio.sleep(interval)


@asynccontextmanager
async def running(worker: Worker) -> AsyncIterator[Worker]:
    async with anyio.create_task_group() as tg:
        tg.start_soon(worker.run)
        try:
            yield worker
        finally:
            await worker.close()


def spawn_ledger_worker(redis_url: str, queue: str, ledger: Path, *args: str
                        ) -> subprocess.Popen[str]:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    errlog = Path(ledger) / f"worker-{time.monotonic_ns()}.err"
    with open(errlog, "w") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "tests.support.ledger_worker", "--redis-url", redis_url,
             "--queue", queue, "--ledger", str(ledger), *args],
            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=err, text=True,
        )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    proc.stdout.close()
    if line.strip() != "ready":
        proc.kill()
        proc.wait()
        raise AssertionError(f"worker did not start: {line!r} {errlog.read_text()}")
    return proc


def clean_env(**extra: str) -> dict[str, str]:
    """This process's environment without streamq's own settings (a walkthrough in the
    docs runs as a newcomer's shell would), with the checkout importable, plus ``extra``."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("REDIS_", "STREAMQ_", "SALUM_", "AT_", "SMS_"))}
    env["PYTHONPATH"] = str(ROOT)
    env.update(extra)
    return env


@contextmanager
def background_shell(command: str, log: Path, env: dict[str, str]
                     ) -> Iterator[subprocess.Popen[bytes]]:
    """Run a shell ``command`` from the docs in its own process group, output to ``log``;
    the group is stopped on exit."""
    with open(log, "wb") as out:
        proc = subprocess.Popen(command, shell=True, cwd=ROOT, env=env, stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True)
    try:
        yield proc
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, 15)
            proc.wait(20)
