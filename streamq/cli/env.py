"""Every environment variable streamq reads, in one table, and the parsing the command
lines share: numbers whose errors name the variable or flag, the program name, --version.

The table is the reference: ``python -m streamq.worker --help`` prints it, the README's
settings table lists the same names, and a test checks that every variable the code
reads is in it (and in both).
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import textwrap
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Final, TypeVar

from ..errors import ConfigError

N = TypeVar("N", int, float)


@dataclass(frozen=True, slots=True)
class Setting:
    name: str
    default: str
    meaning: str
    flag: str = ""
    """The worker flag that overrides it, if any."""


SETTINGS: Final[tuple[Setting, ...]] = (
    # -- Redis (library, worker, operator CLI) ------------------------------------------
    Setting("REDIS_URL", "redis://127.0.0.1:6379/0",
            "Redis location: redis://[user:password@]host:port/db, rediss:// for TLS, "
            "unix:///path.sock?db=0; the db is a number below the server's `databases` (16)",
            "--redis-url"),
    Setting("REDIS_HOST", "-", "used when REDIS_URL is unset: host, with the four below"),
    Setting("REDIS_PORT", "6379", "with REDIS_HOST"),
    Setting("REDIS_DB", "0", "with REDIS_HOST: database number"),
    Setting("REDIS_USERNAME", "-", "with REDIS_HOST and REDIS_PASSWORD: an ACL user"),
    Setting("REDIS_PASSWORD", "-", "with REDIS_HOST: AUTH password (a secret: never printed)"),
    Setting("REDIS_TLS", "-", "with REDIS_HOST: 1/true/yes connects with TLS (rediss://)"),
    Setting("STREAMQ_TLS_INSECURE", "-",
            "1 allows rediss:// without certificate verification (refused otherwise)"),
    Setting("STREAMQ_CLUSTER_RETRY_S", "10",
            "Redis Cluster (found when REDIS_URL names any node): seconds a command keeps "
            "being retried through a failover, a slot migration or MOVED/ASK/TRYAGAIN/"
            "CLUSTERDOWN replies before it fails with one line"),
    # -- the default local Redis (worker only, when no Redis location is configured) -----
    Setting("STREAMQ_LOCAL_REDIS_PORT", "6379",
            "port of the local Redis the worker uses, and starts when nothing answers, "
            "when neither REDIS_URL nor REDIS_HOST is set"),
    Setting("STREAMQ_LOCAL_REDIS_DIR", "~/.cache/streamq/redis",
            "data directory (AOF) of that auto-started redis-server"),
    # -- the worker -------------------------------------------------------------------------
    Setting("STREAMQ_QUEUE", "sms", "queue the worker and the operator CLI work on", "--queue"),
    Setting("STREAMQ_SMS_QUEUE", "sms",
            "queue of the SMS job creators; also the worker's and CLI's when STREAMQ_QUEUE is unset"),
    Setting("STREAMQ_PARTITIONS", "-",
            "the queue's partition count for the worker and the operator CLI; unset = the "
            "count stored in Redis (1 for a new queue)", "--partitions"),
    Setting("STREAMQ_CONCURRENCY", "5", "jobs in flight per worker process", "--concurrency"),
    Setting("STREAMQ_RATE_LIMIT", "10", "jobs/s across all workers of a queue, 0 = unlimited",
            "--rate-limit"),
    Setting("STREAMQ_HANDLER", "-", "module:function to run instead of the SMS dispatcher",
            "--handler"),
    Setting("STREAMQ_JOB_TYPE", "-", "module:Type (msgspec) the --handler payloads decode to",
            "--job-type"),
    Setting("STREAMQ_BATCH_SIZE", "0",
            "call the handler with lists of up to this many jobs (a batch handler); for the "
            "SMS worker: send one text to many recipients per request (a broadcast); "
            "0 = one job per call", "--batch-size"),
    Setting("STREAMQ_BATCH_MAX_WAIT", "0.05", "seconds a batch waits to fill",
            "--batch-max-wait"),
    Setting("STREAMQ_VISIBILITY_TIMEOUT", "30",
            "seconds a silent worker keeps its jobs before another takes them over",
            "--visibility-timeout"),
    Setting("STREAMQ_JOB_TIMEOUT", "-",
            "seconds a job may run before its attempt is cut (jobs without their own timeout)",
            "--job-timeout"),
    Setting("STREAMQ_SHUTDOWN_GRACE", "30", "seconds running jobs get to finish on SIGTERM",
            "--shutdown-grace"),
    Setting("STREAMQ_MAX_STALLED", "3", "worker crashes a job survives before its dead letter",
            "--max-stalled"),
    Setting("STREAMQ_METRICS_PORT", "-", "serve /metrics and /healthz on this port",
            "--metrics-port"),
    Setting("STREAMQ_METRICS_HOST", "127.0.0.1", "address of the metrics server",
            "--metrics-host"),
    Setting("STREAMQ_LOG_FORMAT", "console", "console (development) or json (production)",
            "--log-format"),
    Setting("STREAMQ_LOG_LEVEL", "info",
            "debug, info, warning or error; debug adds a start and a finish line per job",
            "--log-level"),
    # -- the dashboard (python -m streamq dashboard) ----------------------------------------
    Setting("STREAMQ_DASHBOARD_TOKENS", "-",
            "viewer:<token>,operator:<token>: who may log in (a viewer cannot act); secrets"),
    Setting("STREAMQ_DASHBOARD_SECRET", "-",
            "signs the dashboard's session cookies (default: derived from the tokens)"),
    Setting("STREAMQ_DASHBOARD_PORT", "8080", "the dashboard's port"),
    Setting("STREAMQ_DASHBOARD_HOST", "0.0.0.0", "the dashboard's address"),
    # -- encryption at rest (docs/privacy.md) -----------------------------------------------
    Setting("STREAMQ_ENCRYPTION_KEYS", "-",
            "kid:base64key[,kid:base64key...]: AES-256-GCM keys (32 bytes each; secrets: never "
            "printed). The first seals new payloads, the others only open them. Set, the SMS "
            "queue encrypts its payloads and indexes numbers for find --phone; producers, "
            "workers, the dashboard and the operator CLI need the same value"),
    Setting("STREAMQ_INDEX_TERMS", "-",
            "module:function giving a payload's blind-index terms, for rotate-keys on a queue "
            "of your own (the SMS queue's are built in) [operator CLI: --index-terms]"),
    # -- SMS --------------------------------------------------------------------------------
    Setting("SMS_PROVIDERS", "-",
            "ordered SMS provider list for failover, e.g. salum,africastalking",
            "--provider"),
    Setting("STREAMQ_PROVIDER", "mock",
            "one SMS provider (mock, salum or africastalking), used when SMS_PROVIDERS is unset",
            "--provider"),
    Setting("STREAMQ_CHECK_PROVIDER", "-",
            "1 = check each provider's configuration without sending, print a line each, exit",
            "--check-provider"),
    Setting("STREAMQ_DEFAULT_REGION", "KE",
            "region of phone numbers written without +: 0712345678 is read as a Kenyan "
            "national number and becomes +254712345678 (ISO 3166 code: KE, UG, TZ, ...)"),
    Setting("SALUM_API_URL", "-",
            "Salum API endpoint; unset = https://sms.salum.co.ke/api/services/sendsms/ "
            "(real SMS: point it at the stand-in for development)"),
    Setting("SALUM_API_KEY", "-", "salum: API key (required; a secret: never printed)"),
    Setting("SALUM_PARTNER_ID", "-", "salum: partner id (required)"),
    Setting("SALUM_SHORTCODE", "-", "salum: sender id (required)"),
    Setting("SALUM_TIMEOUT", "10", "salum: total seconds per request"),
    Setting("SALUM_CONNECT_TIMEOUT", "3", "salum: seconds to connect"),
    Setting("SALUM_RATE_LIMIT", "-", "salum: its own jobs/s limit across all workers"),
    Setting("AT_API_URL", "https://api.africastalking.com",
            "Africa's Talking endpoint (sandbox: https://api.sandbox.africastalking.com)"),
    Setting("AT_USERNAME", "-", "africastalking: app username (sandbox for the sandbox)"),
    Setting("AT_API_KEY", "-", "africastalking: API key (required; a secret: never printed)"),
    Setting("AT_SENDER_ID", "-", "africastalking: sender id / short code (optional)"),
    Setting("AT_TIMEOUT", "10", "africastalking: total seconds per request"),
    Setting("AT_CONNECT_TIMEOUT", "3", "africastalking: seconds to connect"),
    Setting("AT_RATE_LIMIT", "-", "africastalking: its own jobs/s limit across all workers"),
    Setting("AT_BULK_MAX", "100",
            "africastalking: recipients per request at most when a broadcast sends one text to "
            "many (--batch-size; 1-1000)"),
    Setting("AT_DELIVERY_SECRET", "-",
            "africastalking delivery reports: the callback URL's last path segment, 16-128 "
            "characters of A-Z a-z 0-9 _ - (a secret: never printed); needed with "
            "--delivery-port"),
    Setting("AT_DELIVERY_PORT", "-",
            "serve the delivery report callback POST /sms/delivery/<secret> on this port",
            "--delivery-port"),
    Setting("AT_DELIVERY_HOST", "127.0.0.1", "address of the delivery report server",
            "--delivery-host"),
    Setting("AT_DELIVERY_TTL", "259200",
            "seconds a sent message's id stays resolvable for its delivery reports (and a "
            "report is kept); 0 = record no ids (one Redis write per message sent)"),
    Setting("SMS_BREAKER_ERRORS", "5",
            "errors in a row (within the window) that open a provider's circuit breaker"),
    Setting("SMS_BREAKER_WINDOW", "30", "seconds within which those errors count"),
    Setting("SMS_BREAKER_COOLDOWN", "30", "seconds a breaker stays open before one probe"),
    Setting("STREAMQ_MOCK_LATENCY", "0", "mock: seconds each send takes"),
    Setting("STREAMQ_MOCK_FAILURE_RATE", "0", "mock: share of sends failing transiently (0-1)"),
)


def settings_text(names: Callable[[Setting], bool] = lambda s: True) -> str:
    """The table as plain text for an ``--help`` epilog."""
    rows = [s for s in SETTINGS if names(s)]
    width = max(len(s.name) for s in rows)
    lines = []
    for s in rows:
        twin = f" [{s.flag}]" if s.flag else ""
        default = "" if s.default == "-" else f" (default {s.default})"
        lines.extend(textwrap.wrap(f"{s.meaning}{default}{twin}", 100,
                                   initial_indent=f"  {s.name.ljust(width)}  ",
                                   subsequent_indent=" " * (width + 4),
                                   break_on_hyphens=False))
    return "\n".join(lines)


def env_text(name: str, default: str, env: Mapping[str, str] | None = None) -> str:
    source = os.environ if env is None else env
    return source.get(name, "").strip() or default


def _parse_number(raw: str, kind: type[N], *, minimum: float, above: bool,
                  maximum: float | None) -> N | str:
    """The number, or the reason it is not acceptable."""
    what = "a whole number" if kind is int else "a number"
    if maximum is not None and not above:
        what += f" from {minimum:g} to {maximum:g}"
    else:
        what += f" > {minimum:g}" if above else f" >= {minimum:g}"
        what += "" if maximum is None else f" and <= {maximum:g}"
    try:
        value = kind(raw)
    except ValueError:
        return f"must be {what}"
    if (not math.isfinite(value) or (above and value <= minimum) or value < minimum
            or (maximum is not None and value > maximum)):
        return f"must be {what}"
    return value


def env_number(name: str, kind: type[N], default: N, *, minimum: float = 0, above: bool = False,
               maximum: float | None = None, env: Mapping[str, str] | None = None) -> N:
    """A numeric environment variable; a bad value is a ConfigError naming it."""
    raw = env_text(name, "", env)
    if not raw:
        return default
    got = _parse_number(raw, kind, minimum=minimum, above=above, maximum=maximum)
    if isinstance(got, str):
        raise ConfigError(f"{name}={raw[:40]!r}: {got}")
    return got


def flag_number(flag: str, kind: type[N], *, minimum: float = 0, above: bool = False,
                maximum: float | None = None) -> Callable[[str], N]:
    """An argparse ``type`` whose error names the flag."""

    def convert(raw: str) -> N:
        got = _parse_number(raw.strip(), kind, minimum=minimum, above=above, maximum=maximum)
        if isinstance(got, str):
            raise argparse.ArgumentTypeError(f"{got}, got {raw[:40]!r}")
        return got

    convert.__name__ = kind.__name__  # argparse names the type in some messages
    return convert


def prog_name(module: str, script: str) -> str:
    """``streamq-worker`` when run as the installed command, else ``python -m module``."""
    invoked = os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else ""
    return script if invoked == script else f"python -m {module}"


def version_text() -> str:
    from .. import __version__

    return f"streamq {__version__} (%(prog)s, Python {sys.version.split()[0]})"


__all__ = ["SETTINGS", "Setting", "env_number", "env_text", "flag_number", "prog_name",
           "settings_text", "version_text"]
