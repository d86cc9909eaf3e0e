"""The HTTP endpoint receiving Africa's Talking delivery reports (aiohttp).

    POST /sms/delivery/<AT_DELIVERY_SECRET>
    Content-Type: application/x-www-form-urlencoded
    id=ATXid_...&status=Success&phoneNumber=%2B2547...&networkCode=63902&retryCount=0

The secret in the path authenticates the caller (Africa's Talking signs nothing): it is
compared in constant time, and a wrong one gets the same 404 as any path that does not
exist. Answers (nothing changes unless it says 200 with ``"changed": true``):

======  ===============================================================================
200     ``{"ok": true, "changed": true|false, "status": ..., "job_id": ...}``: applied,
        or a repeat / an earlier status than the one stored (see ``delivery.py``)
400     not a form, ``id`` or ``status`` missing, a field of the wrong shape
404     a wrong secret (no body that tells it apart), or an unknown message id
413     a body over 16 KiB
503     Redis is unavailable: Africa's Talking retries later
======  ===============================================================================

Run it inside the SMS worker (``python -m streamq.worker --delivery-port 8095``, see
``docs/sms-providers.md``), or mount it into your own aiohttp application::

    reports = DeliveryReports(queue)
    app.add_subapp(DELIVERY_PATH, delivery_app(reports, os.environ["AT_DELIVERY_SECRET"]))

No log line holds the secret or a full phone number: the access log is off, the path is
never logged, and the report's number is shown masked.
"""

from __future__ import annotations

import time
from typing import Final

import anyio
import structlog
from aiohttp import web
from anyio.abc import TaskStatus
from redis.exceptions import RedisError

from streamq.errors import ConfigError, StreamqError
from streamq.redact import redact_text

from .delivery import DeliveryReports, MalformedReport, check_secret, parse_report, secret_matches

log = structlog.get_logger("streamq.sms")

DELIVERY_PATH: Final = "/sms/delivery"
"""Where the worker serves the endpoint: the callback URL is ``<base>/sms/delivery/<secret>``."""
MAX_BODY_BYTES: Final = 16 * 1024
FORM_TYPES: Final = ("application/x-www-form-urlencoded", "multipart/form-data")
FORBIDDEN_LOG_EVERY_S: Final = 60.0


class _Throttle:
    """At most one log line per period for a repeated refusal, with the count since."""

    def __init__(self, every_s: float) -> None:
        self.every_s = every_s
        self.last = float("-inf")
        self.suppressed = 0

    def due(self) -> int | None:
        now = time.monotonic()
        if now - self.last < self.every_s:
            self.suppressed += 1
            return None
        self.last, count, self.suppressed = now, self.suppressed, 0
        return count


def _answer(http_status: int, **body: object) -> web.Response:
    return web.json_response(body, status=http_status)


def delivery_app(reports: DeliveryReports, secret: str, *,
                 provider: str = "africastalking") -> web.Application:
    """An aiohttp application with one route, ``POST /{secret}``: mount it at
    :data:`DELIVERY_PATH` (``app.add_subapp``). ``secret`` is checked like
    ``AT_DELIVERY_SECRET`` (16-128 URL-safe characters)."""
    check_secret(secret, "the delivery secret")
    forbidden = _Throttle(FORBIDDEN_LOG_EVERY_S)

    async def receive(request: web.Request) -> web.Response:
        if not secret_matches(request.match_info.get("secret", ""), secret):
            suppressed = forbidden.due()
            if suppressed is not None:
                log.warning("sms.delivery_forbidden", queue=reports.queue.name,
                            remote=request.remote, suppressed_since_last=suppressed,
                            note="a POST with a wrong secret in the path (answered 404)")
            raise web.HTTPNotFound()
        if request.content_length is not None and request.content_length > MAX_BODY_BYTES:
            return _answer(413, error=f"body over {MAX_BODY_BYTES} bytes")
        if request.content_type not in FORM_TYPES:
            return _answer(400, error="expected a form (application/x-www-form-urlencoded)")
        try:
            posted = await request.post()
            form: dict[str, str] = {}
            for name, value in posted.items():
                if not isinstance(value, str):
                    raise MalformedReport(f"field {name[:40]!r} is a file")
                form.setdefault(name, value)
            report = parse_report(form)
        except MalformedReport as exc:
            log.info("sms.delivery_malformed", queue=reports.queue.name, error=str(exc))
            return _answer(400, error=str(exc))
        except (ValueError, UnicodeDecodeError):
            log.info("sms.delivery_malformed", queue=reports.queue.name, error="unreadable form")
            return _answer(400, error="unreadable form")
        try:
            applied = await reports.apply(report, provider)
        except (StreamqError, RedisError, OSError) as exc:
            log.error("sms.delivery_store_failed", queue=reports.queue.name,
                      message_id=report.message_id, error=redact_text(str(exc)))
            return web.json_response({"error": "storage unavailable, retry later"}, status=503,
                                     headers={"Retry-After": "30"})
        if applied is None:
            return _answer(404, error="unknown message id")
        return _answer(200, ok=True, changed=applied.changed, status=applied.status,
                       job_id=applied.job_id)

    app = web.Application()
    app.router.add_post("/{secret}", receive)
    return app


def delivery_root(reports: DeliveryReports, secret: str) -> web.Application:
    """A root application serving the endpoint at :data:`DELIVERY_PATH` (16 KiB bodies)."""
    root = web.Application(client_max_size=MAX_BODY_BYTES)
    root.add_subapp(DELIVERY_PATH, delivery_app(reports, secret))
    return root


async def serve_delivery(
    reports: DeliveryReports,
    secret: str,
    host: str,
    port: int,
    *,
    task_status: TaskStatus[int] = anyio.TASK_STATUS_IGNORED,
) -> None:
    """Serve the endpoint on host:port until cancelled; ``task_status.started`` gets the
    bound port (useful with port 0). A port that cannot be bound is a ConfigError."""
    runner = web.AppRunner(delivery_root(reports, secret), access_log=None)
    await runner.setup()
    try:
        try:
            site = web.TCPSite(runner, host, port)
            await site.start()
        except OSError as exc:
            raise ConfigError(f"delivery report server cannot listen on {host}:{port}: "
                              f"{exc.strerror or exc}") from None
        bound = port
        for addr in runner.addresses:
            if isinstance(addr, tuple) and len(addr) >= 2:
                bound = int(addr[1])
                break
        log.info("sms.delivery_listening", host=host, port=bound, queue=reports.queue.name,
                 path=f"{DELIVERY_PATH}/<AT_DELIVERY_SECRET>")
        task_status.started(bound)
        await anyio.sleep_forever()
    finally:
        with anyio.CancelScope(shield=True):
            await runner.cleanup()


__all__ = ["DELIVERY_PATH", "delivery_app", "delivery_root", "serve_delivery"]
