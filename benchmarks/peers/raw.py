"""The raw Redis Streams floor: redis.asyncio + hiredis, no job records, no Lua.

Producer: one ``XADD`` per job (msgpack payload in one field), or pipelined ``XADD``s.
Worker: ``XREADGROUP COUNT 500`` then one pipelined ``XACK`` + ``XDEL`` per batch. In
``noop``/``latency``/``delayed`` mode each fetched entry is decoded and handled in turn
(a no-op handler never yields, so concurrency cannot matter); in ``io`` mode at most
``concurrency`` handlers run at once and it reads only as many entries as slots are free.
This is what a streams engine could do with nothing else to keep: the floor, not a peer.
"""

from __future__ import annotations

import asyncio
from typing import Any

import msgspec

from ..common import Probe, WorkerArgs
from .base import System

GROUP = "bench"
PIPE_CHUNK = 1000


def _client(url: str) -> Any:
    from redis.asyncio import Redis

    return Redis.from_url(url, protocol=2, decode_responses=False)


class RawSystem(System):
    name = "raw"
    label = "raw streams"
    kind = "raw"
    bulk_note = "pipelined XADD, 1,000 per round trip"
    unsupported = {"delayed": "no delayed jobs in the floor"}

    @classmethod
    def check(cls) -> None:
        import redis.asyncio  # noqa: F401

    @classmethod
    def version(cls) -> str:
        import redis

        try:
            import hiredis

            return f"redis-py {redis.__version__} + hiredis {hiredis.__version__}"
        except ImportError:
            return f"redis-py {redis.__version__} (no hiredis)"

    async def open(self) -> None:
        self.r = _client(self.url)
        self.enc = msgspec.msgpack.Encoder()
        await self.r.xgroup_create(self.queue, GROUP, id="0", mkstream=True)

    async def close(self) -> None:
        await self.r.aclose()

    async def add(self, payload: dict[str, Any]) -> None:
        await self.r.xadd(self.queue, {"d": self.enc.encode(payload)})

    async def add_bulk(self, payloads: list[dict[str, Any]]) -> None:
        for start in range(0, len(payloads), PIPE_CHUNK):
            pipe = self.r.pipeline(transaction=False)
            for p in payloads[start : start + PIPE_CHUNK]:
                pipe.xadd(self.queue, {"d": self.enc.encode(p)})
            await pipe.execute()


async def start_worker(args: WorkerArgs, probe: Probe) -> None:
    r = _client(args.url)
    await r.ping()
    dec = msgspec.msgpack.Decoder()
    q = args.queue
    consumer = "raw-worker"

    async def ack(ids: list[bytes]) -> None:
        pipe = r.pipeline(transaction=False)
        pipe.xack(q, GROUP, *ids)
        pipe.xdel(q, *ids)
        await pipe.execute()

    async def inline_loop() -> None:
        while True:
            reply = await r.xreadgroup(GROUP, consumer, {q: ">"}, count=500, block=1000)
            if not reply:
                continue
            entries = reply[0][1]
            for _, fields in entries:
                await probe.handle(dec.decode(fields[b"d"]))
            await ack([entry_id for entry_id, _ in entries])

    async def concurrent_loop() -> None:
        free = asyncio.Semaphore(args.concurrency)
        done: list[bytes] = []
        wake = asyncio.Event()

        async def run_one(entry_id: bytes, data: bytes) -> None:
            try:
                await probe.handle(dec.decode(data))
            finally:
                done.append(entry_id)
                wake.set()
                free.release()

        async def acker() -> None:
            while True:
                await wake.wait()
                wake.clear()
                batch = done[:]
                del done[:]
                if batch:
                    await ack(batch)

        probe.tasks.append(asyncio.get_running_loop().create_task(acker()))
        running: set[asyncio.Task[None]] = set()
        while True:
            await free.acquire()
            slots = 1
            while slots < 500 and not free.locked():
                await free.acquire()
                slots += 1
            reply = await r.xreadgroup(GROUP, consumer, {q: ">"}, count=slots, block=1000)
            entries = reply[0][1] if reply else []
            for _ in range(slots - len(entries)):
                free.release()
            for entry_id, fields in entries:
                t = asyncio.get_running_loop().create_task(run_one(entry_id, fields[b"d"]))
                running.add(t)
                t.add_done_callback(running.discard)

    loop = concurrent_loop if args.mode == "io" else inline_loop
    probe.tasks.append(asyncio.get_running_loop().create_task(loop()))
