"""``python -m streamq``: the operator CLI for queues and dead letters.

    python -m streamq stats --queue sms --watch
    python -m streamq dead --queue sms
    python -m streamq replay --queue sms --all --yes
    python -m streamq events --queue sms --follow
    python -m streamq schedules --queue sms
    python -m streamq rotate-keys --queue sms
    python -m streamq find --phone +254712345678

Installed as the ``streamq`` command too (``streamq stats``).

Exit codes: 0 done; 1 nothing matched, or the operator declined; 2 an error (one line
on stderr: Redis unreachable, bad arguments, a refusal to destroy data without --yes).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

import anyio
from redis.exceptions import RedisError

from ..dashboard.cli import add_parser as add_dashboard_parser
from ..dashboard.cli import run_dashboard
from ..errors import StreamqError
from ..logs import configure_logging
from ..queue import Queue
from ..redact import redact_text, redact_url
from ..settings import DEFAULT_REDIS_URL, check_redis_url, redis_url_from_env
from . import privacy
from .commands import COMMANDS
from .env import prog_name, settings_text, version_text
from .output import CliError, Console
from .schedules import add_parser as add_schedules_parser

PROG = "python -m streamq"
# the settings the operator CLI reads
CLI_SETTINGS = ("REDIS_", "STREAMQ_QUEUE", "STREAMQ_SMS_QUEUE", "STREAMQ_TLS_INSECURE",
                "STREAMQ_CLUSTER_RETRY_S")


def _add_common(parser: argparse.ArgumentParser) -> None:
    # SUPPRESS: an option given before the command is not reset by the command's default
    parser.add_argument("--queue", default=argparse.SUPPRESS,
                        help="queue name (env STREAMQ_QUEUE, else STREAMQ_SMS_QUEUE, else sms: "
                        "the worker's default)")
    parser.add_argument("--redis-url", default=argparse.SUPPRESS,
                        help="Redis location (env REDIS_URL, or REDIS_HOST/REDIS_PORT/"
                        f"REDIS_PASSWORD/REDIS_DB; default {DEFAULT_REDIS_URL})")
    parser.add_argument("--partitions", type=int, default=argparse.SUPPRESS, metavar="N",
                        help="the queue's partition count (env STREAMQ_PARTITIONS); none: "
                        "the count stored in Redis. A different count than the stored one "
                        "is refused")


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "queue", None) is None:
        env = os.environ
        args.queue = (env.get("STREAMQ_QUEUE", "").strip()
                      or env.get("STREAMQ_SMS_QUEUE", "").strip() or "sms")
    if getattr(args, "redis_url", None) is None:
        args.redis_url = None
    if getattr(args, "partitions", None) is None:
        raw = os.environ.get("STREAMQ_PARTITIONS", "").strip()
        if raw and not raw.isdigit():
            parser.error(f"STREAMQ_PARTITIONS must be a number, got {raw[:20]!r}")
        args.partitions = int(raw) if raw else None
    return args


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    _add_common(common)
    confirm = argparse.ArgumentParser(add_help=False)
    confirm.add_argument("-y", "--yes", action="store_true",
                         help="do not ask for confirmation (needed when stdin is not a terminal)")

    prog = prog_name("streamq", "streamq")
    p = argparse.ArgumentParser(
        prog=prog,
        description="Inspect and operate streamq queues: counts, jobs, dead letters, events.",
        epilog="Exit codes: 0 done; 1 nothing matched or declined; 2 error. "
        f"'{prog} COMMAND --help' shows a command's options.\n\nEnvironment:\n"
        + settings_text(lambda s: s.name.startswith(CLI_SETTINGS)),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--version", action="version", version=version_text())
    _add_common(p)  # accepted before the command too: `python -m streamq --queue sms stats`
    sub = p.add_subparsers(dest="command", metavar="COMMAND", required=True)

    s = sub.add_parser("stats", parents=[common], help="jobs per state, and the busy workers",
                       description="Jobs per state (waiting, active, delayed, failed, dead letters, "
                       "completed and cancelled totals), whether the queue is paused, and the "
                       "workers holding jobs or busy in the last minute.")
    s.add_argument("--watch", nargs="?", type=float, const=2.0, default=None, metavar="SECONDS",
                   help="refresh every SECONDS (default 2) with the change since the last "
                   "refresh, until Ctrl-C")

    j = sub.add_parser("job", parents=[common], help="one job's state, attempts, error, times",
                       description="Show every recorded fact of one job. Finished jobs are kept "
                       "24 h (completed) or 7 days (failed).")
    j.add_argument("job_id", metavar="JOB_ID")

    d = sub.add_parser("dead", parents=[common], help="list dead letters, or show one in full",
                       description="List the oldest dead letters (entry id, job id, failed at, "
                       "attempts, error), or show one with its full error and its payload "
                       "(phone numbers masked, message texts and codes hidden).")
    d.add_argument("--limit", type=int, default=20, help="how many to list (default 20)")
    d.add_argument("--after", metavar="ENTRY_ID", help="list those after this entry id (paging)")
    d.add_argument("--show", metavar="ID", help="show the dead letter of this job id (or entry id)")

    r = sub.add_parser("replay", parents=[common, confirm],
                       help="put dead-lettered jobs back to work",
                       description="Replay one dead-lettered job, or all of them (--all, asks "
                       "first), with fresh attempts. --all works in batches and shows progress; "
                       "letters added while it runs are left for the next replay.")
    r.add_argument("job_id", nargs="?", metavar="JOB_ID", help="the job to replay")
    r.add_argument("--all", action="store_true", help="replay every dead letter of the queue")
    r.add_argument("--batch", type=int, default=500, help="dead letters per batch (default 500)")

    c = sub.add_parser("cancel", parents=[common, confirm], help="cancel a waiting or delayed job",
                       description="Cancel a waiting or delayed job so that it never runs "
                       "(asks first). A running job cannot be cancelled.")
    c.add_argument("job_id", metavar="JOB_ID")

    sub.add_parser("pause", parents=[common], help="stop workers taking new jobs",
                   description="Pause the queue: workers finish running jobs and take no new ones.")
    sub.add_parser("resume", parents=[common], help="let workers take jobs again",
                   description="Resume a paused queue; idle workers wake at once.")
    pu = sub.add_parser("purge", parents=[common, confirm],
                        help="drop dead letters, or (--completed) completed job records",
                        description="Drop every dead letter of the queue (asks first); they can "
                        "no longer be listed or replayed. With --completed, delete the records "
                        "of completed jobs instead (they would expire after 24 h on their own); "
                        "failed records and dead letters are kept.")
    pu.add_argument("--completed", action="store_true",
                    help="delete completed job records instead of dead letters")

    ev = sub.add_parser("events", parents=[common], help="print the queue's events; --follow for new ones",
                        description="Print the last events of the queue's events stream (added, "
                        "active, completed, failed, retrying, dead, stalled, cancelled, "
                        "replayed: time, event, job id, type, attempt, error), oldest first; "
                        "with --follow, keep printing new ones until Ctrl-C. No payloads and no "
                        "phone numbers are in the stream.")
    ev.add_argument("--limit", type=int, default=20,
                    help="how many of the latest events to print first (default 20; 0 = none)")
    ev.add_argument("-f", "--follow", action="store_true",
                    help="then wait for new events and print them as they come, until Ctrl-C")
    ev.add_argument("--job", metavar="JOB_ID", help="only the events of this job")

    pa = sub.add_parser("partitions", parents=[common, confirm],
                        help="the partition count and each partition's jobs; --grow N",
                        description="Show the queue's partition count (stored in Redis) and "
                        "the jobs of each partition. --grow N raises the count (asks first): "
                        "only while no job is live (stop adding and let the workers drain "
                        "the queue); finished jobs and dead letters stay where they are and "
                        "are still found by id. Running workers and producers pick the new "
                        "count up within seconds. A count never shrinks.")
    pa.add_argument("--grow", type=int, default=None, metavar="N",
                    help="raise the partition count to N")

    add_schedules_parser(sub, [common, confirm])
    add_dashboard_parser(sub)
    privacy.add_parsers(sub, common)
    return p


async def _run(args: argparse.Namespace, url: str, con: Console) -> int:
    async with Queue(args.queue, redis_url=url, partitions=args.partitions) as q:
        await q.connect()  # one clear line naming the URL when Redis is not there
        return await COMMANDS[args.command](args, q, con)


def _leaf(exc: BaseException) -> BaseException:
    """The first real error inside (nested) exception groups from task groups."""
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    return exc


def main(argv: Sequence[str] | None = None, console: Console | None = None) -> int:
    if console is None:
        # a real process: library warnings go to stderr, stdout stays the command's output
        configure_logging("console", "warning")
        console = Console()
    args = parse_args(argv)
    url = "?"
    try:
        url = (check_redis_url(args.redis_url, "--redis-url") if args.redis_url
               else redis_url_from_env())
        if args.command == "dashboard":
            return run_dashboard(args, url)
        return anyio.run(_run, args, url, console)
    except KeyboardInterrupt:
        return 0 if getattr(args, "watch", None) or getattr(args, "follow", False) else 130
    except BaseException as exc:
        err = _leaf(exc)
        if isinstance(err, StreamqError | CliError):
            console.note(f"streamq: {err}")
            return 2
        if isinstance(err, RedisError):
            console.note(f"streamq: Redis error at {redact_url(url)}: {redact_text(str(err))}")
            return 2
        if isinstance(err, KeyboardInterrupt):
            return 0 if getattr(args, "watch", None) or getattr(args, "follow", False) else 130
        raise


if __name__ == "__main__":
    sys.exit(main())
