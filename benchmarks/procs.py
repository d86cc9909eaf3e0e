"""Worker processes under test: spawn, wait for ``READY`` and ``RESULT``, stop.

Each runs in its own session (process group) so that stopping it also stops anything
it started; its stderr goes to a temporary file whose tail is shown if it fails.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any


class WorkerFailed(Exception):
    """A worker process died, or did not say READY/RESULT in time."""


class WorkerProcess:
    def __init__(self, argv: Sequence[str], env: Mapping[str, str] | None = None,
                 cwd: str | None = None) -> None:
        self.argv = list(argv)
        self.env = {**os.environ, **(env or {})}
        self.cwd = cwd
        self.proc: asyncio.subprocess.Process | None = None
        self._stderr = tempfile.TemporaryFile()  # noqa: SIM115 (closed in stop())

    async def start(self) -> WorkerProcess:
        self.proc = await asyncio.create_subprocess_exec(
            *self.argv, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
            stderr=self._stderr, env=self.env, cwd=self.cwd, start_new_session=True,
            limit=64 * 1024 * 1024,
        )
        return self

    def stderr_tail(self, chars: int = 2000) -> str:
        self._stderr.seek(0)
        text = self._stderr.read().decode("utf-8", "replace")
        return text[-chars:].strip()

    async def _line(self, timeout: float) -> str:
        assert self.proc is not None and self.proc.stdout is not None
        try:
            raw = await asyncio.wait_for(self.proc.stdout.readline(), timeout)
        except TimeoutError:
            raise WorkerFailed(
                f"{self.argv[2] if len(self.argv) > 2 else self.argv[0]}: no answer in {timeout:.0f}s; "
                f"stderr: {self.stderr_tail()}"
            ) from None
        if not raw:
            await self.proc.wait()
            raise WorkerFailed(
                f"worker exited (code {self.proc.returncode}) early; stderr: {self.stderr_tail()}"
            )
        return raw.decode().rstrip("\n")

    async def expect(self, word: str, timeout: float) -> str:
        """The rest of the first stdout line starting with ``word`` (other lines are skipped)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            line = await self._line(max(0.1, deadline - loop.time()))
            if line == word or line.startswith(word + " "):
                return line[len(word):].strip()

    async def ready(self, timeout: float = 60.0) -> None:
        await self.expect("READY", timeout)

    async def result(self, timeout: float) -> dict[str, Any]:
        found: dict[str, Any] = json.loads(await self.expect("RESULT", timeout))
        return found

    async def stop(self, sig: int = signal.SIGKILL, wait: float = 10.0) -> int | None:
        """Signal the worker's process group (``SIGTERM`` for a graceful stop) and reap it."""
        proc = self.proc
        if proc is None:
            return None
        if proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, sig)
            try:
                await asyncio.wait_for(proc.wait(), wait)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                await proc.wait()
        self._stderr.close()
        return proc.returncode

    async def __aenter__(self) -> WorkerProcess:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()


def _inside(path: str, tree: Path) -> bool:
    return tree.resolve() in Path(path).resolve().parents


async def drain_in_tree(command: Sequence[str], tree: Path, admin: Any, *, ready_s: float,
                        result_s: float) -> dict[str, float]:
    """Run a drain worker ``command`` importing the engine in ``tree`` (A/B of two
    trees): its rate, its CPU and Redis's CPU per job. Refuses a worker that imported
    another engine than the tree's (a stale install would make the A/B meaningless)."""
    from .common import redis_cpu

    proc = WorkerProcess(list(command), env={"PYTHONPATH": str(tree)}, cwd=str(tree))
    await proc.start()
    try:
        await proc.ready(ready_s)
        c0 = await redis_cpu(admin)
        r = await proc.result(result_s)
        c1 = await redis_cpu(admin)
    finally:
        await proc.stop()
    if not _inside(r["streamq"], tree):
        raise RuntimeError(f"the worker imported {r['streamq']}, not the engine in {tree}")
    n = max(1, r["count"])
    return {"drain": r["count"] / r["elapsed_s"], "worker_us": r["cpu_s"] * 1e6 / n,
            "redis_us": (c1 - c0) * 1e6 / n}
