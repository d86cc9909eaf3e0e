"""SMS providers: the protocol, the Salum and Africa's Talking HTTP providers, the mock,
and the factory."""

from __future__ import annotations

from .africastalking import AfricasTalkingSMSProvider
from .base import (
    ProviderConfigError,
    ProviderError,
    ProviderLowCredit,
    ProviderPermanentError,
    ProviderTransientError,
    ProviderUnreachable,
    SendResult,
    SMSProvider,
)
from .factory import provider_from_settings, providers_from_settings
from .mock import MockSMSProvider, SentMessage
from .salum import SalumSMSProvider

__all__ = [
    "AfricasTalkingSMSProvider",
    "MockSMSProvider",
    "ProviderConfigError",
    "ProviderError",
    "ProviderLowCredit",
    "ProviderPermanentError",
    "ProviderTransientError",
    "ProviderUnreachable",
    "SMSProvider",
    "SalumSMSProvider",
    "SendResult",
    "SentMessage",
    "provider_from_settings",
    "providers_from_settings",
]
