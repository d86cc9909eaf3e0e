"""T7: lease fencing. A worker frozen (SIGSTOP) or blocking its own event loop past the
visibility timeout loses its job to another worker; when it wakes, its completion is
rejected, the job is recorded completed once (one ``completed`` event), the zombie logs
"lost claim" and goes on working. A job that kills every worker that runs it is
dead-lettered after ``max_stalled`` stalls instead of being retried forever.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest

from streamq import JobOptions, JobState, Queue
from streamq.devredis import start_redis_server
from streamq.keys import GROUP
from tests.chaos.harness import WorkerPool, poll, redis_client
from tests.support.chaos_ledger import read_events
from tests.support.ledger import read_ledger

pytestmark = pytest.mark.chaos

VT = 1.0


@pytest.mark.parametrize("freeze", ["sigstop", "blocked-loop"])
@pytest.mark.timeout(60)
async def test_t7_zombie_completion_is_fenced_and_the_zombie_carries_on(
    tmp_path: Path, freeze: str
) -> None:
    server = start_redis_server(directory=tmp_path / "redis")
    r = redis_client(server.url)
    q = Queue("zombie", redis_url=server.url)
    ledger = tmp_path / "ledger"
    ledger.mkdir()
    args = ["--vt", str(VT), "--reclaim-interval", "0.2"]
    pool = WorkerPool(server.url, "zombie", ledger, args, size=2)
    try:
        extra = ["--block"] if freeze == "blocked-loop" else []
        a = await pool.respawn(0, extra)
        # blocked-loop: the handler holds the loop 2.5 x vt; sigstop: frozen 2 x vt and more
        await q.add({"sleep": 2.5 * VT if extra else 0.6}, JobOptions(job_id="z"))
        await poll(lambda: read_ledger(ledger).starts, 10, message="A to start the job")
        if freeze == "sigstop":
            os.kill(a.pid, signal.SIGSTOP)
        b = await pool.respawn(1)

        def ends_by(pid: int) -> list[str]:
            return [j for j, p, _ in read_ledger(ledger).ends if p == pid]

        await poll(lambda: ends_by(b.pid), 15, 0.05, "B to reclaim and finish the job")
        if freeze == "sigstop":
            os.kill(a.pid, signal.SIGCONT)
        await poll(lambda: ends_by(a.pid), 10, 0.05, "the zombie to finish its run")
        errlog = pool.errlogs[0]
        await poll(lambda: "lost_claim" in errlog.read_text(), 10, 0.05, "'lost claim' from A")

        c = await q.counts()
        assert c["completed"] == 1, c
        info = await q.get_job("z")
        assert info is not None and info.state is JobState.COMPLETED
        completed = [(j, pid) for j, pid, _ in read_events(ledger).completed]
        assert completed == [("z", b.pid)], "the completed event is B's, and only B's"
        assert a.poll() is None, "the zombie must keep running"

        # the zombie carries on: with B gone, A takes and completes new work
        await pool.terminate(1)
        await q.add(None, JobOptions(job_id="after"))
        await poll(lambda: "after" in ends_by(a.pid), 10, 0.05, "A to run new work")
        await poll(lambda: _completed(q, 2), 5, 0.05, "the new job's completion")
        assert "Traceback" not in errlog.read_text()
    finally:
        pool.kill_all()
        await q.close()
        await r.aclose()
        server.stop()


async def _completed(q: Queue, n: int) -> bool:
    return (await q.counts())["completed"] == n


@pytest.mark.timeout(20)
async def test_t7_heartbeat_cannot_steal_an_entry_another_worker_owns(tmp_path: Path) -> None:
    """finding 6: the extend script checks the owner; a bare XCLAIM min-idle 0 (the control)
    would steal the entry back."""
    server = start_redis_server(directory=tmp_path / "redis")
    r = redis_client(server.url)
    q = Queue("steal", redis_url=server.url)
    try:
        await q.connect()
        await q.ensure_groups()
        lane = q.keys.lanes[1]
        await q.add(None, JobOptions(job_id="s1"))
        await q.add(None, JobOptions(job_id="s2"))
        got = await r.xreadgroup(GROUP, "owner", {lane: ">"}, count=2)
        (e1, _), (e2, _) = got[0][1]
        lost = await q.scripts("extend", list(q.keys.lanes), [GROUP, "thief", 1, 1, e1])
        assert [int(x) for x in lost] == [1], "the thief must learn it does not own the entry"
        rows = await r.xpending_range(lane, GROUP, e1, e1, 1)
        assert rows[0]["consumer"] == b"owner"
        # control: without the owner check, the same heartbeat steals it
        await r.xclaim(lane, GROUP, "thief", 0, [e2], justid=True)
        rows = await r.xpending_range(lane, GROUP, e2, e2, 1)
        assert rows[0]["consumer"] == b"thief"
    finally:
        await q.close()
        await r.aclose()
        server.stop()


@pytest.mark.timeout(60)
async def test_t7_job_that_kills_its_worker_is_dead_lettered_after_max_stalled(
    tmp_path: Path,
) -> None:
    max_stalled = 2
    server = start_redis_server(directory=tmp_path / "redis")
    q = Queue("killer", redis_url=server.url)
    ledger = tmp_path / "ledger"
    ledger.mkdir()
    args = ["--vt", "0.3", "--reclaim-interval", "0.1", "--max-stalled", str(max_stalled),
            "--exit-on-payload"]
    pool = WorkerPool(server.url, "killer", ledger, args, size=1)
    try:
        await q.add({"exit": True}, JobOptions(job_id="killer"))
        deaths = 0

        async def dead_lettered() -> bool:
            nonlocal deaths
            info = await q.get_job("killer")
            if info is not None and info.state is JobState.FAILED:
                return True
            proc = pool.procs.get(0)
            if proc is None or proc.poll() is not None:
                deaths += proc is not None
                assert deaths <= max_stalled + 1, "the job is being retried forever"
                await pool.respawn(0)
            return False

        await poll(dead_lettered, 40, 0.05, "the killer job to be dead-lettered")
        info = await q.get_job("killer")
        assert info is not None and info.error == f"stalled {max_stalled} times"
        runs = [j for j, *_ in read_ledger(ledger).starts]
        assert runs == ["killer"] * max_stalled
        assert deaths == max_stalled
        assert [j for j, *_ in read_events(ledger).dead] == ["killer"]
        assert pool.procs[0].poll() is None, "the sweeper that dead-lettered it lives on"
    finally:
        pool.kill_all()
        await q.close()
        server.stop()
