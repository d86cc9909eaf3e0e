"""A broadcast (one text to many numbers) sent as bulk requests against one request per job,
side by side in one run.

    python -m benchmarks.broadcast --jobs 5000 --rounds 3 [--latency 0,0.1]

On a private redis-server, against the Africa's Talking stand-in on loopback (a process
of its own, answering after ``--latency`` seconds: 0 is loopback at full speed, 0.1 is
closer to a real gateway's round trip), an SMS worker (in-process, uvloop when installed,
``ProviderRouter`` over Africa's Talking, no rate limit, logs at warning) drains
``--jobs`` notifications of one text to as many distinct numbers:

* **one request per job**: ``make_sms_handler`` at ``--concurrency`` (default 20);
* **broadcast**: ``make_sms_batch_handler`` with batches of ``--batch`` (default 100,
  ``max_wait`` 0.05 s) at ``--batch-concurrency`` (default 4) batches, ``AT_BULK_MAX``
  100 recipients a request.

Rounds alternate between the two. Per mode: requests the stand-in received, jobs/s from
the first completion to the last (median, min-max), its ratio to one request per job,
the worker process's CPU per job, Redis commands per job (``INFO commandstats``).
"""

from __future__ import annotations

import argparse
import json
import statistics
import urllib.request
from typing import Any

from streamq import BatchOptions, Queue, Worker
from streamq.devredis import start_redis_server
from streamq.logs import configure_logging
from streamq.sms import SMSJob, create_notification_sms_jobs, make_sms_batch_handler, make_sms_handler
from streamq.sms.failover import ProviderRouter
from streamq.sms.providers import AfricasTalkingSMSProvider

from .common import run_async
from .delivery import WORK_COMMANDS, drain_counted, standin_process

TEXT = "Water supply resumes at 6 pm in your area. Store water safely."
MODES = ("one request per job", "broadcast")


def _control(at_url: str, path: str, body: dict[str, Any] | None = None,
             method: str = "POST") -> Any:
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(at_url + path, data=data, method=method)
    with urllib.request.urlopen(req, timeout=30) as r:
        return json.loads(r.read())


async def _drain(url: str, at_url: str, name: str, jobs: int, mode: str,
                 args: argparse.Namespace) -> tuple[float, float, float, int]:
    """(jobs/s, worker CPU ms per job, Redis commands per job, requests made)."""
    q = Queue(name, redis_url=url, job_type=SMSJob)
    numbers = [f"+2547{10000000 + i:08d}" for i in range(jobs)]
    await create_notification_sms_jobs(recipients=numbers, message=TEXT, queue=q)
    _control(at_url, "/_standin/received", method="DELETE")
    provider = AfricasTalkingSMSProvider("bench", "key", api_url=at_url, timeout_total=30,
                                         max_recipients=100)
    router = ProviderRouter(q, [provider])
    if mode == "broadcast":
        worker = Worker(q, make_sms_batch_handler(router), concurrency=args.batch_concurrency,
                        rate_limit=None, batch=BatchOptions(size=args.batch, max_wait=0.05))
    else:
        worker = Worker(q, make_sms_handler(router), concurrency=args.concurrency,
                        rate_limit=None)
    rate, cpu_ms, used = await drain_counted(q, worker, jobs)
    await router.aclose()
    await q.close()
    requests = len(_control(at_url, "/_standin/received", method="GET"))
    return rate, cpu_ms, sum(v for k, v in used.items() if k in WORK_COMMANDS), requests


async def run(args: argparse.Namespace) -> None:
    configure_logging("console", "warning")
    for latency in args.latency:
        rates: dict[str, list[float]] = {m: [] for m in MODES}
        cpu: dict[str, list[float]] = {m: [] for m in MODES}
        cmds: dict[str, list[float]] = {m: [] for m in MODES}
        reqs: dict[str, list[int]] = {m: [] for m in MODES}
        with start_redis_server() as proc, standin_process() as at_url:
            if latency > 0:
                _control(at_url, "/_standin/mode", {"mode": f"slow:{latency:g}"})
            for r in range(args.rounds):
                for mode in MODES if r % 2 == 0 else MODES[::-1]:
                    rate, c, n, made = await _drain(proc.url, at_url, f"b{r}{mode[0]}",
                                                    args.jobs, mode, args)
                    rates[mode].append(rate)
                    cpu[mode].append(c)
                    cmds[mode].append(n)
                    reqs[mode].append(made)

        def med(v: list[float]) -> str:
            return f"{statistics.median(v):.0f} ({min(v):.0f}-{max(v):.0f})"

        base = statistics.median(rates[MODES[0]])
        print(f"\n{args.jobs} notifications of one text to {args.jobs} numbers x {args.rounds} "
              f"rounds; stand-in latency {latency * 1000:g} ms; one request per job at "
              f"concurrency {args.concurrency}, broadcast in batches of {args.batch} at "
              f"concurrency {args.batch_concurrency} (100 recipients a request)")
        print(f"{'mode':<22}{'requests':<10}{'jobs/s median (min-max)':<26}{'ratio':<8}"
              f"{'worker CPU ms/job':<19}Redis commands/job")
        for mode in MODES:
            ratio = statistics.median(rates[mode]) / base if base else 0.0
            print(f"{mode:<22}{statistics.median(reqs[mode]):<10.0f}{med(rates[mode]):<26}"
                  f"{ratio:<8.2f}{statistics.median(cpu[mode]):<19.3f}"
                  f"{statistics.median(cmds[mode]):.2f}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.broadcast", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--jobs", type=int, default=5000)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--concurrency", type=int, default=20)
    p.add_argument("--batch", type=int, default=100)
    p.add_argument("--batch-concurrency", type=int, default=4)
    p.add_argument("--latency", type=lambda s: [float(x) for x in s.split(",")],
                   default=[0.0, 0.1], help="stand-in reply delays to run, seconds (e.g. 0,0.1)")
    run_async(run(p.parse_args(argv)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
