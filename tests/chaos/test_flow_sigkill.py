"""A flow under SIGKILL: worker processes die while its children run. Nothing is lost,
every parent is released exactly once, and the root runs once."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from streamq import FlowJob, JobOptions, JobState, Queue
from streamq.devredis import start_redis_server
from tests.chaos.harness import WorkerPool, check, dead_job_ids, end_state, poll, redis_client
from tests.support.ledger import read_ledger

pytestmark = pytest.mark.chaos

MIDS = 4
LEAVES = 15


@pytest.mark.timeout(120)
async def test_sigkill_in_the_middle_of_a_flow_loses_nothing(tmp_path: Path) -> None:
    server = start_redis_server(directory=tmp_path / "redis")
    r = redis_client(server.url)
    q = Queue("flow", redis_url=server.url)
    ledger = tmp_path / "ledger"
    ledger.mkdir()
    # vt 1 s, sweep 0.2 s: a killed worker's jobs are taken over within about 1.2 s
    args = ["--concurrency", "4", "--vt", "1.0", "--reclaim-interval", "0.2"]
    pool = WorkerPool(server.url, "flow", ledger, args, size=2)
    try:
        leaves = {m: [f"leaf-{m}-{i:02d}" for i in range(LEAVES)] for m in range(MIDS)}
        tree = FlowJob(data={"sleep": 0.05}, options=JobOptions(job_id="root"), children=[
            FlowJob(data={"sleep": 0.05}, options=JobOptions(job_id=f"mid-{m}"), children=[
                FlowJob(data={"sleep": 0.15}, options=JobOptions(job_id=leaf, backoff=0.05))
                for leaf in leaves[m]])
            for m in range(MIDS)])
        ref = await q.add_flow(tree, on_child_failure="fail")
        jobs = set(ref.ids())
        assert len(jobs) == 1 + MIDS + MIDS * LEAVES
        await pool.start()

        def done() -> int:
            return len(read_ledger(ledger).done)

        faults = []
        for target in (12, 35):  # two kills, while leaves run (the root is far from ready)
            await poll(lambda t=target: done() >= t, 30, message=f"{target} jobs done")
            faults.append(await pool.sigkill(0, r, q.keys))
            await pool.respawn(0)

        async def root_completed() -> bool:
            info = await q.get_job("root")
            return info is not None and info.state is JobState.COMPLETED

        await poll(root_completed, 60, 0.05, "the root to complete")
        figures = check(attempts=jobs, ok=jobs, unknown=set(), ledger=ledger,
                        dead=await dead_job_ids(r, q.keys), faults=faults)
        print(f"faults: {[(f.pel, f.pel_jobs) for f in faults]}; "
              f"duplicated: {figures.duplicated}")
        assert figures.lost == set() and figures.unexpected == set() and figures.dead == 0
        assert sum(f.pel for f in faults) > 0, "no kill hit a running job: the chaos did not bite"
        # at least once: only what the killed workers held may run twice
        held = {j for f in faults for j in f.pel_jobs}
        assert set(figures.duplicated) <= held
        view = read_ledger(ledger)
        starts = Counter(j for j, _, _, _ in view.starts)
        assert starts["root"] == 1 and view.end_counts["root"] == 1, "the root ran once"
        # every parent was released exactly once, whatever its children went through
        for parent in ["root", *(f"mid-{m}" for m in range(MIDS))]:
            released = [e for e in await q.job_events(parent) if e.name == "children_done"]
            assert len(released) == 1, parent
        assert await end_state(r, q, jobs) == []
        # no flow hash outlives its parent's record
        async for key in r.scan_iter(match="streamq:{flow}:flow:*"):
            assert await r.pttl(key) > 0, key
    finally:
        pool.kill_all()
        await q.close()
        await r.aclose()
        server.stop()
