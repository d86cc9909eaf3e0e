"""Who is asking, and may they act: tokens, signed session cookies, CSRF.

- A request is authenticated by ``Authorization: Bearer <token>`` (scripts, curl) or by
  the session cookie the login form sets (browsers). Nothing else: no token in URLs.
  No identity: 401 (the login form for a browser).
- The session cookie is ``<payload>.<HMAC-SHA256>`` (stateless: any instance with the
  same secret accepts it), HttpOnly, SameSite=Strict, expiring after ``session_hours``.
  It carries the role, the issue time, a nonce and a fingerprint of the token used, so
  removing a token ends its sessions.
- Actions (every non-GET) need the operator role (a viewer gets 403). A cookie-
  authenticated action must also pass the CSRF checks: its Origin (or Referer) is the
  dashboard's own or an allowed origin, and it carries the session's CSRF token (a form
  field ``csrf`` or the header ``X-CSRF-Token``), an HMAC of the session's nonce. A
  Bearer request carries no ambient credential, so it needs neither.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from aiohttp import web

from .config import DashboardConfig, Token

COOKIE = "streamq_session"
PUBLIC_PREFIXES = ("/static/", "/login", "/healthz")
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

# typed request storage where aiohttp has it (3.12+), a plain key before
_RequestKey: Any = getattr(web, "RequestKey", None)
IDENTITY: Any = _RequestKey("streamq_identity") if _RequestKey else "streamq_identity"


@dataclass(frozen=True, slots=True)
class Identity:
    role: str
    """viewer or operator."""
    actor: str
    """What the events stream records: the role, or 'local' without tokens."""
    via: str
    """bearer, cookie or local."""
    nonce: str = ""
    """The session's nonce (cookie sessions): the CSRF token is derived from it."""

    @property
    def can_act(self) -> bool:
        return self.role == "operator"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class Authority:
    """Checks tokens and signs/verifies sessions with the configured secret."""

    def __init__(self, config: DashboardConfig, clock: Callable[[], float] = time.time) -> None:
        self.config = config
        self._clock = clock
        self._secret = config.secret

    def _mac(self, purpose: bytes, data: bytes) -> bytes:
        return hmac.new(self._secret, purpose + b"\0" + data, hashlib.sha256).digest()

    def fingerprint(self, token: Token) -> str:
        return _b64(self._mac(b"token", token.value.encode()))[:16]

    def match_token(self, presented: str) -> Token | None:
        """The configured token equal to ``presented`` (constant-time over every token)."""
        found = None
        for t in self.config.tokens:
            if hmac.compare_digest(t.value.encode(), presented.encode()):
                found = t
        return found

    # -- sessions ---------------------------------------------------------------------------
    def issue(self, token: Token | None) -> str:
        """A session cookie value for a login with ``token`` (None: insecure-local)."""
        body = {"r": token.role if token else "operator", "i": int(self._clock()),
                "n": _b64(os.urandom(12)), "f": self.fingerprint(token) if token else "local"}
        payload = _b64(json.dumps(body, separators=(",", ":")).encode())
        return payload + "." + _b64(self._mac(b"session", payload.encode()))

    def verify(self, cookie: str) -> Identity | None:
        payload, dot, sig = cookie.partition(".")
        if not dot:
            return None
        try:
            good = hmac.compare_digest(_unb64(sig), self._mac(b"session", payload.encode()))
            body = json.loads(_unb64(payload)) if good else None
        except (ValueError, json.JSONDecodeError):
            return None
        if not isinstance(body, dict):
            return None
        issued, role, fp, nonce = body.get("i"), body.get("r"), body.get("f"), body.get("n")
        if not isinstance(issued, int) or not isinstance(nonce, str) or not nonce:
            return None
        age = self._clock() - issued
        if age < -60 or age > self.config.session_hours * 3600:
            return None
        if self.config.insecure_local:
            return Identity("operator", "local", "cookie", nonce) if fp == "local" else None
        for t in self.config.tokens:
            if t.role == role and hmac.compare_digest(self.fingerprint(t), str(fp)):
                return Identity(t.role, t.role, "cookie", nonce)
        return None  # the token it was issued for is no longer configured

    def csrf_token(self, identity: Identity) -> str:
        return _b64(self._mac(b"csrf", identity.nonce.encode()))[:32] if identity.nonce else ""

    # -- requests -----------------------------------------------------------------------------
    def identify(self, request: web.Request) -> Identity | None:
        header = request.headers.get("Authorization", "")
        if header:
            scheme, _, value = header.partition(" ")
            token = self.match_token(value.strip()) if scheme.lower() == "bearer" else None
            return Identity(token.role, token.role, "bearer") if token else None
        cookie = request.cookies.get(COOKIE)
        return self.verify(cookie) if cookie else None

    def origin_ok(self, request: web.Request) -> bool:
        """The action comes from a page of this dashboard: Origin (else Referer) names it."""
        origin = request.headers.get("Origin")
        if not origin or origin == "null":
            referer = request.headers.get("Referer", "")
            if not referer:
                return False
            parts = urlsplit(referer)
            origin = f"{parts.scheme}://{parts.netloc}"
        own = f"{request.scheme}://{request.host}"
        return origin.rstrip("/") in (own, *self.config.allowed_origins)

    def set_cookie(self, response: web.StreamResponse, request: web.Request, value: str) -> None:
        response.set_cookie(COOKIE, value, max_age=int(self.config.session_hours * 3600),
                            path="/", httponly=True, samesite="Strict",
                            secure=self.config.secure_cookies or request.secure)


class Refused(web.HTTPForbidden):
    """403 with a one-line reason."""

    def __init__(self, reason: str) -> None:
        super().__init__(text=reason + "\n", content_type="text/plain")


ANY_ROLE_ACTIONS = frozenset({"/logout", "/search"})
"""POSTs open to every role (with the same CSRF checks): logging out, and searching (a
POST so that a phone number typed in the search box stays out of URLs)."""


async def check_action(request: web.Request, authority: Authority, identity: Identity) -> None:
    """Raise 403 unless this identity may perform a state-changing request now (logging
    out and searching are open to every role, with the same CSRF checks)."""
    if not identity.can_act and request.path not in ANY_ROLE_ACTIONS:
        raise Refused(f"forbidden: the {identity.role} role can look, not act")
    if identity.via == "bearer":
        return
    if not authority.origin_ok(request):
        raise Refused("forbidden: CSRF check failed (the request does not come from this "
                      "dashboard's pages)")
    presented = request.headers.get("X-CSRF-Token", "")
    if not presented and request.content_type in ("application/x-www-form-urlencoded",
                                                  "multipart/form-data"):
        form = await request.post()
        value = form.get("csrf", "")
        presented = value if isinstance(value, str) else ""
    expected = authority.csrf_token(identity)
    if not expected or not hmac.compare_digest(presented.encode(), expected.encode()):
        raise Refused("forbidden: CSRF token missing or wrong (reload the page and try again)")


def make_middleware(authority: Authority,
                    login_page: Handler) -> Callable[..., Awaitable[web.StreamResponse]]:
    @web.middleware
    async def auth_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path.startswith(PUBLIC_PREFIXES):
            return await handler(request)
        identity = authority.identify(request)
        fresh_cookie = None
        if identity is None and authority.config.insecure_local and request.method in SAFE_METHODS:
            # no tokens: a session is still needed, for its CSRF token
            fresh_cookie = authority.issue(None)
            identity = authority.verify(fresh_cookie)
        if identity is None:
            if "text/html" in request.headers.get("Accept", "") and request.method in SAFE_METHODS:
                response = await login_page(request)
                response.set_status(401)
                return response
            raise web.HTTPUnauthorized(
                text="unauthorized: send Authorization: Bearer <token>, or log in at /login\n",
                content_type="text/plain", headers={"WWW-Authenticate": 'Bearer realm="streamq"'})
        request[IDENTITY] = identity
        if request.method not in SAFE_METHODS:
            await check_action(request, authority, identity)
        response = await handler(request)
        if fresh_cookie is not None:
            authority.set_cookie(response, request, fresh_cookie)
        return response

    return auth_middleware


def identity_of(request: web.Request) -> Identity:
    identity: Identity = request[IDENTITY]
    return identity


def maybe_identity(request: web.Request) -> Identity | None:
    """The identity of an authenticated request; None on public pages (login)."""
    found: Identity | None = request.get(IDENTITY)
    return found


__all__ = ["COOKIE", "Authority", "Identity", "Refused", "check_action", "identity_of",
           "make_middleware", "maybe_identity"]
