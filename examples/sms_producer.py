"""Create one SMS job of each kind (welcome, OTP, notification) and wait for delivery.

    python examples/sms_producer.py [--redis-url redis://127.0.0.1:6379/0] [--queue sms]

A worker delivers them: ``python examples/sms_worker.py`` or ``python -m streamq.worker``.
Phone numbers are checked when the job is created: ``0712345678`` is read in the default
region (``STREAMQ_DEFAULT_REGION``, KE) and stored as ``+254712345678``; an invalid one
is refused there, with the number masked in the error.
"""

from __future__ import annotations

import argparse
import asyncio
import sys

from streamq import Queue
from streamq.sms import (
    InvalidPhoneNumber,
    Recipient,
    SMSJob,
    create_notification_sms_job,
    create_otp_sms_job,
    create_welcome_sms_job,
)


async def main(redis_url: str | None, queue_name: str, wait_s: float) -> int:
    async with Queue(queue_name, redis_url=redis_url, job_type=SMSJob) as queue:
        refs = [
            await create_welcome_sms_job(
                recipient=Recipient(phone_number="0712345678", name="Wanjiru"),
                user_name="Wanjiru", queue=queue),
            await create_otp_sms_job(recipient="+254733111222", code="482913", expiry_minutes=5,
                                     queue=queue),  # high priority by default
            await create_notification_sms_job(recipient="+254722000111",
                                              message="Your order #1042 has shipped.", queue=queue),
        ]
        try:
            await create_welcome_sms_job(recipient="12345", user_name="Nobody", queue=queue)
        except InvalidPhoneNumber as exc:
            print(f"refused at creation: {exc}")
        print(f"created {len(refs)} SMS jobs on queue {queue_name!r}; waiting for delivery",
              flush=True)
        pending = {ref.job_id for ref in refs}
        try:
            async with asyncio.timeout(wait_s):
                after = "0-0"  # follow the queue's events until each job is finished
                while pending:
                    for event in await queue.read_events(after=after, block=1.0):
                        after = event.id
                        if event.name in ("completed", "dead") and event.job_id in pending:
                            pending.discard(event.job_id)
                            info = await queue.get_job(event.job_id)
                            error = f": {info.error}" if info and info.error else ""
                            print(f"{event.job_type} job {event.job_id}: {event.name}{error}",
                                  flush=True)
        except TimeoutError:
            pass
        if pending:
            print(f"{len(pending)} job(s) not delivered yet: is a worker running? "
                  "(python examples/sms_worker.py)", file=sys.stderr)
            return 1
        return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--redis-url", help="default: env REDIS_URL, else redis://127.0.0.1:6379/0")
    parser.add_argument("--queue", default="sms", help="default sms (the worker's default)")
    parser.add_argument("--timeout", type=float, default=30.0, help="seconds to wait (default 30)")
    args = parser.parse_args()
    sys.exit(asyncio.run(main(args.redis_url, args.queue, args.timeout)))
