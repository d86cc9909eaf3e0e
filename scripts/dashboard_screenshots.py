"""Take the screenshots of the dashboard in docs/dashboard/ (README and docs/dashboard.md).

    python scripts/dashboard_screenshots.py [--out docs/dashboard]

Starts a private redis-server, fills two queues with jobs in every state (a worker
completes and dead-letters some, holds three, leaves the rest waiting or delayed), a
flow over two queues, a partitioned queue and two provider breakers (one opened by the
real breaker code); the SMS queue is encrypted and indexed by number (demo keys),
serves the dashboard in-process on a free loopback port, logs in as operator with
Debian's chromium (Playwright, ``executable_path=/usr/bin/chromium``) and saves one PNG
per page. Needs the test extra (``pip install -e '.[test]'``) and chromium.
"""

from __future__ import annotations

import argparse
import base64
import os
import sys
from pathlib import Path

import anyio
from aiohttp import web

from streamq import FlowJob, Job, JobOptions, Queue, Worker, WorkerEvent
from streamq.crypto import KEYS_ENV, KeyRing
from streamq.dashboard.app import create_app
from streamq.dashboard.config import DashboardConfig
from streamq.dashboard.state import Dashboard
from streamq.devredis import start_redis_server
from streamq.errors import PermanentError
from streamq.sms import OTPSMS, NotificationSMS, Recipient, SMSJob
from streamq.sms.breaker import BreakerPolicy, Breakers
from streamq.sms.privacy import phone_terms

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--no-first-run", "--disable-sync"]
OPERATOR = "operator-demo-token-0123456789"
VIEWER = "viewer-demo-token-0123456789"

DEMO_KEYS = f"demo1:{base64.b64encode(b'streamq-dashboard-demo-key-32byt').decode()}"
SEARCHED = "+254712345107"
"""The number the phone-search screenshot looks up (several jobs of it are added)."""

NAMES = ["Alice", "Brian", "Chebet", "Dalia", "Emeka", "Fatuma", "Gitau", "Halima"]
FAILS = "Dalia"


def sms(i: int) -> SMSJob:
    name = NAMES[i % len(NAMES)]
    who = Recipient(phone_number=f"+2547{12345000 + i:08d}", name=name)
    base = {"id": f"demo-{i}", "timestamp": 1_767_225_600_000 + i * 1000, "recipient": who}
    if i % 3 == 0:
        return OTPSMS(**base, code=f"{100000 + i * 7919 % 900000}")  # type: ignore[arg-type]
    return NotificationSMS(**base, message=f"Hi {name}, your order #{4000 + i} has shipped.",  # type: ignore[arg-type]
                           metadata={"order": str(4000 + i)})


async def fill(url: str) -> tuple[Worker, anyio.Event, anyio.Event, str, str]:
    """Jobs in every state; returns the holding worker, the event set once it holds its
    three jobs, the event that releases them, a waiting job id and a dead job id."""
    sms_q = Queue("sms", redis_url=url, job_type=SMSJob, encrypt=True,
                  keyring=KeyRing.parse(DEMO_KEYS), blind_index=phone_terms)
    email = Queue("email", redis_url=url)
    await sms_q.ensure_groups()
    await email.ensure_groups()
    first = await sms_q.add_bulk([(sms(i), JobOptions(attempts=1)) for i in range(48)])

    async def quick(job: Job) -> None:
        if job.data.recipient.name == FAILS:
            number = job.data.recipient.phone_number
            raise PermanentError(f"provider said 1003 invalid mobile for {number}")

    worker = Worker(sms_q, quick, concurrency=10, rate_limit=None)
    finished = anyio.Event()
    outcomes = 0

    def count(event: WorkerEvent) -> None:
        nonlocal outcomes
        outcomes += 1
        if outcomes == len(first):
            finished.set()

    worker.on("completed", count)
    worker.on("dead", count)
    async with anyio.create_task_group() as tg:
        tg.start_soon(worker.run)
        await finished.wait()
        await worker.close()
    release, holding = anyio.Event(), anyio.Event()
    held = 0

    async def hold(job: Job) -> None:
        nonlocal held
        held += 1
        if held == 3:
            holding.set()
        await release.wait()

    holder = Worker(sms_q, hold, concurrency=3, rate_limit=None, name="sms-worker-a1")
    refs = await sms_q.add_bulk([sms(100 + i) for i in range(3)])
    del refs
    waiting = await sms_q.add_bulk([sms(200 + i) for i in range(1500)])
    await sms_q.add_bulk([(sms(300 + i), JobOptions(delay=60 * (i + 1))) for i in range(12)])
    await email.add_bulk([{"to": f"user{i}@example.com", "subject": "Welcome"} for i in range(25)])
    dead = next(r.job_id for i, r in enumerate(first) if NAMES[i % len(NAMES)] == FAILS)
    await sms_q.add_bulk([(sms(107), JobOptions(job_id=f"otp-resend-{k}", delay=30 * k))
                          for k in range(3)])
    await extras(url, sms_q)
    await sms_q.close()
    await email.close()
    return holder, holding, release, waiting[0].job_id, dead


async def extras(url: str, sms_q: Queue) -> None:
    """A flow over two queues (two children done, one failed, one nested parent waiting),
    a partitioned queue, and the SMS queue's provider breakers."""
    reports, fetch = Queue("reports", redis_url=url), Queue("fetch", redis_url=url)
    await reports.ensure_groups()
    await fetch.ensure_groups()
    await reports.add_flow(FlowJob(
        data={"report": "weekly-sales"}, options=JobOptions(job_id="weekly-{2026-w18}"), children=[
            FlowJob(data={"source": "orders"}, queue=fetch),
            FlowJob(data={"source": "refunds"}, queue=fetch),
            FlowJob(data={"source": "legacy-erp"}, queue=fetch, options=JobOptions(attempts=1)),
            FlowJob(data={"merge": "regions"}, on_child_failure="fail", children=[
                FlowJob(data={"region": r}) for r in ("nairobi", "mombasa", "kisumu")]),
        ]), on_child_failure="continue")

    async def pull(job: Job) -> dict[str, int]:
        if job.data["source"] == "legacy-erp":
            raise PermanentError("legacy ERP export endpoint retired (HTTP 410)")
        return {"rows": 1200 + len(job.data["source"]) * 37}

    done = anyio.Event()
    finished = 0

    def count(event: WorkerEvent) -> None:
        nonlocal finished
        finished += 1
        if finished == 3:
            done.set()

    puller = Worker(fetch, pull, rate_limit=None)
    puller.on("completed", count)
    puller.on("dead", count)
    async with anyio.create_task_group() as tg:
        tg.start_soon(puller.run)
        await done.wait()
        await puller.close()
    push = Queue("push", redis_url=url, partitions=4)
    await push.ensure_groups()
    await push.add_bulk([{"device": f"d{i}", "title": "Sale ends tonight"} for i in range(240)])
    await push.add_bulk([({"device": f"d{i}", "title": "Reminder"}, JobOptions(delay=3600))
                         for i in range(60)])
    breakers = Breakers(sms_q, BreakerPolicy(errors=3, window_s=30, cooldown_s=120))
    for _ in range(3):
        await breakers.failure("salum", "error", "connect timeout after 3.0s (sms.salum.co.ke)")
    await breakers.failure("africastalking", "error", "HTTP 503 from api.africastalking.com")
    for q in (reports, fetch, push):
        await q.close()


async def shoot(out: Path) -> None:
    from playwright.async_api import async_playwright, expect

    os.environ[KEYS_ENV] = DEMO_KEYS  # the dashboard opens the SMS payloads and its index
    os.environ["SMS_PROVIDERS"] = "salum,africastalking"
    os.environ["SALUM_RATE_LIMIT"] = "50"
    os.environ["AT_RATE_LIMIT"] = "20"
    with start_redis_server() as proc:
        holder, holding, release, waiting_id, dead_id = await fill(proc.url)
        env = {"STREAMQ_DASHBOARD_TOKENS": f"viewer:{VIEWER},operator:{OPERATOR}"}
        dash = Dashboard(DashboardConfig.build(env=env, host="127.0.0.1", port=0), proc.url)
        runner = web.AppRunner(create_app(dash))
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = runner.addresses[0][1]
        base = f"http://127.0.0.1:{port}"
        email = Queue("email", redis_url=proc.url)

        async def send(job: Job) -> None:
            return None

        mailer = Worker(email, send, concurrency=5, rate_limit=40.0)

        async def traffic() -> None:  # steady adds and sends, so the overview has rates
            i = 0
            while True:
                await email.add_bulk([{"to": f"user{i + k}@example.com", "subject": "Receipt"}
                                      for k in range(10)])
                i += 10
                await anyio.sleep(0.2)

        async with anyio.create_task_group() as tg:
            tg.start_soon(holder.run)
            tg.start_soon(mailer.run)
            tg.start_soon(traffic)
            await holding.wait()
            async with async_playwright() as pw:
                browser = await pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
                page = await browser.new_page(viewport={"width": 1280, "height": 760})
                await page.goto(base + "/")
                await page.screenshot(path=str(out / "login.png"))
                await page.fill("input[name=token]", OPERATOR)
                await page.click("button[type=submit]")
                shots = [
                    ("overview.png", "/"),
                    ("queue-waiting.png", "/q/sms"),
                    ("queue-active.png", "/q/sms?state=active"),
                    ("queue-delayed.png", "/q/sms?state=delayed"),
                    ("queue-completed.png", "/q/sms?state=completed"),
                    ("job.png", f"/q/sms/jobs/{waiting_id}"),
                    ("job-failed.png", f"/q/sms/jobs/{dead_id}"),
                    ("dead-letters.png", "/q/sms/dead"),
                    ("workers.png", "/q/sms/workers"),
                    ("flow.png", "/q/reports/jobs/weekly-%7B2026-w18%7D"),
                    ("queue-partitions.png", "/q/push?limit=8"),
                    ("breakers.png", "/breakers"),
                ]
                for name, path in shots:
                    await page.goto(base + path)
                    await page.wait_for_selector("body[data-live-state=open], body:not([data-live])")
                    if path == "/":  # rates need two readings a second apart
                        await expect(page.locator('[data-rate="email:done"]')).not_to_have_text(
                            "-", timeout=15_000)
                    await page.screenshot(path=str(out / name),
                                          full_page=name == "flow.png")
                    print(f"wrote {out / name}", file=sys.stderr)
                await page.goto(base + "/")
                await page.fill("form.search input[name=q]", SEARCHED)
                await page.click("form.search button")
                await page.wait_for_selector("table.found")
                await page.screenshot(path=str(out / "search-phone.png"))
                print(f"wrote {out / 'search-phone.png'}", file=sys.stderr)
                await browser.close()
            release.set()
            await holder.close()
            await mailer.close()
            tg.cancel_scope.cancel()
        await email.close()
        await runner.cleanup()


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default=str(ROOT / "docs" / "dashboard"))
    args = p.parse_args()
    if not os.path.exists(CHROMIUM):
        print(f"{CHROMIUM} is missing: apt-get install -y chromium", file=sys.stderr)
        return 2
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    anyio.run(shoot, out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
