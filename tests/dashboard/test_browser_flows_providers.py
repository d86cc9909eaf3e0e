"""The dashboard's flow tree, provider breakers, phone search, partition counts and
job ids with braces, in a real browser (Playwright driving Debian's chromium; the
fixtures and the skip rules are test_browser.py's)."""
# The fixtures are imported from test_browser.py, so test arguments share their names:
# ruff: noqa: F811

from __future__ import annotations

import base64
import re
from collections.abc import AsyncIterator

import pytest

from streamq import FlowJob, Job, JobOptions, PermanentError, Queue, Worker
from streamq.crypto import KEYS_ENV, KeyRing
from streamq.devredis import RedisProcess
from streamq.sms import SMSJob, create_otp_sms_job, create_welcome_sms_job
from streamq.sms.breaker import BreakerPolicy, Breakers
from streamq.sms.privacy import phone_terms
from tests.dashboard.test_browser import (  # noqa: F401 - fixtures, and the module's skip rules
    Login,
    anyio_backend,
    browser,
    dash,
    dash_redis,
    login_as,
    make_dead,
)
from tests.support.dashboard import OPERATOR, VIEWER, Running
from tests.support.util import running, wait_until
from tests.test_partitions import ids_in

try:
    from playwright.async_api import Dialog, expect
except ImportError:  # pragma: no cover - test_browser.py skips the module first
    pytest.skip("playwright is not installed", allow_module_level=True)

PHONE = "+254712345678"
KEYS = f"b1:{base64.b64encode(b'b' * 32).decode()}"


@pytest.fixture
async def q(dash_redis: RedisProcess, queue_name: str) -> AsyncIterator[Queue]:
    async with Queue(queue_name, redis_url=dash_redis.url) as queue:
        await queue.ensure_groups()
        yield queue


async def _listed(dash: Running, name: str) -> bool:
    return name in await dash.dashboard.names()


async def test_the_flow_tree_of_a_job(q: Queue, dash_redis: RedisProcess,
                                      login_as: Login) -> None:
    async with Queue(q.name + "c", redis_url=dash_redis.url) as cq:
        await cq.ensure_groups()
        await q.add_flow(FlowJob(
            data={"report": "daily"}, options=JobOptions(job_id="report-{d1}"), children=[
                FlowJob(data={"n": 1, "to": PHONE}, queue=cq, options=JobOptions(job_id="fetch-{d1}")),
                FlowJob(data={"n": 2}, queue=cq, options=JobOptions(job_id="gone-{d1}", attempts=1)),
                FlowJob(data={"n": 3}, options=JobOptions(job_id="sum-{d1}")),
            ]), on_child_failure="continue")

        async def fetch(job: Job) -> dict[str, str]:
            if job.data["n"] == 2:
                raise PermanentError(f"source retired; owner {PHONE}")
            return {"rows": "12", "owner": PHONE}

        async with running(Worker(cq, fetch, rate_limit=None)):
            await wait_until(lambda: _pending(q, "report-{d1}", 1), 60, message="two children")
        page = await login_as(VIEWER)
        response = await page.goto(f"/q/{q.name}/jobs/report-%7Bd1%7D")
        assert response is not None and response.status == 200
        tree = page.locator("ul.flow-tree")
        await expect(tree).to_be_visible()
        await expect(page.locator('[data-flow-state="report-{d1}"]')).to_have_text("waiting_children")
        await expect(page.locator('[data-flow-pending="report-{d1}"]')).to_have_text("1")
        await expect(page.locator('[data-flow-state="fetch-{d1}"]')).to_have_text("completed")
        await expect(page.locator('[data-flow-state="gone-{d1}"]')).to_have_text("failed")
        await expect(page.locator('[data-flow-state="sum-{d1}"]')).to_have_text("waiting")
        fetch_node = page.locator('li[data-flow-node="fetch-{d1}"]')
        await expect(fetch_node).to_contain_text(f"on queue {cq.name}")
        await expect(fetch_node).to_contain_text("+2547****678")  # its result, masked
        await expect(page.locator('li[data-flow-node="gone-{d1}"]')).to_contain_text(
            "source retired; owner +2547****678")
        await expect(page.locator('li[data-flow-node="report-{d1}"]')).to_contain_text(
            "on a child's failure: continue")
        assert "712345678" not in await page.content()
        # a completed child on the other queue: its link carries the parent, its page the tree
        await fetch_node.locator("a.mono").first.click()
        await expect(page).to_have_url(re.compile(rf"/q/{cq.name}/jobs/fetch-%7Bd1%7D\?parent="))
        await expect(page.locator('[data-job-field="state"]')).to_have_text("completed")
        await expect(page.locator("li.flow-node.focus")).to_have_attribute(
            "data-flow-node", "fetch-{d1}")
        await expect(page.locator('[data-flow-state="report-{d1}"]')).to_have_text(
            "waiting_children")


async def test_the_breakers_page(q: Queue, login_as: Login, dash: Running,
                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STREAMQ_SMS_QUEUE", q.name)
    monkeypatch.setenv("SMS_PROVIDERS", "salum,africastalking")
    breakers = Breakers(q, BreakerPolicy(errors=1, cooldown_s=900))
    await breakers.failure("salum", "error", f"connect refused ({PHONE})")
    await wait_until(lambda: _listed(dash, q.name), 60, 0.05, "the queue found by a rescan")
    viewer = await login_as(VIEWER)
    await viewer.click("header nav.global a[href='/breakers']")
    salum = viewer.locator(f'[data-breaker="{q.name}:salum"]')
    await expect(salum).to_have_text("open")
    await expect(viewer.locator(f'[data-breaker="{q.name}:africastalking"]')).to_have_text("closed")
    row = viewer.locator("table.breakers tr", has=salum)
    await expect(row).to_contain_text("connect refused (+2547****678)")
    await expect(row).to_contain_text("probe from")
    await expect(row.locator("button", has_text="close breaker")).to_be_disabled()
    # an operator closes it (confirming the dialog); the page and Redis agree
    operator = await login_as(OPERATOR)
    await operator.goto("/breakers")

    async def accept(dialog: Dialog) -> None:
        await dialog.accept()

    operator.on("dialog", accept)
    op_row = operator.locator("table.breakers tr", has=operator.locator(
        f'[data-breaker="{q.name}:salum"]'))
    await op_row.locator("button", has_text="close breaker").click()
    await expect(operator.locator(".flash")).to_have_text(f"closed the breaker of salum on {q.name}")
    await expect(operator.locator(f'[data-breaker="{q.name}:salum"]')).to_have_text("closed")
    await expect(operator.locator("table.breaker-events")).to_contain_text("closed by hand by operator")
    assert (await breakers.snapshot("salum"))["st"] == "closed"
    acts = [(e.job_id, (e.fields or {}).get("actor")) for e in await q.read_events()
            if e.name == "action"]
    assert acts == [("salum", "operator")]


async def test_search_by_phone_number(dash_redis: RedisProcess, queue_name: str,
                                      login_as: Login, dash: Running,
                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(KEYS_ENV, KEYS)  # the dashboard opens this queue with the keys
    q = Queue(queue_name, redis_url=dash_redis.url, job_type=SMSJob, partitions=2, encrypt=True,
              keyring=KeyRing.parse(KEYS), blind_index=phone_terms)
    try:
        mine = [await create_otp_sms_job(recipient=PHONE, code="5521", queue=q, job_id=job_id)
                for job_id in (ids_in(0, 2, "otp-")[0], ids_in(1, 2, "otp-")[0])]
        await create_welcome_sms_job(recipient="+254733000111", user_name="Achieng", queue=q)
        await wait_until(lambda: _listed(dash, q.name), 60, 0.05, "the queue found by a rescan")
        page = await login_as(VIEWER)  # a viewer may search
        # a miss
        await page.fill("form.search input[name=q]", "+254700999888")
        await page.click("form.search button")
        await expect(page.locator("table.found")).to_contain_text("no jobs of +2547****888")
        assert "700999888" not in await page.content()
        # a hit, in the national format
        await page.fill("form.search input[name=q]", "0712 345 678")
        await page.click("form.search button")
        await expect(page.locator("h1")).to_have_text("Jobs of 0712****678")
        assert "/search" in page.url and "712" not in page.url  # posted: nothing in the URL
        rows = page.locator("table.found tbody tr")
        await expect(rows).to_have_count(2)
        listed = [t.strip() for t in await rows.locator("td:nth-child(2)").all_inner_texts()]
        assert sorted(listed) == sorted(r.job_id for r in mine)
        content = await page.content()
        for secret in ("712345678", "712 345 678", "5521"):
            assert secret not in content, secret
        # a result opens the job, masked
        await page.locator("table.found a.mono").first.click()
        await expect(page.locator('[data-job-field="state"]')).to_have_text("waiting")
        assert "712345678" not in await page.content()
    finally:
        await q.close()


async def test_partition_counts_match_the_queue(dash_redis: RedisProcess, queue_name: str,
                                                login_as: Login) -> None:
    async with Queue(queue_name, redis_url=dash_redis.url, partitions=3) as q:
        await q.ensure_groups()
        await make_dead(q, 2)  # first: its worker would take the waiting jobs too
        await q.add_bulk([({"i": i}, JobOptions(job_id=job_id))
                          for i, job_id in enumerate(ids_in(0, 3, "w-", 4) + ids_in(2, 3, "w-", 2))])
        await q.add_bulk([({"i": i}, JobOptions(job_id=job_id, delay=600))
                          for i, job_id in enumerate(ids_in(1, 3, "d-", 3))])
        page = await login_as(VIEWER)
        await page.goto(f"/q/{q.name}")
        parts = await q.partition_counts()
        counts = await q.counts()
        assert [p["waiting"] for p in parts] == [4, 0, 2] and counts["waiting"] == 6
        assert [p["delayed"] for p in parts] == [0, 3, 0]
        for p, c in enumerate(parts):
            for state in ("waiting", "active", "delayed", "failed", "dead", "completed", "cancelled"):
                await expect(page.locator(f'[data-partition-count="{q.name}:{p}:{state}"]')
                             ).to_have_text(str(c[state]))
        for state in ("waiting", "delayed", "failed"):
            await expect(page.locator(f'nav.states [data-count="{q.name}:{state}"]')).to_have_text(
                str(counts[state]))
        # a queue of one partition shows no partition table
        async with Queue(queue_name + "one", redis_url=dash_redis.url) as one:
            await one.add({"i": 1})
            await page.goto(f"/q/{one.name}")
            await expect(page.locator("table.jobs")).to_be_visible()
            await expect(page.locator("details.partitions")).to_have_count(0)


async def test_job_ids_with_braces_open_their_page(q: Queue, login_as: Login) -> None:
    ids = ["order-{42}-sms", "{tag}+x@y=z:1"]
    for job_id in ids:
        await q.add({"i": job_id}, JobOptions(job_id=job_id))
    page = await login_as(VIEWER)
    await page.goto(f"/q/{q.name}")
    for job_id in ids:
        await page.locator("table.jobs a.mono", has_text=job_id).click()
        await expect(page.locator("h1 .mono")).to_have_text(job_id)
        await expect(page.locator('[data-job-field="state"]')).to_have_text("waiting")
        await page.go_back()
    # the search box finds one too
    await page.fill("form.search input[name=q]", ids[0])
    await page.click("form.search button")
    await expect(page.locator('[data-job-field="state"]')).to_have_text("waiting")
    await expect(page).to_have_url(re.compile(r"/jobs/order-%7B42%7D-sms$"))


async def _pending(q: Queue, job_id: str, n: int) -> bool:
    info = await q.get_job(job_id)
    return info is not None and info.pending_children == n
