"""SMS providers: the protocol, the Salum HTTP provider, the mock, and the factory."""

from __future__ import annotations

from .base import (
    ProviderError,
    ProviderLowCredit,
    ProviderPermanentError,
    ProviderTransientError,
    SendResult,
    SMSProvider,
)
from .factory import provider_from_settings
from .mock import MockSMSProvider, SentMessage
from .salum import SalumSMSProvider

__all__ = [
    "MockSMSProvider",
    "ProviderError",
    "ProviderLowCredit",
    "ProviderPermanentError",
    "ProviderTransientError",
    "SMSProvider",
    "SalumSMSProvider",
    "SendResult",
    "SentMessage",
    "provider_from_settings",
]
