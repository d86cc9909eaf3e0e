"""The SMS worker, embedded in a script: the engine's Worker with the SMS handler.

    python examples/sms_worker.py                      # mock provider: prints what it would send
    python examples/sms_worker.py --provider salum     # reads SALUM_API_URL, SALUM_API_KEY, ...

then, in another shell, ``python examples/sms_producer.py``. It does what
``python -m streamq.worker`` does for the ``sms`` queue, in a dozen lines you can adapt.
For the Salum provider without a Salum account, run the stand-in first::

    python -m streamq.sms.standin --port 8089 --api-key dev-key
    SALUM_API_URL=http://127.0.0.1:8089/api/services/sendsms/ SALUM_API_KEY=dev-key \\
    SALUM_PARTNER_ID=1 SALUM_SHORTCODE=STREAMQ python examples/sms_worker.py --provider salum

Ctrl-C (or SIGTERM) stops it gracefully; a second Ctrl-C stops at once.
"""

from __future__ import annotations

import argparse
import asyncio
import signal

from streamq import Queue, Worker, WorkerEvent
from streamq.logs import configure_logging
from streamq.sms import SMSJob, make_sms_handler, provider_from_settings


def delivered(event: WorkerEvent) -> None:
    result = event.result  # what the SMS handler returned: provider, message id, encoding
    print(f"delivered {event.job_type} job {event.job_id} via {result['provider']} "
          f"(message id {result['message_id']}, {result['segments']} segment(s))", flush=True)


async def main(redis_url: str | None, queue_name: str, provider_name: str) -> None:
    queue = Queue(queue_name, redis_url=redis_url, job_type=SMSJob)  # payloads decode to SMSJob
    await queue.connect()
    provider = provider_from_settings(provider_name)
    worker = Worker(queue, make_sms_handler(provider), concurrency=5, rate_limit=10.0)
    worker.on("completed", delivered)
    worker.on("dead", lambda e: print(f"dead letter {e.job_id}: {e.error}", flush=True))

    signals = 0

    def on_signal() -> None:
        nonlocal signals
        signals += 1
        worker.stop(immediate=signals > 1)

    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, on_signal)
    print(f"SMS worker ready: queue {queue_name!r}, provider {provider_name} (Ctrl-C to stop)",
          flush=True)
    try:
        await worker.run()
    finally:
        await provider.aclose()
        await queue.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--redis-url", help="default: env REDIS_URL, else redis://127.0.0.1:6379/0")
    parser.add_argument("--queue", default="sms", help="default sms")
    parser.add_argument("--provider", choices=("mock", "salum"), default="mock")
    args = parser.parse_args()
    configure_logging("console", "warning")  # masks numbers and codes in the library's logs
    asyncio.run(main(args.redis_url, args.queue, args.provider))
