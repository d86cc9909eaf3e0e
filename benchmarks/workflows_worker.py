"""``python benchmarks/workflows_worker.py --url URL --queue Q --n N [--concurrency 50]
[--returns none|dict]``

One streamq worker process for ``benchmarks/workflows.py``. It uses only the public API
that every version of the engine has, so it runs against another checkout too: put that
checkout first on ``PYTHONPATH`` (this file is run by path, so its own directory, not the
repository, is first on ``sys.path``). Prints ``READY`` once the worker runs, then
``RESULT {json}`` after N handler returns: count, elapsed_s (first start to N-th return),
cpu_s (the process's CPU over the same span) and which streamq it imported.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
import time
from typing import Any


async def main(a: argparse.Namespace) -> None:
    import structlog

    import streamq
    from streamq import Job, Queue, Worker

    structlog.configure(logger_factory=structlog.PrintLoggerFactory(sys.stderr),
                        wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    queue = Queue(a.queue, redis_url=a.url)
    await queue.connect()
    count = 0
    first: float | None = None
    cpu_first = 0.0
    finished = asyncio.Event()
    end = cpu_end = 0.0

    async def handler(job: Job) -> Any:
        nonlocal count, first, cpu_first, end, cpu_end
        if first is None:
            first, cpu_first = time.perf_counter(), time.process_time()
        count += 1
        if count >= a.n:
            end, cpu_end = time.perf_counter(), time.process_time()
            finished.set()
        if a.returns == "dict":  # what the SMS dispatcher returns
            return {"provider": "mock", "message_id": job.id, "encoding": "GSM-7", "segments": 1}
        return None

    worker = Worker(queue, handler, concurrency=a.concurrency, rate_limit=None)
    task = asyncio.get_running_loop().create_task(worker.run())
    while not worker.healthy and not task.done():  # noqa: ASYNC110 (no start-up event)
        await asyncio.sleep(0.005)
    print("READY", flush=True)
    await finished.wait()
    await worker.close()
    await task
    await queue.close()
    assert first is not None
    print("RESULT " + json.dumps({"count": count, "elapsed_s": end - first,
                                  "cpu_s": cpu_end - cpu_first,
                                  "streamq": streamq.__file__}), flush=True)


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("--url", required=True)
    p.add_argument("--queue", default="bench")
    p.add_argument("--n", type=int, required=True)
    p.add_argument("--concurrency", type=int, default=50)
    p.add_argument("--returns", choices=("none", "dict"), default="none")
    args = p.parse_args()
    try:
        import uvloop
    except ImportError:
        asyncio.run(main(args))
    else:
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            runner.run(main(args))
