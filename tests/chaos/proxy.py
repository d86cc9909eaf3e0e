"""A loopback TCP proxy with toxics, for connection faults (toxiproxy is not in Debian 12).

    proxy = await Proxy("127.0.0.1", redis_port).start()     # listens on 127.0.0.1:<free>
    client = Redis.from_url(proxy.url)
    proxy.latency(50, jitter=10)        # both directions, every chunk
    proxy.blackhole()                   # hold the sockets open, pass nothing (timeout=0)
    proxy.reset_peers()                 # RST every open connection (SO_LINGER 0)
    proxy.limit_data(0)                 # close after n more bytes downstream: reply lost
    proxy.slicer(3, 0.001)              # 3-byte pieces, 1 ms apart
    await proxy.down() / proxy.up()     # refuse new connections and close the open ones
    proxy.heal()                        # remove every toxic
    await proxy.stop()

Directions are ``"upstream"`` (client -> server), ``"downstream"`` (server -> client) or
``"both"``. The proxy listens on 127.0.0.1 only and stops itself after ``lifetime`` s.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import socket
import struct
from dataclasses import dataclass, field

UP, DOWN = "upstream", "downstream"


@dataclass
class Toxics:
    latency_ms: float = 0.0
    jitter_ms: float = 0.0
    blackhole: bool = False
    limit: int | None = None  # bytes still allowed through before the connection closes
    slice_size: int = 0
    slice_delay: float = 0.0


@dataclass(eq=False)
class _Conn:
    client: asyncio.StreamWriter
    server: asyncio.StreamWriter
    tasks: list[asyncio.Task[None]] = field(default_factory=list)
    sent: dict[str, int] = field(default_factory=lambda: {UP: 0, DOWN: 0})


def _rst(writer: asyncio.StreamWriter) -> None:
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


class Proxy:
    def __init__(self, upstream_host: str, upstream_port: int, *, lifetime: float = 600.0,
                 seed: int = 7) -> None:
        self.upstream = (upstream_host, upstream_port)
        self.lifetime = lifetime
        self.toxics = {UP: Toxics(), DOWN: Toxics()}
        self.conns: set[_Conn] = set()
        self.accepted = 0
        self.reset_new = False
        self._server: asyncio.Server | None = None
        self._port = 0
        self._random = random.Random(seed)
        self._expiry: asyncio.TimerHandle | None = None

    # -- lifecycle -----------------------------------------------------------------------------
    @property
    def port(self) -> int:
        return self._port

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self._port}/0"

    async def start(self) -> Proxy:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", self._port)
        self._port = self._server.sockets[0].getsockname()[1]
        if self._expiry is None:
            self._expiry = asyncio.get_running_loop().call_later(
                self.lifetime, lambda: asyncio.ensure_future(self.stop()))
        return self

    async def stop(self) -> None:
        if self._expiry is not None:
            self._expiry.cancel()
            self._expiry = None
        await self.down()

    async def down(self) -> None:
        """Refuse new connections (nothing listens) and close every open one."""
        if self._server is not None:
            self._server.close()
            self._server = None
        for conn in list(self.conns):
            self._close(conn)

    async def up(self) -> None:
        if self._server is None:
            await self.start()

    # -- toxics ----------------------------------------------------------------------------------
    def _dirs(self, direction: str) -> list[Toxics]:
        return [self.toxics[d] for d in ((UP, DOWN) if direction == "both" else (direction,))]

    def latency(self, ms: float, jitter: float = 0.0, direction: str = "both") -> None:
        for t in self._dirs(direction):
            t.latency_ms, t.jitter_ms = ms, jitter

    def blackhole(self, direction: str = "both") -> None:
        for t in self._dirs(direction):
            t.blackhole = True

    def limit_data(self, n: int, direction: str = DOWN) -> None:
        """Close each connection after ``n`` more bytes in ``direction``: the command ran,
        its reply is lost."""
        for t in self._dirs(direction):
            t.limit = n
        for conn in self.conns:
            for d in ((UP, DOWN) if direction == "both" else (direction,)):
                conn.sent[d] = 0

    def slicer(self, size: int, delay: float, direction: str = "both") -> None:
        for t in self._dirs(direction):
            t.slice_size, t.slice_delay = size, delay

    def reset_peers(self, new_too: bool = False) -> None:
        """RST every open connection (and, with ``new_too``, each new one until healed)."""
        self.reset_new = new_too
        for conn in list(self.conns):
            _rst(conn.client)
            _rst(conn.server)
            self._close(conn)

    def heal(self) -> None:
        self.toxics = {UP: Toxics(), DOWN: Toxics()}
        self.reset_new = False

    # -- the pipes ----------------------------------------------------------------------------------
    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted += 1
        if self.reset_new:
            _rst(writer)
            return
        try:
            s_reader, s_writer = await asyncio.open_connection(*self.upstream)
        except OSError:
            _rst(writer)
            return
        conn = _Conn(writer, s_writer)
        self.conns.add(conn)
        conn.tasks = [
            asyncio.ensure_future(self._pipe(conn, reader, s_writer, UP)),
            asyncio.ensure_future(self._pipe(conn, s_reader, writer, DOWN)),
        ]

    async def _pipe(self, conn: _Conn, reader: asyncio.StreamReader,
                    writer: asyncio.StreamWriter, direction: str) -> None:
        try:
            while True:
                data = await reader.read(65536)
                if not data:
                    break
                t = self.toxics[direction]
                if t.blackhole:
                    continue  # dropped on the floor, the socket stays open
                if t.latency_ms:
                    jitter = self._random.uniform(-t.jitter_ms, t.jitter_ms)
                    await asyncio.sleep(max(0.0, t.latency_ms + jitter) / 1000)
                if t.limit is not None:
                    room = t.limit - conn.sent[direction]
                    if room <= 0:
                        break
                    data = data[:room]
                conn.sent[direction] += len(data)
                if t.slice_size:
                    for i in range(0, len(data), t.slice_size):
                        writer.write(data[i:i + t.slice_size])
                        await writer.drain()
                        await asyncio.sleep(t.slice_delay)
                else:
                    writer.write(data)
                    await writer.drain()
                if t.limit is not None and conn.sent[direction] >= t.limit:
                    break
        except (ConnectionError, OSError):
            pass
        finally:
            self._close(conn)

    def _close(self, conn: _Conn) -> None:
        if conn not in self.conns:
            return
        self.conns.discard(conn)
        for w in (conn.client, conn.server):
            w.transport.abort()
        current = asyncio.current_task()
        for task in conn.tasks:
            if task is not current:
                task.cancel()
