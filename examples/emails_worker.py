"""A worker for the "emails" queue, embedded in a script of its own.

    python examples/emails_worker.py [--redis-url redis://127.0.0.1:6379/0]

then, in another shell, ``python examples/emails_producer.py``. Redis comes from
``--redis-url``, else ``REDIS_URL``, else redis://127.0.0.1:6379/0. Ctrl-C (or SIGTERM)
stops it gracefully: the jobs it runs finish, the ones it fetched go back to the queue;
a second Ctrl-C stops at once.

The same handler runs under the worker command line too (from this directory, so that
``emails_worker`` can be imported)::

    cd examples && python -m streamq.worker --queue emails --handler emails_worker:send_email
"""

from __future__ import annotations

import argparse
import asyncio
import signal

from streamq import Job, PermanentError, Queue, Worker
from streamq.logs import configure_logging


async def send_email(job: Job) -> str:
    """The handler: ``job.data`` is what the producer added."""
    to = job.data.get("to")
    if not to:
        raise PermanentError("no recipient")  # dead letter now, no retry
    await asyncio.sleep(0.01)  # stands in for the SMTP call; any exception -> retry
    print(f"sent email {job.id} to {to}: {job.data['subject']!r} (attempt {job.attempt})",
          flush=True)
    return "sent"


async def main(redis_url: str | None) -> None:
    queue = Queue("emails", redis_url=redis_url)
    await queue.connect()  # a clear one-line error now if Redis is not there
    worker = Worker(queue, send_email, concurrency=5, rate_limit=None)
    worker.on("dead", lambda e: print(f"dead letter {e.job_id}: {e.error}", flush=True))

    signals = 0

    def on_signal() -> None:
        nonlocal signals
        signals += 1
        worker.stop(immediate=signals > 1)

    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, on_signal)
    print("worker ready: waiting for jobs on queue 'emails' (Ctrl-C to stop)", flush=True)
    try:
        await worker.run()
    finally:
        await queue.close()
    print(f"worker stopped after {worker.processed} jobs", flush=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--redis-url", help="default: env REDIS_URL, else redis://127.0.0.1:6379/0")
    args = parser.parse_args()
    configure_logging("console", "warning")  # the library logs through structlog
    asyncio.run(main(args.redis_url))
