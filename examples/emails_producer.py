"""Add jobs to the "emails" queue, then wait until a worker has finished them.

    python examples/emails_producer.py [--redis-url redis://127.0.0.1:6379/0] [--count 5]

Run ``python examples/emails_worker.py`` in another shell first (or after: the jobs
wait in Redis). Prints each job's final state; exits 1 if they are not all finished
within ``--timeout`` seconds (no worker running?).
"""

from __future__ import annotations

import argparse
import asyncio
import sys

from streamq import JobOptions, JobState, Queue

FINAL_EVENTS = ("completed", "dead", "cancelled")


async def wait_finished(queue: Queue, job_ids: list[str]) -> None:
    """Follow the queue's events stream until each job has finished (no polling: the read
    blocks until something happens). Events of other jobs are skipped."""
    waiting = set(job_ids)
    after = "0-0"  # the stream is capped (2,000 entries): reading it from the start is cheap
    while waiting:
        for event in await queue.read_events(after=after, block=1.0):
            after = event.id
            if event.name in FINAL_EVENTS:
                waiting.discard(event.job_id)


async def main(redis_url: str | None, count: int, wait_s: float) -> int:
    async with Queue("emails", redis_url=redis_url) as queue:
        refs = await queue.add_bulk(
            [{"to": f"user{i}@example.com", "subject": f"Hello #{i}"} for i in range(count)]
        )
        refs.append(await queue.add({"to": "ops@example.com", "subject": "Disk almost full"},
                                    JobOptions(priority="high")))
        refs.append(await queue.add({"to": "later@example.com", "subject": "Reminder"},
                                    JobOptions(delay=1.0)))  # seconds
        refs.append(await queue.add({"to": "", "subject": "Nobody"}))  # -> dead letter
        print(f"added {len(refs)} jobs to queue 'emails'; waiting for a worker", flush=True)
        ids = [ref.job_id for ref in refs]
        try:
            async with asyncio.timeout(wait_s):
                await wait_finished(queue, ids)
        except TimeoutError:
            pass
        infos = [info for info in [await queue.get_job(job_id) for job_id in ids] if info]
        for info in infos:
            error = f" ({info.error})" if info.error else ""
            print(f"{info.id}: {info.state.value} after {info.attempts} attempt(s){error}")
        done = sum(info.state is JobState.COMPLETED for info in infos)
        failed = sum(info.state is JobState.FAILED for info in infos)
        print(f"completed {done}, failed {failed}, of {len(refs)}")
        if done + failed < len(refs):
            print("some jobs are not finished: is a worker running? "
                  "(python examples/emails_worker.py)", file=sys.stderr)
            return 1
        return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--redis-url", help="default: env REDIS_URL, else redis://127.0.0.1:6379/0")
    parser.add_argument("--count", type=int, default=5, help="plain jobs to add (default 5)")
    parser.add_argument("--timeout", type=float, default=30.0, help="seconds to wait (default 30)")
    args = parser.parse_args()
    sys.exit(asyncio.run(main(args.redis_url, args.count, args.timeout)))
