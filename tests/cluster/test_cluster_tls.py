"""A Redis Cluster over TLS only (``--port 0 --tls-port``, ``--tls-cluster yes``): a
``rediss://`` URL naming one node, with the CA in the URL, finds the cluster and runs a
queue across its masters; without the CA it fails at once in one line."""

from __future__ import annotations

import shutil
import socket
import ssl
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import anyio
import pytest

from streamq import Job, Queue, RedisUnavailable, Worker
from streamq.devredis import free_port, redis_server_binary
from tests.chaos.test_t10_tls import _ca, _cert
from tests.support.util import running, wait_until

pytestmark = pytest.mark.skipif(
    shutil.which("openssl") is None or shutil.which("redis-cli") is None
    or redis_server_binary() is None, reason="needs openssl, redis-server and redis-cli")


@dataclass
class TLSCluster:
    ports: list[int]
    certs: Path

    def url(self, i: int = 0) -> str:
        return f"rediss://127.0.0.1:{self.ports[i]}/0?ssl_ca_certs={self.certs / 'ca.crt'}"


def _tls_ping(port: int, ca: Path) -> bool:
    ctx = ssl.create_default_context(cafile=str(ca))
    try:
        with socket.create_connection(("127.0.0.1", port), 0.5) as raw, \
                ctx.wrap_socket(raw, server_hostname="127.0.0.1") as s:
            s.sendall(b"PING\r\n")
            return s.recv(16).startswith(b"+PONG")
    except OSError:
        return False


def _cli(d: Path, *args: str) -> str:
    return subprocess.run(["redis-cli", "--tls", "--cacert", str(d / "ca.crt"), *args],
                          capture_output=True, text=True, timeout=60, check=True).stdout


@pytest.fixture(scope="module")
def tls_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TLSCluster]:
    d = tmp_path_factory.mktemp("tls-cluster")
    _ca(d, "ca")
    _cert(d, "server", "ca", "DNS:localhost,IP:127.0.0.1")
    procs: list[subprocess.Popen[bytes]] = []
    ports = [free_port() for _ in range(3)]
    try:
        for i, port in enumerate(ports):
            node = d / f"node{i}"
            node.mkdir()
            procs.append(subprocess.Popen(
                [redis_server_binary() or "redis-server", "--port", "0", "--tls-port", str(port),
                 "--bind", "127.0.0.1", "--dir", str(node), "--save", "", "--appendonly", "no",
                 "--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
                 "--cluster-port", str(free_port()), "--tls-cluster", "yes",
                 "--tls-cert-file", str(d / "server.crt"), "--tls-key-file", str(d / "server.key"),
                 "--tls-ca-cert-file", str(d / "ca.crt"), "--tls-auth-clients", "no",
                 "--logfile", str(node / "redis.log")],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        deadline = time.monotonic() + 20
        while not all(_tls_ping(p, d / "ca.crt") for p in ports):
            assert time.monotonic() < deadline, "the TLS nodes did not start"
            time.sleep(0.05)
        _cli(d, "--cluster", "create", *[f"127.0.0.1:{p}" for p in ports],
             "--cluster-replicas", "0", "--cluster-yes")
        while not all("cluster_state:ok" in _cli(d, "-p", str(p), "cluster", "info")
                      for p in ports):
            assert time.monotonic() < deadline + 40, "the TLS cluster did not form"
            time.sleep(0.1)
        yield TLSCluster(ports, d)
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            p.wait(10)


async def test_a_queue_runs_on_a_tls_cluster_from_one_node_url(tls_cluster: TLSCluster) -> None:
    async with Queue("tlsq", redis_url=tls_cluster.url(1), partitions=3) as q:
        await q.connect()
        assert q.is_cluster
        refs = await q.add_bulk([{"i": i} for i in range(300)])
        ran: set[str] = set()

        async def handler(job: Job) -> None:
            ran.add(job.id)

        async with running(Worker(q, handler, rate_limit=None, concurrency=20)):
            await wait_until(lambda: len(ran) == 300, 60, 0.05, "300 jobs")
        assert ran == {r.job_id for r in refs}


async def test_a_tls_cluster_without_the_ca_is_one_line_at_once(tls_cluster: TLSCluster) -> None:
    url = f"rediss://127.0.0.1:{tls_cluster.ports[0]}/0"
    started = anyio.current_time()
    async with Queue("tlsq2", redis_url=url) as q:
        with pytest.raises(RedisUnavailable) as info:
            await q.connect()
    assert anyio.current_time() - started < 5
    text = str(info.value)
    assert "\n" not in text and "certificate" in text.lower()
