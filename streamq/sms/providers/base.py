"""The provider seam: one async ``send`` and ``aclose``, and an error tree.

    ProviderError
    ├── ProviderPermanentError     the request can never succeed as sent: dead-letter now
    │   └── ProviderLowCredit      the account is out of credit: permanent, and loud
    ├── ProviderConfigError        the provider refused OUR configuration (credentials,
    │                              partner id, API URL): about the provider, not the
    │                              message; nothing was sent. Never dead-letters a message:
    │                              it opens the provider's breaker and delivery holds
    └── ProviderTransientError     may succeed later: retry (after ``retry_after`` if set).
        │                          The message MAY have been sent (a timeout after the
        │                          request went out, a 5xx): retry on the same provider only
        └── ProviderUnreachable    no request reached the provider (connection refused,
                                   DNS, connect timeout): provably not sent, so the
                                   message may fail over to the next provider

Messages of these errors are safe to persist and log: providers put no API key, message
text or unmasked phone number in them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

import msgspec

from streamq.errors import StreamqError


class SendResult(msgspec.Struct, frozen=True, kw_only=True):
    """What a provider answered for one accepted message."""

    provider: str
    message_id: str | None
    status: str  # the provider's own status text, e.g. "Success"


class ProviderError(StreamqError):
    """A provider could not accept a message."""

    def __init__(self, message: str, *, provider: str, code: int | None = None) -> None:
        super().__init__(message)
        self.provider = provider
        self.code = code  # the provider's response code or HTTP status, when there is one


class ProviderPermanentError(ProviderError):
    """Sending the same request again cannot succeed (bad credentials, bad number...)."""


class ProviderLowCredit(ProviderPermanentError):
    """The provider account has no credit left; an operator must top it up."""


class ProviderConfigError(ProviderError):
    """The provider refused our credentials or configuration; no message was sent.

    Not the message's fault: retrying it elsewhere or later is right, dead-lettering it
    is wrong (a bad key would otherwise drain the whole backlog into the dead letters).
    """


class ProviderTransientError(ProviderError):
    """The provider may accept the message later; ``retry_after`` is in seconds, if known."""

    def __init__(
        self,
        message: str,
        *,
        provider: str,
        code: int | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message, provider=provider, code=code)
        self.retry_after = retry_after


@runtime_checkable
class SMSProvider(Protocol):
    """Sends one SMS. ``to`` is E.164; ``idempotency_key`` is the job id.

    Delivery is at least once, so the same key may arrive twice after a worker crash;
    a provider passes it on where its API has a field for it.
    """

    async def send(self, to: str, message: str, *, idempotency_key: str) -> SendResult: ...

    async def aclose(self) -> None: ...


class ProviderUnreachable(ProviderTransientError):
    """No request reached the provider (refused connection, DNS failure, connect timeout):
    the message was provably not sent."""


@dataclass(frozen=True, slots=True)
class BulkReply:
    """A provider's answer to one request naming many recipients (one text).

    ``outcomes`` maps each number asked for that the reply names to what happened to it:
    a :class:`SendResult` (sent) or the :class:`ProviderError` it would have raised
    alone. A number asked for and missing from ``outcomes`` got no answer: it may or may
    not have been sent. ``unknown``: entries of the reply naming a number not asked for,
    or a number a second time (ignored, counted for the log).
    """

    outcomes: dict[str, SendResult | ProviderError] = field(default_factory=dict)
    unknown: int = 0


@runtime_checkable
class BulkSMSProvider(Protocol):
    """A provider whose API sends one text to many recipients in one request.

    ``send_many`` raises like ``send`` when the request as a whole fails (unreachable,
    credentials, a timeout, HTTP 5xx, an unreadable reply); otherwise it returns each
    recipient's own outcome. ``numbers`` are E.164, distinct, at most ``max_recipients``.
    """

    max_recipients: int

    async def send_many(self, numbers: Sequence[str], message: str, *,
                        idempotency_key: str) -> BulkReply: ...
