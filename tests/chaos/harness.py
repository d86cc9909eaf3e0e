"""The chaos harness (docs/reliability.md, part 3): producer book-keeping, worker processes, fault
instants, the Jepsen-style checker and the end-state invariants.

Every scenario of ``tests/chaos`` and ``benchmarks/soak.py`` is built from these parts:

* :class:`Producer` adds jobs with client-chosen ids (a retried ``add`` is deduplicated by
  the enqueue script) and keeps ``attempts`` / ``ok`` / ``unknown``.
* :class:`WorkerPool` runs ``tests.support.ledger_worker`` processes, each writing the
  completion ledger (``S``/``E`` lines) and the hook events (``C``/``K``/``D``), and
  kills them. :meth:`WorkerPool.sigkill` freezes the victim (SIGSTOP), reads its PEL, then
  kills it: the PEL read is the exact in-flight figure at the fault instant.
* :func:`check` turns the ledger, the dead letters and the fault log into
  :class:`Figures`: lost, unexpected, duplicated, recovered, in-flight per fault, reclaim
  latencies. :meth:`Figures.problems` lists every broken guarantee.
* :func:`end_state` checks the invariants after a full drain.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import redis.asyncio as aioredis

from streamq import JobOptions, Queue, QueueFull, RedisUnavailable
from streamq.keys import GROUP, QueueKeys
from tests.support.chaos_ledger import EventView, read_events
from tests.support.ledger import LedgerView, read_ledger
from tests.support.util import wait_until

ROOT = Path(__file__).resolve().parents[2]


def now() -> float:
    return time.time()


async def poll(
    predicate: Callable[[], Any | Awaitable[Any]], timeout: float, interval: float = 0.02,
    message: str = "condition",
) -> Any:
    """Poll until ``predicate`` is truthy; AssertionError naming ``message`` at the deadline."""
    return await wait_until(predicate, timeout, interval, message)


# -- the producer -----------------------------------------------------------------------------
@dataclass
class Producer:
    """Adds jobs ``<prefix>NNNNN`` (never 7 digits in a row: key names carry job ids)."""

    queue: Queue
    prefix: str = "j"
    attempts: set[str] = field(default_factory=set)
    ok: set[str] = field(default_factory=set)
    unknown: set[str] = field(default_factory=set)
    errors: Counter[str] = field(default_factory=Counter)
    added_at: dict[str, float] = field(default_factory=dict)
    done: bool = False
    last_ok_at: float = 0.0
    ok_times: list[float] = field(default_factory=list)

    def job_id(self, i: int) -> str:
        return f"{self.prefix}{i:06d}"

    async def add_batch(
        self, ids: Sequence[str], payload: Callable[[str], Any], options: Callable[[str], JobOptions],
        retry_for: float = 60.0,
    ) -> None:
        """Add ``ids`` in one pipelined call; on a connection error retry the same ids (the
        enqueue script deduplicates live ids) until they are in or ``retry_for`` passes."""
        self.attempts.update(ids)
        items = [(payload(i), options(i)) for i in ids]
        deadline = time.monotonic() + retry_for
        delay = 0.02
        while True:
            try:
                if len(items) == 1:
                    await self.queue.add(*items[0])
                else:
                    await self.queue.add_bulk(items)
            except (RedisUnavailable, QueueFull, OSError) as exc:
                self.unknown.update(ids)
                self.errors[type(exc).__name__] += 1
                if time.monotonic() > deadline:
                    return
                await anyio.sleep(delay)
                delay = min(delay * 2, 0.5)
                continue
            t = now()
            self.ok.update(ids)
            for i in ids:
                self.added_at.setdefault(i, t)
            self.last_ok_at = t
            self.ok_times.append(t)
            return

    async def run(
        self, n: int, *, rate: float | None = None, batch: int = 20,
        payload: Callable[[str], Any] = lambda _id: {},
        options: Callable[[str], JobOptions] | None = None, start: int = 0,
    ) -> None:
        """Add ``n`` jobs at ``rate`` jobs/s (None: as fast as Redis takes them)."""
        opts = options or (lambda i: JobOptions(job_id=i))
        t0 = time.monotonic()
        try:
            for first in range(start, start + n, batch):
                ids = [self.job_id(i) for i in range(first, min(first + batch, start + n))]
                await self.add_batch(ids, payload, opts)
                if rate:
                    ahead = t0 + (first + len(ids) - start) / rate - time.monotonic()
                    if ahead > 0:
                        await anyio.sleep(ahead)
        finally:
            self.done = True


# -- worker processes ----------------------------------------------------------------------------
@dataclass
class Fault:
    """One injected fault: when, what, which worker pids it hit, and what was in flight."""

    kind: str
    at: float
    pids: tuple[int, ...] = ()
    pel: int = 0
    """Entries the affected consumers held in Redis at the instant (running, finished but
    not yet acknowledged, fetched but not started): the exact duplicate budget."""
    pel_jobs: tuple[str, ...] = ()
    in_flight: int = 0
    """S lines without an E line at the instant, for the affected pids (from the ledger)."""
    healed_at: float | None = None


async def pending_of(r: aioredis.Redis, keys: QueueKeys, consumers: Iterable[str] | None = None
                     ) -> list[tuple[str, str, str]]:
    """(lane key, entry id, consumer) of every pending entry, optionally of some consumers."""
    wanted = set(consumers) if consumers is not None else None
    out: list[tuple[str, str, str]] = []
    for lane in keys.lanes:
        try:
            rows = await r.xpending_range(lane, GROUP, min="-", max="+", count=100_000)
        except aioredis.ResponseError:
            continue
        for row in rows:
            consumer = _s(row["consumer"])
            if wanted is None or consumer in wanted:
                out.append((lane, _s(row["message_id"]), consumer))
    return out


async def job_ids_of_entries(r: aioredis.Redis, entries: Iterable[tuple[str, str, str]]) -> list[str]:
    out = []
    for lane, entry_id, _ in entries:
        rows = await r.xrange(lane, entry_id, entry_id)
        if rows:
            j = rows[0][1].get(b"j")
            if j is not None:
                out.append(j.decode("utf-8", "replace"))
    return out


def _s(v: Any) -> str:
    return v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v)


class WorkerPool:
    """``tests.support.ledger_worker`` processes in numbered slots, restartable."""

    def __init__(self, redis_url: str, queue: str, ledger: Path, args: Sequence[str],
                 size: int, *, name: str = "w", wrapper: Sequence[str] = (),
                 env: dict[str, str] | None = None) -> None:
        self.wrapper = list(wrapper)  # a command prefix, e.g. ["faketime", "-f", "+1h"]
        self.extra_env = dict(env or {})
        self.redis_url = redis_url
        self.queue = queue
        self.ledger = Path(ledger)
        self.args = list(args)
        self.size = size
        self.name = name
        self.procs: dict[int, subprocess.Popen[str]] = {}
        self.consumer_of: dict[int, str] = {}  # pid -> consumer name
        self.all_procs: list[subprocess.Popen[str]] = []
        self.generation = 0
        self.errlogs: list[Path] = []

    def spawn(self, slot: int, extra: Sequence[str] = ()) -> subprocess.Popen[str]:
        self.generation += 1
        consumer = f"{self.name}{slot}-g{self.generation}"
        errlog = self.ledger / f"worker-{consumer}.err"
        env = dict(os.environ, PYTHONPATH=str(ROOT), **self.extra_env)
        with open(errlog, "w") as err:
            proc = subprocess.Popen(
                [*self.wrapper, sys.executable, "-m", "tests.support.ledger_worker", "--redis-url",
                 self.redis_url, "--queue", self.queue, "--ledger", str(self.ledger),
                 "--consumer", consumer, "--events", *self.args, *extra],
                cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=err, text=True,
                # a wrapper (faketime) forks the worker and does not pass signals on: the
                # worker gets its own process group, and signals go to the whole group
                start_new_session=bool(self.wrapper),
            )
        assert proc.stdout is not None
        line = proc.stdout.readline()
        proc.stdout.close()
        if line.strip() != "ready":
            proc.kill()
            proc.wait()
            raise AssertionError(f"worker did not start: {line!r} {errlog.read_text()[-2000:]}")
        self.procs[slot] = proc
        self.consumer_of[proc.pid] = consumer
        self.all_procs.append(proc)
        self.errlogs.append(errlog)
        return proc

    async def start(self, extra: Sequence[str] = ()) -> None:
        """Start every slot (in parallel threads: an interpreter start costs ~0.4 s)."""
        async with anyio.create_task_group() as tg:
            for slot in range(self.size):
                tg.start_soon(self.respawn, slot, extra)

    async def respawn(self, slot: int, extra: Sequence[str] = ()) -> subprocess.Popen[str]:
        return await anyio.to_thread.run_sync(lambda: self.spawn(slot, extra))

    def alive(self) -> list[int]:
        return [s for s, p in self.procs.items() if p.poll() is None]

    async def sigkill(self, slot: int, r: aioredis.Redis, keys: QueueKeys) -> Fault:
        """SIGSTOP the slot's process, read its PEL (frozen now), SIGKILL it."""
        proc = self.procs[slot]
        os.kill(proc.pid, signal.SIGSTOP)
        at = now()
        try:
            held = await pending_of(r, keys, [self.consumer_of[proc.pid]])
            jobs = await job_ids_of_entries(r, held)
        finally:
            os.kill(proc.pid, signal.SIGKILL)
        await anyio.to_thread.run_sync(proc.wait)
        return Fault("sigkill", at, (proc.pid,), len(held), tuple(jobs))

    def _signal(self, proc: subprocess.Popen[str], sig: int) -> None:
        if self.wrapper:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, sig)  # the wrapper's group: the worker it forked too
        elif proc.poll() is None:
            proc.send_signal(sig)

    async def terminate(self, slot: int, timeout: float = 30.0) -> int:
        proc = self.procs[slot]
        if proc.poll() is None:
            self._signal(proc, signal.SIGTERM)
        return await anyio.to_thread.run_sync(lambda: wait_exit(proc, timeout))

    async def stop_all(self, timeout: float = 30.0) -> None:
        for proc in self.all_procs:
            if proc.poll() is None:
                self._signal(proc, signal.SIGTERM)
        for proc in self.all_procs:
            await anyio.to_thread.run_sync(lambda p=proc: wait_exit(p, timeout))

    def kill_all(self) -> None:
        for proc in self.all_procs:
            # the group even when the wrapper has exited: its forked worker may live on
            self._signal(proc, signal.SIGKILL)
            proc.wait(timeout=10)

    def logs(self) -> str:
        return "\n".join(p.read_text(errors="replace") for p in self.errlogs if p.exists())


def wait_exit(proc: subprocess.Popen[str], timeout: float) -> int:
    """Wait for a worker process; kill it and fail if it does not exit in time."""
    try:
        return proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=10)
        raise AssertionError(f"worker {proc.pid} did not exit within {timeout}s") from None


# -- the checker ------------------------------------------------------------------------------
@dataclass
class Figures:
    """What the checker computed; ``problems()`` names every broken guarantee."""

    attempts: int
    ok: int
    unknown: int
    completed: int
    dead: int
    cancelled: int
    lost: set[str]
    unexpected: set[str]
    duplicated: dict[str, int]
    recovered: set[str]
    faults: list[Fault]
    stalled_latency: dict[str, float] = field(default_factory=dict)
    """kill -> the engine reported the job stalled (its ``K`` event), per job held at a kill."""
    reclaim_latency: dict[str, float] = field(default_factory=dict)
    """kill -> the job started again elsewhere (its next ``S`` line): the
    "reclaim latency" of T1 (docs/reliability.md), per job held at a kill."""
    unstarted_after_fault: set[str] = field(default_factory=set)

    @property
    def extra_runs(self) -> int:
        """Completions beyond the first (sum over duplicated jobs of count - 1)."""
        return sum(n - 1 for n in self.duplicated.values())

    @property
    def in_flight(self) -> int:
        return sum(f.in_flight for f in self.faults)

    @property
    def pel_at_faults(self) -> int:
        return sum(f.pel for f in self.faults)

    def lines(self) -> list[str]:
        budget = self.pel_at_faults
        ratio = f"{self.extra_runs / budget:.2f}" if budget else "-"
        out = [
            f"jobs added (ok)            {self.ok} of {self.attempts} attempted; "
            f"{self.unknown} saw an error at least once, {len(self.recovered)} of those completed",
            f"completed (distinct)       {self.completed}",
            f"dead-lettered              {self.dead}",
            f"cancelled                  {self.cancelled}",
            f"lost                       {len(self.lost)}",
            f"unexpected                 {len(self.unexpected)}",
            f"duplicates                 {len(self.duplicated)} jobs, {self.extra_runs} extra runs; "
            f"bound (held at faults) {budget}, ratio {ratio}; ledger in-flight at faults "
            f"{self.in_flight}",
            f"faults                     {len(self.faults)} ({_kinds(self.faults)})",
        ]
        if self.reclaim_latency:
            out.append(f"reclaim latency (s)        kill -> next start: max "
                       f"{max(self.reclaim_latency.values()):.2f}, median "
                       f"{_median(self.reclaim_latency.values()):.2f} "
                       f"({len(self.reclaim_latency)} jobs held by killed workers)")
        if self.stalled_latency:
            out.append(f"stalled-event latency (s)  kill -> 'stalled' hook: max "
                       f"{max(self.stalled_latency.values()):.2f}")
        return out

    def problems(self, *, dup_budget: int | None = None, allow_lost: bool = False) -> list[str]:
        out = []
        if self.lost and not allow_lost:
            out.append(f"lost {len(self.lost)}: {sorted(self.lost)[:10]}")
        if self.unexpected:
            out.append(f"unexpected {len(self.unexpected)}: {sorted(self.unexpected)[:10]}")
        budget = self.pel_at_faults if dup_budget is None else dup_budget
        if self.extra_runs > budget:
            out.append(f"{self.extra_runs} extra runs exceed the in-flight bound {budget}: "
                       f"{dict(list(self.duplicated.items())[:10])}")
        return out


def _kinds(faults: list[Fault]) -> str:
    c = Counter(f.kind for f in faults)
    return ", ".join(f"{k} x{n}" for k, n in sorted(c.items())) or "none"


def _median(values: Iterable[float]) -> float:
    v = sorted(values)
    return v[len(v) // 2] if v else 0.0


async def dead_job_ids(r: aioredis.Redis, keys: QueueKeys) -> list[str]:
    out: list[str] = []
    after = "-"
    while True:
        rows = await r.xrange(keys.dead, min=after, max="+", count=1000)
        if not rows:
            return out
        out.extend(_s(f.get(b"j", b"")) for _, f in rows)
        after = "(" + _s(rows[-1][0])


def check(
    *, attempts: set[str], ok: set[str], unknown: set[str], ledger: Path,
    dead: Iterable[str] = (), cancelled: Iterable[str] = (), faults: Sequence[Fault] = (),
) -> Figures:
    """The Jepsen-style figures of one run, after a full drain."""
    view: LedgerView = read_ledger(ledger)
    events: EventView = read_events(ledger)
    done = view.done
    dead_set, cancelled_set = set(dead), set(cancelled)
    figures = Figures(
        attempts=len(attempts), ok=len(ok), unknown=len(unknown), completed=len(done & ok),
        dead=len(dead_set), cancelled=len(cancelled_set),
        lost=ok - done - dead_set - cancelled_set,
        unexpected=done - attempts,
        duplicated=view.duplicated,
        recovered=unknown & done,
        faults=list(faults),
    )
    starts_by_job: dict[str, list[tuple[float, int]]] = {}
    for job_id, _attempt, pid, t in view.starts:
        starts_by_job.setdefault(job_id, []).append((t, pid))
    stalled_by_job: dict[str, list[float]] = {}
    for job_id, _stalls, _pid, t in events.stalled:
        stalled_by_job.setdefault(job_id, []).append(t)
    for f in figures.faults:
        f.in_flight = sum(view.in_flight(pid, f.at) for pid in f.pids)
        if f.kind != "sigkill":
            continue
        for job_id in f.pel_jobs:
            k = [t for t in stalled_by_job.get(job_id, []) if t >= f.at]
            if k:
                figures.stalled_latency[job_id] = max(
                    figures.stalled_latency.get(job_id, 0.0), min(k) - f.at)
            s = [t for t, pid in starts_by_job.get(job_id, []) if t > f.at and pid not in f.pids]
            if s:
                figures.reclaim_latency[job_id] = max(
                    figures.reclaim_latency.get(job_id, 0.0), min(s) - f.at)
            elif job_id not in done:
                figures.unstarted_after_fault.add(job_id)
    return figures


# -- end-state invariants -----------------------------------------------------------------------
async def end_state(
    r: aioredis.Redis, queue: Queue, jobs: set[str], *, records: bool = True,
) -> list[str]:
    """Invariants after a full drain; returns the violations (empty = all hold).

    XPENDING 0 on every lane and for every consumer; no waiting entry, delayed job or
    index entry left (through get_job); ``counts()`` adds up to the distinct jobs; each job's record names
    exactly one terminal state and the counters agree with the records; the AOF (when on)
    reports its last write ok.
    """
    k = queue.keys
    out: list[str] = []
    pending = await pending_of(r, k)
    if pending:
        out.append(f"XPENDING: {len(pending)} entries still pending: {pending[:5]}")
    for lane in k.lanes:
        try:
            consumers = await r.xinfo_consumers(lane, GROUP)
        except aioredis.ResponseError:
            consumers = []
        held = {_s(c["name"]): int(c["pending"]) for c in consumers if int(c["pending"])}
        if held:
            out.append(f"consumers with pending entries on {lane}: {held}")
        if n := await r.xlen(lane):
            out.append(f"{lane} still holds {n} entries")
    if n := await r.zcard(k.delayed):
        out.append(f"delayed ZSET holds {n}")
    if n := await r.hlen(k.delayed_data):
        out.append(f"delayed data holds {n}")
    c = await queue.counts()
    if c["waiting"] or c["active"] or c["delayed"]:
        out.append(f"counts not drained: {c}")
    total = c["completed"] + c["failed"] + c["cancelled"]
    if total != len(jobs):
        out.append(f"counts: completed {c['completed']} + failed {c['failed']} + cancelled "
                   f"{c['cancelled']} = {total}, expected {len(jobs)} distinct jobs")
    if records:
        states = await job_states(queue, jobs)
        tally = Counter(states.values())
        bad = {s: n for s, n in tally.items() if s not in ("completed", "failed", "cancelled")}
        if bad:
            out.append(f"jobs not in a terminal state: {bad}")
        for state in ("completed", "failed", "cancelled"):
            if tally[state] != c[state]:
                out.append(f"{tally[state]} jobs are {state}, the counter says {c[state]}")
    info = await r.info("persistence")
    if int(info.get("aof_enabled", 0)) and info.get("aof_last_write_status") != "ok":
        out.append(f"aof_last_write_status {info.get('aof_last_write_status')}")
    return out


async def job_states(queue: Queue, jobs: Iterable[str], concurrency: int = 64) -> dict[str, str]:
    """Each job's state through the public ``get_job`` ("missing" if unknown/expired)."""
    out: dict[str, str] = {}
    ordered = sorted(jobs)

    async def one(job_id: str) -> None:
        info = await queue.get_job(job_id)
        out[job_id] = "missing" if info is None else str(info.state)

    for i in range(0, len(ordered), concurrency):
        async with anyio.create_task_group() as tg:
            for job_id in ordered[i:i + concurrency]:
                tg.start_soon(one, job_id)
    return out


def redis_client(url: str) -> aioredis.Redis:
    """A plain client for the test's own look-ups (not the engine's settings)."""
    return aioredis.Redis.from_url(url, socket_timeout=10, socket_connect_timeout=5)
