"""A provider that sends nothing: for development, demos, benchmarks and tests.

It logs each message with the number masked and, when ``echo`` is on, prints the text it
would have sent. That print-out is the one place streamq shows a message body (it may
hold an OTP code): it is what a developer running the mock wants to see. Turn it off
with ``echo=False`` anywhere the output is collected.
"""

from __future__ import annotations

import random
import sys
import time
import uuid
from typing import TextIO

import anyio
import msgspec
import structlog

from streamq.redact import mask_phone

from .base import ProviderTransientError, SendResult

log = structlog.get_logger("streamq.sms")


class SentMessage(msgspec.Struct, frozen=True, kw_only=True):
    to: str
    message: str
    idempotency_key: str
    message_id: str
    at: float  # time.time() when it was "sent"


class MockSMSProvider:
    """Records messages in :attr:`sent`; optional latency and random transient failures."""

    name = "mock"

    def __init__(
        self,
        latency: float = 0.0,
        failure_rate: float = 0.0,
        seed: int | None = None,
        echo: bool = True,
        stream: TextIO | None = None,
    ) -> None:
        if latency < 0:
            raise ValueError("latency must be >= 0 seconds")
        if not 0.0 <= failure_rate <= 1.0:
            raise ValueError("failure_rate must be between 0 and 1")
        self.latency = latency
        self.failure_rate = failure_rate
        self.echo = echo
        self._stream = stream
        self._random = random.Random(seed)
        self.sent: list[SentMessage] = []
        self.failures = 0

    async def send(self, to: str, message: str, *, idempotency_key: str) -> SendResult:
        if self.latency:
            await anyio.sleep(self.latency)
        if self.failure_rate and self._random.random() < self.failure_rate:
            self.failures += 1
            raise ProviderTransientError("mock: injected failure", provider=self.name)
        message_id = uuid.uuid4().hex
        self.sent.append(
            SentMessage(
                to=to,
                message=message,
                idempotency_key=idempotency_key,
                message_id=message_id,
                at=time.time(),
            )
        )
        log.info("sms.mock_sent", to=mask_phone(to), message_id=message_id, chars=len(message))
        if self.echo:
            stream = self._stream or sys.stdout
            print(f"[mock sms] to {mask_phone(to)}: {message}", file=stream, flush=True)
        return SendResult(provider=self.name, message_id=message_id, status="Success")

    async def aclose(self) -> None:
        """Nothing to release; present for the :class:`SMSProvider` protocol."""
