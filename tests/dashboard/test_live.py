"""Live updates over SSE (no browser): counts and events arrive, a slow client's buffer
stays bounded and it gets 'resync' instead of an ever-growing backlog, and one slow
client does not hold up another."""

from __future__ import annotations

import json
import socket
from typing import Any

import aiohttp
import anyio

from streamq import Queue
from streamq.dashboard.hub import RESYNC, Subscriber, sse
from streamq.devredis import start_redis_server
from tests.support.dashboard import VIEWER, bearer, running_dashboard
from tests.support.util import wait_until


def test_a_subscriber_buffer_is_bounded_and_overflows_into_one_resync() -> None:
    sub = Subscriber(["q"], capacity=3)
    for i in range(10):
        sub.offer(sse("events", {"i": i}))
        assert sub.buffered <= 3
    assert sub.resyncs >= 1 and sub.high_water <= 3
    for i in range(5):  # counts are state: only the newest is kept
        sub.offer_counts("q", sse("counts", {"i": i}))
    assert sub.buffered <= 4


async def test_a_subscriber_hands_out_what_is_ready() -> None:
    sub = Subscriber(["q"], capacity=2)
    sub.offer("a")
    sub.offer("b")
    sub.offer("c")  # overflow: the backlog becomes one resync
    sub.offer("d")
    assert await sub.next_batch(1.0) == [RESYNC, "d"]
    assert await sub.next_batch(0.01) == []  # nothing: returns after the wait


class SSEReader:
    def __init__(self, response: aiohttp.ClientResponse) -> None:
        self.response = response
        self.messages: list[tuple[str, Any]] = []

    async def pump(self) -> None:
        event, data = "", ""
        async for raw in self.response.content:
            line = raw.decode().rstrip("\n")
            if line.startswith("event: "):
                event = line[7:]
            elif line.startswith("data: "):
                data = line[6:]
            elif line == "" and event:
                self.messages.append((event, json.loads(data)))
                event, data = "", ""

    def counts(self, queue: str) -> list[dict[str, int]]:
        return [d["counts"] for e, d in self.messages if e == "counts" and d["queue"] == queue]

    def events(self) -> list[dict[str, Any]]:
        return [ev for e, d in self.messages if e == "events" for ev in d["events"]]


async def test_live_counts_and_events_follow_the_queue(redis_url: str, queue_name: str) -> None:
    async with Queue(queue_name, redis_url=redis_url) as q, running_dashboard(redis_url) as d, \
            aiohttp.ClientSession() as s:
        await q.add({"a": 1})
        async with s.get(d.url + f"/live?queue={queue_name}", headers=bearer(VIEWER)) as r:
            assert r.status == 200 and r.headers["Content-Type"] == "text/event-stream"
            reader = SSEReader(r)
            async with anyio.create_task_group() as tg:
                tg.start_soon(reader.pump)
                await wait_until(lambda: reader.counts(queue_name), 10, 0.01, "first counts")
                assert reader.counts(queue_name)[0]["waiting"] == 1
                refs = await q.add_bulk([{"i": i} for i in range(3)])
                await wait_until(lambda: any(c["waiting"] == 4 for c in reader.counts(queue_name)),
                                 10, 0.01, "counts after adds")
                await wait_until(lambda: {e["job"] for e in reader.events()} >= {r.job_id for r in refs},
                                 10, 0.01, "added events")
                assert all(e["ev"] == "added" for e in reader.events())
                tg.cancel_scope.cancel()
        await wait_until(lambda: not d.dashboard.hub.subscribers, 5, 0.01, "the client leaves")
        await wait_until(lambda: not d.dashboard.hub.feeds, 5, 0.01, "the feed stops")


async def test_a_slow_client_gets_resync_and_bounded_memory_while_others_keep_up(
        redis_url: str, queue_name: str) -> None:
    capacity = 4
    async with Queue(queue_name, redis_url=redis_url) as q, \
            running_dashboard(redis_url, sse_buffer=capacity) as d, aiohttp.ClientSession() as s:
        await q.add({"a": 1})
        host, port = d.url.removeprefix("http://").split(":")
        slow = socket.socket()
        slow.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        slow.connect((host, int(port)))
        slow.sendall((f"GET /live?queue={queue_name} HTTP/1.1\r\nHost: {host}:{port}\r\n"
                      f"Authorization: Bearer {VIEWER}\r\nAccept: text/event-stream\r\n\r\n").encode())
        try:
            hub = d.dashboard.hub
            await wait_until(lambda: len(hub.subscribers) == 1, 10, 0.01, "the slow client")
            [slow_sub] = hub.subscribers
            async with s.get(d.url + f"/live?queue={queue_name}", headers=bearer(VIEWER)) as r:
                fast = SSEReader(r)
                async with anyio.create_task_group() as tg:
                    tg.start_soon(fast.pump)
                    sent = 0
                    # the slow client reads nothing: its socket, then its buffer, fill up
                    while slow_sub.resyncs == 0:
                        await q.add_bulk([{"i": i} for i in range(500)])
                        sent += 500
                        assert sent < 400_000, "the slow client never overflowed"
                        assert slow_sub.buffered <= capacity + 1
                    assert slow_sub.high_water <= capacity
                    final = (await q.counts())["waiting"]
                    # the fast client still follows, up to the latest counts
                    await wait_until(lambda: final in [c["waiting"] for c in fast.counts(queue_name)],
                                     20, 0.02, "the fast client's counts")
                    tg.cancel_scope.cancel()
            # the slow client, reading at last, finds the resync in its stream
            slow.setblocking(False)
            got = b""

            def read_some() -> bool:
                nonlocal got
                try:
                    while chunk := slow.recv(65536):
                        got += chunk
                except BlockingIOError:
                    pass
                return b"event: resync" in got

            await wait_until(read_some, 30, 0.01, "the resync message")
        finally:
            slow.close()


async def test_the_feed_reports_a_redis_outage_and_recovers(queue_name: str) -> None:
    with start_redis_server() as proc:
        async with Queue(queue_name, redis_url=proc.url) as q:
            await q.add({"a": 1})
        async with running_dashboard(proc.url, queues=[queue_name]) as d, \
                aiohttp.ClientSession() as s, \
                s.get(d.url + f"/live?queue={queue_name}", headers=bearer(VIEWER)) as r:
            reader = SSEReader(r)
            async with anyio.create_task_group() as tg:
                tg.start_soon(reader.pump)
                await wait_until(lambda: reader.counts(queue_name), 10, 0.01, "first counts")
                proc.kill()
                await wait_until(lambda: any(e == "problem" for e, _ in reader.messages), 20, 0.02,
                                 "a problem message")
                problem = next(d for e, d in reader.messages if e == "problem")
                assert "Redis" in problem["error"] and problem["queue"] == queue_name
                proc.start()  # a fresh, empty Redis (no persistence): the feed goes on
                async with Queue(queue_name, redis_url=proc.url) as q2:
                    await q2.add_bulk([{"i": i} for i in range(3)])
                    await wait_until(lambda: any(c["waiting"] == 3 for c in reader.counts(queue_name)),
                                     30, 0.02, "counts after the outage")
                tg.cancel_scope.cancel()
