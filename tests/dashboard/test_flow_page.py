"""A job page of a flow shows the tree (over HTTP; tests/dashboard/test_browser_flows_providers.py
drives it in the browser): parents with their policy and pending count, children with
their state, outcomes recorded with the parent, children on other queues linked to their
queue, a finished child reached through the tree's link, and the parent named in a URL
believed only when it lists the job."""

from __future__ import annotations

import re

import aiohttp

from streamq import FlowJob, Job, JobOptions, PermanentError, Queue, Worker
from streamq.flows.view import read_flow
from tests.support.dashboard import VIEWER, bearer, running_dashboard
from tests.support.util import running, wait_until

HTML = {"Accept": "text/html"}
PHONE = "+254712345678"


async def get(s: aiohttp.ClientSession, url: str) -> tuple[int, str]:
    async with s.get(url, headers={**bearer(VIEWER), **HTML}, allow_redirects=False) as r:
        return r.status, await r.text()


def node(html: str, job_id: str) -> str:
    """The tree line of one node (up to its children's list)."""
    m = re.search(rf'<li class="flow-node[^"]*" data-flow-node="{re.escape(job_id)}">(.*?)(?:<ul>|</li>)',
                  html, re.S)
    assert m, f"no node {job_id}"
    return m.group(1)


async def test_a_flow_job_page_shows_the_tree(redis_url: str, queue_name: str) -> None:
    other = queue_name + "f"
    async with Queue(queue_name, redis_url=redis_url) as q, \
            Queue(other, redis_url=redis_url) as fq, aiohttp.ClientSession() as s:
        await q.ensure_groups()
        await fq.ensure_groups()
        ref = await q.add_flow(FlowJob(
            data={"report": "weekly"}, options=JobOptions(job_id="root-{w1}"), children=[
                FlowJob(data={"n": 1}, queue=fq, options=JobOptions(job_id="ok-{w1}")),
                FlowJob(data={"n": 2}, queue=fq, options=JobOptions(job_id="bad-{w1}", attempts=1)),
                FlowJob(data={"n": 3}, options=JobOptions(job_id="mid-{w1}"), on_child_failure="fail",
                        children=[FlowJob(data={"n": 4, "to": PHONE},
                                          options=JobOptions(job_id="leaf-{w1}"))]),
            ]), on_child_failure="continue")
        assert ref.ids() == ["root-{w1}", "ok-{w1}", "bad-{w1}", "mid-{w1}", "leaf-{w1}"]

        async def fetch(job: Job) -> dict[str, str]:
            if job.data["n"] == 2:
                raise PermanentError(f"source retired, call {PHONE}")
            return {"rows": "5", "owner": PHONE}

        async with running(Worker(fq, fetch, rate_limit=None)):
            await wait_until(lambda: _pending(q, "root-{w1}", 1), 30, message="two children done")
        async with running_dashboard(redis_url, queues=[queue_name, other]) as d:
            # the root: every node, states, policy, pending, outcomes recorded with it
            status, html = await get(s, d.url + f"/q/{queue_name}/jobs/root-%7Bw1%7D")
            assert status == 200, html[:300]
            assert "<h2>Flow</h2>" in html and "flow of 5 jobs" in html
            root = node(html, "root-{w1}")
            assert "waiting_children" in root and "3 children" in root
            assert 'data-flow-pending="root-{w1}">1<' in root and "<b>continue</b>" in root
            ok = node(html, "ok-{w1}")
            assert "completed" in ok and f"/q/{other}/jobs/ok-%7Bw1%7D?parent=" in ok
            assert f"on queue <b>{other}</b>" in ok and "result" in ok and "+2547****678" in ok
            bad = node(html, "bad-{w1}")
            assert "failed" in bad and "source retired, call +2547****678" in bad
            mid = node(html, "mid-{w1}")
            assert "waiting_children" in mid and "<b>fail</b>" in mid
            assert "waiting" in node(html, "leaf-{w1}")
            assert PHONE not in html and "712345678" not in html
            # a child's page (found by its own link) shows the same tree, itself in focus
            status, html = await get(s, d.url + f"/q/{queue_name}/jobs/leaf-%7Bw1%7D")
            assert status == 200 and 'class="flow-node focus" data-flow-node="leaf-{w1}"' in html
            assert "flow of 5 jobs" in html
            # a completed child without children keeps no link: only the tree's link finds it
            status, html = await get(s, d.url + f"/q/{other}/jobs/ok-%7Bw1%7D")
            assert status == 200 and "<h2>Flow</h2>" not in html
            m = re.search(r'href="(/q/[^"]+/jobs/ok-%7Bw1%7D\?parent=[^"]+)"', (await get(
                s, d.url + f"/q/{queue_name}/jobs/root-%7Bw1%7D"))[1])
            assert m
            status, html = await get(s, d.url + m.group(1).replace("&amp;", "&"))
            assert status == 200 and 'class="flow-node focus" data-flow-node="ok-{w1}"' in html
            # a parent named in the URL that does not list the job is not believed
            stray = await q.add({"n": 9}, JobOptions(job_id="stray"))
            status, html = await get(
                s, d.url + f"/q/{queue_name}/jobs/{stray.job_id}?parent={queue_name}/0/root-%7Bw1%7D")
            assert status == 200 and "<h2>Flow</h2>" not in html
            status, html = await get(s, d.url + f"/q/{queue_name}/jobs/stray?parent=garbage")
            assert status == 200 and "<h2>Flow</h2>" not in html
        # a dashboard that does not show the children's queue: no links to it, states as
        # their parent recorded them
        async with running_dashboard(redis_url, queues=[queue_name]) as d:
            status, html = await get(s, d.url + f"/q/{queue_name}/jobs/root-%7Bw1%7D")
            assert status == 200
            ok = node(html, "ok-{w1}")
            assert "completed" in ok and "href" not in ok


async def test_a_big_flow_reads_only_a_page_of_states(redis_url: str, queue_name: str) -> None:
    async with Queue(queue_name, redis_url=redis_url) as q:
        await q.add_flow(FlowJob(data={}, options=JobOptions(job_id="big"), children=[
            FlowJob(data={"i": i}, options=JobOptions(job_id=f"c{i}")) for i in range(40)]),
            on_child_failure="fail")

        async def queue_of(name: str) -> Queue | None:
            return q if name == q.name else None

        view = await read_flow(q, "c35", queue_of=queue_of, limit=10)
        assert view is not None and len(view.nodes) == 41
        read = [n.ref.job_id for n in view.nodes if n.read]
        # the asked job and its parent first, then breadth first
        assert len(read) == 10 and "c35" in read and "big" in read
        assert view.nodes[view.focus - 1].ref.job_id == "c35"
        assert view.unread == 31
        assert all(n.state == "waiting" for n in view.nodes[1:] if n.read)
        assert view.root.state == "waiting_children"
        assert await read_flow(q, "nothing-here", queue_of=queue_of) is None
        plain = await q.add({"x": 1})
        assert await read_flow(q, plain.job_id, queue_of=queue_of) is None


async def _pending(q: Queue, job_id: str, n: int) -> bool:
    info = await q.get_job(job_id)
    return info is not None and info.pending_children == n
