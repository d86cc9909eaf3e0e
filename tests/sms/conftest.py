"""Fixtures of the SMS tests: a Salum stand-in on loopback, a provider pointed at it, and
an SMS queue with a tiny backoff."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from streamq import Queue, QueueDefaults
from streamq.sms import SMSJob
from streamq.sms.providers import SalumSMSProvider
from streamq.sms.standin import SalumStandin

API_KEY = "sk-live-TOPSECRET-4242"
PARTNER_ID = "4711"
SHORTCODE = "STREAMQ"


@pytest.fixture
async def standin() -> AsyncIterator[SalumStandin]:
    server = SalumStandin(api_key=API_KEY, partner_id=PARTNER_ID)
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


@pytest.fixture
async def salum(standin: SalumStandin) -> AsyncIterator[SalumSMSProvider]:
    # Short timeouts (T5): the slow-reply cases must not cost seconds of wall time.
    provider = SalumSMSProvider(
        standin.url, API_KEY, PARTNER_ID, SHORTCODE, timeout_total=1.0, timeout_connect=0.3
    )
    try:
        yield provider
    finally:
        await provider.aclose()


@pytest.fixture
async def queue(redis_url: str, queue_name: str) -> AsyncIterator[Queue]:
    # Tiny backoff so that retry cases take milliseconds, not 2 s + 4 s.
    q = Queue(queue_name, redis_url=redis_url, job_type=SMSJob,
              defaults=QueueDefaults(backoff_s=0.01))
    try:
        yield q
    finally:
        await q.close()
