"""What the HTTP providers share: one pooled session, the transport-error split, and
helpers that keep secrets and numbers out of error text.

The split that failover rests on:

* the request never reached the provider (connection refused, DNS failure, TLS
  failure while connecting, connect timeout): :class:`ProviderUnreachable`, provably
  not sent;
* anything after the request went out (a read timeout, a reset mid-response): an
  ambiguous :class:`ProviderTransientError`, the provider may have sent it.
"""

from __future__ import annotations

import email.utils
import time
from dataclasses import dataclass
from datetime import UTC
from typing import Any, Final
from urllib.parse import urlsplit, urlunsplit

import aiohttp
from multidict import CIMultiDictProxy

from streamq.redact import redact_text

from .base import ProviderTransientError, ProviderUnreachable

# Bodies of an SMS gateway reply are tiny; more than this is not a reply we understand.
MAX_REPLY_BYTES: Final = 64 * 1024
MAX_DESCRIPTION_CHARS: Final = 200


def parse_retry_after(value: str | None, *, now: float | None = None) -> float | None:
    """``Retry-After`` in seconds: delta-seconds or an HTTP-date (RFC 9110 10.2.3)."""
    if value is None or not value.strip():
        return None
    value = value.strip()
    if value.isdigit():
        return float(int(value))
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def display_url(url: str) -> str:
    """The URL without userinfo and query: either could carry a credential."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    netloc = f"{host}:{parts.port}" if parts.port else host
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


def scrub(text: object, *secrets: str) -> str:
    """Provider text made safe for logs and dead-letter reasons: one line, secrets
    replaced, phone-like digit runs masked, bounded."""
    out = " ".join(str(text).split())
    for secret in secrets:
        if secret:
            out = out.replace(secret, "***")
    return redact_text(out)[:MAX_DESCRIPTION_CHARS]


@dataclass(frozen=True, slots=True)
class Reply:
    status: int
    headers: CIMultiDictProxy[str]
    body: bytes | None
    """None when the body was larger than any reply we understand."""

    @property
    def retry_after(self) -> float | None:
        return parse_retry_after(self.headers.get("Retry-After"))


class PooledSession:
    """One :class:`aiohttp.ClientSession` per provider, created on first use (inside the
    running loop) and closed by :meth:`aclose`; a session passed in is used as is and
    left open for its owner."""

    def __init__(self, timeout: aiohttp.ClientTimeout, session: aiohttp.ClientSession | None,
                 max_connections: int, owner: str) -> None:
        self.timeout = timeout
        self._session = session
        self._owns = session is None
        self._max_connections = max_connections
        self._owner = owner

    def get(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            if not self._owns:
                raise RuntimeError(f"the aiohttp session given to {self._owner} is closed")
            self._session = aiohttp.ClientSession(
                timeout=self.timeout,
                connector=aiohttp.TCPConnector(limit=self._max_connections),
            )
        return self._session

    @property
    def current(self) -> aiohttp.ClientSession | None:
        return self._session

    async def aclose(self) -> None:
        session, self._session = self._session, None
        if session is not None and self._owns and not session.closed:
            await session.close()

    async def request(self, method: str, url: str, *, label: str, shown_url: str,
                      provider: str, retry_note: str, max_bytes: int = MAX_REPLY_BYTES,
                      **kwargs: Any) -> Reply:
        """One request, the transport failures turned into provider errors. ``max_bytes``:
        the largest body read (a reply naming many recipients is larger than one's)."""
        try:
            async with self.get().request(method, url, timeout=self.timeout,
                                          allow_redirects=False, **kwargs) as resp:
                body = await _read_capped(resp, max_bytes)
                return Reply(resp.status, resp.headers, body)
        except aiohttp.ConnectionTimeoutError:
            # no connection within the connect timeout: nothing was sent
            raise ProviderUnreachable(
                f"{label} unreachable at {shown_url} (no connection within "
                f"{self.timeout.connect:g}s)", provider=provider) from None
        except TimeoutError:
            raise ProviderTransientError(
                f"{label} timed out after {self.timeout.total:g}s at {shown_url} "
                f"(it may have sent; {retry_note})", provider=provider) from None
        except aiohttp.ClientConnectorError as exc:
            reason = exc.strerror or type(exc.os_error).__name__
            raise ProviderUnreachable(
                f"{label} unreachable at {shown_url} ({reason})", provider=provider) from None
        except aiohttp.ClientError as exc:
            raise ProviderTransientError(
                f"{label} connection error at {shown_url} ({type(exc).__name__}; it may have "
                f"sent; {retry_note})", provider=provider) from None


async def _read_capped(resp: aiohttp.ClientResponse, max_bytes: int = MAX_REPLY_BYTES
                       ) -> bytes | None:
    chunks: list[bytes] = []
    size = 0
    async for chunk in resp.content.iter_chunked(8192):
        size += len(chunk)
        if size > max_bytes:
            return None
        chunks.append(chunk)
    return b"".join(chunks)
