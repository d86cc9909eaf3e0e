"""A stand-in for the Salum SMS API, for local development and tests.

Run it, then point a worker at it::

    python -m streamq.sms.standin --port 8089 --api-key dev-key
    # in another shell:
    export STREAMQ_PROVIDER=salum SALUM_API_KEY=dev-key SALUM_PARTNER_ID=1 \\
           SALUM_SHORTCODE=STREAMQ SALUM_API_URL=http://127.0.0.1:8089/api/services/sendsms/
    python -m streamq.worker --provider salum

It speaks the real shape (``POST`` JSON ``{apikey, partnerID, message, shortcode,
mobile, clientsmsid}``; replies ``{"responses": [{"respose-code": 200, ...}]}`` with
the API's own misspelling, or a top-level ``{"response-code": 1006, ...}``) and checks
what a real gateway would: the API key (when ``--api-key`` or ``SALUM_API_KEY`` is
set), the partner id (when configured), the sender id, and ``mobile`` as bare digits.

Every reply can be switched, for the whole server (``--mode``, :meth:`SalumStandin.set_mode`)
or for the next requests in order (:meth:`SalumStandin.script`). Modes: ``ok``; a
Salum code ``1001``..``1007``, ``4090``, ``4091``, ``4092`` (add ``-top`` for a top-level
error); ``http503`` or any status, ``http429:2`` or ``http429:<HTTP-date>`` with a
``Retry-After``; ``slow:2.5`` (seconds, then ok); ``garbage`` (200 with an HTML body);
``disconnect`` (reset the connection without a reply).

A running server is also controlled over HTTP, next to the API path (see
:data:`CONTROL_HELP`, which ``--help`` prints)::

    curl -X POST localhost:8089/_standin/mode -d '{"mode": "1004"}'
    curl -X POST localhost:8089/_standin/mode -d '{"script": ["http503", "ok"]}'
    curl localhost:8089/_standin/received        # bodies (API key, number masked), replies
    curl -X DELETE localhost:8089/_standin/received   # forget what it received
    curl -X POST localhost:8089/_standin/reset   # forget everything, mode back to ok

The console shows one line per request with what the stand-in actually answered (HTTP
status, the Salum response code and its description) and the number masked; the text
is shown only with ``--show-text`` (it may be an OTP code).
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
from collections import deque
from dataclasses import dataclass, replace
from typing import Any, Final

from aiohttp import web

from streamq.redact import mask_phone

DEFAULT_PATH: Final = "/api/services/sendsms/"
DESCRIPTIONS: Final[dict[int, str]] = {
    200: "Success",
    1001: "Invalid sender id",
    1002: "Network not allowed",
    1003: "Invalid mobile number",
    1004: "Low bulk credits",
    1005: "Failed. System error",
    1006: "Invalid credentials",
    1007: "Failed. System error",
    4090: "Internal Error. Try again after 5 minutes",
    4091: "No Partner ID is Set",
    4092: "No API KEY Provided",
}
# The real API reports these at the top level, not inside responses[].
_TOP_LEVEL_CODES: Final = frozenset({1006, 4090, 4091, 4092})
GARBAGE_BODY: Final = b"<html><body>502 upstream hiccup</body></html>"
CONTROL_HELP: Final = """\
control endpoints (next to the API path, on the same port):
  POST   /_standin/mode      {"mode": "1004"}: the reply to every request from now on
                             {"script": ["http503", "ok"]}: replies to the next requests,
                             in order, then the mode again (both keys may be given)
  GET    /_standin/received  every request received, oldest first: time, body (API key
                             and number masked) and the reply sent (status, code)
  DELETE /_standin/received  forget the requests received so far
  POST   /_standin/reset     forget the requests and any script; mode back to ok

examples:
  curl -X POST localhost:8089/_standin/mode -d '{"mode": "1006"}'
  curl -s localhost:8089/_standin/received
  curl -X DELETE localhost:8089/_standin/received
"""


@dataclass(frozen=True, slots=True)
class Behaviour:
    """How the stand-in answers one request."""

    status: int = 200
    code: int | None = 200  # the Salum response code; None: a plain HTTP reply
    top_level: bool = False  # the error at the top level instead of inside responses[]
    retry_after: str | None = None  # Retry-After header value
    body: bytes | None = None  # a raw body replacing the JSON
    delay: float = 0.0  # seconds to wait before answering
    disconnect: bool = False  # reset the connection instead of answering

    @classmethod
    def ok(cls) -> Behaviour:
        return cls()

    @classmethod
    def error_code(cls, code: int, *, top_level: bool | None = None) -> Behaviour:
        if code not in DESCRIPTIONS or code == 200:
            raise ValueError(f"unknown Salum error code {code}")
        if top_level is None:
            top_level = code in _TOP_LEVEL_CODES
        return cls(code=code, top_level=top_level)

    @classmethod
    def http(cls, status: int, *, retry_after: str | None = None) -> Behaviour:
        return cls(status=status, code=None, retry_after=retry_after)

    @classmethod
    def garbage(cls, status: int = 200) -> Behaviour:
        return cls(status=status, code=None, body=GARBAGE_BODY)

    @classmethod
    def slow(cls, seconds: float, then: Behaviour | None = None) -> Behaviour:
        return replace(then or cls(), delay=seconds)

    @classmethod
    def reset(cls) -> Behaviour:
        return cls(disconnect=True)

    @classmethod
    def parse(cls, spec: str) -> Behaviour:
        """A behaviour from its command-line spelling (see the module docstring)."""
        spec = spec.strip()
        name, _, arg = spec.partition(":")
        try:
            if spec == "ok":
                return cls.ok()
            if spec == "garbage":
                return cls.garbage()
            if spec == "disconnect":
                return cls.reset()
            if name == "slow":
                return cls.slow(float(arg))
            if name.startswith("http"):
                return cls.http(int(name[4:]), retry_after=arg or None)
            if name.endswith("-top"):
                return cls.error_code(int(name[:-4]), top_level=True)
            return cls.error_code(int(name))
        except ValueError:
            pass
        raise ValueError(
            f"unknown stand-in mode {spec!r}: use ok, a code such as 1004 (or 1004-top), "
            "http503, http429:2, slow:2.5, garbage or disconnect"
        )


@dataclass(frozen=True, slots=True)
class Received:
    """One request as it arrived. ``body`` is the parsed JSON, or None if it was not JSON."""

    body: dict[str, Any] | None
    raw: bytes
    at: float  # time.monotonic() on arrival
    wall: float  # time.time() on arrival

    @property
    def masked(self) -> dict[str, Any]:
        """The body with the API key hidden and the number masked, for display."""
        shown = dict(self.body or {})
        if "apikey" in shown:
            shown["apikey"] = "***"
        if "mobile" in shown:
            shown["mobile"] = mask_phone(str(shown["mobile"]))
        return shown


class SalumStandin:
    """An aiohttp server playing Salum. Use ``async with SalumStandin() as s:`` or start/stop."""

    def __init__(
        self,
        *,
        api_key: str | None = None,
        partner_id: str | None = None,
        path: str = DEFAULT_PATH,
        show_text: bool = False,
        echo: bool = False,
    ) -> None:
        self.api_key = api_key or None
        self.partner_id = partner_id or None
        self.path = path
        self.show_text = show_text
        self.echo = echo
        self.received: list[Received] = []
        # id(request) -> (request, HTTP status, Salum code): what the stand-in answered
        self._replies: dict[int, tuple[Received, int | None, int | None]] = {}
        self.mode = Behaviour.ok()
        self.in_flight = 0
        self.max_concurrent = 0
        self._script: deque[Behaviour] = deque()
        self._message_ids = itertools.count(8_290_842)
        self._arrived = asyncio.Condition()
        self._stopping = asyncio.Event()
        self._runner: web.AppRunner | None = None
        self._url: str | None = None
        self._root = ""

    # -- control ------------------------------------------------------------------------
    def set_mode(self, mode: Behaviour | str) -> None:
        """The reply for every request not covered by :meth:`script`."""
        self.mode = Behaviour.parse(mode) if isinstance(mode, str) else mode

    def script(self, *replies: Behaviour | str) -> None:
        """Replies for the next requests, in order; then the mode applies again."""
        self._script.extend(Behaviour.parse(r) if isinstance(r, str) else r for r in replies)

    def reset(self) -> None:
        """Forget received requests and any script; back to ``ok``."""
        self.received.clear()
        self._replies.clear()
        self._script.clear()
        self.mode = Behaviour.ok()
        self.max_concurrent = 0

    def reply_to(self, request: Received) -> tuple[int | None, int | None]:
        """What the stand-in answered to ``request``: (HTTP status, Salum response code);
        None for a status when the connection was reset, None for a code when the reply
        carried none (a plain HTTP reply, garbage)."""
        known = self._replies.get(id(request))
        return (known[1], known[2]) if known is not None and known[0] is request else (None, None)

    async def wait_for_requests(self, count: int, within: float = 5.0) -> list[Received]:
        """Wait until at least ``count`` requests arrived; TimeoutError after ``within`` s."""
        async with asyncio.timeout(within), self._arrived:
            await self._arrived.wait_for(lambda: len(self.received) >= count)
        return list(self.received)

    # -- lifecycle ----------------------------------------------------------------------
    @property
    def url(self) -> str:
        """The API URL to use as ``SALUM_API_URL``."""
        if self._url is None:
            raise RuntimeError("the stand-in is not started")
        return self._url

    @property
    def base_url(self) -> str:
        return self._root

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        app = web.Application(client_max_size=1024 * 1024)
        app.router.add_post(self.path, self._handle_send)
        app.router.add_post("/_standin/mode", self._handle_mode)
        app.router.add_get("/_standin/received", self._handle_received)
        app.router.add_delete("/_standin/received", self._handle_clear)
        app.router.add_post("/_standin/reset", self._handle_reset)
        self._stopping.clear()
        # A short shutdown timeout: stop() must not wait out a scripted slow reply.
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
        await runner.setup()
        site = web.TCPSite(runner, host, port)
        await site.start()
        self._runner = runner
        bound = runner.addresses[0]
        shown_host = f"[{bound[0]}]" if ":" in bound[0] else bound[0]
        self._root = f"http://{shown_host}:{bound[1]}"
        self._url = self._root + self.path
        return self._url

    async def stop(self) -> None:
        self._stopping.set()
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()

    async def __aenter__(self) -> SalumStandin:
        if self._runner is None:
            await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # -- the API ------------------------------------------------------------------------
    async def _handle_send(self, request: web.Request) -> web.StreamResponse:
        self.in_flight += 1
        self.max_concurrent = max(self.max_concurrent, self.in_flight)
        try:
            return await self._reply(request)
        finally:
            self.in_flight -= 1

    async def _reply(self, request: web.Request) -> web.StreamResponse:
        raw = await request.read()
        try:
            parsed = json.loads(raw)
        except ValueError:
            parsed = None
        body = parsed if isinstance(parsed, dict) else None
        arrival = Received(body=body, raw=raw, at=time.monotonic(), wall=time.time())
        async with self._arrived:
            self.received.append(arrival)
            self._arrived.notify_all()
        behaviour = self._script.popleft() if self._script else self.mode

        if behaviour.delay > 0:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), behaviour.delay)
        if behaviour.disconnect:
            self._replies[id(arrival)] = (arrival, None, None)
            self._print(arrival, None, None)
            if request.transport is not None:
                request.transport.abort()
            raise web.HTTPInternalServerError()  # never written: the socket is gone
        response, code = self._response(behaviour, body)
        self._replies[id(arrival)] = (arrival, response.status, code)
        self._print(arrival, response.status, code)
        return response

    def _response(self, behaviour: Behaviour, body: dict[str, Any] | None
                  ) -> tuple[web.Response, int | None]:
        """The reply, and the Salum response code it carries (None: no code in it)."""
        headers = {"Retry-After": behaviour.retry_after} if behaviour.retry_after else None
        if behaviour.body is not None:
            return web.Response(
                status=behaviour.status, body=behaviour.body, content_type="text/html",
                headers=headers,
            ), None
        if behaviour.code is None:
            return web.Response(status=behaviour.status, text=f"HTTP {behaviour.status}",
                                headers=headers), None
        if body is None:
            return web.Response(status=400, text="request body must be a JSON object"), None
        code, top_level = behaviour.code, behaviour.top_level
        if code == 200:
            code, top_level = self._check(body)
        if top_level:
            doc: dict[str, Any] = {
                "response-code": code,
                "response-description": DESCRIPTIONS[code],
            }
        else:
            doc = {"responses": [self._entry(code, body)]}
        return web.json_response(doc, status=behaviour.status, headers=headers), code

    def _check(self, body: dict[str, Any]) -> tuple[int, bool]:
        """What a real gateway would answer to this request in the ``ok`` mode."""
        if not body.get("apikey"):
            return 4092, True
        if not body.get("partnerID"):
            return 4091, True
        if self.api_key is not None and body.get("apikey") != self.api_key:
            return 1006, True
        if self.partner_id is not None and str(body.get("partnerID")) != self.partner_id:
            return 1006, True
        if not body.get("shortcode"):
            return 1001, False
        mobile = str(body.get("mobile", ""))
        if not (mobile.isdigit() and 8 <= len(mobile) <= 15):
            return 1003, False
        return 200, False

    def _entry(self, code: int, body: dict[str, Any]) -> dict[str, Any]:
        mobile = str(body.get("mobile", ""))
        entry: dict[str, Any] = {
            "respose-code": code,  # sic: the real API's spelling
            "response-description": DESCRIPTIONS[code],
            "mobile": int(mobile) if mobile.isdigit() else mobile,
        }
        if code == 200:
            entry["messageid"] = next(self._message_ids)
            entry["networkid"] = "1"
            if "clientsmsid" in body:
                entry["clientsmsid"] = body["clientsmsid"]
        return entry

    def _print(self, arrival: Received, status: int | None, code: int | None) -> None:
        """One console line telling what was actually sent back."""
        if not self.echo:
            return
        body = arrival.body or {}
        if status is None:
            reply = "connection reset, no reply"
        elif code is None:
            reply = f"HTTP {status} (no Salum code)"
        else:
            reply = f"HTTP {status} code={code} ({DESCRIPTIONS[code]})"
        line = (
            f"[salum stand-in] {reply} "
            f"mobile={mask_phone(str(body.get('mobile', '')))} "
            f"clientsmsid={body.get('clientsmsid')} chars={len(str(body.get('message', '')))}"
        )
        if self.show_text:
            line += f" text={body.get('message')!r}"
        print(line, flush=True)

    # -- control endpoints ----------------------------------------------------------------
    async def _handle_mode(self, request: web.Request) -> web.Response:
        try:
            doc = json.loads(await request.read())
            if not isinstance(doc, dict):
                raise ValueError("expected a JSON object")
            if "mode" in doc:
                self.set_mode(str(doc["mode"]))
            if "script" in doc:
                self.script(*(str(item) for item in doc["script"]))
        except (ValueError, TypeError) as exc:
            return web.json_response({"error": str(exc)}, status=400)
        return web.json_response({"ok": True, "scripted": len(self._script)})

    async def _handle_received(self, request: web.Request) -> web.Response:
        out = []
        for r in self.received:
            status, code = self.reply_to(r)
            out.append({"at": r.wall, "body": r.masked, "status": status, "code": code})
        return web.json_response(out)

    async def _handle_clear(self, request: web.Request) -> web.Response:
        n = len(self.received)
        self.received.clear()
        self._replies.clear()
        return web.json_response({"ok": True, "cleared": n})

    async def _handle_reset(self, request: web.Request) -> web.Response:
        self.reset()
        return web.json_response({"ok": True, "mode": "ok"})


async def _serve(args: argparse.Namespace) -> None:
    standin = SalumStandin(
        api_key=args.api_key, partner_id=args.partner_id, show_text=args.show_text, echo=True
    )
    standin.set_mode(args.mode)
    await standin.start(args.host, args.port)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    checks = "any API key" if standin.api_key is None else "the configured API key only"
    print(f"Salum stand-in listening on {standin.url} (accepts {checks}; mode {args.mode})")
    print(f"  export SALUM_API_URL={standin.url}")
    print(f"  what it received: curl -s {standin.base_url}/_standin/received; clear it: "
          f"curl -X DELETE {standin.base_url}/_standin/received (more: --help)", flush=True)
    try:
        await stop.wait()
    finally:
        await standin.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m streamq.sms.standin",
        description="A local stand-in for the Salum SMS API (development and tests). It "
        "checks the API key and partner id when configured, and prints one line per request "
        "with the reply it actually sent (HTTP status, Salum code) and the number masked.",
        epilog=CONTROL_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8089, help="port (default 8089; 0 = any)")
    parser.add_argument(
        "--api-key",
        default=os.environ.get("SALUM_API_KEY"),
        help="accept only this API key (default: env SALUM_API_KEY; unset = any key)",
    )
    parser.add_argument(
        "--partner-id",
        default=os.environ.get("SALUM_PARTNER_ID"),
        help="accept only this partner id (default: env SALUM_PARTNER_ID; unset = any)",
    )
    parser.add_argument(
        "--mode", default="ok",
        help="reply mode: ok, 1001..1007, 4090..4092 (add -top for a top-level error), "
        "http503, http429:2, slow:2.5, garbage, disconnect (default ok)",
    )
    parser.add_argument(
        "--show-text", action="store_true", help="print message texts (they may hold OTP codes)"
    )
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
