"""Start a throw-away ``redis-server`` on loopback: for the default local setup, tests and benchmarks.

The process is ours: persistence off unless asked, bound to 127.0.0.1, a free port,
its own working directory, stopped (and its directory removed) by ``stop()``.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from .errors import ConfigError


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


INSTALL_HINT = ("install redis-server (Debian/Ubuntu: sudo apt-get install redis-server; "
                "Fedora: sudo dnf install redis; macOS: brew install redis)")


def redis_server_binary() -> str | None:
    return shutil.which("redis-server")


@dataclass
class RedisProcess:
    port: int
    directory: Path
    args: list[str]
    proc: subprocess.Popen[bytes] | None = None
    _own_dir: bool = field(default=False, repr=False)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 10.0) -> RedisProcess:
        binary = redis_server_binary()
        if binary is None:
            raise ConfigError(f"redis-server is not installed: {INSTALL_HINT}")
        self.proc = subprocess.Popen(
            [binary, *self.args],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise ConfigError(
                    f"redis-server exited at start (code {self.proc.returncode}), "
                    f"see {self.directory / 'redis.log'}"
                )
            if self.ping():
                return self
            time.sleep(0.02)
        self.stop()
        raise ConfigError(f"redis-server did not answer on 127.0.0.1:{self.port} in {timeout}s")

    def ping(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as s:
                s.sendall(b"PING\r\n")
                return s.recv(64).startswith(b"+PONG")
        except OSError:
            return False

    def kill(self, sig: int = signal.SIGKILL) -> None:
        """Kill the server abruptly (fault injection); the directory is kept for a restart."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)
            self.proc.wait(timeout=10)

    def restart(self, timeout: float = 10.0) -> RedisProcess:
        self.kill()
        return self.start(timeout)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
        if self._own_dir:
            shutil.rmtree(self.directory, ignore_errors=True)

    def __enter__(self) -> RedisProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def start_redis_server(
    port: int | None = None,
    directory: str | os.PathLike[str] | None = None,
    *,
    appendonly: bool = False,
    appendfsync: str = "always",
    extra_args: Sequence[str] = (),
) -> RedisProcess:
    """Start ``redis-server`` on 127.0.0.1 and wait until it answers PING."""
    own = directory is None
    path = Path(tempfile.mkdtemp(prefix="streamq-redis-")) if own else Path(directory)  # type: ignore[arg-type]
    path.mkdir(parents=True, exist_ok=True)
    port = port or free_port()
    args = [
        "--port", str(port),
        "--bind", "127.0.0.1",
        "--dir", str(path),
        "--save", "",
        "--appendonly", "yes" if appendonly else "no",
        "--appendfsync", appendfsync,
        "--logfile", str(path / "redis.log"),
        "--daemonize", "no",
        *extra_args,
    ]
    proc = RedisProcess(port=port, directory=path, args=args, _own_dir=own)
    with contextlib.suppress(Exception):
        return proc.start()
    proc.stop()
    return proc.start()  # one retry: the free port may have been taken in between
