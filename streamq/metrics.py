"""Prometheus metrics and a health check for workers, served over aiohttp.

    metrics = Metrics()
    metrics.attach(worker)                 # counts jobs through the worker's hooks
    await tg.start(serve_metrics, worker, "127.0.0.1", 9108, metrics=metrics)

Three sources feed one private ``CollectorRegistry`` per ``Metrics`` (so two instances,
e.g. in tests, never collide):

* worker hooks (completed, failed, retrying, dead, stalled, deferred, active) move the counters
  and the wait/run histograms, labelled ``queue`` and ``type`` (the payload's tag, or
  ``unknown`` for plain data and for jobs never decoded); the worker's schedule runner's
  hooks (fired, missed) move the schedule counters, labelled ``queue`` and ``schedule``,
  and the lateness histogram;
* the queue's own counts (``Queue.counts()``, one Lua snapshot) are read on each scrape,
  so every worker of a queue reports the same queue-wide numbers;
* worker attributes (in flight, concurrency, healthy, held) are read on each scrape.

``record_provider_send`` lets a handler's provider report send latency and outcome to
the ``Metrics`` attached to the running worker; without one it does nothing.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, Literal, get_args

import anyio
import structlog
from aiohttp import web
from anyio.abc import TaskStatus
from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.exposition import choose_encoder
from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, Metric
from redis.exceptions import RedisError

from .errors import ConfigError, StreamqError
from .events import WorkerEvent
from .redact import redact_text
from .schedules.runner import ScheduleEvent
from .worker import Worker

log = structlog.get_logger("streamq.metrics")

QUEUE_STATES: tuple[str, ...] = ("waiting", "active", "delayed", "completed", "failed", "cancelled",
                                 "dead")
ProviderOutcome = Literal["sent", "transient_error", "permanent_error", "config_error", "error"]
PROVIDER_OUTCOMES: tuple[str, ...] = get_args(ProviderOutcome)
UNKNOWN_TYPE = "unknown"

# Waits span sub-millisecond (idle workers) to hours (a backlog); runs are shorter.
WAIT_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600,
                1800, 3600)
RUN_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)
PROVIDER_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
# from a schedule's slot to its firing: milliseconds when a worker is up, longer after downtime
LATENESS_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 60,
                    600, 3600)

DEFAULT_STUCK_AFTER_S = 15.0
"""An idle fetch loop turns at least every 2 s (its XREAD block); 15 s without a turn
while it has free slots means it is stuck, not idle."""
PING_TIMEOUT_S = 1.0
COUNTS_TIMEOUT_S = 1.0


def _type(event: WorkerEvent) -> str:
    return event.job_type or UNKNOWN_TYPE


class Metrics:
    """The metrics of the workers attached to it, in a registry of its own."""

    def __init__(self, *, registry: CollectorRegistry | None = None,
                 stuck_after_s: float = DEFAULT_STUCK_AFTER_S) -> None:
        if stuck_after_s <= 0:
            raise ConfigError("stuck_after_s must be > 0 seconds")
        self.registry = registry or CollectorRegistry(auto_describe=True)
        self.stuck_after_s = stuck_after_s
        self.workers: list[Worker] = []
        self._counts: dict[str, dict[str, int]] = {}
        qt = ("queue", "type")
        r = self.registry
        self.processed = Counter("streamq_jobs_processed", "Attempts that finished: completed + failed.",
                                 qt, registry=r)
        self.completed = Counter("streamq_jobs_completed", "Jobs completed (acknowledged).", qt, registry=r)
        self.failed = Counter("streamq_jobs_failed", "Attempts that failed (retried or dead-lettered).",
                              qt, registry=r)
        self.retried = Counter("streamq_jobs_retried", "Failed attempts scheduled for a retry.", qt,
                               registry=r)
        self.dead = Counter("streamq_jobs_dead_lettered", "Jobs moved to the dead letters.", qt,
                            registry=r)
        self.stalled = Counter("streamq_jobs_stalled",
                               "Jobs recovered from a worker that died or went silent.", qt, registry=r)
        self.deferred = Counter("streamq_jobs_deferred", "Jobs put back for later without using an "
                                "attempt (a handler's Defer).", qt, registry=r)
        self.wait = Histogram("streamq_job_wait_seconds", "Seconds from waiting (enqueue, promotion) "
                              "to the handler's start.", qt, buckets=WAIT_BUCKETS, registry=r)
        self.run = Histogram("streamq_job_run_seconds", "Seconds the handler ran (success or failure).",
                             qt, buckets=RUN_BUCKETS, registry=r)
        self.provider_send = Histogram(
            "streamq_provider_send_seconds", "Provider send latency by outcome (sent, transient_error, "
            "permanent_error, config_error, error).", ("queue", "provider", "outcome"),
            buckets=PROVIDER_BUCKETS, registry=r)
        sq = ("queue", "schedule")
        self.schedule_fired = Counter(
            "streamq_schedule_runs_fired", "Schedule slots fired (a run added) by these workers.",
            sq, registry=r)
        self.schedule_missed = Counter(
            "streamq_schedule_slots_missed", "Schedule slots not run: missed while no worker "
            "ran (misfire), or skipped while the previous run was live (overlap=skip).",
            (*sq, "why"), registry=r)
        self.schedule_lateness = Histogram(
            "streamq_schedule_lateness_seconds", "Seconds from a schedule's slot to its firing "
            "(Redis clock).", ("queue",), buckets=LATENESS_BUCKETS, registry=r)
        r.register(_StateCollector(self))

    # -- feeding -----------------------------------------------------------------------
    def attach(self, worker: Worker) -> None:
        """Count the worker's jobs through its hooks and report its gauges. The worker
        becomes the target of ``record_provider_send`` in this process."""
        global _active
        if worker in self.workers:
            return
        self.workers.append(worker)
        worker.on("active", self._on_active)
        worker.on("completed", self._on_completed)
        worker.on("failed", self._on_failed)
        worker.on("retrying", self._on_retrying)
        worker.on("dead", self._on_dead)
        worker.on("stalled", self._on_stalled)
        worker.on("deferred", self._on_deferred)
        if worker.schedules is not None:
            worker.schedules.on("fired", self._on_schedule_fired)
            worker.schedules.on("missed", self._on_schedule_missed)
        _active = self

    def _on_schedule_fired(self, e: ScheduleEvent) -> None:
        self.schedule_fired.labels(e.queue, e.schedule_id).inc()
        self.schedule_lateness.labels(e.queue).observe(e.lateness_s)

    def _on_schedule_missed(self, e: ScheduleEvent) -> None:
        self.schedule_missed.labels(e.queue, e.schedule_id, e.why).inc(e.missed)

    def _on_active(self, e: WorkerEvent) -> None:
        if e.wait_s is not None:
            self.wait.labels(e.queue, _type(e)).observe(e.wait_s)

    def _on_completed(self, e: WorkerEvent) -> None:
        t = _type(e)
        self.processed.labels(e.queue, t).inc()
        self.completed.labels(e.queue, t).inc()
        if e.run_s is not None:
            self.run.labels(e.queue, t).observe(e.run_s)

    def _on_failed(self, e: WorkerEvent) -> None:
        t = _type(e)
        self.processed.labels(e.queue, t).inc()
        self.failed.labels(e.queue, t).inc()
        if e.run_s is not None:
            self.run.labels(e.queue, t).observe(e.run_s)

    def _on_retrying(self, e: WorkerEvent) -> None:
        self.retried.labels(e.queue, _type(e)).inc()

    def _on_dead(self, e: WorkerEvent) -> None:
        self.dead.labels(e.queue, _type(e)).inc()

    def _on_stalled(self, e: WorkerEvent) -> None:
        self.stalled.labels(e.queue, _type(e)).inc()

    def _on_deferred(self, e: WorkerEvent) -> None:
        self.deferred.labels(e.queue, _type(e)).inc()

    def record_provider_send(self, provider: str, outcome: ProviderOutcome, seconds: float, *,
                             queue: str | None = None) -> None:
        """One provider call: its latency and how it ended. ``queue`` defaults to the
        queue of the last attached worker."""
        if outcome not in PROVIDER_OUTCOMES:
            # a free-form outcome would grow the series without bound
            raise ValueError(f"outcome {outcome!r} is invalid: use one of {', '.join(PROVIDER_OUTCOMES)}")
        if queue is None:
            queue = self.workers[-1].queue.name if self.workers else "unknown"
        self.provider_send.labels(queue, provider, outcome).observe(max(0.0, seconds))

    # -- reading -------------------------------------------------------------------------
    async def refresh(self) -> None:
        """Read each attached queue's counts. A queue whose counts cannot be read within
        1 s drops out of ``streamq_queue_jobs`` until the next success: a missing series
        is honest, a stale number would mislead an alert."""
        seen: set[str] = set()
        for w in self.workers:
            q = w.queue
            if q.name in seen:
                continue
            seen.add(q.name)
            counts: dict[str, int] | None = None
            with anyio.move_on_after(COUNTS_TIMEOUT_S):
                try:
                    counts = await q.counts()
                except (StreamqError, RedisError, OSError) as exc:
                    log.warning("metrics.counts_failed", queue=q.name, error=redact_text(str(exc)))
            if counts is None:
                self._counts.pop(q.name, None)
            else:
                self._counts[q.name] = counts

    async def scrape(self, accept: str = "") -> tuple[bytes, str]:
        """The exposition (Prometheus text, or OpenMetrics when ``accept`` asks for it)
        with fresh queue counts, and its content type."""
        await self.refresh()
        encoder, content_type = choose_encoder(accept)
        return encoder(self.registry), content_type

    async def health(self, worker: Worker) -> Health:
        """Healthy while the worker has Redis, its fetch loop turns, and PING answers in 1 s;
        degraded (still ok) while its fetching is held (a handler's ``Defer(hold=True)``)."""
        reasons: list[str] = []
        degraded: list[str] = []
        hold = worker.fetch_hold
        if hold.held:
            degraded.append(f"delivery held for {hold.held_for:.0f}s: {hold.reason}")
        if not worker.healthy:
            reasons.append("worker has no working Redis connection")
        age = time.monotonic() - worker.last_loop_at
        limit = self.stuck_after_s
        if worker.rate_limit:
            limit = max(limit, 2.0 / worker.rate_limit)  # a slow rate limit sleeps between turns
        # With every slot busy the loop waits for a free one: saturated, not stuck.
        if worker.in_flight < worker.slots and age > limit:
            reasons.append(f"fetch loop stuck: no turn for {age:.1f}s (limit {limit:g}s)")
        ping_s: float | None = None
        t0 = time.perf_counter()
        try:
            with anyio.fail_after(PING_TIMEOUT_S):
                await worker.queue.redis.ping()
            ping_s = time.perf_counter() - t0
        except TimeoutError:
            reasons.append(f"Redis PING got no answer within {PING_TIMEOUT_S:g}s")
        except (RedisError, OSError) as exc:
            reasons.append(f"Redis PING failed: {redact_text(str(exc))}")
        details: dict[str, Any] = {
            "queue": worker.queue.name,
            "consumer": worker.consumer,
            "in_flight": worker.in_flight,
            "processed": worker.processed,
            "loop_age_s": round(age, 3),
            "ping_ms": None if ping_s is None else round(ping_s * 1000, 2),
        }
        if hold.held:
            details["held"] = {"reason": hold.reason, "held_for_s": round(hold.held_for, 3),
                               "probe_in_s": round(hold.retry_in, 3)}
        return Health(not reasons, reasons, details, degraded)


@dataclass(frozen=True, slots=True)
class Health:
    ok: bool
    reasons: list[str]
    details: dict[str, Any] = field(default_factory=dict)
    degraded: list[str] = field(default_factory=list)
    """Reasons the worker is up but not delivering (its fetching is held)."""

    @property
    def status(self) -> str:
        return "unhealthy" if not self.ok else "degraded" if self.degraded else "ok"

    def as_json(self) -> dict[str, Any]:
        body: dict[str, Any] = {"status": self.status}
        if self.reasons or self.degraded:
            body["reason"] = "; ".join([*self.reasons, *self.degraded])
        return {**body, **self.details}


class _StateCollector:
    """Gauges read at scrape time: queue counts (from the last ``refresh``) and the
    attached workers' own state, summed per queue."""

    def __init__(self, metrics: Metrics) -> None:
        self._m = metrics

    def describe(self) -> Iterable[Metric]:
        return []  # the families depend on what is attached; skip registry-time checks

    def collect(self) -> Iterator[Metric]:
        m = self._m
        jobs = GaugeMetricFamily("streamq_queue_jobs", "Jobs per state, queue-wide (completed and "
                                 "cancelled: totals since the queue was created; failed: dead "
                                 "letters not replayed; dead: dead-letter stream length).",
                                 labels=["queue", "state"])
        paused = GaugeMetricFamily("streamq_queue_paused", "1 while the queue is paused.",
                                   labels=["queue"])
        for name, counts in sorted(m._counts.items()):
            for state in QUEUE_STATES:
                jobs.add_metric([name, state], counts.get(state, 0))
            paused.add_metric([name], counts.get("paused", 0))
        yield jobs
        yield paused

        in_flight = GaugeMetricFamily("streamq_worker_in_flight", "Jobs running in this process.",
                                      labels=["queue"])
        concurrency = GaugeMetricFamily("streamq_worker_concurrency", "Job slots in this process.",
                                        labels=["queue"])
        healthy = GaugeMetricFamily("streamq_worker_healthy",
                                    "Workers of this process whose Redis connection works.",
                                    labels=["queue"])
        held = GaugeMetricFamily("streamq_worker_held", "Workers of this process whose fetching "
                                 "is held (a handler's Defer(hold=True): delivery waits).",
                                 labels=["queue"])
        waits = CounterMetricFamily("streamq_rate_limiter_waits", "Times the fetch loop waited for "
                                    "a rate-limit token.", labels=["queue"])
        wait_s = CounterMetricFamily("streamq_rate_limiter_wait_seconds", "Seconds the fetch loop "
                                     "waited for rate-limit tokens.", labels=["queue"])
        per_queue: dict[str, list[float]] = {}
        limiter: dict[str, list[float]] = {}
        for w in m.workers:
            acc = per_queue.setdefault(w.queue.name, [0, 0, 0, 0])
            acc[0] += w.in_flight
            acc[1] += w.slots
            acc[2] += 1 if w.healthy else 0
            acc[3] += 1 if w.fetch_hold.held else 0
            # the worker counts its rate-limit waits (Worker.rate_limited_waits / _s)
            n = getattr(w, "rate_limited_waits", None)
            s = getattr(w, "rate_limited_s", None)
            if isinstance(n, int) and isinstance(s, int | float):
                lim = limiter.setdefault(w.queue.name, [0, 0.0])
                lim[0] += n
                lim[1] += s
        for name, (f, c, h, held_n) in sorted(per_queue.items()):
            in_flight.add_metric([name], f)
            concurrency.add_metric([name], c)
            healthy.add_metric([name], h)
            held.add_metric([name], held_n)
        yield in_flight
        yield concurrency
        yield healthy
        yield held
        if limiter:
            for name, (n, s) in sorted(limiter.items()):
                waits.add_metric([name], n)
                wait_s.add_metric([name], s)
            yield waits
            yield wait_s


_active: Metrics | None = None


def current_metrics() -> Metrics | None:
    """The ``Metrics`` most recently attached to a worker in this process, if any."""
    return _active


def record_provider_send(provider: str, outcome: ProviderOutcome, seconds: float, *,
                         queue: str | None = None) -> None:
    """Report one provider call to the running worker's metrics; a no-op without them
    (no ``--metrics-port``), so a handler may call it unconditionally."""
    m = _active
    if m is not None:
        m.record_provider_send(provider, outcome, seconds, queue=queue)


# -- the HTTP side ------------------------------------------------------------------------
def metrics_app(metrics: Metrics, worker: Worker) -> web.Application:
    """An aiohttp app with ``/metrics`` and ``/healthz``, to serve or to mount in your own."""

    async def get_metrics(request: web.Request) -> web.Response:
        body, content_type = await metrics.scrape(request.headers.get("Accept", ""))
        return web.Response(body=body, headers={"Content-Type": content_type})

    async def get_healthz(request: web.Request) -> web.Response:
        # a held worker is alive (restarting it would not help): 200 with status
        # "degraded"; ?strict=1 answers 503 for it too, for checks that read only the code
        h = await metrics.health(worker)
        strict = request.query.get("strict", "") not in ("", "0", "false")
        ok = h.ok and not (strict and h.degraded)
        return web.json_response(h.as_json(), status=200 if ok else 503)

    app = web.Application()
    app.router.add_get("/metrics", get_metrics)
    app.router.add_get("/healthz", get_healthz)
    return app


async def serve_metrics(
    worker: Worker,
    host: str,
    port: int,
    *,
    metrics: Metrics | None = None,
    task_status: TaskStatus[int] = anyio.TASK_STATUS_IGNORED,
) -> None:
    """Serve ``/metrics`` and ``/healthz`` for ``worker`` on host:port until cancelled.

    Attaches a new ``Metrics`` unless one is given. ``task_status.started`` receives the
    bound port (useful with port 0). A port that cannot be bound is a ``ConfigError``.
    """
    if metrics is None:
        metrics = Metrics()
    metrics.attach(worker)
    runner = web.AppRunner(metrics_app(metrics, worker), access_log=None)
    await runner.setup()
    try:
        try:
            await web.TCPSite(runner, host, port).start()
        except OSError as exc:
            raise ConfigError(f"metrics server cannot listen on {host}:{port}: "
                              f"{exc.strerror or exc}") from None
        bound = _bound_port(runner, port)
        log.info("metrics.listening", host=host, port=bound, queue=worker.queue.name)
        task_status.started(bound)
        await anyio.sleep_forever()
    finally:
        with anyio.CancelScope(shield=True):  # close the socket even when cancelled
            await runner.cleanup()


def _bound_port(runner: web.AppRunner, requested: int) -> int:
    for addr in runner.addresses:
        if isinstance(addr, tuple) and len(addr) >= 2:
            return int(addr[1])
    return requested


__all__ = [
    "PROVIDER_OUTCOMES",
    "Health",
    "Metrics",
    "current_metrics",
    "metrics_app",
    "record_provider_send",
    "serve_metrics",
]
