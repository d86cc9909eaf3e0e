"""SMS worker processes (``python -m streamq.worker``) for process-level tests."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

import anyio

from tests.support.util import ROOT


class WorkerProcs:
    """Start SMS workers with a shared environment; each logs JSON lines to its own file."""

    def __init__(self, tmp: Path, env: Mapping[str, str]) -> None:
        self.tmp = tmp
        self.env = dict(os.environ, PYTHONPATH=str(ROOT), STREAMQ_LOG_FORMAT="json", **env)
        self.procs: list[subprocess.Popen[bytes]] = []
        self.logs: list[Path] = []

    def start(self, *args: str, env: Mapping[str, str] | None = None) -> subprocess.Popen[bytes]:
        log = self.tmp / f"worker-{len(self.procs)}.log"
        with open(log, "wb") as out:
            proc = subprocess.Popen([sys.executable, "-m", "streamq.worker", *args], cwd=ROOT,
                                    env={**self.env, **(env or {})}, stdout=out,
                                    stderr=subprocess.STDOUT)
        self.procs.append(proc)
        self.logs.append(log)
        return proc

    def log(self, i: int) -> str:
        return self.logs[i].read_text(errors="replace")

    def all_logs(self) -> str:
        return "".join(self.log(i) for i in range(len(self.logs)))

    async def stop(self, procs: Sequence[subprocess.Popen[bytes]] | None = None,
                   timeout: float = 20) -> list[int]:
        targets = list(self.procs if procs is None else procs)
        for p in targets:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        codes = []
        for p in targets:
            try:
                codes.append(await anyio.to_thread.run_sync(lambda p=p: p.wait(timeout)))
            except subprocess.TimeoutExpired:
                p.kill()
                codes.append(await anyio.to_thread.run_sync(p.wait))
        return codes

    def kill_all(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                p.kill()
                p.wait()
