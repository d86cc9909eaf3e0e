"""T12: a hypothesis state machine runs the real engine (Queue + Worker on a real Redis)
against a pure-Python model of the job lifecycle.

Rules: add, add-delayed, cancel, handler-succeed, handler-fail-transient,
handler-fail-permanent, crash-worker (the worker task is cancelled mid-job, a new worker
reclaims after the visibility timeout), advance the clock, replay-dead.

The worker has concurrency 1 and is gated: the queue stays paused between rules, a "work"
rule resumes it, the handler pauses it again before it returns, and the rule waits until
the worker is parked again (a client blocked in XREAD). The clock: retries and delays are
one hour away (they never fall due by themselves); "advance" makes every delayed job due
by setting its score in the delayed set to 0 (the engine reads due times from there).
A due job may be promoted by any claim, so the model calls it "due": delayed or waiting.

Invariants after every rule: each job's state (``get_job``) is the model's; ``counts()``
equals the model's; no job leaves a terminal state except by replay; the handler never
sees a cancelled job or an attempt beyond the maximum; the worker picks only runnable jobs,
from the most urgent level (1-10) that has work, and FIFO where the order is certain.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import uuid
from collections import Counter
from dataclasses import dataclass
from typing import Any

import anyio
import pytest
from hypothesis import HealthCheck, Phase, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

from streamq import Job, JobOptions, JobState, PermanentError, Queue, QueueDefaults, Worker
from streamq.devredis import RedisProcess, start_redis_server
from tests.chaos.harness import poll, redis_client

pytestmark = pytest.mark.chaos

VT = 0.05
MAX_STALLED = 2
EXAMPLES = int(os.environ.get("STREAMQ_MODEL_EXAMPLES", "200"))
TERMINAL = ("completed", "failed", "cancelled")


@dataclass
class MJob:
    id: str
    lane: int  # its priority level, 1 (most urgent) to 10
    max_attempts: int
    state: str = "waiting"  # waiting | due | delayed | completed | failed | cancelled
    failed: int = 0  # attempts that failed (the next run is attempt failed + 1)
    stalls: int = 0
    ready: int = 0  # rule number at which it entered its lane (or became due)
    ran: int = 0


class QueueMachine(RuleBasedStateMachine):
    jobs = Bundle("jobs")
    server: RedisProcess  # set by the test
    coverage: Counter[str] = Counter()  # rule -> times run, over all examples

    def __init__(self) -> None:
        super().__init__()
        self.runner = asyncio.Runner()
        self.model: dict[str, MJob] = {}
        self.step = 0
        self.crashes = 0
        self.outcome = "ok"
        self.got: list[tuple[str, int]] = []
        self.violations: list[str] = []
        self.got_event: asyncio.Event | None = None
        self.worker: Worker | None = None
        self.task: asyncio.Task[None] | None = None
        self.ids = itertools.count()
        self.q = Queue(f"m{uuid.uuid4().hex[:8]}", redis_url=self.server.url,
                       defaults=QueueDefaults(backoff_s=3600.0))
        self.r = redis_client(self.server.url)

    permanent_is_final = True  # the negative control's model retries a PermanentError

    def run(self, coro: Any) -> Any:
        return self.runner.run(asyncio.wait_for(coro, 15))

    # -- the worker under test ----------------------------------------------------------------
    async def handler(self, job: Job) -> None:
        await self.q.pause()
        m = self.model.get(job.id)
        if m is None or m.state == "cancelled":
            self.violations.append(f"handler saw {job.id} in state {m and m.state}")
        if job.attempt > job.max_attempts:
            self.violations.append(f"{job.id} attempt {job.attempt} > max {job.max_attempts}")
        self.got.append((job.id, job.attempt))
        assert self.got_event is not None
        self.got_event.set()
        if self.outcome == "crash":
            await anyio.sleep_forever()
        if self.outcome == "transient":
            raise RuntimeError("transient failure")
        if self.outcome == "permanent":
            raise PermanentError("permanent failure")

    async def start_worker(self) -> None:
        self.worker = Worker(self.q, self.handler, concurrency=1, rate_limit=None,
                             visibility_timeout=VT, reclaim_interval=0.02,
                             max_stalled=MAX_STALLED, shutdown_grace=1.0)
        self.task = asyncio.get_running_loop().create_task(self.worker.run())
        await self.parked()

    async def parked(self) -> None:
        """Wait until the worker is blocked in its XREAD (paused queue: nothing to claim)."""

        async def blocked() -> bool:
            clients = await self.r.client_list()
            return any(c.get("cmd") == "xread" and "b" in c.get("flags", "") for c in clients)

        await poll(blocked, 10, 0.002, "the worker to park in XREAD")

    async def crash_worker(self) -> None:
        assert self.task is not None
        self.task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self.task

    @initialize()
    def setup(self) -> None:
        async def go() -> None:
            await self.q.pause()
            await self.start_worker()

        self.run(go())

    def teardown(self) -> None:
        async def go() -> None:
            if self.worker is not None:
                await self.q.resume()
                self.worker.stop(immediate=True)
                if self.task is not None:
                    await asyncio.wait_for(asyncio.shield(self.task), 10)
            await self.q.close()
            await self.r.aclose()

        try:
            self.run(go())
        finally:
            self.runner.close()

    # -- helpers of the model ------------------------------------------------------------------
    def runnable(self) -> list[MJob]:
        return [m for m in self.model.values() if m.state in ("waiting", "due")]

    def tick(self, rule: str) -> int:
        self.coverage[rule] += 1
        self.step += 1
        return self.step

    def check_choice(self, chosen: MJob) -> None:
        pool = self.runnable()
        if chosen not in pool:
            self.violations.append(f"worker took {chosen.id} in state {chosen.state}")
            return
        top = min(m.lane for m in pool)
        if chosen.lane != top:
            self.violations.append(f"took {chosen.id} from lane {chosen.lane} while lane {top} had work")
        for m in pool:
            # a job certainly entered the lane before the chosen one: it must go first
            if (m is not chosen and m.lane == chosen.lane and m.state == "waiting"
                    and m.ready < chosen.ready):
                self.violations.append(f"took {chosen.id} before {m.id} (FIFO)")

    async def work(self, outcome: str) -> tuple[MJob, int]:
        self.outcome = outcome
        self.got_event = asyncio.Event()
        await self.q.resume()
        await asyncio.wait_for(self.got_event.wait(), 10)
        job_id, attempt = self.got[-1]
        m = self.model[job_id]
        self.check_choice(m)
        if attempt != m.failed + 1:
            self.violations.append(f"{job_id} ran as attempt {attempt}, model says {m.failed + 1}")
        return m, attempt

    async def settled(self, job_id: str) -> None:
        async def done() -> bool:
            info = await self.q.get_job(job_id)
            return info is not None and info.state is not JobState.ACTIVE

        await poll(done, 10, 0.002, f"{job_id} to leave 'active'")

    # -- rules ----------------------------------------------------------------------------------
    @rule(target=jobs, lane=st.integers(1, 10), attempts=st.integers(1, 3))
    def add(self, lane: int, attempts: int) -> str:
        job_id = f"j{next(self.ids)}"
        self.run(self.q.add(None, JobOptions(job_id=job_id, priority=lane,
                                             attempts=attempts)))
        self.model[job_id] = MJob(job_id, lane, attempts, ready=self.tick("add"))
        return job_id

    @rule(target=jobs, lane=st.integers(1, 10))
    def add_delayed(self, lane: int) -> str:
        job_id = f"j{next(self.ids)}"
        self.run(self.q.add(None, JobOptions(job_id=job_id, priority=lane,
                                             attempts=2, delay=3600)))
        self.model[job_id] = MJob(job_id, lane, 2, state="delayed")
        self.tick("add_delayed")
        return job_id

    @rule(job_id=jobs)
    def cancel(self, job_id: str) -> None:
        m = self.model[job_id]
        got = self.run(self.q.cancel(job_id))
        expected = m.state in ("waiting", "due", "delayed")
        if got != expected:
            self.violations.append(f"cancel({job_id}) in state {m.state} returned {got}")
        if got:
            m.state = "cancelled"
        self.tick("cancel" if got else "cancel_refused")

    @precondition(lambda self: self.runnable())
    @rule(outcome=st.sampled_from(["ok", "transient", "permanent"]))
    def handle(self, outcome: str) -> None:
        async def go() -> tuple[MJob, int]:
            m, attempt = await self.work(outcome)
            await self.settled(m.id)
            await self.parked()
            return m, attempt

        m, attempt = self.run(go())
        m.ran += 1
        step = self.tick(outcome)
        if outcome == "ok":
            m.state = "completed"
        elif (outcome == "permanent" and self.permanent_is_final) or attempt >= m.max_attempts:
            m.failed = attempt
            m.state = "failed"
        else:
            m.failed = attempt
            m.state = "delayed"
        m.ready = step

    @precondition(lambda self: self.runnable() and self.crashes < 2)
    @rule()
    def crash(self) -> None:
        async def go() -> MJob:
            m, _ = await self.work("crash")
            await self.crash_worker()
            await self.start_worker()  # the queue is paused: it only sweeps
            await self.settled(m.id)
            return m

        m = self.run(go())
        self.crashes += 1
        m.ran += 1
        m.stalls += 1
        m.state = "failed" if m.stalls >= MAX_STALLED else "waiting"
        m.ready = self.tick("crash_dead" if m.state == "failed" else "crash")

    @precondition(lambda self: any(m.state == "delayed" for m in self.model.values()))
    @rule()
    def advance_clock(self) -> None:
        async def go() -> None:
            members = await self.r.zrange(self.q.keys.delayed, 0, -1)
            if members:
                await self.r.zadd(self.q.keys.delayed, dict.fromkeys(members, 0), xx=True)

        self.run(go())
        step = self.tick("advance_clock")
        for m in self.model.values():
            if m.state == "delayed":
                m.state, m.ready = "due", step

    @precondition(lambda self: any(m.state == "failed" for m in self.model.values()))
    @rule(data=st.data())
    def replay_dead(self, data: st.DataObject) -> None:
        dead = sorted(m.id for m in self.model.values() if m.state == "failed")
        job_id = data.draw(st.sampled_from(dead))
        n = self.run(self.q.replay_dead(job_id))
        if n != 1:
            self.violations.append(f"replay_dead({job_id}) replayed {n}")
        m = self.model[job_id]
        m.state, m.failed, m.stalls, m.ready = "waiting", 0, 0, self.tick("replay_dead")

    # -- invariants ------------------------------------------------------------------------------
    @invariant()
    def no_violations(self) -> None:
        assert self.violations == []

    @invariant()
    def states_and_counts_match_the_model(self) -> None:
        async def go() -> tuple[dict[str, str], dict[str, int]]:
            states = {}
            for job_id in self.model:
                info = await self.q.get_job(job_id)
                states[job_id] = "missing" if info is None else str(info.state)
            return states, await self.q.counts()

        states, c = self.run(go())
        for job_id, m in self.model.items():
            allowed = {"due": ("delayed", "waiting")}.get(m.state, (m.state,))
            assert states[job_id] in allowed, f"{job_id}: engine {states[job_id]}, model {m.state}"
        tally = {s: sum(m.state == s for m in self.model.values())
                 for s in ("waiting", "due", "delayed", "completed", "failed", "cancelled")}
        assert c["active"] == 0
        assert c["waiting"] + c["delayed"] == tally["waiting"] + tally["due"] + tally["delayed"]
        assert tally["delayed"] <= c["delayed"] <= tally["delayed"] + tally["due"]
        assert c["failed"] == tally["failed"]
        assert c["cancelled"] == tally["cancelled"]
        completions = sum(m.state == "completed" for m in self.model.values())
        assert c["completed"] == completions


def run_machine(machine: type[QueueMachine], server: RedisProcess, examples: int,
                shrink: bool = True) -> None:
    machine.server = server
    case = machine.TestCase
    phases = list(Phase) if shrink else [Phase.explicit, Phase.reuse, Phase.generate]
    case.settings = settings(
        max_examples=examples, stateful_step_count=15, deadline=None, database=None,
        derandomize=examples <= 200, suppress_health_check=list(HealthCheck), phases=phases,
    )
    case("runTest").runTest()


@pytest.mark.timeout(300)
def test_t12_engine_matches_the_model(tmp_path: Any) -> None:
    server = start_redis_server(directory=tmp_path / "redis")
    QueueMachine.coverage.clear()
    try:
        run_machine(QueueMachine, server, EXAMPLES)
    finally:
        server.stop()
    print(dict(QueueMachine.coverage))
    rules = ("add", "add_delayed", "cancel", "cancel_refused", "ok", "transient", "permanent",
             "crash", "crash_dead", "advance_clock", "replay_dead")
    missing = [r for r in rules if not QueueMachine.coverage[r]]
    assert not missing, f"rules never exercised: {missing}"


class RetryEverythingModel(QueueMachine):
    """Negative control: a model that expects a PermanentError to be retried (the original
    package's behaviour). The machine must find the difference."""

    permanent_is_final = False


@pytest.mark.timeout(120)
def test_t12_negative_control_a_wrong_model_is_caught(tmp_path: Any) -> None:
    server = start_redis_server(directory=tmp_path / "redis")
    try:
        with pytest.raises(AssertionError, match="engine failed, model delayed"):
            run_machine(RetryEverythingModel, server, 100, shrink=False)
    finally:
        server.stop()
