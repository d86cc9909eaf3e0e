"""Fixtures of the SMS tests: a Salum stand-in on loopback and a provider pointed at it."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

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
