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
import functools
import importlib
import os
import signal
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import anyio
import structlog

from ..cli.env import env_number, env_text, flag_number, prog_name, settings_text, version_text
from ..devredis import INSTALL_HINT, RedisProcess, redis_server_binary, start_redis_server
from ..errors import ConfigError, RedisUnavailable, StreamqError
from ..logs import configure_logging
from ..queue import Queue
from ..redact import redact_text, redact_url
from ..settings import (
    DEFAULT_REDIS_URL,
    check_redis_url,
    env_is_default_local,
    redis_url_from_env,
)
from .batch import MAX_BATCH, BatchOptions
from .core import Handler, Worker
from .joblog import log_jobs

log = structlog.get_logger("streamq.worker")

LOCAL_PORT = 6379
START_CHECK_S = 5.0
"""The providers' start-up check may delay the start this long at most."""


# Numeric options: dest -> (env twin, type, default, minimum, strictly above the minimum,
# maximum). A bad value names the variable or the flag it came from.
NUMBERS: dict[str, tuple[str, type[int] | type[float], int | float, float, bool, float | None]] = {
    "partitions": ("STREAMQ_PARTITIONS", int, 0, 0, False, 128),
    "concurrency": ("STREAMQ_CONCURRENCY", int, 5, 1, False, None),
    "rate_limit": ("STREAMQ_RATE_LIMIT", float, 10.0, 0, False, None),
    "metrics_port": ("STREAMQ_METRICS_PORT", int, 0, 0, False, 65535),
    "delivery_port": ("AT_DELIVERY_PORT", int, 0, 0, False, 65535),
    "visibility_timeout": ("STREAMQ_VISIBILITY_TIMEOUT", float, 30.0, 0, True, None),
    "job_timeout": ("STREAMQ_JOB_TIMEOUT", float, 0.0, 0, False, None),
    "shutdown_grace": ("STREAMQ_SHUTDOWN_GRACE", float, 30.0, 0, False, None),
    "max_stalled": ("STREAMQ_MAX_STALLED", int, 3, 1, False, None),
    "batch_size": ("STREAMQ_BATCH_SIZE", int, 0, 0, False, MAX_BATCH),
    "batch_max_wait": ("STREAMQ_BATCH_MAX_WAIT", float, 0.05, 0, False, 60.0),
}
# Text options: dest -> (env twin, default, allowed values or None)
TEXTS: dict[str, tuple[str, str, tuple[str, ...] | None]] = {
    "handler": ("STREAMQ_HANDLER", "", None),
    "job_type": ("STREAMQ_JOB_TYPE", "", None),
    "metrics_host": ("STREAMQ_METRICS_HOST", "127.0.0.1", None),
    "delivery_host": ("AT_DELIVERY_HOST", "127.0.0.1", None),
    "log_format": ("STREAMQ_LOG_FORMAT", "console", ("json", "console")),
    "log_level": ("STREAMQ_LOG_LEVEL", "info", ("debug", "info", "warning", "error")),
}


def _number_flag(p: argparse.ArgumentParser, flag: str, help: str) -> None:
    dest = flag.removeprefix("--").replace("-", "_")
    env, kind, default, low, above, high = NUMBERS[dest]
    shown = "none" if dest in ("metrics_port", "delivery_port") else f"{default:g}"
    p.add_argument(flag, default=None, type=flag_number(flag, kind, minimum=low, above=above,
                                                        maximum=high),
                   help=f"{help} (env {env}; default {shown})")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=prog_name("streamq.worker", "streamq-worker"),
        description="Run a streamq worker: the SMS notification worker by default, or any "
        "queue's handler with --handler. Each option falls back to the environment variable "
        "shown, then to the default.",
        epilog="Every environment variable streamq reads ([--flag] = the option that "
        "overrides it):\n" + settings_text(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--version", action="version", version=version_text())
    p.add_argument("--queue", default=None,
                   help="queue to work (env STREAMQ_QUEUE, else STREAMQ_SMS_QUEUE, which the "
                   "SMS job creators read too; default sms)")
    _number_flag(p, "--partitions", "the queue's partition count: 0 = the count stored in "
                 "Redis (1 for a new queue); a count other than the stored one is refused")
    _number_flag(p, "--concurrency", "jobs in flight in this process")
    _number_flag(p, "--rate-limit", "jobs/s across all workers of the queue, 0 = unlimited")
    p.add_argument("--provider", default=None,
                   help="SMS provider, or an ordered list for failover: mock, salum, "
                   "africastalking, e.g. salum,africastalking (env SMS_PROVIDERS, or "
                   "STREAMQ_PROVIDER for one; default mock). salum reads SALUM_API_URL, "
                   "SALUM_API_KEY, SALUM_PARTNER_ID, SALUM_SHORTCODE; africastalking reads "
                   "AT_API_URL, AT_USERNAME, AT_API_KEY, AT_SENDER_ID; per-provider limits "
                   "SALUM_RATE_LIMIT, AT_RATE_LIMIT (jobs/s); see docs/sms-providers.md")
    p.add_argument("--check-provider", action="store_true", default=None,
                   help="check each provider's configuration without sending a message, "
                   "print one line each and exit (0 = all good; env STREAMQ_CHECK_PROVIDER)")
    p.add_argument("--handler", default=None,
                   help="run 'module:function' instead of the SMS dispatcher; with it, "
                   "--queue names any queue (env STREAMQ_HANDLER)")
    _number_flag(p, "--batch-size", "call the handler with lists of up to this many jobs of "
                 "one priority level (a batch handler, docs/workflows.md); --concurrency then "
                 "counts batches. The SMS worker then sends one text to many recipients per "
                 "request where the provider allows it (a broadcast, docs/sms-providers.md; "
                 "AT_BULK_MAX recipients per request); 0 = one job per call")
    _number_flag(p, "--batch-max-wait", "with --batch-size: seconds a batch waits to fill")
    p.add_argument("--job-type", default=None,
                   help="with --handler: 'module:Type', a msgspec type (e.g. a tagged union) "
                   "the payloads are decoded to; none = plain msgpack values (env STREAMQ_JOB_TYPE)")
    _number_flag(p, "--metrics-port", "serve /metrics and /healthz on this port")
    p.add_argument("--metrics-host", default=None,
                   help="address of the metrics server (env STREAMQ_METRICS_HOST; default "
                   "127.0.0.1; 0.0.0.0 in a container)")
    _number_flag(p, "--delivery-port", "serve the Africa's Talking delivery report callback "
                 "(POST /sms/delivery/<AT_DELIVERY_SECRET>) on this port; see "
                 "docs/sms-providers.md")
    p.add_argument("--delivery-host", default=None,
                   help="address of the delivery report server (env AT_DELIVERY_HOST; default "
                   "127.0.0.1: put a TLS reverse proxy in front of it)")
    p.add_argument("--log-format", choices=TEXTS["log_format"][2], default=None,
                   help="json for production, console for development (env STREAMQ_LOG_FORMAT; "
                   "default console)")
    p.add_argument("--log-level", choices=TEXTS["log_level"][2], default=None,
                   type=str.lower,
                   help="debug adds a start and a finish line (duration, outcome) per job "
                   "(env STREAMQ_LOG_LEVEL; default info)")
    _number_flag(p, "--job-timeout", "seconds a job may run before its attempt is cut and "
                 "counted as failed, for jobs without their own JobOptions(timeout=); 0 = none")
    _number_flag(p, "--visibility-timeout",
                 "seconds a silent worker keeps its jobs before they are taken over")
    _number_flag(p, "--shutdown-grace", "seconds running jobs get to finish on SIGTERM; a "
                 "second SIGTERM or Ctrl-C stops at once")
    _number_flag(p, "--max-stalled", "worker crashes a job survives before it is dead-lettered")
    p.add_argument("--redis-url", default=None,
                   help="Redis location (env REDIS_URL, or REDIS_HOST/REDIS_PORT/"
                   f"REDIS_PASSWORD/REDIS_DB; default {DEFAULT_REDIS_URL}, where a local "
                   "redis-server is started when nothing answers and it is installed)")
    return p


def resolve_env(args: argparse.Namespace) -> argparse.Namespace:
    """Fill the options not given on the command line from their environment twins
    (then the defaults). A malformed value is a ConfigError naming the variable."""
    if args.queue is None:
        args.queue = env_text("STREAMQ_QUEUE", env_text("STREAMQ_SMS_QUEUE", "sms"))
    for dest, (env, kind, default, low, above, high) in NUMBERS.items():
        if getattr(args, dest) is None:
            setattr(args, dest, env_number(env, kind, default, minimum=low, above=above,
                                           maximum=high))
    for dest, (env, fallback, allowed) in TEXTS.items():
        if getattr(args, dest) is None:
            value = env_text(env, fallback)
            if allowed is not None:
                value = value.lower()
                if value not in allowed:
                    raise ConfigError(f"{env}={value[:40]!r}: use one of {', '.join(allowed)}")
            setattr(args, dest, value)
    args.metrics_port = args.metrics_port or None
    args.delivery_port = args.delivery_port or None
    args.partitions = args.partitions or None  # None: adopt the stored count
    if args.check_provider is None:
        args.check_provider = env_text("STREAMQ_CHECK_PROVIDER", "") not in ("", "0")
    # args.provider stays None unless given: the SMS factory reads SMS_PROVIDERS, else
    # STREAMQ_PROVIDER, else uses mock, and names the variable of a bad value
    return args


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
    return env_number("STREAMQ_LOCAL_REDIS_PORT", int, LOCAL_PORT, minimum=1, maximum=65535)


def ensure_local_redis(url: str, explicit: bool) -> RedisProcess | None:
    """The default local setup: start redis-server on 6379 when nothing answers there."""
    if explicit:
        return None
    port = local_port()
    probe = RedisProcess(port=port, directory=Path("."), args=[])
    if probe.ping():
        return None
    if redis_server_binary() is None:
        raise RedisUnavailable(
            f"no Redis answered at {url} and redis-server is not installed, so the local "
            f"auto-start was skipped: {INSTALL_HINT}, or set REDIS_URL to a running Redis")
    data = Path(os.environ.get("STREAMQ_LOCAL_REDIS_DIR", "").strip()
                or Path.home() / ".cache/streamq/redis")
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


def _shown_endpoint(url: str) -> str:
    # scheme, host, port and path only: userinfo or a query could carry a credential
    parts = urlsplit(url)
    netloc = f"{parts.hostname}:{parts.port}" if parts.port else (parts.hostname or "")
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


def describe_provider(name: str, provider: object) -> str:
    """Where a provider sends, for the start line."""
    url = getattr(provider, "endpoint", None) or getattr(provider, "api_url", None)
    if isinstance(url, str) and url:
        return _shown_endpoint(url)
    if name == "mock":
        return "none: the mock sends nothing"
    return "-"


def make_handler(
    args: argparse.Namespace, queue: Queue
) -> tuple[Handler, Callable[[], Any] | None, Callable[[], Any] | None, dict[str, Any]]:
    """The handler, an async close function for its resources, an async start-up check
    (the SMS providers' configuration), each but the handler optional, and what the start
    line says about them."""
    if args.handler:
        return load_handler(args.handler), None, None, {"handler": args.handler}
    from ..sms import make_sms_handler
    from ..sms.broadcast import make_sms_batch_handler
    from ..sms.failover import router_from_settings

    router = router_from_settings(queue, args.provider)
    if args.log_format == "json":
        for slot in router.slots:
            if hasattr(slot.provider, "echo"):
                # the mock's development print-out would break JSON log lines
                slot.provider.echo = False
    names = [slot.name for slot in router.slots]
    info: dict[str, Any] = {
        "provider": ",".join(names),
        "endpoint": ", ".join(describe_provider(s.name, s.provider) for s in router.slots),
    }
    handler: Handler = (make_sms_batch_handler(router) if args.batch_size  # type: ignore[assignment]
                        else make_sms_handler(router))
    return handler, router.aclose, lambda: check_at_start(router), info


def delivery_server(args: argparse.Namespace, queue: Queue) -> Callable[..., Any] | None:
    """``--delivery-port``: the delivery report endpoint to start with the worker (its
    secret is checked now, before anything starts), or None."""
    if not args.delivery_port:
        return None
    if args.handler:
        raise ConfigError("--delivery-port serves the SMS worker's delivery reports; it does "
                          "not go with --handler")
    from ..sms.delivery import DeliveryReports, delivery_secret_from_env, delivery_ttl_from_env
    from ..sms.delivery_http import serve_delivery

    secret = delivery_secret_from_env()
    reports = DeliveryReports(queue, ttl_s=delivery_ttl_from_env())
    return functools.partial(serve_delivery, reports, secret, args.delivery_host,
                             args.delivery_port)


def warn_production(info: dict[str, Any]) -> None:
    """Loud when the Salum provider sends for real because SALUM_API_URL is unset."""
    if "salum" in info.get("provider", "").split(",") and not env_text("SALUM_API_URL", ""):
        log.warning("provider.production", provider="salum",
                    note="SALUM_API_URL is not set: this worker sends REAL SMS through Salum's "
                    "production API; for development point SALUM_API_URL at the stand-in "
                    "(python -m streamq.sms.standin)")


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
    # the SMS queue encrypts (and indexes numbers) whenever STREAMQ_ENCRYPTION_KEYS is set;
    # any queue's worker opens encrypted payloads with those keys
    privacy: dict[str, Any] = {}
    if not args.handler:
        from ..sms.privacy import sms_queue_options

        privacy = sms_queue_options()
    queue = Queue(args.queue, redis_url=url, job_type=job_type_of(args),
                  partitions=args.partitions, **privacy)
    delivery = delivery_server(args, queue)
    handler, close_handler, start_check, info = make_handler(args, queue)
    batch = None
    if args.batch_size:
        batch = BatchOptions(size=args.batch_size, max_wait=args.batch_max_wait)
        info["batch"] = f"{batch.size} jobs, {batch.max_wait:g}s fill wait"
        if not args.handler:
            info["broadcast"] = "one request per text where the provider allows it"
    worker = Worker(
        queue, handler,
        batch=batch,
        concurrency=args.concurrency,
        rate_limit=args.rate_limit or None,
        visibility_timeout=args.visibility_timeout,
        job_timeout=args.job_timeout or None,
        shutdown_grace=args.shutdown_grace,
        max_stalled=args.max_stalled,
    )
    worker.start_info = info
    if args.log_level == "debug":
        log_jobs(worker)
    await queue.connect()  # fail fast, one line, before anything else starts
    warn_production(info)
    if start_check is not None:
        await start_check()
    signals = 0

    async def watch_signals() -> None:
        nonlocal signals
        with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as received:
            async for sig in received:
                signals += 1
                name = signal.Signals(sig).name
                if signals == 1:
                    log.info("worker.signal", signal=name, grace_s=args.shutdown_grace,
                             note="stopping gracefully; send SIGTERM or Ctrl-C again to stop "
                             "at once")
                else:
                    log.warning("worker.signal", signal=name, immediate=True,
                                note="stopping now: running jobs are cut and handed back")
                worker.stop(immediate=signals > 1)

    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(watch_signals)
            if args.metrics_port:
                from ..metrics import serve_metrics

                await tg.start(serve_metrics, worker, args.metrics_host, args.metrics_port)
            if delivery is not None:
                await tg.start(delivery)
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
    args = build_parser().parse_args(argv)  # a bad flag: argparse's usage line, exit 2
    try:
        resolve_env(args)
    except StreamqError as exc:  # a malformed env twin (e.g. STREAMQ_CONCURRENCY=abc)
        print(f"streamq worker: {exc}", file=sys.stderr)
        return 2
    configure_logging(args.log_format, args.log_level)
    local: RedisProcess | None = None
    try:
        explicit = args.redis_url is not None or not env_is_default_local()
        if args.redis_url is not None:
            url = check_redis_url(args.redis_url, "--redis-url")
        else:
            url = redis_url_from_env()
        if not explicit:
            url = f"redis://127.0.0.1:{local_port()}/0"
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
