"""T10 (TLS): ``rediss://`` with a CA bundle and hostname check, mutual TLS, a wrong CA, the
wrong scheme on either port, and ``ssl_cert_reqs=none`` refused by default.

Certificates are made with the ``openssl`` command line (skipped without it); the server is
a redis-server with ``--port 0 --tls-port``.
"""

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

from streamq import ConfigError, JobOptions, Queue, RedisUnavailable
from streamq.devredis import free_port, redis_server_binary, start_redis_server
from streamq.settings import make_redis

pytestmark = [
    pytest.mark.chaos,
    pytest.mark.skipif(shutil.which("openssl") is None or redis_server_binary() is None,
                       reason="needs openssl and redis-server"),
]


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=30)


def _cert(d: Path, name: str, ca: str, san: str | None) -> None:
    _openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{name}.key", "-subj",
             f"/CN={name}", "-out", f"{name}.csr", cwd=d)
    ext = d / f"{name}.ext"
    ext.write_text(f"subjectAltName={san}\n" if san else "extendedKeyUsage=clientAuth\n")
    _openssl("x509", "-req", "-in", f"{name}.csr", "-CA", f"{ca}.crt", "-CAkey", f"{ca}.key",
             "-CAcreateserial", "-days", "1", "-out", f"{name}.crt", "-extfile", ext.name, cwd=d)


def _ca(d: Path, name: str) -> None:
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj",
             f"/CN={name}", "-keyout", f"{name}.key", "-out", f"{name}.crt", cwd=d)


@dataclass
class TLSServer:
    port: int
    certs: Path
    proc: subprocess.Popen[bytes]


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TLSServer]:
    d = tmp_path_factory.mktemp("tls")
    _ca(d, "ca")
    _ca(d, "otherca")
    _cert(d, "server", "ca", "DNS:localhost,IP:127.0.0.1")
    _cert(d, "client", "ca", None)
    port = free_port()
    proc = subprocess.Popen(
        [redis_server_binary() or "redis-server", "--port", "0", "--tls-port", str(port),
         "--bind", "127.0.0.1", "--dir", str(d), "--save", "", "--appendonly", "no",
         "--tls-cert-file", str(d / "server.crt"), "--tls-key-file", str(d / "server.key"),
         "--tls-ca-cert-file", str(d / "ca.crt"), "--tls-auth-clients", "optional",
         "--logfile", str(d / "redis.log")],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    ctx = ssl.create_default_context(cafile=str(d / "ca.crt"))
    deadline = time.monotonic() + 10
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), 0.5) as raw, \
                    ctx.wrap_socket(raw, server_hostname="localhost") as s:
                s.sendall(b"PING\r\n")
                if s.recv(16).startswith(b"+PONG"):
                    break
        except OSError:
            if time.monotonic() > deadline:
                proc.kill()
                raise
            time.sleep(0.05)
    yield TLSServer(port, d, proc)
    proc.terminate()
    proc.wait(10)


async def _roundtrip(q: Queue) -> None:
    ref = await q.add({"x": 1}, JobOptions(job_id="tls1"))
    info = await q.get_job(ref.job_id)
    assert info is not None


@pytest.mark.timeout(30)
async def test_t10_tls_with_ca_and_hostname_check(tls: TLSServer) -> None:
    client = make_redis(f"rediss://localhost:{tls.port}/0", ssl_ca_certs=str(tls.certs / "ca.crt"),
                        ssl_check_hostname=True)
    q = Queue("tls", redis=client)
    try:
        await q.connect()
        await _roundtrip(q)
    finally:
        await client.aclose()


@pytest.mark.timeout(30)
async def test_t10_mutual_tls(tls: TLSServer) -> None:
    client = make_redis(f"rediss://localhost:{tls.port}/0", ssl_ca_certs=str(tls.certs / "ca.crt"),
                        ssl_certfile=str(tls.certs / "client.crt"),
                        ssl_keyfile=str(tls.certs / "client.key"))
    q = Queue("mtls", redis=client)
    try:
        await q.connect()
        await _roundtrip(q)
    finally:
        await client.aclose()


@pytest.mark.timeout(30)
async def test_t10_wrong_ca_is_a_clear_error(tls: TLSServer) -> None:
    url = f"rediss://localhost:{tls.port}/0"
    client = make_redis(url, ssl_ca_certs=str(tls.certs / "otherca.crt"))
    q = Queue("wrongca", redis=client, redis_url=url)
    try:
        with pytest.raises(RedisUnavailable, match="certificate verify failed"):
            await q.connect()
    finally:
        await client.aclose()


async def _fails_fast(url: str, **kwargs: str) -> None:
    client = make_redis(url, **kwargs)
    q = Queue("scheme", redis=client, redis_url=url)
    t0 = time.monotonic()
    try:
        with anyio.move_on_after(2.5), pytest.raises(RedisUnavailable) as info:
            await q.connect()
    finally:
        await client.aclose()
    took = time.monotonic() - t0
    assert took <= 2.0, f"{url}: no error after {took:.1f}s"
    assert "\n" not in str(info.value) and url.split("//")[0] in str(info.value)


@pytest.mark.timeout(30)
async def test_t10_plaintext_client_to_the_tls_port_fails_fast(tls: TLSServer) -> None:
    await _fails_fast(f"redis://127.0.0.1:{tls.port}/0")


@pytest.mark.timeout(30)
async def test_t10_tls_client_to_a_plaintext_port_fails_fast(tls: TLSServer, tmp_path: Path) -> None:
    plain = start_redis_server(directory=tmp_path / "plain")
    try:
        await _fails_fast(f"rediss://localhost:{plain.port}/0",
                          ssl_ca_certs=str(tls.certs / "ca.crt"))
    finally:
        plain.stop()


def test_t10_unverified_tls_is_refused_unless_explicitly_allowed(
    tls: TLSServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("STREAMQ_TLS_INSECURE", raising=False)
    with pytest.raises(ConfigError, match="STREAMQ_TLS_INSECURE"):
        make_redis(f"rediss://localhost:{tls.port}/0", ssl_cert_reqs="none")
    monkeypatch.setenv("STREAMQ_TLS_INSECURE", "1")
    make_redis(f"rediss://localhost:{tls.port}/0", ssl_cert_reqs="none")
