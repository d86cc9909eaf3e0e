"""A failover run: SMS workers over ``salum,africastalking`` while Salum goes down, times
out, and a worker is SIGKILLed; then the figures, measured at the two stand-ins.

Used by the CI test (small N) and by ``python -m benchmarks.failover`` (by hand, large N).

Faults, keyed to progress (messages received by the stand-ins so far):
* at 25 %: Salum refuses connections for ``outage_s`` seconds (its stand-in stops and a
  new one starts on the same port): provably not sent, so messages fail over, and
  Salum's breaker opens, then closes after a probe once it is back;
* at 45 %: worker 0 is SIGKILLed and restarted: its in-flight messages are reclaimed
  after the visibility timeout and retried on the provider they are pinned to;
* at 65 %, once Salum takes traffic again: it answers the next ``slow_replies`` requests
  after the client timeout: ambiguous (it may have sent), so those retry on Salum only,
  with the same key. Jobs have ``attempts`` (5) tries.

Duplicates are counted from what the stand-ins received, by idempotency key (the job id:
Salum's ``clientsmsid``, Africa's Talking's ``Idempotency-Key`` header):
* ``cross_provider``: keys that reached both providers: a double send failover caused.
  Must be 0;
* ``same_provider_repeats``: keys that reached one provider more than once: the retries
  of ambiguous outcomes (timeouts, a kill mid-call), each carrying the same key for the
  provider to recognise. Bounded by the faults that can cause them.
"""

from __future__ import annotations

import functools
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import anyio

from streamq import JobOptions, Queue
from streamq.devredis import RedisProcess, free_port, start_redis_server
from streamq.events import QueueEvent
from streamq.sms import NotificationSMS, Recipient, SMSJob
from streamq.sms.standin import SalumStandin
from streamq.sms.standin_at import AfricasTalkingStandin
from tests.support.util import ROOT

SALUM_KEY = "sk-failover-run-SECRET"
AT_KEY = "atsk_failover_run_SECRET"


@dataclass
class FailoverConfig:
    jobs: int = 200
    workers: int = 2
    concurrency: int = 5
    rate: float = 50.0  # queue-wide jobs/s, so that the faults land mid-run
    outage_s: float = 2.0
    slow_replies: int = 3
    kill: bool = True
    vt: float = 2.0
    cooldown_s: float = 1.0
    attempts: int = 5  # an ambiguous failure uses one: a few late replies must not exhaust them
    drain_timeout: float = 120.0


@dataclass
class FailoverFigures:
    jobs: int
    completed: int
    dead: int
    via: dict[str, int]
    cross_provider: int
    same_provider_repeats: int
    requests: dict[str, int]
    failovers: dict[str, int] = field(default_factory=dict)
    breaker: list[str] = field(default_factory=list)
    seconds: float = 0.0
    kills: int = 0

    def lines(self) -> list[str]:
        return [
            f"messages {self.jobs}: completed {self.completed}, dead-lettered {self.dead} "
            f"({self.seconds:.1f} s, {self.kills} worker kill(s))",
            "delivered through: " + ", ".join(f"{k} {v}" for k, v in self.via.items()),
            "requests received: " + ", ".join(f"{k} {v}" for k, v in self.requests.items()),
            f"duplicates across providers: {self.cross_provider}",
            f"repeats on one provider (ambiguous retries, same idempotency key): "
            f"{self.same_provider_repeats}",
            "failovers: " + (", ".join(f"{k} {v}" for k, v in sorted(self.failovers.items()))
                             or "none"),
            "salum breaker: " + (" -> ".join(self.breaker) or "never opened"),
        ]


def _message(i: int) -> SMSJob:
    return NotificationSMS(id=f"f{i:06d}", timestamp=int(time.time() * 1000),
                           recipient=Recipient(phone_number="+254712345678"),
                           message=f"failover run {i}")


async def run_failover(cfg: FailoverConfig, workdir: Path,
                       redis: RedisProcess | None = None) -> FailoverFigures:
    own_redis = redis is None
    server = redis or start_redis_server(directory=workdir / "redis")
    salum_port = free_port()
    salums = [SalumStandin(api_key=SALUM_KEY, partner_id="7")]
    await salums[0].start(port=salum_port)
    at = AfricasTalkingStandin(api_key=AT_KEY, username="streamq")
    await at.start()
    env = dict(os.environ, PYTHONPATH=str(ROOT), STREAMQ_LOG_FORMAT="json",
               REDIS_URL=server.url, SALUM_API_URL=salums[0].url, SALUM_API_KEY=SALUM_KEY,
               SALUM_PARTNER_ID="7", SALUM_SHORTCODE="STREAMQ", SALUM_TIMEOUT="0.5",
               SALUM_CONNECT_TIMEOUT="0.5", AT_API_URL=at.url, AT_USERNAME="streamq",
               AT_API_KEY=AT_KEY, AT_TIMEOUT="2", SMS_BREAKER_COOLDOWN=str(cfg.cooldown_s))
    queue_name = "failover-run"
    args = [sys.executable, "-m", "streamq.worker", "--queue", queue_name, "--provider",
            "salum,africastalking", "--concurrency", str(cfg.concurrency), "--rate-limit",
            str(cfg.rate), "--visibility-timeout", str(cfg.vt)]
    procs: list[subprocess.Popen[bytes]] = []

    def spawn(slot: int) -> subprocess.Popen[bytes]:
        with open(workdir / f"worker-{slot}-{len(procs)}.log", "wb") as out:
            p = subprocess.Popen(args, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
        procs.append(p)
        return p

    def received() -> int:
        return sum(len(s.received) for s in salums) + len(at.received)

    q = Queue(queue_name, redis_url=server.url, job_type=SMSJob)
    kills = 0
    t0 = time.monotonic()
    try:
        live = [spawn(i) for i in range(cfg.workers)]
        opts = JobOptions(attempts=cfg.attempts)
        for start in range(0, cfg.jobs, 500):
            await q.add_bulk([(_message(i), opts) for i in range(start, min(cfg.jobs, start + 500))])
        outage_done = slow_done = kill_done = False
        deadline = time.monotonic() + cfg.drain_timeout
        events: list[QueueEvent] = []
        after = "0-0"
        while True:
            # read the events stream as it grows: it is capped, a long run would lose
            # its beginning by the end
            while batch := await q.read_events(after=after, count=1000):
                events += batch
                after = batch[-1].id
            counts = await q.counts()
            if counts["completed"] + counts["failed"] >= cfg.jobs:
                break
            if time.monotonic() > deadline:
                raise AssertionError(f"the run did not drain: {counts}")
            got = received()
            if not outage_done and got >= 0.25 * cfg.jobs:
                outage_done = True
                await salums[-1].stop()  # connections refused from now on
                await anyio.sleep(cfg.outage_s)
                back = SalumStandin(api_key=SALUM_KEY, partner_id="7")
                await back.start(port=salum_port)
                salums.append(back)
            elif cfg.kill and not kill_done and got >= 0.45 * cfg.jobs:
                kill_done = True
                live[0].send_signal(signal.SIGKILL)
                live[0].wait()
                kills += 1
                live[0] = spawn(0)
            elif (not slow_done and got >= 0.65 * cfg.jobs and len(salums[-1].received) >= 5
                  and await q.redis.hget(q.keys.breaker("salum"), "st") in (None, b"closed")):
                # while Salum takes traffic again, so the late replies hit several jobs
                slow_done = True
                salums[-1].script(*["slow:1.0"] * cfg.slow_replies)
            await anyio.sleep(0.02)
        seconds = time.monotonic() - t0
        counts = await q.counts()
        while batch := await q.read_events(after=after, count=1000):
            events += batch
            after = batch[-1].id
    finally:
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in procs:
            try:
                await anyio.to_thread.run_sync(functools.partial(p.wait, 20))
            except subprocess.TimeoutExpired:
                p.kill()
        await q.close()
        for s in salums:
            await s.stop()
        await at.stop()
        if own_redis:
            server.stop()

    salum_keys = [str(r.body.get("clientsmsid")) for s in salums for r in s.received if r.body]
    at_keys = [r.idempotency_key or "" for r in at.received]
    per_salum, per_at = Counter(salum_keys), Counter(at_keys)
    return FailoverFigures(
        jobs=cfg.jobs,
        completed=counts["completed"],
        dead=counts["failed"],
        via={"salum": len(per_salum), "africastalking": len(per_at)},
        cross_provider=len(set(per_salum) & set(per_at)),
        same_provider_repeats=sum(n - 1 for n in per_salum.values()) +
        sum(n - 1 for n in per_at.values()),
        requests={"salum": len(salum_keys), "africastalking": len(at_keys)},
        failovers=dict(Counter(e.fields.get("reason", "") for e in events
                               if e.name == "failover" and e.fields)),
        breaker=[e.fields.get("state", "") for e in events
                 if e.name == "breaker" and e.fields and e.fields.get("provider") == "salum"],
        seconds=seconds,
        kills=kills,
    )
