"""The SMS dispatcher reports each provider call to the worker's metrics."""

from __future__ import annotations

import time

from prometheus_client import generate_latest

from streamq import Job, Queue, Worker
from streamq.metrics import Metrics
from streamq.sms import MockSMSProvider, Recipient, make_sms_handler
from streamq.sms.types import NotificationSMS


async def test_provider_sends_are_counted_by_outcome() -> None:
    metrics = Metrics()
    q = Queue("metricsq", redis_url="redis://127.0.0.1:1/0")
    metrics.attach(Worker(q, make_sms_handler(MockSMSProvider(echo=False))))
    handler = make_sms_handler(MockSMSProvider(echo=False))
    data = NotificationSMS(id="a" * 32, timestamp=int(time.time() * 1000),
                           recipient=Recipient(phone_number="+254712345678"), message="hi")
    job = Job(id="j1", data=data, attempt=1, max_attempts=3, queue_name="metricsq",
              priority="normal", created_ms=0, enqueued_ms=0)
    await handler(job)
    await handler(job)
    text = generate_latest(metrics.registry).decode()
    assert ('streamq_provider_send_seconds_count{outcome="sent",provider="mock",queue="metricsq"} 2.0'
            in text)
