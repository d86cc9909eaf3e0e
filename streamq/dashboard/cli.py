"""The ``dashboard`` subcommand of ``python -m streamq``: its options and its start."""

from __future__ import annotations

import argparse
import os

from ..errors import ConfigError

HELP = "serve the web dashboard"
DESCRIPTION = (
    "Serve the web dashboard: queues with counts and rates (per partition too), jobs by "
    "state, a job's details and its flow as a tree, dead letters (replay, purge), workers, "
    "schedules, SMS provider breakers, search by job id or by phone number (the blind index: "
    "needs STREAMQ_ENCRYPTION_KEYS); live over server-sent events. "
    "Auth: STREAMQ_DASHBOARD_TOKENS='viewer:<token>,operator:<token>' (log in with either; a "
    "viewer cannot act), optional STREAMQ_DASHBOARD_SECRET (signs the session cookies; "
    "default: derived from the tokens). Without tokens it refuses to start unless "
    "--insecure-local. Queues shown: the --queue names, else every queue found in Redis "
    "(a SCAN at start and every --rescan seconds).")


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    d = sub.add_parser("dashboard", help=HELP, description=DESCRIPTION)
    d.add_argument("--port", type=int, default=None,
                   help="port to listen on (env STREAMQ_DASHBOARD_PORT, default 8080; 0 = any)")
    d.add_argument("--host", default=None,
                   help="address to listen on (env STREAMQ_DASHBOARD_HOST, default 0.0.0.0)")
    d.add_argument("--queue", dest="queues", action="append", default=None, metavar="NAME",
                   help="show only this queue (repeatable); default: every queue found in Redis")
    d.add_argument("--insecure-local", action="store_true",
                   help="run without tokens, bound to 127.0.0.1 only: anyone on this machine "
                   "is an operator")
    d.add_argument("--rescan", type=float, default=300.0, metavar="SECONDS",
                   help="SCAN Redis for new queues this often (default 300; 0 = only at "
                   "start); a queue opened by its URL is shown at once")
    d.add_argument("--session-hours", type=float, default=12.0,
                   help="how long a login lasts (default 12)")
    d.add_argument("--allowed-origin", action="append", default=[], metavar="URL",
                   help="another origin whose pages may post actions (a reverse proxy's "
                   "public URL, e.g. https://ops.example.com); repeatable")
    d.add_argument("--secure-cookies", action="store_true",
                   help="mark the session cookie Secure (behind an HTTPS proxy; set "
                   "automatically when the dashboard itself is reached over HTTPS)")
    d.add_argument("--log-format", choices=("json", "console"), default=None,
                   help="json for production, console for development (env STREAMQ_LOG_FORMAT, "
                   "default console)")
    d.add_argument("--log-level", default=None,
                   help="debug, info, warning or error (env STREAMQ_LOG_LEVEL, default info; "
                   "info logs every request and action)")
    d.add_argument("--redis-url", default=argparse.SUPPRESS,
                   help="Redis location (env REDIS_URL, or REDIS_HOST/REDIS_PORT/...)")


def run_dashboard(args: argparse.Namespace, redis_url: str) -> int:
    import anyio

    from ..logs import configure_logging
    from .config import DashboardConfig
    from .server import serve

    env = os.environ
    fmt = args.log_format or env.get("STREAMQ_LOG_FORMAT", "").strip() or "console"
    if fmt not in ("json", "console"):
        raise ConfigError("STREAMQ_LOG_FORMAT must be json or console")
    level = args.log_level or env.get("STREAMQ_LOG_LEVEL", "").strip() or "info"
    configure_logging("json" if fmt == "json" else "console", level)
    port = args.port
    if port is None and env.get("STREAMQ_DASHBOARD_PORT", "").strip():
        text = env["STREAMQ_DASHBOARD_PORT"].strip()
        if not text.isdigit():
            raise ConfigError("STREAMQ_DASHBOARD_PORT must be a number")
        port = int(text)
    host = args.host or env.get("STREAMQ_DASHBOARD_HOST", "").strip() or None
    config = DashboardConfig.build(
        host=host, port=port, queues=args.queues or (), insecure_local=args.insecure_local,
        rescan_s=args.rescan, session_hours=args.session_hours,
        allowed_origins=args.allowed_origin, secure_cookies=args.secure_cookies)
    try:
        anyio.run(serve, config, redis_url)
    except OSError as exc:
        raise ConfigError(f"cannot listen on {config.host}:{config.port}: {exc.strerror or exc}") \
            from None
    return 0


__all__ = ["add_parser", "run_dashboard"]
