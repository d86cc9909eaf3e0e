"""``python -m streamq.worker``: run a worker (the SMS notification worker by default).

Every option has an environment twin (flag wins). This is the one place that wires
the engine to the SMS domain: with ``--handler module:function`` it runs any other
queue's handler instead.

Redis: ``REDIS_URL`` (or ``REDIS_HOST``/``PORT``/``PASSWORD``/``DB``). With none set,
the default local setup applies: Redis at 127.0.0.1:6379, and when nothing answers
there and ``redis-server`` is installed, a local one is started (and said so). When a
location is configured and nothing answers, the worker exits at once with one line.
"""

from __future__ import annotations

import argparse
import importlib
import os
import signal
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import anyio
import structlog

from ..devredis import RedisProcess, redis_server_binary, start_redis_server
from ..errors import ConfigError, StreamqError
from ..logs import configure_logging
from ..queue import Queue
from ..redact import redact_text, redact_url
from ..settings import DEFAULT_REDIS_URL, env_is_default_local, redis_url_from_env
from .core import Handler, Worker

log = structlog.get_logger("streamq.worker")

LOCAL_PORT = 6379
START_CHECK_S = 5.0
"""The providers' start-up check may delay the start this long at most."""


def _env(name: str, default: str) -> str:
    return os.environ.get(name, "").strip() or default


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m streamq.worker",
        description="Run a streamq worker. Each option falls back to the environment "
        "variable shown, then to the default.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--queue", default=_env("STREAMQ_QUEUE", _env("STREAMQ_SMS_QUEUE", "sms")),
                   help="queue to work (env STREAMQ_QUEUE, else STREAMQ_SMS_QUEUE, which the "
                   "SMS job creators read too)")
    p.add_argument("--partitions", type=int,
                   default=int(_env("STREAMQ_PARTITIONS", "0")) or None,
                   help="the queue's partition count: none = the count stored in Redis (1 for "
                   "a new queue); a count other than the stored one is refused "
                   "(env STREAMQ_PARTITIONS)")
    p.add_argument("--concurrency", type=int, default=int(_env("STREAMQ_CONCURRENCY", "5")),
                   help="jobs in flight in this process (env STREAMQ_CONCURRENCY)")
    p.add_argument("--rate-limit", type=float,
                   default=float(_env("STREAMQ_RATE_LIMIT", "10")),
                   help="jobs/s across all workers of the queue, 0 = unlimited "
                   "(env STREAMQ_RATE_LIMIT)")
    p.add_argument("--provider", default=None,
                   help="SMS provider, or an ordered list for failover: mock, salum, "
                   "africastalking, e.g. salum,africastalking (env SMS_PROVIDERS, or "
                   "STREAMQ_PROVIDER for one; default mock). salum reads SALUM_API_URL, "
                   "SALUM_API_KEY, SALUM_PARTNER_ID, SALUM_SHORTCODE; africastalking reads "
                   "AT_API_URL, AT_USERNAME, AT_API_KEY, AT_SENDER_ID; per-provider limits "
                   "SALUM_RATE_LIMIT, AT_RATE_LIMIT (jobs/s); see docs/sms-providers.md")
    p.add_argument("--check-provider", action="store_true",
                   default=_env("STREAMQ_CHECK_PROVIDER", "") not in ("", "0"),
                   help="check each provider's configuration without sending a message, "
                   "print one line each and exit (0 = all good; env STREAMQ_CHECK_PROVIDER)")
    p.add_argument("--handler", default=_env("STREAMQ_HANDLER", ""),
                   help="run 'module:function' instead of the SMS dispatcher; with it, "
                   "--queue names any queue (env STREAMQ_HANDLER)")
    p.add_argument("--job-type", default=_env("STREAMQ_JOB_TYPE", ""),
                   help="with --handler: 'module:Type', a msgspec type (e.g. a tagged union) "
                   "the payloads are decoded to; none = plain msgpack values (env STREAMQ_JOB_TYPE)")
    p.add_argument("--metrics-port", type=int,
                   default=int(_env("STREAMQ_METRICS_PORT", "0")) or None,
                   help="serve /metrics and /healthz on this port; none unless given "
                   "(env STREAMQ_METRICS_PORT)")
    p.add_argument("--metrics-host", default=_env("STREAMQ_METRICS_HOST", "127.0.0.1"),
                   help="address of the metrics server (env STREAMQ_METRICS_HOST)")
    p.add_argument("--log-format", choices=("json", "console"),
                   default=_env("STREAMQ_LOG_FORMAT", "console"),
                   help="json for production, console for development (env STREAMQ_LOG_FORMAT)")
    p.add_argument("--log-level", default=_env("STREAMQ_LOG_LEVEL", "info"),
                   help="debug, info, warning or error (env STREAMQ_LOG_LEVEL)")
    p.add_argument("--visibility-timeout", type=float,
                   default=float(_env("STREAMQ_VISIBILITY_TIMEOUT", "30")),
                   help="seconds a silent worker keeps its jobs before they are reclaimed "
                   "(env STREAMQ_VISIBILITY_TIMEOUT)")
    p.add_argument("--shutdown-grace", type=float,
                   default=float(_env("STREAMQ_SHUTDOWN_GRACE", "30")),
                   help="seconds running jobs get to finish on SIGTERM (env STREAMQ_SHUTDOWN_GRACE)")
    p.add_argument("--max-stalled", type=int, default=int(_env("STREAMQ_MAX_STALLED", "3")),
                   help="worker crashes a job survives before it is dead-lettered "
                   "(env STREAMQ_MAX_STALLED)")
    p.add_argument("--redis-url", default=None,
                   help="Redis location (env REDIS_URL, or REDIS_HOST/REDIS_PORT/"
                   f"REDIS_PASSWORD/REDIS_DB; default {DEFAULT_REDIS_URL})")
    return p


def load_object(spec: str, flag: str) -> Any:
    module_name, _, attr = spec.partition(":")
    if not module_name or not attr:
        raise ConfigError(f"{flag} must look like 'package.module:name', got {spec!r}")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigError(f"{flag} module {module_name!r} cannot be imported: {exc}") from None
    obj = getattr(module, attr, None)
    if obj is None:
        raise ConfigError(f"{flag} {spec!r}: {module_name} has no {attr!r}")
    return obj


def load_handler(spec: str) -> Handler:
    handler = load_object(spec, "--handler")
    if not callable(handler):
        raise ConfigError(f"--handler {spec!r} is not a callable")
    return handler  # type: ignore[no-any-return]


def local_port() -> int:
    """The port of the default local setup (6379; ``STREAMQ_LOCAL_REDIS_PORT`` moves it)."""
    raw = os.environ.get("STREAMQ_LOCAL_REDIS_PORT", "").strip()
    if raw and not raw.isdigit():
        raise ConfigError("STREAMQ_LOCAL_REDIS_PORT must be a port number")
    return int(raw) if raw else LOCAL_PORT


def ensure_local_redis(url: str, explicit: bool) -> RedisProcess | None:
    """The default local setup: start redis-server on 6379 when nothing answers there."""
    if explicit:
        return None
    port = local_port()
    probe = RedisProcess(port=port, directory=Path("."), args=[])
    if probe.ping():
        return None
    if redis_server_binary() is None:
        return None  # the connect check below reports "unreachable" with the URL
    data = Path(os.environ.get("STREAMQ_LOCAL_REDIS_DIR", Path.home() / ".cache/streamq/redis"))
    proc = start_redis_server(port, data, appendonly=True, appendfsync="everysec")
    print(f"streamq: no Redis answered at {url}; started a local redis-server on "
          f"127.0.0.1:{port} (pid {proc.proc.pid if proc.proc else '?'}, AOF in {data}); "
          "it stops with this worker", file=sys.stderr, flush=True)
    return proc


def job_type_of(args: argparse.Namespace) -> Any:
    """The type the queue's payloads decode to: SMSJob, or --job-type with --handler."""
    if args.handler:
        return load_object(args.job_type, "--job-type") if args.job_type else None
    if args.job_type:
        raise ConfigError("--job-type goes with --handler (the SMS worker decodes SMSJob)")
    from ..sms import SMSJob

    return SMSJob


def make_handler(
    args: argparse.Namespace, queue: Queue
) -> tuple[Handler, Callable[[], Any] | None, Callable[[], Any] | None]:
    """The handler, an async close function for its resources, and an async start-up
    check (the SMS providers' configuration), each but the handler optional."""
    if args.handler:
        return load_handler(args.handler), None, None
    from ..sms import make_sms_handler
    from ..sms.failover import router_from_settings

    router = router_from_settings(queue, args.provider)
    if args.log_format == "json":
        for slot in router.slots:
            if hasattr(slot.provider, "echo"):
                # the mock's development print-out would break JSON log lines
                slot.provider.echo = False
    return make_sms_handler(router), router.aclose, lambda: check_at_start(router)


async def check_at_start(router: Any) -> None:
    """Check each provider that allows it without sending; a refused credential opens its
    breaker now (the worker then fails over or holds, instead of spending a message)."""
    results: list[tuple[str, bool, str]] = []
    with anyio.move_on_after(START_CHECK_S):
        try:
            results = await router.check()
        except (StreamqError, OSError) as exc:
            log.warning("sms.provider_check_skipped", error=redact_text(str(exc)))
    for name, ok, found in results:
        if ok:
            log.info("sms.provider_checked", provider=name, result=found)
        else:
            log.error("sms.provider_check_failed", provider=name, error=found)


async def check_providers(args: argparse.Namespace, url: str) -> int:
    """``--check-provider``: one line per provider, exit code 0 when all are good."""
    from ..sms.failover import router_from_settings

    router = router_from_settings(Queue(args.queue, redis_url=url), args.provider)
    try:
        results = await router.check(open_breakers=False)
    finally:
        await router.aclose()
    for name, ok, found in results:
        print(f"provider {name}: {'ok' if ok else 'FAILED'}: {found}", flush=True)
    return 0 if all(ok for _, ok, _ in results) else 2


async def run(args: argparse.Namespace, url: str) -> None:
    queue = Queue(args.queue, redis_url=url, job_type=job_type_of(args),
                  partitions=args.partitions)
    handler, close_handler, start_check = make_handler(args, queue)
    worker = Worker(
        queue, handler,
        concurrency=args.concurrency,
        rate_limit=args.rate_limit or None,
        visibility_timeout=args.visibility_timeout,
        shutdown_grace=args.shutdown_grace,
        max_stalled=args.max_stalled,
    )
    await queue.connect()  # fail fast, one line, before anything else starts
    if start_check is not None:
        await start_check()
    signals = 0

    async def watch_signals() -> None:
        nonlocal signals
        with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as received:
            async for sig in received:
                signals += 1
                log.info("worker.signal", signal=signal.Signals(sig).name,
                         immediate=signals > 1)
                worker.stop(immediate=signals > 1)

    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(watch_signals)
            if args.metrics_port:
                from ..metrics import serve_metrics

                await tg.start(serve_metrics, worker, args.metrics_host, args.metrics_port)
            await worker.run()
            tg.cancel_scope.cancel()
    finally:
        if close_handler is not None:
            await close_handler()
        await queue.close()


def _leaves(group: BaseExceptionGroup[BaseException]) -> list[BaseException]:
    out: list[BaseException] = []
    for e in group.exceptions:
        out.extend(_leaves(e) if isinstance(e, BaseExceptionGroup) else [e])
    return out


def main(argv: Sequence[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
    except ValueError as exc:  # a malformed env twin (e.g. STREAMQ_CONCURRENCY=abc)
        print(f"streamq worker: invalid setting: {exc}", file=sys.stderr)
        return 2
    configure_logging(args.log_format, args.log_level)
    local: RedisProcess | None = None
    try:
        explicit = args.redis_url is not None or not env_is_default_local()
        url = args.redis_url or redis_url_from_env()
        if not explicit:
            url = f"redis://127.0.0.1:{local_port()}/0"
        if args.concurrency < 1:
            raise ConfigError("--concurrency must be >= 1")
        if args.rate_limit < 0:
            raise ConfigError("--rate-limit must be >= 0 (0 = unlimited)")
        if args.check_provider:
            return anyio.run(check_providers, args, url)
        local = ensure_local_redis(url, explicit)
        try:
            import uvloop  # noqa: F401

            backend_options = {"use_uvloop": True}
        except ImportError:
            backend_options = {}
        anyio.run(run, args, url, backend_options=backend_options)
        return 0
    except StreamqError as exc:
        print(f"streamq worker: {exc}", file=sys.stderr)
        return 2
    except BaseExceptionGroup as group:
        # a setting that fails inside the task group (e.g. the metrics port is taken)
        errors = [e for e in _leaves(group)]
        if errors and all(isinstance(e, StreamqError) for e in errors):
            print(f"streamq worker: {errors[0]}", file=sys.stderr)
            return 2
        raise
    except KeyboardInterrupt:
        return 130
    finally:
        if local is not None:
            local.stop()
            print(f"streamq: stopped the local redis-server ({redact_url(local.url)})",
                  file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
