"""The benchmark run: one private redis-server, each workload in alternating rounds.

For each workload, round after round, every system runs once in turn (streamq, the
peers, the raw floor, streamq again, ...), on the same Redis, flushed before each run.
Each figure is the median of the rounds, with min and max.
"""

from __future__ import annotations

import asyncio
import os
import platform
import random
import signal
import sys
import time
import traceback
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from .common import IO_LATENCY_S, Summary, payloads, percentile, uvloop_available
from .peers import SYSTEMS, System, Unavailable, system_class
from .procs import WorkerFailed, WorkerProcess

WORKLOADS = ("enqueue", "drain", "io", "latency", "delayed", "sms")


@dataclass(frozen=True)
class Metric:
    key: str
    label: str
    unit: str
    higher_better: bool
    workload: str


METRICS: tuple[Metric, ...] = (
    Metric("enqueue_one", "enqueue, awaited one by one", "jobs/s", True, "enqueue"),
    Metric("enqueue_bulk", "enqueue, bulk", "jobs/s", True, "enqueue"),
    Metric("drain_c50", "drain no-op, concurrency 50", "jobs/s", True, "drain"),
    Metric("drain_c5", "drain no-op, concurrency 5 (streamq default)", "jobs/s", True, "drain"),
    Metric("io_c100", "I/O-bound drain (20 ms), concurrency 100", "jobs/s", True, "io"),
    Metric("io_efficiency", "I/O-bound efficiency vs ideal 5,000/s", "%", True, "io"),
    Metric("latency_p50", "latency p50 at 1,000 jobs/s offered", "ms", False, "latency"),
    Metric("latency_p99", "latency p99 at 1,000 jobs/s offered", "ms", False, "latency"),
    Metric("delayed_p50", "delayed-job lateness p50", "ms", False, "delayed"),
    Metric("delayed_p99", "delayed-job lateness p99", "ms", False, "delayed"),
    Metric("memory_per_job", "Redis memory per waiting job", "B", False, "drain"),
    Metric("sms_create", "SMS: create_notification_sms_job, one by one", "jobs/s", True, "sms"),
    Metric("sms_deliver", "SMS: worker -> Salum stand-in over HTTP, c=50", "jobs/s", True, "sms"),
)
METRIC_BY_KEY = {m.key: m for m in METRICS}


@dataclass
class Config:
    quick: bool = False
    rounds: int = 3
    jobs: int = 20_000
    systems: list[str] = field(default_factory=lambda: list(SYSTEMS))
    workloads: list[str] = field(default_factory=lambda: list(WORKLOADS))
    cap_s: float = 15.0  # a drain stops this long after its first job (slow peers)
    enqueue_one_jobs: int = 5_000
    latency_rate: float = 1000.0
    latency_s: float = 10.0
    delayed_jobs: int = 500
    delayed_range_s: tuple[float, float] = (0.5, 2.5)
    sms_jobs: int = 5_000
    drain_concurrency: tuple[int, int] = (50, 5)
    io_concurrency: int = 100

    @classmethod
    def make(cls, *, quick: bool, rounds: int | None, jobs: int | None) -> Config:
        if quick:
            cfg = cls(quick=True, rounds=1, jobs=2_000, systems=["streamq", "raw"],
                      cap_s=10.0, enqueue_one_jobs=1_000, latency_s=2.0, delayed_jobs=100,
                      delayed_range_s=(0.3, 1.0), sms_jobs=500)
        else:
            cfg = cls()
        if rounds is not None:
            cfg.rounds = rounds
        if jobs is not None:
            cfg.jobs = jobs
            cfg.enqueue_one_jobs = min(cfg.enqueue_one_jobs, jobs)
        return cfg


class Progress:
    def __init__(self) -> None:
        self.t0 = time.monotonic()

    def __call__(self, text: str) -> None:
        s = int(time.monotonic() - self.t0)
        print(f"[{s // 60:02d}:{s % 60:02d}] {text}", file=sys.stderr, flush=True)


def machine_info(redis_version: str) -> dict[str, Any]:
    cpu = "unknown"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return {
        "nproc": os.cpu_count(),
        "cpu": cpu,
        "redis": redis_version,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "uvloop": uvloop_available(),
        "loadavg_at_start": os.getloadavg()[0],
    }


def fmt(value: float, unit: str) -> str:
    if unit == "jobs/s":
        return f"{value / 1000:.1f}k" if value >= 1000 else f"{value:.0f}"
    if unit == "ms":
        return f"{value:.2f}" if value < 10 else f"{value:.1f}" if value < 100 else f"{value:.0f}"
    if unit == "%":
        return f"{value:.0f}%"
    return f"{value:.0f}"


class Bench:
    def __init__(self, cfg: Config, progress: Progress) -> None:
        self.cfg = cfg
        self.progress = progress
        self.results: dict[str, dict[str, list[float]]] = {}
        self.errors: list[dict[str, str]] = []
        self.skipped: dict[str, str] = {}
        self.versions: dict[str, str] = {}
        self.notes: dict[str, dict[str, str]] = {}  # system -> workload -> why n/a
        self.extra: dict[str, dict[str, Any]] = {}
        self.systems: list[type[System]] = []
        self.url = ""

    # -- set-up ---------------------------------------------------------------------------
    def select_systems(self) -> None:
        for name in self.cfg.systems:
            try:
                cls = system_class(name)
                cls.check()
                self.versions[name] = cls.version()
            except Unavailable as exc:
                self.skipped[name] = str(exc)
            except ImportError as exc:
                self.skipped[name] = f"not installed ({exc}); pip install -e '.[bench]'"
            except Exception as exc:
                self.skipped[name] = f"{type(exc).__name__}: {exc}"
            else:
                self.systems.append(cls)
                self.notes[name] = dict(cls.unsupported)
        for name, why in self.skipped.items():
            self.progress(f"skipping {name}: {why}")

    def record(self, system: str, values: dict[str, float]) -> None:
        for key, v in values.items():
            self.results.setdefault(key, {}).setdefault(system, []).append(v)

    async def flush(self) -> None:
        await self.admin.flushall()

    async def used_memory(self) -> int:
        """Redis memory less the clients' buffers (a producer's connection count is not data)."""
        info = await self.admin.info("memory")
        return int(info["used_memory"]) - int(info.get("mem_clients_normal", 0))

    # -- the run ----------------------------------------------------------------------------
    async def run(self) -> None:
        from redis.asyncio import Redis

        from streamq.devredis import start_redis_server

        self.select_systems()
        server = await asyncio.to_thread(start_redis_server)
        self.url = server.url
        self.admin = Redis.from_url(self.url, decode_responses=True)
        try:
            info = await self.admin.info("server")
            self.machine = machine_info(str(info["redis_version"]))
            self.progress(f"redis-server {self.machine['redis']} on {self.url} (persistence off); "
                          f"systems: {', '.join(c.name for c in self.systems)}; "
                          f"{self.cfg.rounds} round(s), N={self.cfg.jobs}")
            plan: list[tuple[str, Callable[[System], Awaitable[dict[str, float]]], str]] = []
            wl = self.cfg.workloads
            if "enqueue" in wl:
                plan.append(("enqueue", self.wl_enqueue, "enqueue"))
            if "drain" in wl:
                for c in self.cfg.drain_concurrency:
                    plan.append((f"drain c={c}", self._drain(c), "drain"))
            if "io" in wl:
                plan.append((f"io c={self.cfg.io_concurrency}", self.wl_io, "io"))
            if "latency" in wl:
                plan.append(("latency", self.wl_latency, "latency"))
            if "delayed" in wl:
                plan.append(("delayed", self.wl_delayed, "delayed"))
            for title, fn, workload in plan:
                for rnd in range(1, self.cfg.rounds + 1):
                    for cls in self.systems:
                        if workload in cls.unsupported:
                            continue
                        await self.one(cls, title, fn, rnd)
            if "sms" in wl and any(c.kind == "streamq" for c in self.systems):
                for rnd in range(1, self.cfg.rounds + 1):
                    await self.one(system_class("streamq"), "sms path", self.wl_sms, rnd)
        finally:
            await self.admin.aclose()
            await asyncio.to_thread(server.stop)

    async def one(self, cls: type[System], title: str,
                  fn: Callable[[System], Awaitable[dict[str, float]]], rnd: int) -> None:
        await self.flush()
        system = cls(self.url)
        tag = f"{title} round {rnd}/{self.cfg.rounds} {cls.name}"
        try:
            await system.start()
            values = await asyncio.wait_for(fn(system), self.cfg.cap_s * 3 + 180)
        except Exception as exc:
            why = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
            self.errors.append({"system": cls.name, "workload": title, "round": str(rnd),
                                "error": why[:3000]})
            self.progress(f"{tag}: FAILED {why[:3000]}")
            if not isinstance(exc, WorkerFailed | TimeoutError):
                traceback.print_exc(file=sys.stderr)
            return
        finally:
            try:
                await system.stop()
            except Exception as exc:  # a peer's close must not hide its figures
                self.progress(f"{tag}: close failed: {exc}")
        self.record(cls.name, values)
        shown = ", ".join(
            f"{k} {fmt(v, METRIC_BY_KEY[k].unit)}"
            + ("" if METRIC_BY_KEY[k].unit == "%" else f" {METRIC_BY_KEY[k].unit}")
            for k, v in values.items())
        self.progress(f"{tag}: {shown}")

    async def run_worker(self, system: System, mode: str, concurrency: int, n: int,
                         during: Callable[[], Awaitable[None]] | None = None) -> dict[str, Any]:
        """Start the system's worker process, run ``during`` once it is READY, return its RESULT."""
        argv = system.worker_command(mode, concurrency, n, self.cfg.cap_s)  # type: ignore[arg-type]
        proc = WorkerProcess(argv, env=system.worker_env())
        await proc.start()
        try:
            await proc.ready(60.0)
            if during is not None:
                await during()
            result = await proc.result(self.cfg.cap_s + 90)
        finally:
            await proc.stop()
        if result["count"] == 0:
            raise WorkerFailed("the worker handled no job")
        return result

    # -- workloads ----------------------------------------------------------------------------
    async def wl_enqueue(self, system: System) -> dict[str, float]:
        n1 = self.cfg.enqueue_one_jobs
        one = await system.enqueue_timed(payloads(n1), bulk=False)
        await system.stop()
        await self.flush()
        await system.start()
        nb = self.cfg.jobs
        bulk = await system.enqueue_timed(payloads(nb), bulk=True)
        return {"enqueue_one": n1 / one, "enqueue_bulk": nb / bulk}

    def _drain(self, concurrency: int) -> Callable[[System], Awaitable[dict[str, float]]]:
        async def drain(system: System) -> dict[str, float]:
            n = self.cfg.jobs
            jobs = payloads(n)
            before = await self.used_memory()
            await system.fill(jobs)
            await system.stop()  # its connections' buffers are not data
            await asyncio.sleep(0.1)
            per_job = (await self.used_memory() - before) / n
            r = await self.run_worker(system, "noop", concurrency, n)
            self._note_capped(system, f"drain_c{concurrency}", r)
            return {f"drain_c{concurrency}": r["count"] / r["elapsed_s"], "memory_per_job": per_job}

        return drain

    def _note_capped(self, system: System, key: str, r: dict[str, Any]) -> None:
        if r.get("capped"):
            self.extra.setdefault(system.name, {})[key + "_capped"] = (
                f"{r['count']} of the jobs in the {self.cfg.cap_s:.0f}s cap")

    async def wl_io(self, system: System) -> dict[str, float]:
        n = self.cfg.jobs
        await system.fill(payloads(n))
        c = self.cfg.io_concurrency
        r = await self.run_worker(system, "io", c, n)
        self._note_capped(system, "io_c100", r)
        rate = r["count"] / r["elapsed_s"]
        return {"io_c100": rate, "io_efficiency": 100 * rate / (c / IO_LATENCY_S)}

    async def wl_latency(self, system: System) -> dict[str, float]:
        n = round(self.cfg.latency_rate * self.cfg.latency_s)
        jobs = payloads(n)

        async def produce() -> None:
            await system.produce_steady(jobs, self.cfg.latency_rate)

        r = await self.run_worker(system, "latency", 50, n, produce)
        warm = min(n // 10, round(self.cfg.latency_rate * 0.5))
        samples = [s for i, s in r["samples"] if i >= warm] or [s for _, s in r["samples"]]
        return {"latency_p50": 1000 * percentile(samples, 50),
                "latency_p99": 1000 * percentile(samples, 99)}

    async def wl_delayed(self, system: System) -> dict[str, float]:
        n = self.cfg.delayed_jobs
        lo, hi = self.cfg.delayed_range_s
        rng = random.Random(7)
        delays = [rng.uniform(lo, hi) for _ in range(n)]
        jobs = payloads(n)

        async def produce() -> None:
            await system.produce_delayed(jobs, delays)

        r = await self.run_worker(system, "delayed", 50, n, produce)
        samples = [s for _, s in r["samples"]]
        return {"delayed_p50": 1000 * percentile(samples, 50),
                "delayed_p99": 1000 * percentile(samples, 99)}

    async def wl_sms(self, system: System) -> dict[str, float]:
        from streamq import Queue
        from streamq.sms import SMSJob, create_notification_sms_job
        from streamq.sms.standin import SalumStandin

        n = self.cfg.sms_jobs
        from .peers.streamq import partitions_from_env

        # the worker process below reads STREAMQ_PARTITIONS too (--partitions)
        q = Queue("benchsms", redis_url=self.url, job_type=SMSJob,
                  partitions=partitions_from_env())
        try:
            t0 = time.perf_counter()
            for i in range(n):
                await create_notification_sms_job(
                    recipient="+254712345678",
                    message=f"Your order #{100000 + i} has shipped and will arrive on Tuesday.",
                    metadata={"campaign": "orders"}, queue=q)
            create_s = time.perf_counter() - t0
            async with SalumStandin(api_key="bench-key", partner_id="1") as standin:
                env = {"SALUM_API_URL": standin.url, "SALUM_API_KEY": "bench-key",
                       "SALUM_PARTNER_ID": "1", "SALUM_SHORTCODE": "STREAMQ"}
                proc = WorkerProcess(
                    [sys.executable, "-m", "streamq.worker", "--provider", "salum",
                     "--queue", "benchsms", "--rate-limit", "0", "--concurrency", "50",
                     "--redis-url", self.url, "--log-format", "json", "--log-level", "warning"],
                    env=env)
                await proc.start()
                try:
                    deadline = time.monotonic() + self.cfg.cap_s * 4 + 60
                    while len(standin.received) < n:
                        assert proc.proc is not None
                        if proc.proc.returncode is not None:
                            raise WorkerFailed(f"streamq.worker exited: {proc.stderr_tail()}")
                        if time.monotonic() > deadline:
                            raise WorkerFailed(f"stand-in got {len(standin.received)} of {n} "
                                               f"requests in time; {proc.stderr_tail()}")
                        await asyncio.sleep(0.02)
                    got = standin.received
                    deliver_s = got[n - 1].at - got[0].at
                    for _ in range(250):  # the last acks are batched: allow them a moment
                        counts = await q.counts()
                        if counts["completed"] >= n:
                            break
                        await asyncio.sleep(0.02)
                    else:
                        raise WorkerFailed(f"stand-in got {n} requests but counts say {counts}")
                finally:
                    await proc.stop(signal.SIGTERM)
        finally:
            await q.close()
        return {"sms_create": n / create_s, "sms_deliver": (n - 1) / deliver_s}

    # -- output ----------------------------------------------------------------------------
    def summary(self) -> dict[str, Any]:
        results: dict[str, dict[str, Any]] = {}
        for key, per_system in self.results.items():
            results[key] = {s: Summary.of(v).as_dict() for s, v in per_system.items()}
        machine = dict(getattr(self, "machine", {}))
        if machine:
            machine["loadavg_at_end"] = os.getloadavg()[0]
        return {
            "machine": machine,
            "config": {k: v for k, v in asdict(self.cfg).items()},
            "systems": {c.name: {"label": c.label, "kind": c.kind, "version": self.versions.get(c.name, ""),
                                 "bulk": c.bulk_note, "not_applicable": self.notes.get(c.name, {}),
                                 "notes": self.extra.get(c.name, {})}
                        for c in self.systems},
            "skipped": self.skipped,
            "metrics": [asdict(m) for m in METRICS],
            "results": results,
            "errors": self.errors,
        }
