"""T4: poison and malformed entries written straight into the lane stream go to the dead
letters at once, with a one-line reason and no retry; the worker (the real CLI, SMS
dispatcher, mock provider) keeps running and every good job completes.

Bad entries are derived from a real entry the engine wrote (its envelope is the template),
so the test follows the envelope as it evolves: only the part under test is broken.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
import msgspec
import pytest

from streamq import Job, JobOptions, PayloadError, Queue, Worker
from streamq.devredis import start_redis_server
from streamq.sms import Recipient, SMSJob, WelcomeSMS, create_welcome_sms_job
from tests.chaos.harness import ROOT, poll, redis_client

pytestmark = pytest.mark.chaos

NUMBER = "+254712345678"
GOOD = 1000
BAD_EVERY = 10  # one bad entry after every 10 good jobs: 100 bad entries

Fields = dict[bytes, bytes]
enc = msgspec.msgpack.encode


def welcome(i: int) -> WelcomeSMS:
    return WelcomeSMS(id=f"g{i:05d}", timestamp=int(time.time() * 1000),
                      recipient=Recipient(phone_number=NUMBER), user_name="Alice")


def _entry(tmpl: Fields, d: bytes | None = None, drop: tuple[bytes, ...] = (),
           extra: Fields | None = None, rename: tuple[bytes, bytes] | None = None) -> Fields:
    f = dict(tmpl)
    if d is not None:
        f[b"d"] = d
    for k in drop:
        f.pop(k, None)
    if rename is not None:
        f[rename[1]] = f.pop(rename[0])
    f.update(extra or {})
    return f


async def _swap_for_raw(r: Any, q: Queue, **changes: bytes) -> None:
    """Add a real job, then replace its lane entry by a hand-written copy with ``changes``
    (field name -> value): a poison entry with an otherwise genuine envelope."""
    await q.add({}, JobOptions(job_id="tmpl"))
    (entry_id, tmpl), = await r.xrange(q.keys.lanes[1])
    await r.xdel(q.keys.lanes[1], entry_id)
    await r.xadd(q.keys.lanes[1], {**tmpl, **{k.encode(): v for k, v in changes.items()}})


def poison_kinds(tmpl: Fields) -> dict[str, tuple[Callable[[], Fields], str]]:
    """The 12 kinds of T4 (docs/reliability.md): kind -> (entry maker, regex the reason must match)."""
    base: dict[str, Any] = msgspec.msgpack.decode(tmpl[b"d"])
    return {
        "not_msgpack": (lambda: _entry(tmpl, d=b"\xc1\xc1 not msgpack"), r"decode: malformed"),
        "not_a_map": (lambda: _entry(tmpl, d=enc([1, 2, 3])), r"decode: Expected `object`"),
        "unknown_tag": (lambda: _entry(tmpl, d=enc({**base, "type": "fax"})), r"'fax'.*type"),
        "missing_recipient": (
            lambda: _entry(tmpl, d=enc({k: v for k, v in base.items() if k != "recipient"})),
            r"missing required field `recipient`"),
        "wrong_types": (lambda: _entry(tmpl, d=enc({**base, "timestamp": "yesterday"})),
                        r"Expected `int`.*timestamp"),
        "invalid_phone": (lambda: _entry(tmpl, d=enc({**base, "recipient": {"phone_number": "+1"}})),
                          r"phone_number"),
        "huge_extra_field": (lambda: _entry(tmpl, d=enc({**base, "junk": "x" * 100_000})),
                             r"payload \d+ B exceeds limit 65536 B"),
        "ten_megabytes": (lambda: _entry(tmpl, d=enc({**base, "junk": b"x" * (10 << 20)})),
                          r"exceeds limit 65536 B"),
        "deep_nesting": (lambda: _entry(tmpl, d=b"\x91" * 10_000 + b"\xc0"), r"decode"),
        "empty_field_set": (lambda: {b"j": tmpl[b"j"]}, r"malformed stream entry"),
        "future_envelope": (lambda: _entry(tmpl, extra={b"v": b"99"}, rename=(b"d", b"p2")),
                            r"malformed stream entry"),
        "non_utf8_field_name": (lambda: _entry(tmpl, rename=(b"d", b"\xff\xfed")),
                                r"malformed stream entry"),
    }


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


@pytest.mark.timeout(90)
async def test_t4_poison_entries_are_dead_lettered_at_once_and_good_jobs_complete(
    tmp_path: Path,
) -> None:
    server = start_redis_server(directory=tmp_path / "redis")
    r = redis_client(server.url)
    q = Queue("poison", redis_url=server.url, job_type=SMSJob)
    lane = q.keys.lanes[1]
    errlog = tmp_path / "worker.err"
    proc: subprocess.Popen[bytes] | None = None
    try:
        await q.add(welcome(GOOD), JobOptions(job_id=f"g{GOOD:05d}"))
        (_, tmpl), = await r.xrange(lane)
        kinds = poison_kinds(tmpl)
        env = dict(os.environ, REDIS_URL=server.url, PYTHONPATH=str(ROOT))
        with open(errlog, "wb") as err:
            proc = subprocess.Popen(
                [sys.executable, "-m", "streamq.worker", "--queue", "poison", "--provider", "mock",
                 "--rate-limit", "0", "--concurrency", "20", "--log-format", "json"],
                cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=err)
        await poll(lambda: _count(q, "completed", 1), 15, message="the worker to start")

        bad: dict[str, tuple[str, int]] = {}  # job id -> (kind, Redis ms of its entry)
        names = list(kinds)
        for chunk in range(GOOD // BAD_EVERY):
            await q.add_bulk([(welcome(i), JobOptions(job_id=f"g{i:05d}"))
                              for i in range(chunk * BAD_EVERY, (chunk + 1) * BAD_EVERY)])
            kind = names[chunk % len(names)]
            job_id = f"bad-{kind.replace('_', '-')}-{chunk:03d}"
            fields = kinds[kind][0]()
            fields[b"j"] = job_id.encode()
            entry_id = await r.xadd(lane, fields)
            bad[job_id] = (kind, int(entry_id.split(b"-")[0]))

        await poll(lambda: _count(q, "completed", GOOD + 1), 30, 0.05, "the good jobs")
        await poll(lambda: _count(q, "failed", len(bad)), 10, 0.05, "the dead letters")
        assert proc.poll() is None, "the worker died"

        dead = {f[b"j"].decode(): f for _, f in await r.xrange(q.keys.dead)}
        assert set(dead) == set(bad), "only the bad entries are dead, each once"
        slow = {}
        for job_id, (kind, added_ms) in bad.items():
            f = dead[job_id]
            reason = f[b"e"].decode()
            assert "\n" not in reason and "\r" not in reason and len(reason) <= 500, reason
            assert re.search(kinds[kind][1], reason), (kind, reason)
            assert int(f[b"n"]) <= 1, f"{kind} was retried: {f[b'n']!r}"
            # "at once": on its first claim, not after a retry's backoff or a 30 s
            # visibility timeout. The entry waits behind up to a thousand good jobs, which
            # a loaded 2-core machine works through in about a second.
            if int(f[b"f"]) - added_ms > 5000:
                slow[job_id] = int(f[b"f"]) - added_ms
        assert not slow, f"dead-lettered later than 5 s after being written: {slow}"
        c = await q.counts()
        assert (c["waiting"], c["active"], c["delayed"]) == (0, 0, 0)
    finally:
        if proc is not None and proc.poll() is None:
            proc.terminate()
            await anyio.to_thread.run_sync(lambda: proc.wait(15))
        await q.close()
        await r.aclose()
        server.stop()
    logs = errlog.read_text(errors="replace")
    assert "Traceback" not in logs
    assert "retry_scheduled" not in logs
    assert proc.returncode == 0


async def _count(q: Queue, name: str, value: int) -> bool:
    return (await q.counts())[name] >= value


@pytest.mark.timeout(30)
async def test_t4_producer_refuses_bad_payloads_and_writes_nothing(tmp_path: Path) -> None:
    server = start_redis_server(directory=tmp_path / "redis")
    r = redis_client(server.url)
    typed = Queue("refuse", redis_url=server.url, job_type=SMSJob)
    plain = Queue("refuse", redis_url=server.url)
    try:
        await typed.connect()
        before = await r.dbsize()
        with pytest.raises(ValueError, match=r"exceeds limit 65536 B"):
            await plain.add({"blob": b"x" * 70_000})
        with pytest.raises(ValueError, match=r"(?i)phone|number"):
            await create_welcome_sms_job(recipient=Recipient(phone_number="+1"),
                                         user_name="Alice", queue=typed)
        with pytest.raises(ValueError, match=r"fax|type"):
            await typed.add({"type": "fax", "id": "x1", "timestamp": 1,
                             "recipient": {"phone_number": NUMBER}})
        with pytest.raises(PayloadError):
            await typed.add(WelcomeSMS(id="x2", timestamp=1, recipient=Recipient(phone_number=NUMBER),
                                       user_name="A" * 10_000))
        assert await r.dbsize() == before
        for lane in typed.keys.lanes:
            assert await r.xlen(lane) == 0
    finally:
        await typed.close()
        await plain.close()
        await r.aclose()
        server.stop()


@pytest.mark.timeout(30)
async def test_t4_non_utf8_job_id_is_dead_lettered_and_the_worker_survives(tmp_path: Path) -> None:
    server = start_redis_server(directory=tmp_path / "redis")
    r = redis_client(server.url)
    q = Queue("nonutf8", redis_url=server.url)
    ran: list[str] = []
    crashed: list[BaseException] = []

    async def handler(job: Job) -> None:
        ran.append(job.id)

    worker = Worker(q, handler, rate_limit=None)

    async def run() -> None:
        try:
            await worker.run()
        except BaseException as exc:  # the finding is that it raises at all
            crashed.append(exc)

    try:
        await _swap_for_raw(r, q, j=b"\xff\xfebad")
        await q.add({}, JobOptions(job_id="after"))
        async with anyio.create_task_group() as tg:
            tg.start_soon(run)
            await poll(lambda: "after" in ran or crashed, 10, message="the good job")
            await worker.close()
        assert crashed == [], f"the worker died: {crashed!r}"
        assert (await q.counts())["failed"] == 1
    finally:
        await q.close()
        await r.aclose()
        server.stop()


@pytest.mark.timeout(30)
async def test_t4_oversize_reason_states_the_size(tmp_path: Path) -> None:
    server = start_redis_server(directory=tmp_path / "redis")
    r = redis_client(server.url)
    q = Queue("size", redis_url=server.url)
    seen: list[str] = []

    async def handler(job: Job) -> None:
        raise AssertionError("an oversize payload reached the handler")

    worker = Worker(q, handler, rate_limit=None)
    worker.on("dead", lambda e: seen.append(e.error or ""))
    try:
        await _swap_for_raw(r, q, j=b"big", d=enc(b"x" * (10 << 20)))
        async with anyio.create_task_group() as tg:
            tg.start_soon(worker.run)
            await poll(lambda: seen, 10, message="the dead letter")
            await worker.close()
        assert re.fullmatch(r"payload 104857\d\d B exceeds limit 65536 B", seen[0]), seen[0]
    finally:
        await q.close()
        await r.aclose()
        server.stop()


@pytest.mark.timeout(60)
async def test_t4_worker_memory_stays_bounded_with_ten_megabyte_entries(tmp_path: Path) -> None:
    """T4 (docs/reliability.md): worker RSS growth <= 50 MB while poison (incl. 10 MB) entries pass."""
    server = start_redis_server(directory=tmp_path / "redis")
    r = redis_client(server.url)
    q = Queue("rss", redis_url=server.url)
    proc: subprocess.Popen[bytes] | None = None
    try:
        await q.add({}, JobOptions(job_id="warm"))
        (_, tmpl), = await r.xrange(q.keys.lanes[1])
        env = dict(os.environ, REDIS_URL=server.url, PYTHONPATH=str(ROOT))
        proc = subprocess.Popen(
            [sys.executable, "-m", "streamq.worker", "--queue", "rss", "--rate-limit", "0",
             "--concurrency", "20", "--handler", "tests.chaos.handlers:noop"],
            cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        await poll(lambda: _count(q, "completed", 1), 15, message="the worker to start")
        before = rss_mb(proc.pid)
        for i in range(8):
            await r.xadd(q.keys.lanes[1], {**tmpl, b"j": f"big{i}".encode(),
                                           b"d": b"x" * (10 << 20)})
        await poll(lambda: _count(q, "failed", 8), 20, 0.05, "the dead letters")
        growth = rss_mb(proc.pid) - before
        assert growth <= 50, f"worker RSS grew {growth:.0f} MB"
    finally:
        if proc is not None and proc.poll() is None:
            proc.terminate()
            await anyio.to_thread.run_sync(lambda: proc.wait(15))
        await q.close()
        await r.aclose()
        server.stop()
