"""An aiohttp web app that creates SMS jobs in its request handlers and runs the worker
in the same process (start with the app, graceful stop with it).

    python examples/aiohttp_app.py [--port 8080] [--redis-url ...] [--provider mock]
    curl -s -X POST localhost:8080/signup -d '{"phone": "0712345678", "name": "Wanjiru"}'
    curl -s localhost:8080/jobs/JOB_ID

POST /signup answers 202 with the job id at once (the SMS is sent by the worker), or 400
with a one-line reason (an invalid phone number, masked). GET /jobs/JOB_ID shows the
job's state. In production you would usually run the worker as its own process
(``python -m streamq.worker``) and keep only the Queue in the web app; the pattern below
(start in a startup hook, ``await worker.close()`` in the shutdown hook) is the same for
any asyncio framework's lifespan.
"""

from __future__ import annotations

import argparse
import asyncio
import json
from collections.abc import AsyncIterator, Callable

from aiohttp import web

from streamq import PayloadError, Queue, Worker
from streamq.logs import configure_logging
from streamq.sms import (
    Recipient,
    SMSJob,
    create_welcome_sms_job,
    make_sms_handler,
    provider_from_settings,
)

QUEUE = web.AppKey("queue", Queue)


def streamq_context(redis_url: str | None, provider_name: str
                    ) -> Callable[[web.Application], AsyncIterator[None]]:
    """An aiohttp cleanup context: connect and start the worker, and stop it at shutdown."""

    async def context(app: web.Application) -> AsyncIterator[None]:
        queue = Queue("sms", redis_url=redis_url, job_type=SMSJob)
        await queue.connect()  # the app does not start without Redis: one clear line
        provider = provider_from_settings(provider_name)
        worker = Worker(queue, make_sms_handler(provider), concurrency=5, rate_limit=10.0)
        runner = asyncio.create_task(worker.run())
        app[QUEUE] = queue
        try:
            yield
        finally:
            await worker.close()  # running jobs finish, fetched ones go back
            await runner
            await provider.aclose()
            await queue.close()

    return context


async def signup(request: web.Request) -> web.Response:
    try:
        body = await request.json()
        phone, name = str(body["phone"]), str(body["name"])
    except (ValueError, KeyError, TypeError):
        return web.json_response({"error": 'send JSON {"phone": ..., "name": ...}'}, status=400)
    try:
        ref = await create_welcome_sms_job(recipient=Recipient(phone_number=phone),
                                           user_name=name, queue=request.app[QUEUE])
    except PayloadError as exc:  # an invalid number is refused here, nothing is queued
        return web.json_response({"error": str(exc)}, status=400)
    return web.json_response({"job_id": ref.job_id}, status=202)


async def job_state(request: web.Request) -> web.Response:
    info = await request.app[QUEUE].get_job(request.match_info["job_id"])
    if info is None:
        return web.json_response({"error": "unknown job (or its record expired)"}, status=404)
    return web.json_response({"job_id": info.id, "state": info.state.value,
                              "attempts": info.attempts, "error": info.error})


def make_app(redis_url: str | None, provider_name: str) -> web.Application:
    app = web.Application()
    app.cleanup_ctx.append(streamq_context(redis_url, provider_name))
    app.router.add_post("/signup", signup)
    app.router.add_get("/jobs/{job_id}", job_state)
    return app


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--redis-url", help="default: env REDIS_URL, else redis://127.0.0.1:6379/0")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument("--provider", choices=("mock", "salum"), default="mock")
    args = parser.parse_args()
    configure_logging("console", "info")
    web.run_app(make_app(args.redis_url, args.provider), host=args.host, port=args.port,
                print=lambda text: print(json.dumps({"listening": f"http://{args.host}:{args.port}"}),
                                         flush=True))
