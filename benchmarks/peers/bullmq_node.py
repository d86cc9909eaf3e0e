"""BullMQ for Node (the system the original design ran on), when ``node`` and ``npm`` exist.

bullmq is installed with npm into a scratch folder outside the repository
(``$STREAMQ_BENCH_NODE_DIR``, default ``/tmp/streamq-bench-node``) on first use. Every
operation runs ``bullmq_node.cjs`` (beside this file) in a Node process: the worker
speaks the probe protocol, and producers (enqueue, fill, steady and delayed producing)
read the same payloads from a JSON file and report their own timing, so Node's figures
are Node's, not a Python client's.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

from ..common import Mode
from ..procs import WorkerProcess
from .base import System, Unavailable

SCRIPT = Path(__file__).with_name("bullmq_node.cjs")


def node_dir() -> Path:
    return Path(os.environ.get("STREAMQ_BENCH_NODE_DIR", "/tmp/streamq-bench-node"))


class BullmqNodeSystem(System):
    name = "bullmq-node"
    label = "BullMQ (Node)"
    bulk_note = "Queue.addBulk, 1,000 per call"

    @classmethod
    def check(cls) -> None:
        node, npm = shutil.which("node"), shutil.which("npm")
        if node is None or npm is None:
            raise Unavailable("node and npm are not both installed")
        folder = node_dir()
        if not (folder / "node_modules" / "bullmq" / "package.json").exists():
            folder.mkdir(parents=True, exist_ok=True)
            if not (folder / "package.json").exists():
                (folder / "package.json").write_text('{"name": "streamq-bench-node", "private": true}\n')
            try:
                subprocess.run([npm, "install", "--no-audit", "--no-fund", "--loglevel=error", "bullmq"],
                               cwd=folder, check=True, timeout=300, capture_output=True)
            except (subprocess.SubprocessError, OSError) as exc:
                detail = getattr(exc, "stderr", b"") or b""
                raise Unavailable(f"npm install bullmq failed in {folder}: {exc} "
                                  f"{detail.decode(errors='replace')[-300:]}") from None

    @classmethod
    def version(cls) -> str:
        pkg = json.loads((node_dir() / "node_modules" / "bullmq" / "package.json").read_text())
        node = subprocess.run(["node", "--version"], capture_output=True, text=True).stdout.strip()
        return f"{pkg['version']} on node {node}"

    def worker_env(self) -> dict[str, str]:
        return {"NODE_PATH": str(node_dir() / "node_modules")}

    def worker_command(self, mode: Mode, concurrency: int, n: int, cap_s: float) -> list[str]:
        return ["node", str(SCRIPT), "worker", "--url", self.url, "--queue", self.queue,
                "--mode", mode, "--concurrency", str(concurrency), "--n", str(n),
                "--cap", str(cap_s)]

    async def _node(self, cmd: str, jobs: list[dict[str, Any]], *extra: str) -> dict[str, Any]:
        with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
            json.dump(jobs, f)
        try:
            proc = WorkerProcess(["node", str(SCRIPT), cmd, "--url", self.url, "--queue", self.queue,
                                  "--file", f.name, *extra], env=self.worker_env())
            await proc.start()
            try:
                return await proc.result(600)
            finally:
                await proc.stop()
        finally:
            os.unlink(f.name)

    async def enqueue_timed(self, payloads: list[dict[str, Any]], bulk: bool) -> float:
        r = await self._node("enqueue", payloads, *(["--bulk"] if bulk else []))
        return float(r["elapsed_s"])

    async def fill(self, payloads: list[dict[str, Any]]) -> None:
        await self._node("fill", payloads)

    async def produce_steady(self, payloads: list[dict[str, Any]], rate: float) -> None:
        await self._node("produce", payloads, "--rate", str(rate))

    async def produce_delayed(self, payloads: list[dict[str, Any]], delays: list[float]) -> None:
        jobs = [{**p, "delay": d} for p, d in zip(payloads, delays, strict=True)]
        await self._node("delayed", jobs)
