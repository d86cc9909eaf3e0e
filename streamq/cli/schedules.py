"""``python -m streamq schedules --queue NAME``: list schedules, run one now, pause, remove.

    python -m streamq schedules --queue sms               # next run, last run and its state
    python -m streamq schedules --queue sms --next 5      # and each one's next 5 slots
    python -m streamq schedules --queue sms --run-now digest
    python -m streamq schedules --queue sms --pause digest | --resume digest
    python -m streamq schedules --queue sms --remove digest --yes
"""

from __future__ import annotations

import argparse

from ..queue import Queue
from .output import CliError, Console, fmt_dt, table

MAX_NEXT = 100


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser],
               parents: list[argparse.ArgumentParser]) -> None:
    s = sub.add_parser(
        "schedules", parents=parents, help="list schedules; --run-now, --pause, --resume, --remove",
        description="List the queue's schedules (cron or interval) with their next run, their "
        "last run and that run's state, runs and missed slots. Running workers of the queue "
        "fire them. --run-now adds one extra run now (its own job id, not a slot's); --pause "
        "and --resume stop and restart a schedule; --remove deletes it (asks first).")
    s.add_argument("--next", type=int, default=1, metavar="N",
                   help=f"show each schedule's next N slots (default 1, at most {MAX_NEXT})")
    act = s.add_mutually_exclusive_group()
    act.add_argument("--run-now", metavar="ID", help="add one extra run of schedule ID now")
    act.add_argument("--pause", metavar="ID", help="pause schedule ID (its slots do not fire)")
    act.add_argument("--resume", metavar="ID", help="resume schedule ID from its next slot")
    act.add_argument("--remove", metavar="ID", help="delete schedule ID (runs already added "
                     "finish)")


async def cmd_schedules(args: argparse.Namespace, q: Queue, con: Console) -> int:
    if args.run_now:
        ref = await q.run_schedule_now(args.run_now)
        if ref is None:
            con.note(f"no schedule {args.run_now} in queue {q.name}")
            return 1
        con.print(f"added run {ref.job_id} of schedule {args.run_now} (queue {q.name}); "
                  f"its state: python -m streamq job --queue {q.name} '{ref.job_id}'")
        return 0
    for flag, paused in (("pause", True), ("resume", False)):
        target = getattr(args, flag)
        if target:
            if not await (q.pause_schedule(target) if paused else q.resume_schedule(target)):
                con.note(f"no schedule {target} in queue {q.name}")
                return 1
            con.print(f"schedule {target} of queue {q.name} {flag}d")
            return 0
    if args.remove:
        if await q.get_schedule(args.remove) is None:
            con.note(f"no schedule {args.remove} in queue {q.name}")
            return 1
        if not await con.confirm(f"Remove schedule {args.remove} of queue {q.name}? Its runs "
                                 "already added still run.", yes=args.yes,
                                 action="remove a schedule"):
            con.note("not removed")
            return 1
        if not await q.remove_schedule(args.remove):
            con.note(f"schedule {args.remove} was removed meanwhile")
            return 1
        con.print(f"removed schedule {args.remove} of queue {q.name}")
        return 0
    if not 1 <= args.next <= MAX_NEXT:
        raise CliError(f"--next takes a number from 1 to {MAX_NEXT}")
    found = await q.schedules()
    if not found:
        con.print(f"queue {q.name} has no schedules")
        return 0
    rows: list[list[object]] = []
    for s in found:
        last_state = "-"
        if s.last_run_id:
            info = await q.get_job(s.last_run_id)
            last_state = info.state.value if info else "expired"
        rows.append([s.id, s.spec_text, s.state, fmt_dt(s.next_run_at),
                     fmt_dt(s.last_run_at), last_state, s.runs, s.missed])
    con.print(table(["id", "spec", "state", "next run", "last run", "last run state", "runs",
                     "missed"], rows, right=[6, 7]))
    if args.next > 1:
        for s in found:
            slots = s.upcoming(args.next)
            con.print(f"\n{s.id}: next {len(slots)} slot{'s' if len(slots) != 1 else ''}"
                      + ("".join(f"\n  {fmt_dt(t)}" for t in slots) or " (none)"))
    con.print(f"\n{len(found)} schedule{'s' if len(found) != 1 else ''} (times UTC); run "
              "history: python -m streamq events --queue " + q.name)
    return 0


__all__ = ["add_parser", "cmd_schedules"]
