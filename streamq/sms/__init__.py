"""The SMS notification system on the streamq engine.

An application creates jobs (``create_*_sms_job``); a worker runs the handler from
:func:`make_sms_handler`, which renders each job's template and sends it through an
:class:`~streamq.sms.providers.SMSProvider`. Africa's Talking's delivery reports land on the
jobs through :func:`delivery_app` (``delivery.py``). The engine never imports this package.
"""

from __future__ import annotations

from .broadcast import BroadcastSender, make_sms_batch_handler
from .delivery import DeliveryReports
from .delivery_http import delivery_app
from .dispatch import make_sms_handler
from .failover import ProviderRouter
from .jobs import (
    close_sms_queue,
    create_notification_sms_job,
    create_notification_sms_jobs,
    create_otp_sms_job,
    create_welcome_sms_job,
    get_sms_queue,
)
from .phone import InvalidPhoneNumber, normalize_phone
from .providers import (
    AfricasTalkingSMSProvider,
    MockSMSProvider,
    SalumSMSProvider,
    SMSProvider,
    provider_from_settings,
)
from .templates import (
    MessageTooLong,
    render_notification_sms,
    render_otp_sms,
    render_welcome_sms,
)
from .types import OTPSMS, NotificationSMS, Recipient, SMSJob, TemplateResult, WelcomeSMS

# Plain sorted() order, which the test checks (ruff's RUF022 prefers isort order).
__all__ = [  # noqa: RUF022
    "AfricasTalkingSMSProvider",
    "BroadcastSender",
    "DeliveryReports",
    "InvalidPhoneNumber",
    "MessageTooLong",
    "MockSMSProvider",
    "NotificationSMS",
    "OTPSMS",
    "ProviderRouter",
    "Recipient",
    "SMSJob",
    "SMSProvider",
    "SalumSMSProvider",
    "TemplateResult",
    "WelcomeSMS",
    "close_sms_queue",
    "create_notification_sms_job",
    "create_notification_sms_jobs",
    "create_otp_sms_job",
    "create_welcome_sms_job",
    "delivery_app",
    "get_sms_queue",
    "make_sms_batch_handler",
    "make_sms_handler",
    "normalize_phone",
    "provider_from_settings",
    "render_notification_sms",
    "render_otp_sms",
    "render_welcome_sms",
]
