"""The privacy commands: ``rotate-keys`` and ``find``.

    STREAMQ_ENCRYPTION_KEYS="k2:<new>,k1:<old>" python -m streamq rotate-keys --queue sms
    STREAMQ_ENCRYPTION_KEYS="k2:<new>,k1:<old>" python -m streamq find --phone +254712345678

Both read the keys from ``STREAMQ_ENCRYPTION_KEYS``. The engine knows no channel: the
search options (``--phone``) and each queue's blind-index terms come from the
``SearchTerms`` that installed channels declare in the entry-point group
``streamq.search_terms`` (the SMS package declares ``--phone`` for its queue,
``STREAMQ_SMS_QUEUE``, default ``sms``). Another queue names its terms function with
``--index-terms module:function``.
"""

from __future__ import annotations

import argparse
import importlib
import os
from typing import Any

from ..blind_index import SearchTerms, Terms, find_jobs, search_terms
from ..errors import ConfigError
from ..queue import Queue
from ..rotation import PLACES, RotationReport, rotate_keys
from .output import CliError, Console, Progress, fmt_dt, table

INDEX_TERMS_ENV = "STREAMQ_INDEX_TERMS"


def add_parsers(sub: Any, common: argparse.ArgumentParser) -> None:
    r = sub.add_parser(
        "rotate-keys", parents=[common], help="re-encrypt stored payloads under the active key",
        description="Re-encrypt every stored payload of the queue that is still under an older "
        "key (delayed jobs, waiting jobs, dead letters, schedules) with the active key, the first of "
        "STREAMQ_ENCRYPTION_KEYS; keep the old keys listed after it until a run reports "
        "nothing left under them. Each rewrite is atomic and keeps the job's lane, due time "
        "and state. Jobs held by a worker are left alone (they keep the old key until they "
        "move or finish: run it again later). Safe to run while workers run.")
    r.add_argument("--include-plaintext", action="store_true",
                   help="also encrypt payloads stored in clear (added before encryption was "
                   "switched on)")
    r.add_argument("--index-terms", default=None, metavar="MODULE:FUNCTION",
                   help="the queue's blind-index terms function, to move index entries to the "
                   f"active key (env {INDEX_TERMS_ENV}; the SMS queue's is built in)")
    f = sub.add_parser(
        "find", parents=[common], help="list a phone number's jobs (blind index)",
        description="List the jobs of one phone number (id, state, created) through the "
        "queue's keyed blind index: Redis holds only an HMAC of the number. Needs "
        "STREAMQ_ENCRYPTION_KEYS. Jobs whose records have expired are not listed.")
    what = f.add_mutually_exclusive_group(required=True)
    for st in search_terms():
        what.add_argument(f"--{st.option}", dest=f"search_{st.option}", help=st.help,
                          metavar=st.noun.upper())
    what.add_argument("--term", help="a raw blind-index term (queues with their own terms)")


def _terms(args: argparse.Namespace, q: Queue) -> Terms | None:
    spec = args.index_terms or os.environ.get(INDEX_TERMS_ENV, "").strip()
    if spec:
        module_name, _, attr = spec.partition(":")
        if not module_name or not attr:
            raise CliError(f"--index-terms must look like 'package.module:function', got {spec!r}")
        try:
            fn = getattr(importlib.import_module(module_name), attr)
        except (ImportError, AttributeError) as exc:
            raise CliError(f"--index-terms {spec!r} cannot be loaded: {exc}") from None
        if not callable(fn):
            raise CliError(f"--index-terms {spec!r} is not a function")
        return fn  # type: ignore[no-any-return]
    for st in search_terms():
        if q.name in st.queues():
            return st.terms
    return None


def render_report(q: Queue, rep: RotationReport, reindex: bool) -> str:
    lines = [f"queue {q.name}: {rep.total_rotated} payload"
             f"{'' if rep.total_rotated == 1 else 's'} re-encrypted under key {rep.active_kid}",
             table(["place", "rotated"], [[p, rep.rotated[p]] for p in PLACES], right=[1]),
             f"already under {rep.active_kid}: {rep.current}"]
    if reindex:
        lines.append(f"blind-index entries moved to {rep.active_kid}: {rep.reindexed} job"
                     f"{'' if rep.reindexed == 1 else 's'}")
    else:
        lines.append("blind index: no terms function for this queue (--index-terms); its "
                     "entries stay under the old key ids, found while those keys are set")
    lines.append("job records: hold no payload (state, counts, times, redacted error)")
    if rep.left:
        lines.append("left as they are:")
        lines.append(table(["reason", "payloads"], sorted(rep.left.items()), right=[1]))
        lines.append("keep the old keys in STREAMQ_ENCRYPTION_KEYS until a run leaves nothing "
                     "under them")
    else:
        lines.append("nothing left under an old key: old keys may be removed")
    return "\n".join(lines)


async def cmd_rotate_keys(args: argparse.Namespace, q: Queue, con: Console) -> int:
    if q.codec.keyring is None:
        raise ConfigError("rotate-keys needs STREAMQ_ENCRYPTION_KEYS (the new key first, the "
                          "old ones after it)")
    terms = _terms(args, q)
    bars: dict[str, Progress] = {}

    def progress(place: str, done: int, total: int) -> None:
        bar = bars.get(place)
        if bar is None:
            for other in bars.values():
                other.finish()
            bar = bars[place] = Progress(con, f"rotating {q.name} {place}", total)
        bar.update(done)

    rep = await rotate_keys(q, terms=terms, include_plaintext=args.include_plaintext,
                            progress=progress)
    for bar in bars.values():
        bar.finish()
    con.print(render_report(q, rep, terms is not None))
    return 0


async def cmd_find(args: argparse.Namespace, q: Queue, con: Console) -> int:
    term, what = args.term, "that term"
    chosen: SearchTerms | None = next(
        (st for st in search_terms() if getattr(args, f"search_{st.option}", None) is not None),
        None)
    if chosen is not None:
        term = chosen.to_term(getattr(args, f"search_{chosen.option}"))
        what = f"that {chosen.noun}"
    jobs = await find_jobs(q, term)
    if not jobs:
        con.note(f"no jobs of {what} in queue {q.name}")
        return 1
    con.print(table(["job id", "state", "created", "finished", "attempts"],
                    [[j.id, j.state.value, fmt_dt(j.created_at), fmt_dt(j.finished_at), j.attempts]
                     for j in jobs], right=[4]))
    con.print(f"\n{len(jobs)} job{'' if len(jobs) == 1 else 's'} of {what} in queue {q.name}")
    return 0

