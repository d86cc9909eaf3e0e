"""The dashboard in a real browser: Playwright driving Debian's chromium.

Skipped (with the reason) only when chromium or Playwright is not installed;
scripts/test.sh installs both. Playwright's own browser download is not used.
"""

from __future__ import annotations

import os
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from aiohttp import web

from streamq import Job, JobOptions, PermanentError, Queue, Worker
from streamq.devredis import RedisProcess, start_redis_server
from tests.support.dashboard import OPERATOR, VIEWER, Running, running_dashboard
from tests.support.util import running, wait_until

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--no-first-run", "--disable-sync"]

try:
    from playwright.async_api import Browser, Page, async_playwright, expect
except ImportError:  # pragma: no cover - the test extra is not installed
    pytest.skip("playwright is not installed: pip install -e '.[test]'", allow_module_level=True)
if not os.access(CHROMIUM, os.X_OK):
    pytest.skip(f"{CHROMIUM} is missing (apt-get install -y chromium; scripts/test.sh does)",
                allow_module_level=True)

PHONE = "+254712345678"


@pytest.fixture(scope="module")
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="module")
def dash_redis() -> Any:
    # a Redis of its own: the overview lists every registered queue, and other tests'
    # queues would crowd it
    with start_redis_server() as proc:
        yield proc


@pytest.fixture(scope="module")
async def dash(dash_redis: RedisProcess) -> AsyncIterator[Running]:
    # rescans five times a second: queues made by the tests show up in the overview
    async with running_dashboard(dash_redis.url, rescan_s=0.2) as d:
        yield d


@pytest.fixture(scope="module")
async def browser() -> AsyncIterator[Browser]:
    async with async_playwright() as pw:
        b = await pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield b
        await b.close()


Login = Callable[[str], Awaitable[Page]]


@pytest.fixture
async def login_as(browser: Browser, dash: Running) -> AsyncIterator[Login]:
    contexts = []

    async def login(token: str) -> Page:
        context = await browser.new_context(base_url=dash.url)
        contexts.append(context)
        page = await context.new_page()
        response = await page.goto("/")
        assert response is not None and response.status == 401
        await page.fill("input[name=token]", token)
        await page.click("button[type=submit]")
        await expect(page.locator("header .who")).to_be_visible()
        return page

    yield login
    for c in contexts:
        await c.close()


@pytest.fixture
async def q(dash_redis: RedisProcess, queue_name: str) -> AsyncIterator[Queue]:
    async with Queue(queue_name, redis_url=dash_redis.url) as queue:
        await queue.ensure_groups()
        yield queue


async def make_dead(q: Queue, n: int = 1) -> list[str]:
    refs = await q.add_bulk([({"to": {"phone_number": PHONE}, "code": "482913", "i": i},
                              JobOptions(attempts=1)) for i in range(n)])

    async def fail(job: Job) -> None:
        raise PermanentError(f"1003 invalid mobile {PHONE}")

    async with running(Worker(q, fail, rate_limit=None)):
        await wait_until(lambda: _dead(q, n), 10, 0.02, "dead letters")
    return [r.job_id for r in refs]


async def _listed(dash: Running, name: str) -> bool:
    return name in await dash.dashboard.names()


async def _dead(q: Queue, n: int) -> bool:
    return (await q.counts())["dead"] == n


async def test_login_then_the_overview_counts_match_queue_counts(
        q: Queue, login_as: Login, dash: Running) -> None:
    await make_dead(q, 2)
    await q.add_bulk([{"i": i} for i in range(7)])
    await q.add_bulk([({"i": i}, JobOptions(delay=300)) for i in range(3)])
    await wait_until(lambda: _listed(dash, q.name), 10, 0.05, "the queue found by a rescan")
    page = await login_as(VIEWER)
    await expect(page.locator("header .who")).to_have_text("viewer")
    counts = await q.counts()
    assert counts["waiting"] == 7 and counts["delayed"] == 3 and counts["dead"] == 2
    for state in ("waiting", "active", "delayed", "failed", "dead", "completed", "cancelled"):
        cell = page.locator(f'table.overview [data-count="{q.name}:{state}"]')
        await expect(cell).to_have_text(str(counts[state]))
    await page.click(f"text={q.name}")
    for state in ("waiting", "delayed", "failed"):
        await expect(page.locator(f'nav.states [data-count="{q.name}:{state}"]')).to_have_text(
            str(counts[state]))


async def test_the_job_page_shows_facts_and_masks_numbers(q: Queue, login_as: Login) -> None:
    [dead] = await make_dead(q)
    waiting = await q.add({"to": {"phone_number": PHONE}, "note": "call 0712 345 678"})
    page = await login_as(VIEWER)
    for job_id, state in ((waiting.job_id, "waiting"), (dead, "failed")):
        await page.goto(f"/q/{q.name}/jobs/{job_id}")
        await expect(page.locator('[data-job-field="state"]')).to_have_text(state)
        text = await page.locator("main").inner_text()
        assert "+2547****678" in text
        for secret in (PHONE, "712345678", "0712 345 678", "482913"):
            assert secret not in await page.content(), secret
    await expect(page.locator('[data-job-field="error"]')).to_have_text(
        "1003 invalid mobile +2547****678")
    await expect(page.locator("table.events")).to_contain_text("dead")
    # search by id finds it
    await page.fill("form.search input[name=q]", waiting.job_id)
    await page.click("form.search button")
    await expect(page).to_have_url(re.compile(rf"/q/{q.name}/jobs/{waiting.job_id}$"))


async def test_an_operator_replays_a_dead_letter(q: Queue, login_as: Login) -> None:
    [dead] = await make_dead(q)
    page = await login_as(OPERATOR)
    await page.goto(f"/q/{q.name}/dead")
    row = page.locator("table.dead tr", has_text=dead)
    await expect(row).to_contain_text("+2547****678")
    await row.locator("button", has_text="replay").click()
    await expect(page.locator(".flash")).to_have_text("replayed 1 job(s)")
    counts = await q.counts()
    assert counts["dead"] == 0 and counts["waiting"] == 1
    acts = [e for e in await q.read_events() if e.name == "action"]
    assert [(e.job_id, (e.fields or {}).get("act"), (e.fields or {}).get("actor")) for e in acts] \
        == [(dead, "replay", "operator")]


async def test_a_viewer_is_refused_with_403(q: Queue, login_as: Login) -> None:
    await make_dead(q)
    page = await login_as(VIEWER)
    await page.goto(f"/q/{q.name}/dead")
    button = page.locator("form[action$='/dead/purge'] button")
    await expect(button).to_be_disabled()
    # the button is disabled for a viewer; submit the form anyway: the server decides
    async with page.expect_navigation() as nav:
        await page.locator("form[action$='/dead/purge']").evaluate("f => f.submit()")
    response = await nav.value
    assert response is not None and response.status == 403
    await expect(page.locator("body")).to_contain_text("the viewer role can look, not act")
    assert (await q.counts())["dead"] == 1


async def test_csrf_refusals_in_the_browser(q: Queue, login_as: Login, dash: Running) -> None:
    await q.add({"a": 1})
    page = await login_as(OPERATOR)
    await page.goto(f"/q/{q.name}")
    # a tampered CSRF token
    await page.locator("form[action$='/pause'] input[name=csrf]").evaluate("i => i.value = 'x'")
    async with page.expect_navigation() as nav:
        await page.locator("form[action$='/pause'] button").click()
    response = await nav.value
    assert response is not None and response.status == 403
    await expect(page.locator("body")).to_contain_text("CSRF token missing or wrong")
    # a page of another site that posts to the dashboard (with the real token, even)
    await page.goto(f"/q/{q.name}")
    token = await page.locator("meta[name=csrf-token]").get_attribute("content")
    evil = web.Application()

    async def attack(request: web.Request) -> web.Response:
        return web.Response(content_type="text/html", text=(
            f'<form id=f method=post action="{dash.url}/q/{q.name}/pause">'
            f'<input name=csrf value="{token}"></form>'
            "<script>document.getElementById('f').submit()</script>"))

    evil.router.add_get("/", attack)
    runner = web.AppRunner(evil)
    await runner.setup()
    try:
        site = web.TCPSite(runner, "localhost", 0)
        await site.start()
        port = runner.addresses[0][1]
        async with page.expect_navigation(url=re.compile(re.escape(dash.url))) as nav:
            await page.goto(f"http://localhost:{port}/")
        response = await nav.value
        assert response is not None and response.status in (401, 403)
    finally:
        await runner.cleanup()
    assert not await q.is_paused()
    assert [e for e in await q.read_events() if e.name == "action"] == []


async def test_counts_change_live_without_a_reload(q: Queue, login_as: Login) -> None:
    await q.add_bulk([{"i": i} for i in range(3)])
    page = await login_as(VIEWER)
    await page.goto(f"/q/{q.name}")
    await expect(page.locator("body")).to_have_attribute("data-live-state", "open")
    await page.evaluate("window.__sameDocument = true")
    waiting = page.locator(f'nav.states [data-count="{q.name}:waiting"]')
    await expect(waiting).to_have_text("3")
    refs = await q.add_bulk([{"i": i} for i in range(5)])
    await expect(waiting).to_have_text("8")
    await expect(page.locator("#live-events")).to_contain_text(refs[-1].job_id)
    await q.pause()
    await expect(page.locator(f'h1 [data-paused="{q.name}"]')).to_have_text("paused")
    assert await page.evaluate("window.__sameDocument") is True  # never reloaded
    # the overview follows too
    await page.goto("/")
    cell = page.locator(f'table.overview [data-count="{q.name}:waiting"]')
    await expect(cell).to_have_text("8")
    await q.add({"i": "one more"})
    await expect(cell).to_have_text("9")


async def test_pagination_across_pages(q: Queue, login_as: Login) -> None:
    refs = [r.job_id for r in await q.add_bulk([{"i": i} for i in range(120)])]
    page = await login_as(VIEWER)
    await page.goto(f"/q/{q.name}?state=waiting&limit=50")
    seen: list[str] = []
    for expected_rows in (50, 50, 20):
        rows = page.locator("table.jobs tbody tr")
        await expect(rows).to_have_count(expected_rows)
        seen += [t.strip() for t in await rows.locator("td:first-child").all_inner_texts()]
        nxt = page.locator("nav.pager a.next")
        if expected_rows == 20:
            await expect(nxt).to_have_count(0)
        else:
            await nxt.click()
    assert seen == refs
