"""The operator commands. Each takes the parsed arguments, an open ``Queue`` and a
``Console``, and returns the exit code: 0 done, 1 nothing matched or the operator said no.
Errors are raised (``StreamqError``, ``CliError``) and become one line with code 2.
"""

from __future__ import annotations

import argparse
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import anyio
import msgspec
from redis.asyncio.cluster import RedisCluster
from redis.exceptions import RedisError

from ..cluster import slot_owners
from ..connection import translate_redis_errors
from ..dead import DeadLetter
from ..errors import ConfigError, StreamqError
from ..fanout import COUNT_NAMES, id_key, sum_counts
from ..job import JobState
from ..keys import MAX_PARTITIONS, partition_tag
from ..listing import decode_payload, lane_consumers
from ..partitions import RECHECK_S, grow_partitions
from ..queue import Queue
from ..redact import redact_url
from ..results import DELIVERY_FIELDS
from .output import CliError, Console, Progress, fmt_dt, now_text, payload_text, shorten, table
from .privacy import cmd_find, cmd_rotate_keys
from .schedules import cmd_schedules
from .tail import cmd_events

Command = Callable[[argparse.Namespace, Queue, Console], Awaitable[int]]

# Order and meaning of the rows of `stats` (Queue.counts() keys).
STAT_ROWS: tuple[tuple[str, str], ...] = (
    ("waiting", "ready to run"),
    ("active", "claimed by a worker"),
    ("delayed", "scheduled: delayed jobs and retries"),
    ("failed", "dead-lettered, not replayed"),
    ("dead", "entries in the dead-letter stream"),
    ("completed", "total since the queue was created"),
    ("cancelled", "total since the queue was created"),
)
WORKER_SEEN_S = 60.0  # a consumer quiet for longer is listed only while it holds jobs
REPLAY_CONCURRENCY = 32
ERROR_WIDTH = 60
RESULT_WIDTH = 400
# a dead letter's reference: its entry id, with @<partition> outside partition 0
_ENTRY_ID_RE = re.compile(r"^\d+-\d+(@\d+)?$")


# -- stats ----------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Snapshot:
    at: float
    counts: dict[str, int]
    workers: list[tuple[str, int, float]]  # consumer, jobs held, seconds since last seen
    partitions: list[dict[str, int]] | None = None  # per partition, when there are several


async def take_snapshot(q: Queue) -> Snapshot:
    per = await q.partition_counts()
    counts = sum_counts([[c[name] for name in COUNT_NAMES] for c in per])
    return Snapshot(time.monotonic(), counts, await _workers(q), per if len(per) > 1 else None)


async def _workers(q: Queue) -> list[tuple[str, int, float]]:
    """Consumers of the queue's group that hold jobs or took one lately, with the seconds
    since they last took one (the freshest lane). Redis cannot show idle workers: before
    7.2 an empty read neither creates nor refreshes a consumer; 7.2's ``inactive`` field
    keeps that meaning, so it is preferred when present."""
    seen: dict[str, list[float]] = {}
    lanes = [lane for k in q.layout.all_keys(await q.partition_count()) for lane in k.lanes]
    with translate_redis_errors(q.redis_url):
        rows = await lane_consumers(q, lanes)
    for r in rows:
        name = r["name"].decode() if isinstance(r["name"], bytes) else str(r["name"])
        acc = seen.setdefault(name, [0, float("inf")])
        acc[0] += int(r.get("pending", 0))
        since = int(r.get("inactive", r.get("idle", 0)))
        if since >= 0:  # -1: never took a job from this lane
            acc[1] = min(acc[1], since / 1000)
    live = [(n, int(p), idle) for n, (p, idle) in seen.items() if p > 0 or idle <= WORKER_SEEN_S]
    return sorted(live, key=lambda w: (w[2], w[0]))


def render_stats(q: Queue, snap: Snapshot, prev: Snapshot | None) -> str:
    c = snap.counts
    state = "PAUSED" if c.get("paused") else "running"
    parts = f", {len(snap.partitions)} partitions" if snap.partitions else ""
    lines = [f"queue {q.name} ({state}{parts}) at {redact_url(q.redis_url)}, {now_text()}", ""]
    headers = ["state", "jobs", "meaning"]
    right = [1]
    if prev is not None:
        headers = ["state", "jobs", "change", "per s", "meaning"]
        right = [1, 2, 3]
    rows: list[list[object]] = []
    for key, meaning in STAT_ROWS:
        row: list[object] = [key, c.get(key, 0)]
        if prev is not None:
            delta = c.get(key, 0) - prev.counts.get(key, 0)
            span = max(snap.at - prev.at, 1e-6)
            row += [f"{delta:+d}", f"{delta / span:.1f}"]
        rows.append([*row, meaning])
    lines.append(table(headers, rows, right=right))
    if snap.partitions:
        lines.append("")
        lines.append("per partition (python -m streamq partitions shows more): waiting " +
                     " / ".join(str(p["waiting"]) for p in snap.partitions) + "; active " +
                     " / ".join(str(p["active"]) for p in snap.partitions))
    lines.append("")
    if snap.workers:
        lines.append(f"workers holding jobs or busy in the last {WORKER_SEEN_S:.0f}s: "
                     f"{len(snap.workers)}")
        lines.append(table(["consumer", "holding", "last took a job"],
                           [[n, p, f"{idle:.1f}s ago"] for n, p, idle in snap.workers], right=[1]))
    else:
        lines.append(f"workers: none took a job in the last {WORKER_SEEN_S:.0f}s "
                     "(idle workers are not visible in Redis)")
    return "\n".join(lines)


async def cmd_stats(args: argparse.Namespace, q: Queue, con: Console) -> int:
    with translate_redis_errors(q.redis_url):
        if not await q.redis.exists(*q.keys.all_fixed()):
            con.note(f"note: queue {q.name!r} has no data at {redact_url(q.redis_url)} "
                     "(never used, or a typo in --queue?)")
    if args.watch is None:
        con.print(render_stats(q, await take_snapshot(q), None))
        return 0
    if args.watch <= 0:
        raise CliError("--watch takes a positive number of seconds")
    prev: Snapshot | None = None
    clear = con.out_is_tty()
    while True:  # until Ctrl-C (KeyboardInterrupt ends the run; main() exits 0 for --watch)
        try:
            snap = await take_snapshot(q)
        except StreamqError as exc:  # an outage while watching is shown, not fatal
            con.print(f"{now_text()}  {exc} (retrying every {args.watch:g}s)")
        else:
            text = render_stats(q, snap, prev)
            if clear:
                con.out.write("\x1b[H\x1b[2J")
            else:
                text = "-" * 20 + "\n" + text
            con.print(text + f"\n\nrefreshing every {args.watch:g}s, Ctrl-C to stop")
            prev = snap
        await anyio.sleep(args.watch)


# -- jobs -----------------------------------------------------------------------------------
async def cmd_job(args: argparse.Namespace, q: Queue, con: Console) -> int:
    info = await q.get_job(args.job_id)
    if info is None:
        con.note(f"job {args.job_id} not found in queue {q.name} (unknown, or its record expired)")
        return 1
    rows: list[list[object]] = [
        ["id", info.id],
        ["queue", q.name],
        ["state", info.state.value],
        ["attempts", info.attempts],
        ["max_attempts", info.max_attempts],
        ["priority", info.priority or "-"],
        ["created_at", fmt_dt(info.created_at)],
        ["due_at", fmt_dt(info.due_at)],
        ["finished_at", fmt_dt(info.finished_at)],
        ["stalls", info.stalls],
        ["error", info.error or "-"],
    ]
    if info.pending_children is not None:
        rows.append(["pending_children", info.pending_children])
    if info.progress is not None:
        rows.append(["progress", payload_text(info.progress)])
    if info.state is JobState.COMPLETED:
        shown = info.result
        delivery = shown.get("delivery") if isinstance(shown, dict) else None
        if delivery is not None:
            shown = {k: v for k, v in shown.items() if k != "delivery"} or None
        rows.append(["result", shorten(payload_text(shown), RESULT_WIDTH)
                     if info.result_error is None else f"not kept: {info.result_error}"])
        if delivery is not None:
            # a delivery report's known fields are not personal data (status, network,
            # time, message id): shown whole, where the generic masking would take its
            # date for a number; anything else a handler returned under that name is masked
            known = isinstance(delivery, dict) and set(delivery) == set(DELIVERY_FIELDS.values())
            rows.append(["delivery", msgspec.json.encode(delivery).decode() if known
                         else payload_text(delivery)])
    con.print(table(["field", "value"], rows))
    if info.state is JobState.FAILED:
        con.print(f"\ndead letter: python -m streamq dead --queue {q.name} --show {info.id}")
    return 0


async def cmd_cancel(args: argparse.Namespace, q: Queue, con: Console) -> int:
    info = await q.get_job(args.job_id)
    if info is None:
        con.note(f"job {args.job_id} not found in queue {q.name} (unknown, or its record expired)")
        return 1
    if info.state not in (JobState.WAITING, JobState.DELAYED):
        con.note(f"job {info.id} is {info.state.value}: only waiting or delayed jobs can be cancelled")
        return 1
    if not await con.confirm(f"Cancel job {info.id} ({info.state.value}) of queue {q.name}? "
                             "It will never run.", yes=args.yes, action="cancel a job"):
        con.note("not cancelled")
        return 1
    if not await q.cancel(info.id):
        con.note(f"job {info.id} was not cancelled: it started or finished meanwhile")
        return 1
    con.print(f"cancelled job {info.id} of queue {q.name}")
    return 0


async def cmd_pause(args: argparse.Namespace, q: Queue, con: Console) -> int:
    await q.pause()
    con.print(f"queue {q.name} paused: workers finish running jobs and take no new ones "
              f"(resume with: python -m streamq resume --queue {q.name})")
    return 0


async def cmd_resume(args: argparse.Namespace, q: Queue, con: Console) -> int:
    was = await q.is_paused()
    await q.resume()
    con.print(f"queue {q.name} resumed" if was else f"queue {q.name} was not paused; it runs")
    return 0


# -- dead letters ----------------------------------------------------------------------------
async def cmd_dead(args: argparse.Namespace, q: Queue, con: Console) -> int:
    if args.show:
        return await _show_dead(args.show, q, con)
    if args.limit < 1:
        raise CliError("--limit must be >= 1")
    after = "(" + args.after if args.after else "-"
    found = await q.dead_letters(args.limit, after=after)
    total = (await q.counts())["dead"]
    if not found:
        con.print(f"queue {q.name}: no dead letters" + (" after that entry" if args.after else ""))
        return 0
    rows = [[d.ref, d.job_id, fmt_dt(d.failed_at), d.attempts, shorten(d.error, ERROR_WIDTH)]
            for d in found]
    con.print(table(["entry id", "job id", "failed at", "attempts", "error"], rows, right=[3]))
    con.print(f"\n{len(found)} shown of {letters(total)} in queue {q.name}")
    if len(found) == args.limit:
        con.print(f"next page: --after {found[-1].ref}; one in full: --show JOB_ID")
    return 0


async def _find_dead(q: Queue, wanted: str) -> list[DeadLetter]:
    if _ENTRY_ID_RE.match(wanted):
        hit = await q.dead_letters(1, after=wanted)
        if hit and hit[0].ref == wanted:
            return hit
    found: list[DeadLetter] = []
    after = "-"
    while batch := await q.dead_letters(1000, after=after):
        found.extend(d for d in batch if d.job_id == wanted)
        after = "(" + batch[-1].ref
    return found


async def _show_dead(wanted: str, q: Queue, con: Console) -> int:
    found = await _find_dead(q, wanted)
    if not found:
        con.note(f"no dead letter for {wanted} in queue {q.name}")
        return 1
    for i, d in enumerate(found):
        if i:
            con.print()
        con.print(table(["field", "value"], [
            ["entry id", d.ref],
            ["job id", d.job_id],
            ["failed at", fmt_dt(d.failed_at)],
            ["attempts", d.attempts],
            ["error", d.error],
            ["payload", payload_text(d.data, _why_not_decoded(q, d))
             + "  (phone numbers masked, texts and codes hidden)"],
        ]))
    return 0


def _why_not_decoded(q: Queue, d: DeadLetter) -> str:
    """Why a dead letter's payload stayed bytes (e.g. encrypted, and no key for it here)."""
    return decode_payload(q.codec, d.data, d.job_id)[2] if isinstance(d.data, bytes) else ""


def letters(n: int) -> str:
    return f"{n} dead letter" + ("" if n == 1 else "s")


async def cmd_replay(args: argparse.Namespace, q: Queue, con: Console) -> int:
    if args.all == bool(args.job_id):
        raise CliError("replay takes a JOB_ID or --all (one of them)")
    if args.job_id:
        n = await q.replay_dead(args.job_id)
        if not n:
            con.note(f"nothing replayed: job {args.job_id} has no dead letter in queue {q.name}, "
                     "or it is live again")
            return 1
        con.print(f"replayed job {args.job_id} of queue {q.name}: it runs again with fresh attempts")
        return 0
    if args.batch < 1:
        raise CliError("--batch must be >= 1")
    # Stop at the newest letter of now (in each partition): a replayed job that fails again
    # while this runs is dead-lettered after it, and must not be replayed in a loop.
    ends: dict[int, tuple[int, int]] = {}
    with translate_redis_errors(q.redis_url):
        for k in q.layout.all_keys(await q.partition_count()):
            last: Any = await q.redis.xrevrange(k.dead, count=1)
            if last:
                ends[k.partition] = id_key(last[0][0].decode())
    if not ends:
        con.print(f"queue {q.name} has no dead letters: nothing to replay")
        return 0
    total = (await q.counts())["dead"]
    if not await con.confirm(f"Replay all {letters(total)} of queue {q.name}? Each job runs "
                             "again with fresh attempts.", yes=args.yes, action="replay all"):
        con.note("nothing replayed")
        return 1
    replayed, skipped = await _replay_all(q, con, total, ends, args.batch)
    con.print(f"replayed {letters(replayed)} of queue {q.name}"
              + (f"; {skipped} skipped (job id live again, or gone)" if skipped else ""))
    return 0


async def _replay_all(q: Queue, con: Console, total: int, ends: dict[int, tuple[int, int]],
                      batch_size: int) -> tuple[int, int]:
    progress = Progress(con, f"replaying {q.name}", total)
    replayed = skipped = 0
    limiter = anyio.CapacityLimiter(REPLAY_CONCURRENCY)
    errors: list[BaseException] = []

    async def one(d: DeadLetter) -> None:
        nonlocal replayed, skipped
        async with limiter:
            try:
                # by entry id: one script call; replay_dead(job_id) would first look the
                # entry up, and scan the whole stream for a job whose record expired
                ok = await q._replay_one(d.entry_id, d.job_id, d.partition)
            except (StreamqError, RedisError) as exc:
                errors.append(exc)
                return
        if ok:
            replayed += 1
        else:
            skipped += 1

    for partition, end in sorted(ends.items()):
        after = "-"
        while True:
            batch = [d for d in await q.dead_letters(batch_size, after=after, partition=partition)
                     if id_key(d.entry_id) <= end]
            if not batch:
                break
            async with anyio.create_task_group() as tg:
                for d in batch:
                    tg.start_soon(one, d)
            if errors:
                progress.finish()
                raise errors[0]
            progress.update(replayed + skipped, f", {skipped} skipped" if skipped else "")
            after = "(" + batch[-1].entry_id
    progress.finish()
    return replayed, skipped


async def cmd_purge(args: argparse.Namespace, q: Queue, con: Console) -> int:
    if args.completed:
        if not await con.confirm(
            f"Delete the records of completed jobs of queue {q.name}? `job ID` will no longer "
            "find them. (Failed records and dead letters are kept.)",
            yes=args.yes, action="purge completed records",
        ):
            con.note("nothing purged")
            return 1
        n = await q.purge_completed()
        con.print(f"purged {n} completed job record{'s' if n != 1 else ''} of queue {q.name}")
        return 0
    n = (await q.counts())["dead"]
    if not n:
        con.print(f"queue {q.name} has no dead letters: nothing to purge")
        return 0
    if not await con.confirm(
        f"Drop all {letters(n)} of queue {q.name}? They can no longer be listed or replayed. "
        "(Job records are not touched: completed ones expire after 24 h, failed after 7 days.)",
        yes=args.yes, action="purge dead letters",
    ):
        con.note("nothing purged")
        return 1
    dropped = await q.purge_dead()
    con.print(f"purged {letters(dropped)} of queue {q.name}")
    return 0


# -- partitions ------------------------------------------------------------------------------
async def cmd_partitions(args: argparse.Namespace, q: Queue, con: Console) -> int:
    if args.grow is not None:
        return await _grow(args, q, con)
    n = await q.partition_count()
    stored = q.layout.stored
    origin = "stored in Redis" if stored is not None else "none stored yet: the queue is unused"
    history = (f"; earlier counts {', '.join(map(str, q.layout.history))}"
               if q.layout.history else "")
    con.print(f"queue {q.name}: {n} partition{'s' if n != 1 else ''} ({origin}{history})")
    rows: list[list[object]] = []
    placed: list[tuple[int, str]] = []
    client = q.redis
    if isinstance(client, RedisCluster):  # where each partition lives: its slot, its master
        with translate_redis_errors(q.redis_url):
            placed = await slot_owners(client, [k.prefix for k in q.layout.all_keys(n)])
    for p, c in enumerate(await q.partition_counts()):
        rows.append([f"{p} (home)" if p == 0 else p, "{" + partition_tag(q.name, p) + "}",
                     *(placed[p] if placed else ()),
                     c["waiting"], c["active"], c["delayed"], c["failed"], c["dead"],
                     c["completed"]])
    where = ["slot", "master"] if placed else []
    first = 2 + len(where)
    con.print(table(["partition", "hash tag", *where, "waiting", "active", "delayed", "failed",
                     "dead", "completed"], rows, right=list(range(first, first + 6))))
    if placed:
        masters = {m for _, m in placed}
        con.print(f"on a Redis Cluster: {len(masters)} master{'s' if len(masters) != 1 else ''} "
                  "serve these partitions (docs/partitions.md: how partitions spread over "
                  "masters)")
    return 0


async def _grow(args: argparse.Namespace, q: Queue, con: Console) -> int:
    if not 1 <= args.grow <= MAX_PARTITIONS:
        raise CliError(f"--grow takes a count from 2 to {MAX_PARTITIONS}")
    old = await q.partition_count(store=True)
    if args.grow <= old:
        raise CliError(f"queue {q.name} has {old} partitions; the count can only grow")
    if not await con.confirm(
        f"Grow queue {q.name} from {old} to {args.grow} partitions? Only while no job is live; "
        "it cannot be undone.", yes=args.yes, action="grow the partition count",
    ):
        con.note("not grown")
        return 1
    try:
        await grow_partitions(q, args.grow)
    except ConfigError as exc:
        raise CliError(str(exc)) from None
    con.print(f"queue {q.name} grown from {old} to {args.grow} partitions; running workers and "
              f"producers pick the new count up within {RECHECK_S:g}s")
    return 0


COMMANDS: dict[str, Command] = {
    "stats": cmd_stats,
    "job": cmd_job,
    "dead": cmd_dead,
    "replay": cmd_replay,
    "cancel": cmd_cancel,
    "pause": cmd_pause,
    "resume": cmd_resume,
    "purge": cmd_purge,
    "events": cmd_events,
    "partitions": cmd_partitions,
    "schedules": cmd_schedules,
    "rotate-keys": cmd_rotate_keys,
    "find": cmd_find,
}
