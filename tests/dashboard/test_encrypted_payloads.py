"""The dashboard on an encrypted, partitioned SMS queue: with the keys it opens a job's
payload (bound to its job id) and shows it masked; without them it shows a clear
"encrypted" marker with the key id and the reason, on the job page and the dead-letter
page, and never the number or the code."""

from __future__ import annotations

import base64
import re

import aiohttp
import pytest

from streamq import Job, PermanentError, Queue, Worker
from streamq.crypto import KEYS_ENV, KeyRing
from streamq.routing import partition_of
from streamq.sms import SMSJob, create_otp_sms_job, create_welcome_sms_job
from streamq.sms.privacy import phone_terms
from tests.support.dashboard import VIEWER, bearer, running_dashboard
from tests.support.util import running, wait_until
from tests.test_partitions import ids_in

KEYS = f"d1:{base64.b64encode(b'd' * 32).decode()}"
NUMBER, CODE, NAME = "+254712345678", "48213377", "Wanjiku"
HTML = {"Accept": "text/html"}


async def page(s: aiohttp.ClientSession, url: str) -> str:
    async with s.get(url, headers={**bearer(VIEWER), **HTML}, allow_redirects=False) as r:
        text = await r.text()
        assert r.status == 200, (url, r.status, text[:300])
        return text


def assert_nothing_personal(text: str) -> None:
    # (names are shown to logged-in viewers, as on a clear queue: only numbers are masked
    # and codes and texts hidden)
    for secret in ("712345678", CODE):
        assert secret not in text, secret


async def test_encrypted_payloads_are_shown_masked_with_keys_and_marked_without(
    redis_url: str, queue_name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    q = Queue(queue_name, redis_url=redis_url, job_type=SMSJob, partitions=3, encrypt=True,
              keyring=KeyRing.parse(KEYS), blind_index=phone_terms)
    try:
        dead = await create_welcome_sms_job(recipient=NUMBER, user_name=NAME, queue=q)

        async def refuse(job: Job) -> None:
            raise PermanentError("refused")

        async with running(Worker(q, refuse, rate_limit=None)):
            await wait_until(lambda: _dead(q), 10, message="the dead letter")
        # waiting jobs in two partitions, so the page reads a partition other than the home
        otps = [await create_otp_sms_job(recipient=NUMBER, code=CODE, queue=q, job_id=job_id)
                for job_id in (ids_in(1, 3, "otp-")[0], ids_in(2, 3, "otp-")[0])]
        assert {partition_of(o.job_id, 3) for o in otps} == {1, 2}

        monkeypatch.setenv(KEYS_ENV, KEYS)
        async with running_dashboard(redis_url, queues=[queue_name]) as d, \
                aiohttp.ClientSession() as s:
            for ref, where in ((otps[0], "waiting"), (otps[1], "waiting"), (dead, "dead")):
                text = await page(s, d.url + f"/q/{queue_name}/jobs/{ref.job_id}")
                assert "encrypted at rest with key d1" in text and where in text
                assert "+2547****678" in text  # opened and shown, masked
                assert "encrypted payload (key" not in text
                assert_nothing_personal(text)
            text = await page(s, d.url + f"/q/{queue_name}/dead")
            assert "+2547****678" in text and "encrypted payload (key" not in text
            assert_nothing_personal(text)

        monkeypatch.delenv(KEYS_ENV)
        async with running_dashboard(redis_url, queues=[queue_name]) as d, \
                aiohttp.ClientSession() as s:
            text = await page(s, d.url + f"/q/{queue_name}/jobs/{otps[1].job_id}")
            marker = re.search(r"&lt;encrypted payload \(key d1, \d+ bytes\): ([^&]*)&gt;", text)
            assert marker is not None, text
            assert marker.group(1) == ("payload is encrypted and no key is configured (set "
                                       "STREAMQ_ENCRYPTION_KEYS)")
            assert_nothing_personal(text)
            text = await page(s, d.url + f"/q/{queue_name}/dead")
            assert "&lt;encrypted payload (key d1" in text
            assert_nothing_personal(text)
            text = await page(s, d.url + f"/q/{queue_name}?state=waiting")
            assert otps[0].job_id in text and otps[1].job_id in text
    finally:
        await q.close()


async def _dead(q: Queue) -> bool:
    return (await q.counts())["dead"] == 1
