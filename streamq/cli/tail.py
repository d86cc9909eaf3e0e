"""``python -m streamq events --queue NAME [--follow]``: the queue's events stream as lines.

One line per job event, oldest first: the time (from the stream entry id, Redis clock),
the event, the job id, its type, the attempt, then any extra fields (a retry's delay,
``stalls``) and the one-line, redacted error. The stream holds no payload
and no phone number. Batch transitions write one entry for up to 100 jobs; each job
gets its own line here.
"""

from __future__ import annotations

import argparse
from datetime import UTC, datetime
from typing import Any

import anyio

from ..connection import translate_redis_errors
from ..errors import StreamqError
from ..events import QueueEvent, parse_events
from ..queue import Queue
from .output import CliError, Console, now_text

PAGE_ENTRIES = 200
FOLLOW_BLOCK_S = 1.5
FOLLOW_BATCH = 500
RETRY_S = 2.0


def event_line(ev: QueueEvent) -> str:
    ms = int(ev.id.partition("-")[0])
    at = datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3] + "Z"
    parts = [at, ev.name.ljust(9), ev.job_id, ev.job_type or "-", f"attempt {ev.attempt}"]
    for key, value in sorted((ev.fields or {}).items()):
        if key == "delay" and value.isdigit():  # a retry's delay, in ms
            parts.append(f"retry in {int(value) / 1000:g}s")
        else:
            parts.append(f"{key}={value}")
    if ev.error:
        parts.append(f"error: {ev.error}")
    return "  ".join(parts)


async def latest_events(q: Queue, limit: int, job: str | None) -> tuple[list[QueueEvent], str]:
    """The last ``limit`` job events (of ``job`` only, if given), oldest first, and the id
    of the newest entry in the stream ("0-0" when it is empty) to follow from."""
    found: list[QueueEvent] = []
    newest = "0-0"
    upper = "+"
    with translate_redis_errors(q.redis_url):
        while True:
            entries: Any = await q.redis.xrevrange(q.keys.events, max=upper, min="-",
                                              count=PAGE_ENTRIES)
            if not entries:
                break
            if newest == "0-0":
                newest = entries[0][0].decode()
            page = [e for e in parse_events([(q.keys.events, list(reversed(entries)))])
                    if job is None or e.job_id == job]
            found = page + found
            if len(found) >= limit or len(entries) < PAGE_ENTRIES:
                break
            upper = "(" + entries[-1][0].decode()
    return (found[-limit:] if limit else []), newest


async def cmd_events(args: argparse.Namespace, q: Queue, con: Console) -> int:
    if args.limit < 0:
        raise CliError("--limit must be >= 0")
    shown, after = await latest_events(q, args.limit, args.job)
    for ev in shown:
        con.print(event_line(ev))
    if not args.follow:
        if not shown:
            con.note(f"queue {q.name}: no events" + (f" for job {args.job}" if args.job else "")
                     + " (the stream keeps the latest 2,000 entries)")
        return 0
    con.note(f"following the events of queue {q.name}, Ctrl-C to stop")
    while True:  # until Ctrl-C (main() exits 0 for --follow)
        try:
            batch = await q.read_events(after=after, count=FOLLOW_BATCH, block=FOLLOW_BLOCK_S)
        except StreamqError as exc:  # an outage while following is shown, not fatal
            con.note(f"{now_text()}  {exc} (retrying every {RETRY_S:g}s)")
            await anyio.sleep(RETRY_S)
            continue
        for ev in batch:
            after = ev.id
            if args.job is None or ev.job_id == args.job:
                con.print(event_line(ev))
