"""A stand-in for the Africa's Talking SMS API, for local development and tests.

Run it, then point a worker at it::

    python -m streamq.sms.standin_at --port 8090 --username sandbox --api-key dev-key
    # in another shell:
    export AT_API_URL=http://127.0.0.1:8090 AT_USERNAME=sandbox AT_API_KEY=dev-key
    python -m streamq.worker --provider africastalking

It speaks the real shape: ``POST /version1/messaging`` form-encoded ``username``, ``to``,
``message``, optional ``from``, header ``apiKey``; replies ``{"SMSMessageData":
{"Message": ..., "Recipients": [{"statusCode": 101, "number": ..., "status": "Success",
"cost": "KES 0.8000", "messageId": "ATXid_..."}]}}``; a wrong key or username gets
``HTTP 401`` with the text ``The supplied authentication is invalid``, as the real API
answers. ``GET /version1/user?username=...`` answers the account balance (the start-up
check). With ``--api-key``/``--username`` unset it accepts any.

Every reply can be switched, for the whole server (``--mode``, :meth:`AfricasTalkingStandin.set_mode`)
or for the next requests in order (:meth:`AfricasTalkingStandin.script`). Modes:

=====================  ================================================================
``ok``                 statusCode 101 Success (also ``100`` Processed, ``102`` Queued)
``401`` ... ``409``    that per-recipient failure (RiskHold ... DoNotDisturbRejection)
``500`` ... ``502``    that per-recipient transient failure
``empty:Name``         200 with no recipients and ``Message: Name`` (e.g. InvalidSenderId)
``http401``, ``http503``...   that HTTP status (401: the real text); ``http429:2`` with a
                       ``Retry-After`` (seconds or an HTTP-date)
``slow:2.5``           wait that many seconds, then ok (a client timeout: it may have
                       sent, and the stand-in counts it as received)
``garbage``            200 with an HTML body
``disconnect``         reset the connection without a reply
=====================  ================================================================

**Many recipients.** A request may name many numbers (``to`` comma-separated, as the real
API takes them); the reply has one ``Recipients`` entry per number, in order, each with
the mode's ``statusCode`` (a malformed number gets 403, as the real API answers). Per
number (:meth:`AfricasTalkingStandin.script_number`, or ``{"numbers": {...}}`` over HTTP)
the next replies naming that number can be scripted: a statusCode (``101``, ``403``,
``500``...), ``ok``, or ``omit`` (the reply leaves that number out). ``stray`` numbers
(:attr:`AfricasTalkingStandin.stray`) are added to every reply as if sent, though nobody
asked for them.

Over HTTP, next to the API (all under ``/_standin/``)::

    curl -X POST localhost:8090/_standin/mode -d '{"mode": "http401"}'   # every reply
    curl -X POST localhost:8090/_standin/mode -d '{"script": ["500", "ok"]}'  # next ones
    curl -X POST localhost:8090/_standin/mode -d '{"numbers": {"+254712345678": ["500", "ok"]}}'
    curl -X POST localhost:8090/_standin/refuse -d '{"seconds": 5}'  # refuse connections
    curl localhost:8090/_standin/received        # what arrived (key and number masked)
    curl -X DELETE localhost:8090/_standin/received   # forget it
    curl -X POST localhost:8090/_standin/reset   # forget everything, back to ok

The console shows one line per request with the HTTP status and the ``statusCode`` it
actually sent, the number masked; the text only with ``--show-text`` (it may be an OTP).

**Delivery reports.** With a callback URL (``--callback-url``, ``callback_url=``, or
``POST /_standin/callback {"url": ..., "delay": 0.1}``) it POSTs Africa's Talking's
delivery callbacks (form ``id``, ``status``, ``phoneNumber``, ``networkCode``,
``failureReason``, ``retryCount``) for every message it accepted, ``delay`` seconds after
the reply. What it reports depends on the recipient's last digit (:data:`DELIVERY_SCRIPTS`):

=================  ==============================================================
``1``              Failed (failureReason DeliveryFailure)
``2``              Rejected (failureReason UserInBlackList)
``3``              Buffered, then Success
``4``              Submitted only (no final report)
``5``              Success twice (a repeated callback)
``9``              no report
any other          Success
=================  ==============================================================

A callback answered with anything but a 2xx (or not answered) is sent again after
0.1, 0.25, 0.5, 1 and 2 s with ``retryCount`` counting up, as a gateway retries; the
reports of one message go in order. ``GET /_standin/callbacks`` lists what was sent and
how it was answered (the callback URL, which holds a secret, is never shown or printed).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import os
import signal
import sys
import time
import uuid
from collections import deque
from dataclasses import dataclass, replace
from typing import Any, Final

import aiohttp
from aiohttp import web

from streamq.redact import mask_phone

from .providers.africastalking import PERMANENT_CODES, SEND_PATH, SENT_CODES, TRANSIENT_CODES, USER_PATH

AUTH_FAILED_TEXT: Final = "The supplied authentication is invalid"
GARBAGE_BODY: Final = b"<html><body>502 upstream hiccup</body></html>"
STATUS_NAMES: Final[dict[int, str]] = {
    100: "Processed", 101: "Success", 102: "Queued",
    **{k: v.split(" ")[0] for k, v in PERMANENT_CODES.items()},
    **TRANSIENT_CODES,
}


DELIVERY_SCRIPTS: Final[dict[str, tuple[tuple[str, str], ...]]] = {
    "1": (("Failed", "DeliveryFailure"),),
    "2": (("Rejected", "UserInBlackList"),),
    "3": (("Buffered", ""), ("Success", "")),
    "4": (("Submitted", ""),),
    "5": (("Success", ""), ("Success", "")),
    "9": (),
}
"""The delivery reports sent for a recipient, by the number's last digit (else Success)."""
DEFAULT_DELIVERY: Final = (("Success", ""),)
NETWORK_CODE: Final = "63902"  # Safaricom, as Africa's Talking reports it
CALLBACK_RETRIES_S: Final = (0.1, 0.25, 0.5, 1.0, 2.0)
CALLBACK_TIMEOUT_S: Final = 5.0


def delivery_script(number: str) -> tuple[tuple[str, str], ...]:
    """(status, failureReason) of each report the stand-in sends for ``number``."""
    return DELIVERY_SCRIPTS.get(number[-1:], DEFAULT_DELIVERY)


@dataclass(frozen=True, slots=True)
class CallbackSent:
    """One delivery callback the stand-in POSTed, and the answer (None: no answer)."""

    message_id: str
    status: str
    retry_count: int
    http_status: int | None
    at: float  # time.time()

    @property
    def shown(self) -> dict[str, Any]:
        return {"message_id": self.message_id, "status": self.status,
                "retry_count": self.retry_count, "http_status": self.http_status, "at": self.at}


@dataclass(frozen=True, slots=True)
class Behaviour:
    """How the stand-in answers one request."""

    status: int = 200
    code: int | None = 101  # per-recipient statusCode; None: a plain HTTP reply
    empty: str | None = None  # no recipients, this Message
    retry_after: str | None = None
    body: bytes | None = None
    delay: float = 0.0
    disconnect: bool = False

    @classmethod
    def parse(cls, spec: str) -> Behaviour:
        spec = spec.strip()
        name, _, arg = spec.partition(":")
        try:
            if spec == "ok":
                return cls()
            if spec == "garbage":
                return cls(code=None, body=GARBAGE_BODY)
            if spec == "disconnect":
                return cls(disconnect=True)
            if name == "slow":
                return replace(cls(), delay=float(arg))
            if name == "empty" and arg:
                return cls(empty=arg)
            if name.startswith("http"):
                return cls(status=int(name[4:]), code=None, retry_after=arg or None)
            code = int(name)
            if code in STATUS_NAMES:
                return cls(code=code)
        except ValueError:
            pass
        raise ValueError(
            f"unknown stand-in mode {spec!r}: use ok, a statusCode (100-102, 401-409, "
            "500-502), empty:InvalidSenderId, http401, http503, http429:2, slow:2.5, "
            "garbage or disconnect"
        )


@dataclass(frozen=True, slots=True)
class Received:
    """One send request as it arrived: the form fields and the idempotency header."""

    form: dict[str, str]
    api_key: str | None
    idempotency_key: str | None
    at: float  # time.monotonic() on arrival
    wall: float  # time.time() on arrival

    @property
    def masked(self) -> dict[str, Any]:
        shown: dict[str, Any] = {k: v for k, v in self.form.items() if k != "message"}
        if "to" in shown:
            shown["to"] = ",".join(mask_phone(n) for n in shown["to"].split(","))
        shown["chars"] = len(self.form.get("message", ""))
        shown["apiKey"] = "***" if self.api_key else None
        shown["idempotency_key"] = self.idempotency_key
        shown["at"] = self.wall
        return shown


class AfricasTalkingStandin:
    """An aiohttp server playing Africa's Talking. ``async with AfricasTalkingStandin() as s:``."""

    def __init__(self, *, api_key: str | None = None, username: str | None = None,
                 balance: str = "KES 1785.50", show_text: bool = False, echo: bool = False,
                 callback_url: str | None = None, callback_delay: float = 0.1,
                 callback_retries: tuple[float, ...] = CALLBACK_RETRIES_S) -> None:
        self.callback_url = callback_url or None
        self.callback_delay = callback_delay
        self.callback_retries = callback_retries
        self.callbacks: list[CallbackSent] = []
        self._callback_sent = asyncio.Condition()
        self._session: aiohttp.ClientSession | None = None
        self.api_key = api_key or None
        self.username = username or None
        self.balance = balance
        self.show_text = show_text
        self.echo = echo
        self.received: list[Received] = []
        self.mode = Behaviour()
        self.in_flight = 0
        self.max_concurrent = 0
        self.refusing = False
        self._script: deque[Behaviour] = deque()
        self._numbers: dict[str, deque[str]] = {}
        self.stray: list[str] = []
        """Numbers added to every reply that sent something, as if asked for."""
        self._ids = itertools.count(1)
        self._run_id = uuid.uuid4().hex[:24]
        self._arrived = asyncio.Condition()
        self._stopping = asyncio.Event()
        self._runner: web.AppRunner | None = None
        self._site: web.TCPSite | None = None
        self._host = "127.0.0.1"
        self._port = 0
        self._reopen: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    # -- control ------------------------------------------------------------------------
    def set_mode(self, mode: Behaviour | str) -> None:
        self.mode = Behaviour.parse(mode) if isinstance(mode, str) else mode

    def script(self, *replies: Behaviour | str) -> None:
        self._script.extend(Behaviour.parse(r) if isinstance(r, str) else r for r in replies)

    def script_number(self, number: str, *replies: str) -> None:
        """The next replies naming ``number`` give it these entries in order: a
        statusCode (``101``, ``403``, ``500``...), ``ok`` or ``omit`` (left out)."""
        for r in replies:
            if r not in ("ok", "omit") and not (r.isdigit() and int(r) in STATUS_NAMES):
                raise ValueError(f"unknown per-number reply {r!r}: use ok, omit or a "
                                 "statusCode (100-102, 401-409, 500-502)")
        self._numbers.setdefault(number, deque()).extend(replies)

    def reset(self) -> None:
        self.received.clear()
        self.callbacks.clear()
        self._script.clear()
        self._numbers.clear()
        self.stray.clear()
        self.mode = Behaviour()
        self.max_concurrent = 0

    def set_callback(self, url: str | None, delay: float | None = None) -> None:
        """POST delivery reports to ``url`` from now on (None: stop sending them)."""
        self.callback_url = url or None
        if delay is not None:
            self.callback_delay = delay

    async def wait_for_callbacks(self, count: int, within: float = 5.0) -> list[CallbackSent]:
        """The callbacks sent, once at least ``count`` were (answered or not)."""
        async with asyncio.timeout(within), self._callback_sent:
            await self._callback_sent.wait_for(lambda: len(self.callbacks) >= count)
        return list(self.callbacks)

    async def wait_for_requests(self, count: int, within: float = 5.0) -> list[Received]:
        async with asyncio.timeout(within), self._arrived:
            await self._arrived.wait_for(lambda: len(self.received) >= count)
        return list(self.received)

    async def refuse(self, seconds: float | None = None) -> None:
        """Stop listening (new connections are refused) for ``seconds``, or until
        :meth:`accept`. Open keep-alive connections are closed by the replies before
        (every reply carries ``Connection: close``), so clients reconnect and get refused."""
        if self._site is not None:
            site, self._site = self._site, None
            await site.stop()
        self.refusing = True
        if seconds is not None:
            if self._reopen is not None:
                self._reopen.cancel()
            self._reopen = asyncio.get_running_loop().create_task(self._accept_after(seconds))

    async def accept(self) -> None:
        """Listen again on the same address."""
        if self._runner is not None and self._site is None:
            site = web.TCPSite(self._runner, self._host, self._port, reuse_address=True)
            await site.start()
            self._site = site
        self.refusing = False

    async def _accept_after(self, seconds: float) -> None:
        await asyncio.sleep(seconds)
        await self.accept()

    # -- lifecycle ----------------------------------------------------------------------
    @property
    def url(self) -> str:
        """The base URL, as ``AT_API_URL``."""
        if not self._port:
            raise RuntimeError("the stand-in is not started")
        host = f"[{self._host}]" if ":" in self._host else self._host
        return f"http://{host}:{self._port}"

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        app = web.Application(client_max_size=1024 * 1024)
        app.router.add_post(SEND_PATH, self._handle_send)
        app.router.add_get(USER_PATH, self._handle_user)
        app.router.add_post("/_standin/mode", self._handle_mode)
        app.router.add_post("/_standin/refuse", self._handle_refuse)
        app.router.add_post("/_standin/reset", self._handle_reset)
        app.router.add_get("/_standin/received", self._handle_received)
        app.router.add_delete("/_standin/received", self._handle_clear)
        app.router.add_post("/_standin/callback", self._handle_callback)
        app.router.add_get("/_standin/callbacks", self._handle_callbacks)
        self._stopping.clear()
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
        await runner.setup()
        site = web.TCPSite(runner, host, port, reuse_address=True)
        await site.start()
        self._runner, self._site = runner, site
        bound = runner.addresses[0]
        self._host, self._port = bound[0], int(bound[1])
        return self.url

    async def stop(self) -> None:
        self._stopping.set()
        if self._reopen is not None:
            self._reopen.cancel()
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        runner, self._runner, self._site = self._runner, None, None
        if runner is not None:
            await runner.cleanup()
        session, self._session = self._session, None
        if session is not None:
            await session.close()

    async def __aenter__(self) -> AfricasTalkingStandin:
        if self._runner is None:
            await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # -- the API ------------------------------------------------------------------------
    def _authorised(self, request: web.Request, username: str | None) -> bool:
        key = request.headers.get("apiKey")
        if not key:
            return False
        if self.api_key is not None and key != self.api_key:
            return False
        return not (self.username is not None and username != self.username)

    async def _handle_send(self, request: web.Request) -> web.StreamResponse:
        self.in_flight += 1
        self.max_concurrent = max(self.max_concurrent, self.in_flight)
        try:
            return await self._reply(request)
        finally:
            self.in_flight -= 1

    async def _reply(self, request: web.Request) -> web.StreamResponse:
        post = await request.post()
        form = {k: str(v) for k, v in post.items()}
        arrival = Received(form=form, api_key=request.headers.get("apiKey"),
                           idempotency_key=request.headers.get("Idempotency-Key"),
                           at=time.monotonic(), wall=time.time())
        async with self._arrived:
            self.received.append(arrival)
            self._arrived.notify_all()
        behaviour = self._script.popleft() if self._script else self.mode
        if behaviour.delay > 0:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), behaviour.delay)
        if behaviour.disconnect:
            if request.transport is not None:
                request.transport.abort()
            self._print(arrival, None, None)
            raise web.HTTPInternalServerError()  # never written: the socket is gone
        response, code = self._response(request, behaviour, form)
        response.force_close()
        self._print(arrival, response.status, code)
        if self.callback_url is not None and response.status == 200 and response.body:
            self._schedule_reports(response.body)
        return response

    def _response(self, request: web.Request, behaviour: Behaviour, form: dict[str, str]
                  ) -> tuple[web.Response, int | None]:
        headers = {"Retry-After": behaviour.retry_after} if behaviour.retry_after else None
        if behaviour.body is not None:
            return web.Response(status=behaviour.status, body=behaviour.body,
                                content_type="text/html", headers=headers), None
        if behaviour.status == 401 or not self._authorised(request, form.get("username")):
            return web.Response(status=401, text=AUTH_FAILED_TEXT, headers=headers), None
        if behaviour.code is None and behaviour.empty is None:
            return web.Response(status=behaviour.status, text=f"HTTP {behaviour.status}",
                                headers=headers), None
        numbers = [n for n in form.get("to", "").split(",") if n]
        if not numbers or "message" not in form:
            return web.Response(status=400, text="Request is missing required form field"), None
        if behaviour.empty is not None:
            empty: dict[str, Any] = {"SMSMessageData": {"Message": behaviour.empty, "Recipients": []}}
            return web.json_response(empty, status=behaviour.status, headers=headers), None
        code = behaviour.code or 101
        recipients = []
        for n in numbers:
            scripted = self._numbers.get(n)
            spec = scripted.popleft() if scripted else "default"
            if spec == "omit":
                continue
            recipients.append(self._recipient(n, code if spec == "default" else
                                              101 if spec == "ok" else int(spec)))
        if any(r["statusCode"] in SENT_CODES for r in recipients):
            recipients.extend(self._recipient(n, 101) for n in self.stray)
        sent = sum(1 for r in recipients if r["statusCode"] in SENT_CODES)
        cost = sent * 0.8
        doc: dict[str, Any] = {"SMSMessageData": {
            "Message": f"Sent to {sent}/{len(numbers)} Total Cost: KES {cost:.4f}",
            "Recipients": recipients}}
        return web.json_response(doc, status=behaviour.status, headers=headers), code

    def _recipient(self, number: str, code: int) -> dict[str, Any]:
        valid = number.startswith("+") and number[1:].isdigit() and 8 <= len(number) - 1 <= 15
        if code in SENT_CODES and not valid:
            code = 403  # what the real API answers for a malformed number
        sent = code in SENT_CODES
        return {
            "statusCode": code,
            "number": number,
            "status": STATUS_NAMES[code],
            "cost": "KES 0.8000" if sent else "0",
            # the real shape (32 hex digits), unique across stand-in runs: a delivery
            # reference recorded in an earlier run must not match a new message
            "messageId": f"ATXid_{next(self._ids):08x}{self._run_id}" if sent else "None",
        }

    # -- delivery reports -------------------------------------------------------------
    def _schedule_reports(self, body: object) -> None:
        """After a reply that accepted recipients: send their delivery reports later."""
        if not isinstance(body, bytes):
            return
        try:
            recipients = json.loads(body)["SMSMessageData"]["Recipients"]
        except (ValueError, KeyError, TypeError):
            return
        for r in recipients:
            if r.get("statusCode") in SENT_CODES:
                self._spawn(self._report(str(r["messageId"]), str(r["number"])))

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _report(self, message_id: str, number: str) -> None:
        url = self.callback_url
        if url is None:
            return
        if self.callback_delay > 0:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), self.callback_delay)
        for status, reason in delivery_script(number):
            form = {"id": message_id, "status": status, "phoneNumber": number,
                    "networkCode": NETWORK_CODE}
            if reason:
                form["failureReason"] = reason
            for retry in range(len(self.callback_retries) + 1):
                if self._stopping.is_set():
                    return
                answer = await self._post_report(url, {**form, "retryCount": str(retry)})
                sent = CallbackSent(message_id=message_id, status=status, retry_count=retry,
                                    http_status=answer, at=time.time())
                async with self._callback_sent:
                    self.callbacks.append(sent)
                    self._callback_sent.notify_all()
                if self.echo:
                    said = "no answer" if answer is None else f"HTTP {answer}"
                    print(f"[africastalking stand-in] delivery report {status} for {message_id} "
                          f"to={mask_phone(number)} -> {said} (retryCount {retry})", flush=True)
                if answer is not None and 200 <= answer < 300:
                    break
                if retry < len(self.callback_retries):
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._stopping.wait(), self.callback_retries[retry])

    async def _post_report(self, url: str, form: dict[str, str]) -> int | None:
        if self._session is None:
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=CALLBACK_TIMEOUT_S))
        try:
            async with self._session.post(url, data=form) as reply:
                await reply.read()
                return reply.status
        except (aiohttp.ClientError, TimeoutError):
            return None

    async def _handle_user(self, request: web.Request) -> web.Response:
        if not self._authorised(request, request.query.get("username")):
            return web.Response(status=401, text=AUTH_FAILED_TEXT)
        return web.json_response({"UserData": {"balance": self.balance}})

    def _print(self, arrival: Received, status: int | None, code: int | None) -> None:
        if not self.echo:
            return
        to = ",".join(mask_phone(n) for n in arrival.form.get("to", "").split(",") if n)
        sent = "reset (no reply)" if status is None else f"HTTP {status}"
        many = to.count(",")
        shown_to = f"{many + 1} numbers" if many >= 3 else to
        line = (f"[africastalking stand-in] {sent} statusCode={code if code is not None else '-'} "
                f"to={shown_to} key={arrival.idempotency_key} "
                f"chars={len(arrival.form.get('message', ''))}")
        if self.show_text:
            line += f" text={arrival.form.get('message')!r}"
        print(line, flush=True)

    # -- control endpoints ----------------------------------------------------------------
    async def _json_body(self, request: web.Request) -> dict[str, Any]:
        doc = json.loads(await request.read() or b"{}")
        if not isinstance(doc, dict):
            raise ValueError("expected a JSON object")
        return doc

    async def _handle_mode(self, request: web.Request) -> web.Response:
        try:
            doc = await self._json_body(request)
            if "mode" in doc:
                self.set_mode(str(doc["mode"]))
            if "script" in doc:
                self.script(*(str(item) for item in doc["script"]))
            for number, replies in dict(doc.get("numbers") or {}).items():
                self.script_number(str(number), *(str(r) for r in replies))
            if "stray" in doc:
                self.stray = [str(n) for n in doc["stray"]]
        except (ValueError, TypeError) as exc:
            return web.json_response({"error": str(exc)}, status=400)
        return web.json_response({"ok": True, "scripted": len(self._script)})

    async def _handle_refuse(self, request: web.Request) -> web.Response:
        try:
            seconds = float((await self._json_body(request)).get("seconds", 5))
            if not 0 < seconds <= 3600:
                raise ValueError("seconds must be in (0, 3600]")
        except (ValueError, TypeError) as exc:
            return web.json_response({"error": str(exc)}, status=400)
        # in a task of its own: this request's connection is still open
        task = asyncio.get_running_loop().create_task(self.refuse(seconds))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return web.json_response({"ok": True, "refusing_for": seconds})

    async def _handle_reset(self, request: web.Request) -> web.Response:
        self.reset()
        return web.json_response({"ok": True})

    async def _handle_received(self, request: web.Request) -> web.Response:
        return web.json_response([r.masked for r in self.received])

    async def _handle_clear(self, request: web.Request) -> web.Response:
        self.received.clear()
        return web.json_response({"ok": True})

    async def _handle_callback(self, request: web.Request) -> web.Response:
        try:
            doc = await self._json_body(request)
            url = str(doc.get("url") or "")
            if url and not url.startswith(("http://", "https://")):
                raise ValueError("url must be an http:// or https:// URL (or empty: off)")
            delay = doc.get("delay")
            if delay is not None and not 0 <= float(delay) <= 3600:
                raise ValueError("delay must be from 0 to 3600 seconds")
        except (ValueError, TypeError) as exc:
            return web.json_response({"error": str(exc)}, status=400)
        self.set_callback(url or None, None if delay is None else float(delay))
        return web.json_response({"ok": True, "callbacks": url != "",
                                  "delay": self.callback_delay})

    async def _handle_callbacks(self, request: web.Request) -> web.Response:
        return web.json_response([c.shown for c in self.callbacks])


async def _serve(args: argparse.Namespace) -> None:
    standin = AfricasTalkingStandin(api_key=args.api_key, username=args.username,
                                    show_text=args.show_text, echo=True,
                                    callback_url=args.callback_url,
                                    callback_delay=args.callback_delay)
    standin.set_mode(args.mode)
    await standin.start(args.host, args.port)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    checks = "any API key" if standin.api_key is None else "the configured API key only"
    print(f"Africa's Talking stand-in listening on {standin.url} (accepts {checks}; "
          f"mode {args.mode})")
    if standin.callback_url:
        print("  delivery reports: POSTed to the --callback-url (by the recipient's last "
              "digit: 1 Failed, 2 Rejected, 3 Buffered+Success, 4 Submitted, 5 twice, "
              "9 none, else Success)")
    print(f"  export AT_API_URL={standin.url}", flush=True)
    try:
        await stop.wait()
    finally:
        await standin.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m streamq.sms.standin_at",
        description="A local stand-in for the Africa's Talking SMS API (development and tests).",
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8090, help="port (default 8090; 0 = any)")
    parser.add_argument("--api-key", default=os.environ.get("AT_API_KEY"),
                        help="accept only this API key (default: env AT_API_KEY; unset = any)")
    parser.add_argument("--username", default=os.environ.get("AT_USERNAME"),
                        help="accept only this username (default: env AT_USERNAME; unset = any)")
    parser.add_argument("--mode", default="ok",
                        help="reply mode: ok, 100-102, 401-409, 500-502, empty:NAME, http401, "
                        "http503, http429:2, slow:2.5, garbage, disconnect (default ok)")
    parser.add_argument("--callback-url", default=None,
                        help="POST delivery reports for accepted messages to this URL, e.g. "
                        "http://127.0.0.1:8095/sms/delivery/<AT_DELIVERY_SECRET> (never printed)")
    parser.add_argument("--callback-delay", type=float, default=0.1,
                        help="seconds between a reply and its first delivery report (default 0.1)")
    parser.add_argument("--show-text", action="store_true",
                        help="print message texts (they may hold OTP codes)")
    args = parser.parse_args(argv)
    try:
        Behaviour.parse(args.mode)
    except ValueError as exc:
        parser.error(str(exc))
    try:
        asyncio.run(_serve(args))
    except OSError as exc:
        print(f"stand-in could not listen on {args.host}:{args.port}: {exc.strerror}",
              file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
