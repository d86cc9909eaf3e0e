"""The Salum SMS API (the same shape as the public Advanta API), over aiohttp.

Request: ``POST $SALUM_API_URL`` with JSON ``{apikey, partnerID, message, shortcode,
mobile, clientsmsid}``; ``mobile`` is the number's digits without ``+``; ``clientsmsid``
carries the job id so that a message re-sent after a worker crash can be recognised.

Response: ``{"responses": [{"respose-code": 200, "response-description": "Success",
"mobile": 254712345678, "messageid": 8290842, "networkid": "1"}]}`` (the API misspells
``respose-code``; ``response-code`` is accepted too), or an error at the top level:
``{"response-code": 1006, "response-description": "Invalid credentials"}``.

Classification (the original package retried everything, bad credentials included):

==========================================  =========================================
permanent: dead-letter at once              1001 invalid sender id, 1002 network not
                                            allowed, 1003 invalid mobile; 1004 low
                                            credit (also logged as an error: an
                                            operator must top up); an unknown code;
                                            HTTP 4xx except 401, 403, 408 and 429; 3xx
configuration (``ProviderConfigError``):    1006 invalid credentials, 4091 no partner
about the provider, not the message; never  id, 4092 no API key; HTTP 401/403 ("check
dead-letters: opens the breaker, fails      SALUM_API_KEY"); nothing was sent
over or holds delivery
transient, provably not sent                connection refused, DNS failure, connect
(``ProviderUnreachable``: may fail over)    timeout
transient, ambiguous (may have sent:        1005 and 1007 system error; HTTP 5xx, 408;
retried on Salum only)                      read timeouts; a reset mid-response
transient with a delay                      4090 "retry after 5 minutes" (300 s); HTTP
                                            429 and 5xx with ``Retry-After`` (seconds
                                            or an HTTP-date)
==========================================  =========================================

**A 2xx with a body we cannot parse is permanent ("unparseable 2xx response"), not
retried**: the gateway answered success at the HTTP level and may well have sent the
SMS, so a retry risks a double send, which for an OTP or a payment notice is worse than
a dead letter an operator can inspect and replay. An unknown response code is permanent
for the same reason. A timeout is just as ambiguous but carries no answer at all, so it
is retried; every retry carries the same ``clientsmsid``.

A ``Retry-After`` is passed on as is; the worker caps it (``max_retry_delay``), so a
``Retry-After: 86400`` does not park a job for a day.

Nothing here logs or raises with the request body, the API key or a full phone number:
error messages are built from fixed text plus the provider's description, scrubbed.
"""

from __future__ import annotations

import json
from typing import Any, Final
from urllib.parse import urlsplit

import aiohttp
import msgspec
import structlog

from streamq.errors import ConfigError

from ..phone import msisdn_digits
from .base import (
    ProviderConfigError,
    ProviderLowCredit,
    ProviderPermanentError,
    ProviderTransientError,
    SendResult,
)
from .http import PooledSession, Reply, display_url, parse_retry_after, scrub

__all__ = ["DEFAULT_API_URL", "SalumSMSProvider", "parse_retry_after"]

DEFAULT_API_URL: Final = "https://sms.salum.co.ke/api/services/sendsms/"
SUCCESS: Final = 200
LOW_CREDIT: Final = 1004
PERMANENT_CODES: Final[dict[int, str]] = {
    1001: "invalid sender id (check SALUM_SHORTCODE)",
    1002: "network not allowed",
    1003: "invalid mobile number",
}
# About the provider account, not the message: never dead-lettered.
CONFIG_CODES: Final[dict[int, str]] = {
    1006: "invalid credentials (check SALUM_API_KEY and SALUM_PARTNER_ID)",
    4091: "no partner id (check SALUM_PARTNER_ID)",
    4092: "no API key (check SALUM_API_KEY)",
}
# code -> (meaning, retry_after seconds or None for the worker's backoff)
TRANSIENT_CODES: Final[dict[int, tuple[str, float | None]]] = {
    1005: ("system error", None),
    1007: ("system error", None),
    4090: ("internal error, retry after 5 minutes", 300.0),
}

log = structlog.get_logger("streamq.sms")


def _code_of(entry: dict[str, Any]) -> int | None:
    raw = entry.get("respose-code", entry.get("response-code"))
    if isinstance(raw, bool):
        return None
    if isinstance(raw, int):
        return raw
    if isinstance(raw, str) and raw.strip().isdigit():
        return int(raw.strip())
    return None


class SalumSMSProvider:
    """Sends through Salum over one pooled :class:`aiohttp.ClientSession`.

    The session is created on first use (inside the running event loop) and closed by
    :meth:`aclose`; a session passed in is used as is and left open for its owner.
    """

    name = "salum"

    def __init__(
        self,
        api_url: str,
        api_key: str,
        partner_id: str,
        shortcode: str,
        *,
        timeout_total: float = 10.0,
        timeout_connect: float = 3.0,
        session: aiohttp.ClientSession | None = None,
        max_connections: int = 100,
    ) -> None:
        if urlsplit(api_url).scheme not in ("http", "https") or not urlsplit(api_url).hostname:
            raise ConfigError("SALUM_API_URL must be an http:// or https:// URL")
        if timeout_total <= 0 or timeout_connect <= 0:
            raise ConfigError("Salum timeouts must be positive numbers of seconds")
        self.api_url = api_url
        self._display_url = display_url(api_url)
        self._api_key = api_key
        self._partner_id = partner_id
        self._shortcode = shortcode
        self._timeout = aiohttp.ClientTimeout(total=timeout_total, connect=timeout_connect)
        self._pool = PooledSession(self._timeout, session, max_connections, "SalumSMSProvider")

    def __repr__(self) -> str:
        return f"SalumSMSProvider(api_url={self._display_url!r}, api_key='***')"

    @property
    def endpoint(self) -> str:
        """The API URL as it may be shown (no userinfo, no query)."""
        return self._display_url

    @property
    def timeout_total(self) -> float:
        return float(self._timeout.total or 0.0)

    @property
    def _session(self) -> aiohttp.ClientSession | None:
        return self._pool.current

    async def aclose(self) -> None:
        await self._pool.aclose()

    def _scrub(self, text: object) -> str:
        """Provider text made safe for logs and dead-letter reasons."""
        return scrub(text, self._api_key)

    async def send(self, to: str, message: str, *, idempotency_key: str) -> SendResult:
        body = msgspec.json.encode(
            {
                "apikey": self._api_key,
                "partnerID": self._partner_id,
                "message": message,
                "shortcode": self._shortcode,
                "mobile": msisdn_digits(to),
                "clientsmsid": idempotency_key,
            }
        )
        reply = await self._pool.request(
            "POST", self.api_url, data=body,
            headers={"Content-Type": "application/json", "Accept": "application/json"},
            label="Salum", shown_url=self._display_url, provider=self.name,
            retry_note="the retry carries the same clientsmsid",
        )
        return self._classify(reply)

    async def check(self) -> str:
        """The start-up check Salum allows: its API has no read-only call (no balance or
        account endpoint in the documented API), so the credentials can only be verified
        by sending a message. This checks what can be checked without one: the API URL
        resolves and answers HTTP (a GET, which sends nothing)."""
        reply = await self._pool.request(
            "GET", self.api_url, headers={"Accept": "application/json"},
            label="Salum", shown_url=self._display_url, provider=self.name,
            retry_note="nothing is sent by this check")
        if reply.status in (401, 403):
            raise ProviderConfigError(
                f"Salum HTTP {reply.status}: credentials refused, check SALUM_API_KEY",
                provider=self.name, code=reply.status)
        return (f"{self._display_url} answers (HTTP {reply.status}); the credentials are "
                "verified by the first message (Salum has no call that checks them)")

    def _classify(self, reply: Reply) -> SendResult:
        name = self.name
        status = reply.status
        retry_after = reply.retry_after
        if status == 429:
            raise ProviderTransientError(
                "Salum HTTP 429: rate limited", provider=name, code=status, retry_after=retry_after
            )
        if status >= 500 or status == 408:
            raise ProviderTransientError(
                f"Salum HTTP {status}", provider=name, code=status, retry_after=retry_after
            )
        if status in (401, 403):
            raise ProviderConfigError(
                f"Salum HTTP {status}: credentials refused, check SALUM_API_KEY and "
                "SALUM_PARTNER_ID",
                provider=name,
                code=status,
            )
        if status == 404 or 300 <= status < 400:
            raise ProviderPermanentError(
                f"Salum HTTP {status}: check SALUM_API_URL ({self._display_url})",
                provider=name,
                code=status,
            )
        if not 200 <= status < 300:
            raise ProviderPermanentError(f"Salum HTTP {status}", provider=name, code=status)
        entry = self._entry(status, reply.body)
        code = _code_of(entry)
        description = self._scrub(entry.get("response-description", ""))
        if code == SUCCESS:
            message_id = entry.get("messageid")
            return SendResult(
                provider=name,
                # Not scrubbed: a gateway id is no secret, and masking its digit runs
                # would corrupt it.
                message_id=None if message_id is None else str(message_id)[:100],
                status=description or "Success",
            )
        if code is None:
            raise ProviderPermanentError(
                f"Salum unparseable 2xx response (HTTP {status}): no response code; "
                "not retried, the message may have been sent",
                provider=name,
                code=status,
            )
        return self._raise_for_code(code, description)

    def _entry(self, status: int, reply: bytes | None) -> dict[str, Any]:
        """The one result object of a 2xx reply: ``responses[0]`` or the top level."""
        doc: object = None
        if reply is not None:
            try:
                doc = json.loads(reply)
            except (ValueError, UnicodeDecodeError):
                doc = None
        if isinstance(doc, dict) and isinstance(doc.get("responses"), list):
            items = doc["responses"]
            doc = items[0] if items else None
        if not isinstance(doc, dict):
            raise ProviderPermanentError(
                f"Salum unparseable 2xx response (HTTP {status}); "
                "not retried, the message may have been sent",
                provider=self.name,
                code=status,
            )
        return doc

    def _raise_for_code(self, code: int, description: str) -> SendResult:
        name = self.name
        said = f": {description}" if description else ""
        if code == LOW_CREDIT:
            # Loud: every message fails until someone tops up the account.
            log.error("sms.provider_low_credit", provider=name, code=code,
                      hint="low credit: top up the Salum account, then replay the dead letters")
            raise ProviderLowCredit(
                f"Salum {code} low credit{said}", provider=name, code=code
            )
        if code in CONFIG_CODES:
            raise ProviderConfigError(
                f"Salum {code} {CONFIG_CODES[code]}{said}", provider=name, code=code
            )
        if code in PERMANENT_CODES:
            raise ProviderPermanentError(
                f"Salum {code} {PERMANENT_CODES[code]}{said}", provider=name, code=code
            )
        if code in TRANSIENT_CODES:
            meaning, retry_after = TRANSIENT_CODES[code]
            raise ProviderTransientError(
                f"Salum {code} {meaning}{said}", provider=name, code=code, retry_after=retry_after
            )
        raise ProviderPermanentError(
            f"Salum unknown response code {code}{said}; not retried, the message may have "
            "been sent",
            provider=name,
            code=code,
        )
