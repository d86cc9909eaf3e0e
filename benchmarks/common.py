"""Shared pieces of the benchmark suite: payloads, the worker probe, statistics, event loops.

The **probe** is the one piece of code every Python worker under test runs inside its
handler (streamq, the raw floor and each peer), so that all of them are timed the same
way: first handler start to the N-th handler return, measured inside the worker
process. A worker process talks to the runner on stdout with two lines: ``READY`` once
it is connected, and ``RESULT {json}`` when it has handled its N jobs (or hit its time
cap). The Node worker speaks the same protocol.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import statistics
import sys
import time
import uuid
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar

Mode = Literal["noop", "io", "latency", "delayed"]
MODES: tuple[Mode, ...] = ("noop", "io", "latency", "delayed")
IO_LATENCY_S = 0.020  # the I/O-bound handler's await (a provider call)

T = TypeVar("T")


def sms_payload(i: int) -> dict[str, Any]:
    """A NotificationSMS-shaped job payload (the engine sees a plain dict, ~200 B)."""
    return {
        "type": "notification",
        "id": uuid.uuid4().hex,
        "timestamp": time.time_ns() // 1_000_000,
        "recipient": {"phone_number": "+254712345678", "name": "Alice Wanjiku"},
        "message": f"Your order #{100000 + i} has shipped and will arrive on Tuesday. Reply STOP to opt out.",
        "metadata": {"campaign": "orders", "order_id": str(100000 + i)},
        "i": i,
    }


def payloads(n: int) -> list[dict[str, Any]]:
    return [sms_payload(i) for i in range(n)]


# -- event loops ------------------------------------------------------------------------
def uvloop_available() -> bool:
    try:
        import uvloop  # noqa: F401
    except ImportError:
        return False
    return True


def run_async(main: Coroutine[Any, Any, T]) -> T:
    """Run ``main`` on uvloop when it is installed, else on the default asyncio loop."""
    if uvloop_available():
        import uvloop

        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            return runner.run(main)
    return asyncio.run(main)


# -- statistics -------------------------------------------------------------------------
async def redis_cpu(admin: Any) -> float:
    """CPU seconds the Redis server has used (user + sys, its main thread and the rest)."""
    info = await admin.info("cpu")
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


def percentile(values: Sequence[float], p: float) -> float:
    """Nearest-rank percentile (p in 0..100) of a non-empty sequence."""
    if not values:
        raise ValueError("percentile of no values")
    ordered = sorted(values)
    k = max(0, min(len(ordered) - 1, round(p / 100 * len(ordered) + 0.5) - 1))
    return ordered[k]


@dataclass
class Summary:
    median: float
    min: float
    max: float
    values: list[float] = field(default_factory=list)

    @classmethod
    def of(cls, values: Sequence[float]) -> Summary:
        return cls(statistics.median(values), min(values), max(values), list(values))

    def as_dict(self) -> dict[str, Any]:
        return {"median": self.median, "min": self.min, "max": self.max, "values": self.values}


# -- the worker-side probe ----------------------------------------------------------------
class Probe:
    """Counts and times handler calls inside a worker process under test.

    ``await probe.handle(payload)`` is the whole handler: it notes the start (and, in
    ``latency``/``delayed`` mode, how late the job started against ``payload["t"]`` /
    ``payload["due"]``, wall clock seconds), awaits 20 ms in ``io`` mode, and counts the
    return. After ``n`` returns, or ``cap_s`` after the first start, ``finished`` is set.
    """

    def __init__(self, mode: Mode, n: int, cap_s: float) -> None:
        self.mode = mode
        self.n = n
        self.cap_s = cap_s
        self.count = 0
        self.first_start: float | None = None
        self.last_end = 0.0
        self.cpu_first = 0.0  # process CPU seconds at the first start and the last end
        self.cpu_last = 0.0
        self.samples: list[tuple[int, float]] = []
        self.finished = asyncio.Event()
        self.capped = False
        self.tasks: list[Any] = []  # keeps the worker's background tasks referenced

    async def handle(self, payload: Any) -> None:
        now = time.time()
        if self.first_start is None:
            self.first_start = time.perf_counter()
            self.cpu_first = time.process_time()
        if self.mode == "latency":
            self.samples.append((int(payload["i"]), now - float(payload["t"])))
        elif self.mode == "delayed":
            self.samples.append((int(payload["i"]), now - float(payload["due"])))
        elif self.mode == "io":
            await asyncio.sleep(IO_LATENCY_S)
        self.count += 1
        if self.count >= self.n:
            self.last_end = time.perf_counter()
            self.cpu_last = time.process_time()
            self.finished.set()

    async def wait(self, idle_limit_s: float) -> None:
        """Until done, or capped (``cap_s`` after the first job, ``idle_limit_s`` with none)."""
        started = time.perf_counter()
        while not self.finished.is_set():
            with_first = self.first_start
            now = time.perf_counter()
            if (with_first is not None and now - with_first > self.cap_s) or (
                with_first is None and now - started > idle_limit_s
            ):
                self.capped = True
                self.last_end = now
                return
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.finished.wait(), 0.05)

    def result(self) -> dict[str, Any]:
        elapsed = (self.last_end - self.first_start) if self.first_start is not None else 0.0
        return {"count": self.count, "elapsed_s": elapsed, "capped": self.capped,
                "samples": self.samples,
                "cpu_s": max(0.0, (self.cpu_last or time.process_time()) - self.cpu_first)}


def emit(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def report_ready() -> None:
    emit("READY")


def report_result(result: dict[str, Any]) -> None:
    emit("RESULT " + json.dumps(result))


def hard_exit(code: int = 0) -> None:
    """Leave the worker process now: the run is measured, and some peers' shutdown hangs."""
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


@dataclass
class WorkerArgs:
    """What every benchmark worker process is told (``python -m benchmarks.worker``)."""

    system: str
    url: str
    queue: str
    mode: Mode
    concurrency: int
    n: int
    cap_s: float

    def argv(self) -> list[str]:
        return ["--url", self.url, "--queue", self.queue, "--mode", self.mode,
                "--concurrency", str(self.concurrency), "--n", str(self.n),
                "--cap", str(self.cap_s)]


async def run_probe_worker(
    args: WorkerArgs, start: Callable[[Probe], Coroutine[Any, Any, Any]]
) -> None:
    """The common body of a Python worker process: start the system's worker (``start``
    returns once it is connected and running in the background), report READY, wait for
    the probe, report the RESULT and leave."""
    probe = Probe(args.mode, args.n, args.cap_s)
    await start(probe)
    report_ready()
    await probe.wait(idle_limit_s=args.cap_s + 60)
    report_result(probe.result())
    hard_exit(0)
