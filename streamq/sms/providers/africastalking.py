"""The Africa's Talking SMS API, over aiohttp.

Request: ``POST {AT_API_URL}/version1/messaging``, form-encoded ``username``, ``to`` (E.164
with ``+``: one number for :meth:`~AfricasTalkingSMSProvider.send`, a comma-separated list
for :meth:`~AfricasTalkingSMSProvider.send_many`, the broadcast path), ``message`` and,
when ``AT_SENDER_ID`` is set, ``from`` (an approved sender id or short code; without it
the account's default is used). Headers ``apiKey``, ``Accept:
application/json``. The live API is ``https://api.africastalking.com`` (the default);
the sandbox is ``https://api.sandbox.africastalking.com``, where the username is always
``sandbox`` (a mismatch is refused at start: the API would only answer 401).

Reply: ``{"SMSMessageData": {"Message": "Sent to 1/1 Total Cost: KES 0.8000",
"Recipients": [{"statusCode": 101, "number": "+254712345678", "status": "Success",
"cost": "KES 0.8000", "messageId": "ATXid_..."}]}}``.

Classification, per recipient ``statusCode`` and per HTTP status:

=======================================  ==============================================
sent                                     100 Processed, 101 Sent, 102 Queued
permanent: dead-letter at once           401 RiskHold, 402 InvalidSenderId, 403
                                         InvalidPhoneNumber, 404 UnsupportedNumberType,
                                         405 InsufficientBalance (also logged as an
                                         error), 406 UserInBlacklist, 407 CouldNotRoute,
                                         409 DoNotDisturbRejection; an unknown code; HTTP
                                         400 and other 4xx; 404/3xx ("check AT_API_URL")
configuration (``ProviderConfigError``)  HTTP 401 ("The supplied authentication is
                                         invalid": check AT_USERNAME and AT_API_KEY) and
                                         403; nothing was sent, never dead-letters
transient, ambiguous (may have sent)     500 InternalServerError, 501 GatewayError, 502
                                         RejectedByGateway; HTTP 5xx and 408; read
                                         timeouts; a reset mid-response
transient, provably not sent             connection refused, DNS failure, connect timeout
transient with a delay                   HTTP 429 (and 5xx) with ``Retry-After``
=======================================  ==============================================

**Many recipients, one request** (:meth:`~AfricasTalkingSMSProvider.send_many`, used by
``streamq.sms.broadcast``): the same text to up to ``max_recipients`` distinct numbers
(``AT_BULK_MAX``, default 100). Africa's Talking documents no maximum for ``to``; 100 is
what its client wrappers commonly cap at, and up to :data:`BULK_MAX_LIMIT` may be set. The
reply lists one ``Recipients`` entry per number, each classified as above on its own; a
number missing from the reply got no answer (it may have been sent), and entries for
numbers not asked for are ignored. The HTTP-level outcomes (401, 5xx, a timeout, an
unreadable reply) concern the whole request.

An empty ``Recipients`` list means nothing was sent; its ``Message`` then names the
reason (e.g. ``InvalidSenderId``), classified like the code of that name. A 2xx whose
body we cannot read is permanent and not retried (it may have been sent), as for Salum.

**No deduplication on Africa's Talking SMS.** Its documented idempotent requests (a
repeat of the same key within a short window is refused) cover airtime and payments,
not SMS. The job id is sent in an ``Idempotency-Key`` header anyway (ignored by SMS
today, harmless, and it lets logs and the stand-in match retries), but an ambiguous
outcome retried on Africa's Talking can reach the handset twice: the retry stays on the
same provider, never a second one, which bounds the duplicate to that provider's own
retry.

Nothing here logs or raises with the API key, the message text or a full number.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any, Final, NoReturn
from urllib.parse import urlsplit

import aiohttp
import structlog

from streamq.errors import ConfigError

from .base import (
    BulkReply,
    ProviderConfigError,
    ProviderError,
    ProviderLowCredit,
    ProviderPermanentError,
    ProviderTransientError,
    SendResult,
)
from .http import MAX_REPLY_BYTES, PooledSession, Reply, display_url, scrub

DEFAULT_API_URL: Final = "https://api.africastalking.com"
SANDBOX_API_URL: Final = "https://api.sandbox.africastalking.com"
SANDBOX_USERNAME: Final = "sandbox"
SEND_PATH: Final = "/version1/messaging"
USER_PATH: Final = "/version1/user"
IDEMPOTENCY_HEADER: Final = "Idempotency-Key"
BULK_MAX_DEFAULT: Final = 100
"""Recipients per request by default (``AT_BULK_MAX``)."""
BULK_MAX_LIMIT: Final = 1000
"""The most recipients per request that may be configured."""
REPLY_BYTES_PER_RECIPIENT: Final = 512
"""Room in a reply per recipient (an entry is about 150 bytes)."""

SENT_CODES: Final[dict[int, str]] = {100: "Processed", 101: "Sent", 102: "Queued"}
LOW_CREDIT: Final = 405
PERMANENT_CODES: Final[dict[int, str]] = {
    401: "RiskHold",
    402: "InvalidSenderId (check AT_SENDER_ID)",
    403: "InvalidPhoneNumber",
    404: "UnsupportedNumberType",
    405: "InsufficientBalance",
    406: "UserInBlacklist",
    407: "CouldNotRoute",
    409: "DoNotDisturbRejection",
}
TRANSIENT_CODES: Final[dict[int, str]] = {
    500: "InternalServerError",
    501: "GatewayError",
    502: "RejectedByGateway",
}
# status names as the API spells them (the Message of a reply without recipients)
CODE_BY_NAME: Final[dict[str, int]] = {
    **{v.split(" ")[0]: k for k, v in PERMANENT_CODES.items()},
    **{v: k for k, v in TRANSIENT_CODES.items()},
}

log = structlog.get_logger("streamq.sms")


def _int(raw: object) -> int | None:
    if isinstance(raw, bool):
        return None
    if isinstance(raw, int):
        return raw
    if isinstance(raw, str) and raw.strip().isdigit():
        return int(raw.strip())
    return None


def check_sandbox_pairing(api_url: str, username: str) -> None:
    """The sandbox answers only to the username ``sandbox``, and the live API never does:
    a mismatch is a configuration error, said at start instead of as a 401 per job."""
    host = (urlsplit(api_url).hostname or "").lower()
    if host == urlsplit(SANDBOX_API_URL).hostname and username != SANDBOX_USERNAME:
        raise ConfigError("AT_USERNAME must be 'sandbox' with the sandbox AT_API_URL "
                          f"({SANDBOX_API_URL})")
    if host == urlsplit(DEFAULT_API_URL).hostname and username == SANDBOX_USERNAME:
        raise ConfigError(f"AT_USERNAME=sandbox needs AT_API_URL={SANDBOX_API_URL} "
                          "(the live API has no user 'sandbox')")


class AfricasTalkingSMSProvider:
    """Sends through Africa's Talking over one pooled :class:`aiohttp.ClientSession`."""

    name = "africastalking"
    delivery_reports = True
    """Africa's Talking POSTs delivery reports for the message ids it answers: the router
    records each id (streamq.sms.delivery) so a report can find its job."""

    def __init__(
        self,
        username: str,
        api_key: str,
        *,
        sender_id: str | None = None,
        api_url: str = DEFAULT_API_URL,
        timeout_total: float = 10.0,
        timeout_connect: float = 3.0,
        session: aiohttp.ClientSession | None = None,
        max_connections: int = 100,
        max_recipients: int = BULK_MAX_DEFAULT,
    ) -> None:
        parts = urlsplit(api_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ConfigError("AT_API_URL must be an http:// or https:// URL")
        if not username:
            raise ConfigError("AT_USERNAME must be set (the sandbox uses 'sandbox')")
        if timeout_total <= 0 or timeout_connect <= 0:
            raise ConfigError("Africa's Talking timeouts must be positive numbers of seconds")
        check_sandbox_pairing(api_url, username)
        if (isinstance(max_recipients, bool) or not isinstance(max_recipients, int)
                or not 1 <= max_recipients <= BULK_MAX_LIMIT):
            raise ConfigError(f"AT_BULK_MAX must be a whole number from 1 to {BULK_MAX_LIMIT}")
        self.max_recipients = max_recipients
        """Recipients per :meth:`send_many` request at most."""
        base = api_url.rstrip("/")
        self.api_url = base
        self.send_url = base + SEND_PATH
        self.user_url = base + USER_PATH
        self._display_url = display_url(self.send_url)
        self._username = username
        self._api_key = api_key
        self._sender_id = sender_id or None
        self._timeout = aiohttp.ClientTimeout(total=timeout_total, connect=timeout_connect)
        self._pool = PooledSession(self._timeout, session, max_connections,
                                   "AfricasTalkingSMSProvider")

    def __repr__(self) -> str:
        return (f"AfricasTalkingSMSProvider(api_url={display_url(self.api_url)!r}, "
                f"username={self._username!r}, api_key='***')")

    @property
    def endpoint(self) -> str:
        return self._display_url

    @property
    def timeout_total(self) -> float:
        return float(self._timeout.total or 0.0)

    @property
    def sandbox(self) -> bool:
        return self._username == SANDBOX_USERNAME

    async def aclose(self) -> None:
        await self._pool.aclose()

    def _headers(self) -> dict[str, str]:
        return {"apiKey": self._api_key, "Accept": "application/json"}

    def _scrub(self, text: object) -> str:
        return scrub(text, self._api_key)

    async def _post(self, to: str, message: str, idempotency_key: str, max_bytes: int) -> Reply:
        form = {"username": self._username, "to": to, "message": message}
        if self._sender_id:
            form["from"] = self._sender_id
        return await self._pool.request(
            "POST", self.send_url, data=form,
            headers={**self._headers(), IDEMPOTENCY_HEADER: idempotency_key},
            label="Africa's Talking", shown_url=self._display_url, provider=self.name,
            retry_note="the retry goes to Africa's Talking again, never to another provider",
            max_bytes=max_bytes,
        )

    async def send(self, to: str, message: str, *, idempotency_key: str) -> SendResult:
        reply = await self._post(to, message, idempotency_key, MAX_REPLY_BYTES)
        return self._classify(reply, to)

    async def send_many(self, numbers: Sequence[str], message: str, *,
                        idempotency_key: str) -> BulkReply:
        """One request sending ``message`` to every number (distinct, at most
        :attr:`max_recipients`). Raises like :meth:`send` when the request as a whole
        fails; returns each recipient's own outcome otherwise (see the module docs)."""
        if not numbers:
            raise ValueError("send_many needs at least one number")
        if len(numbers) > self.max_recipients:
            raise ValueError(f"send_many takes at most {self.max_recipients} numbers, "
                             f"got {len(numbers)}")
        if len(set(numbers)) != len(numbers):
            raise ValueError("send_many takes distinct numbers (a reply could not tell "
                             "two entries for one number apart)")
        reply = await self._post(",".join(numbers), message, idempotency_key,
                                 MAX_REPLY_BYTES + REPLY_BYTES_PER_RECIPIENT * len(numbers))
        return self._classify_many(reply, numbers)

    async def check(self) -> str:
        """The start-up check: read the account (``GET /version1/user``), which needs valid
        credentials and sends nothing. Returns the balance text (e.g. ``KES 1785.50``)."""
        reply = await self._pool.request(
            "GET", self.user_url, params={"username": self._username}, headers=self._headers(),
            label="Africa's Talking", shown_url=display_url(self.user_url), provider=self.name,
            retry_note="nothing is sent by this check",
        )
        self._raise_for_http(reply)
        if 200 <= reply.status < 300:
            doc = _json(reply.body)
            data = doc.get("UserData") if isinstance(doc, dict) else None
            if isinstance(data, dict) and isinstance(data.get("balance"), str):
                return self._scrub(data["balance"])
        raise ProviderTransientError(
            f"Africa's Talking account check: unexpected reply (HTTP {reply.status})",
            provider=self.name, code=reply.status)

    def _raise_for_http(self, reply: Reply) -> None:
        name, status = self.name, reply.status
        said = ""
        if reply.body:
            text = self._scrub(reply.body.decode("utf-8", "replace"))
            said = f": {text}" if text and not text.startswith(("{", "<")) else ""
        if status in (401, 403):
            hint = "check AT_USERNAME and AT_API_KEY"
            if self.sandbox:
                hint += " (a sandbox app's key, with AT_USERNAME=sandbox)"
            raise ProviderConfigError(
                f"Africa's Talking HTTP {status}: credentials refused, {hint}{said}",
                provider=name, code=status)
        if status == 429:
            raise ProviderTransientError("Africa's Talking HTTP 429: rate limited", provider=name,
                                         code=status, retry_after=reply.retry_after)
        if status >= 500 or status == 408:
            raise ProviderTransientError(f"Africa's Talking HTTP {status}{said}", provider=name,
                                         code=status, retry_after=reply.retry_after)
        if status == 404 or 300 <= status < 400:
            raise ProviderPermanentError(
                f"Africa's Talking HTTP {status}: check AT_API_URL ({display_url(self.api_url)})",
                provider=name, code=status)
        if not 200 <= status < 300:
            raise ProviderPermanentError(f"Africa's Talking HTTP {status}{said}", provider=name,
                                         code=status)

    def _recipients(self, reply: Reply) -> list[Any]:
        """The reply's ``Recipients`` (raising for the HTTP status, an unreadable body, and
        an empty list, which names why nothing was sent)."""
        self._raise_for_http(reply)
        status = reply.status
        doc = _json(reply.body)
        data = doc.get("SMSMessageData") if isinstance(doc, dict) else None
        recipients = data.get("Recipients") if isinstance(data, dict) else None
        if not isinstance(data, dict) or not isinstance(recipients, list):
            raise self._unparseable(status)
        if not recipients:
            # nothing was sent; the Message names why (e.g. InvalidSenderId)
            summary = self._scrub(data.get("Message", ""))
            code = CODE_BY_NAME.get(summary.strip())
            if code is None:
                raise ProviderPermanentError(
                    f"Africa's Talking sent to no recipient: {summary or 'no reason given'}",
                    provider=self.name, code=status)
            self._raise_for_code(code, summary)
        return recipients

    def _unparseable(self, status: int) -> ProviderPermanentError:
        return ProviderPermanentError(
            f"Africa's Talking unparseable 2xx response (HTTP {status}); not retried, the "
            "message may have been sent", provider=self.name, code=status)

    def _classify(self, reply: Reply, to: str) -> SendResult:
        recipients = self._recipients(reply)
        entry = next((r for r in recipients if isinstance(r, dict) and r.get("number") == to),
                     recipients[0])
        if not isinstance(entry, dict):
            raise self._unparseable(reply.status)
        outcome = self._outcome(entry, reply.status)
        if isinstance(outcome, ProviderError):
            if isinstance(outcome, ProviderLowCredit):
                self._log_low_credit()
            raise outcome
        return outcome

    def _classify_many(self, reply: Reply, numbers: Sequence[str]) -> BulkReply:
        recipients = self._recipients(reply)
        asked = set(numbers)
        outcomes: dict[str, SendResult | ProviderError] = {}
        unknown = 0
        for entry in recipients:
            number = entry.get("number") if isinstance(entry, dict) else None
            if not isinstance(entry, dict) or number not in asked or number in outcomes:
                unknown += 1  # not a number asked for, or one already answered
                continue
            outcomes[str(number)] = self._outcome(entry, reply.status)
        if any(isinstance(o, ProviderLowCredit) for o in outcomes.values()):
            self._log_low_credit()  # once per request, not once per recipient
        return BulkReply(outcomes=outcomes, unknown=unknown)

    def _outcome(self, entry: dict[str, Any], status: int) -> SendResult | ProviderError:
        """One ``Recipients`` entry: sent, or the error it stands for."""
        code = _int(entry.get("statusCode"))
        said = self._scrub(entry.get("status", ""))
        if code in SENT_CODES:
            message_id = entry.get("messageId")
            return SendResult(
                provider=self.name,
                # a gateway id is no secret: kept whole (masking would corrupt it)
                message_id=None if message_id in (None, "", "None") else str(message_id)[:100],
                status=said or SENT_CODES[code],
            )
        if code is None:
            return ProviderPermanentError(
                "Africa's Talking unparseable 2xx response: no statusCode; not retried, the "
                "message may have been sent", provider=self.name, code=status)
        return self._code_error(code, said)

    def _log_low_credit(self) -> None:
        log.error("sms.provider_low_credit", provider=self.name, code=LOW_CREDIT,
                  hint="insufficient balance: top up the Africa's Talking account, then "
                  "replay the dead letters")

    def _raise_for_code(self, code: int, said: str) -> NoReturn:
        error = self._code_error(code, said)
        if isinstance(error, ProviderLowCredit):
            self._log_low_credit()
        raise error

    def _code_error(self, code: int, said: str) -> ProviderError:
        name = self.name
        text = f": {said}" if said else ""
        if code == LOW_CREDIT:
            return ProviderLowCredit(f"Africa's Talking {code} InsufficientBalance{text}",
                                     provider=name, code=code)
        if code in PERMANENT_CODES:
            return ProviderPermanentError(
                f"Africa's Talking {code} {PERMANENT_CODES[code]}{text}", provider=name,
                code=code)
        if code in TRANSIENT_CODES:
            return ProviderTransientError(
                f"Africa's Talking {code} {TRANSIENT_CODES[code]}{text}", provider=name,
                code=code)
        return ProviderPermanentError(
            f"Africa's Talking unknown statusCode {code}{text}; not retried, the message may "
            "have been sent", provider=name, code=code)


def _json(body: bytes | None) -> Any:
    if body is None:
        return None
    try:
        return json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return None
