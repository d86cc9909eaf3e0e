"""Page-load timing at 100,000 waiting jobs, reported (printed), not asserted; what is
asserted is that the pages are right. The other states at 100k are measured by
``python -m benchmarks.dashboard_pages`` (hand-run: filling them takes longer)."""

from __future__ import annotations

import re
import statistics
import time

import aiohttp
import pytest

from streamq import Queue
from streamq.devredis import start_redis_server
from tests.support.dashboard import VIEWER, bearer, running_dashboard

N = 100_000


async def timed_get(s: aiohttp.ClientSession, url: str) -> tuple[float, str]:
    t0 = time.perf_counter()
    async with s.get(url, headers=bearer(VIEWER)) as r:
        text = await r.text()
        assert r.status == 200, text[:300]
    return (time.perf_counter() - t0) * 1000, text


def job_ids(html: str) -> list[str]:
    return re.findall(r'<td><a href="/q/[^/]+/jobs/([^"]+)" class="mono">', html)


@pytest.mark.timeout(120)
async def test_queue_pages_at_100k_waiting_jobs(capsys: pytest.CaptureFixture[str]) -> None:
    with start_redis_server() as proc:
        async with Queue("big", redis_url=proc.url) as q:
            await q.ensure_groups()
            t0 = time.perf_counter()
            refs = await q.add_bulk([{"i": i, "to": "+254712345678"} for i in range(N)])
            fill_s = time.perf_counter() - t0
            assert (await q.counts())["waiting"] == N
            async with running_dashboard(proc.url) as d, aiohttp.ClientSession() as s:
                base = d.url + "/q/big?state=waiting"
                first: list[float] = []
                nxt: list[float] = []
                for _ in range(5):
                    ms, page1 = await timed_get(s, base)
                    first.append(ms)
                    m = re.search(r'href="([^"]*cursor=[^"]+)" class="next"', page1)
                    assert m is not None
                    ms, page2 = await timed_get(s, d.url + m.group(1).replace("&amp;", "&"))
                    nxt.append(ms)
                ids = [r.job_id for r in refs]
                assert job_ids(page1) == ids[:50] and job_ids(page2) == ids[50:100]
                # a page 90,000 jobs deep costs the same: its cursor is the 89,999th job's
                cursor = (await q.list_jobs("waiting", limit=1)).next_cursor
                assert cursor is not None
                entry = (await q.redis.xrange(q.keys.lanes[1], count=90_000))[-1][0].decode()
                deep_cursor = cursor.split(".")[0] + ".1:" + entry
                deep: list[float] = []
                for _ in range(5):
                    ms, page3 = await timed_get(s, base + "&cursor=" + deep_cursor)
                    deep.append(ms)
                assert job_ids(page3) == ids[90_000:90_050]
                ms_over, _ = await timed_get(s, d.url + "/")
    with capsys.disabled():
        print(f"\n[dashboard timing] {N:,} waiting jobs (filled in {fill_s:.1f}s): queue page "
              f"{statistics.median(first):.1f} ms, next page {statistics.median(nxt):.1f} ms, "
              f"page at job 90,000 {statistics.median(deep):.1f} ms, overview {ms_over:.1f} ms "
              "(median of 5, HTTP over loopback)")
