"""A real local Redis Cluster for tests and benchmarks: 3 masters + 3 replicas.

Six ``redis-server`` processes on free loopback ports (each with its own free cluster-bus
port, ``cluster-port``, so nothing depends on port + 10000 being free), joined by
``redis-cli --cluster create ... --cluster-replicas 1 --cluster-yes``, and ready once
every node says ``cluster_state:ok``, knows all six nodes and every replica's link is
up. ``stop()`` ends them all and removes their directories.

Fault helpers (all synchronous: call them through ``anyio.to_thread.run_sync`` when
producers and workers must keep running meanwhile): SIGKILL and restart a node (a
restarted master rejoins as a replica of the replica that took over), SIGSTOP/SIGCONT,
wait for a failover, and move one slot to another master the way ``redis-cli --cluster
reshard`` does (SETSLOT IMPORTING/MIGRATING, MIGRATE in batches, SETSLOT NODE).
"""

from __future__ import annotations

import contextlib
import shutil
import signal
import subprocess
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis
from redis.crc import key_slot

from streamq.devredis import RedisProcess, free_port, start_redis_server

NODE_TIMEOUT_MS = 1000
"""cluster-node-timeout: a killed master is failed over after about 2-3 times this."""


@dataclass
class LocalCluster:
    nodes: list[RedisProcess]
    base: Path
    node_timeout_ms: int = NODE_TIMEOUT_MS
    stopped: set[int] = field(default_factory=set)
    """Ports of nodes SIGSTOPped (resumed by ``stop`` before they are ended)."""

    # -- start and stop -----------------------------------------------------------------
    @classmethod
    def start(cls, masters: int = 3, replicas: int = 1, *,
              node_timeout_ms: int = NODE_TIMEOUT_MS, timeout: float = 60.0) -> LocalCluster:
        base = Path(tempfile.mkdtemp(prefix="streamq-cluster-"))
        cluster = cls([], base, node_timeout_ms)
        try:
            for i in range(masters * (1 + replicas)):
                cluster.nodes.append(cluster._start_node(base / f"node{i}"))
            cmd = ["redis-cli", "--cluster", "create",
                   *[f"127.0.0.1:{n.port}" for n in cluster.nodes],
                   "--cluster-replicas", str(replicas), "--cluster-yes"]
            out = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
            if out.returncode != 0:
                raise RuntimeError(f"redis-cli --cluster create failed: {out.stdout[-2000:]}"
                                   f"{out.stderr[-2000:]}")
            cluster.wait_ready(timeout)
        except BaseException:
            cluster.stop()
            raise
        return cluster

    def _start_node(self, directory: Path) -> RedisProcess:
        # free ports are picked, not reserved: another process may take one meanwhile
        for attempt in range(3):
            try:
                return self._try_node(directory)
            except Exception:
                if attempt == 2:
                    raise
                shutil.rmtree(directory, ignore_errors=True)
        raise AssertionError("unreachable")

    def _try_node(self, directory: Path) -> RedisProcess:
        return start_redis_server(
            port=free_port(),
            directory=directory,
            extra_args=["--cluster-enabled", "yes",
                        "--cluster-config-file", "nodes.conf",
                        "--cluster-node-timeout", str(self.node_timeout_ms),
                        "--cluster-port", str(free_port()),
                        # a replica may always take over, however long it was cut off
                        "--cluster-replica-validity-factor", "0",
                        "--repl-diskless-sync", "yes",
                        "--repl-diskless-sync-delay", "0",
                        "--appendonly", "no"])

    def stop(self) -> None:
        for node in self.nodes:
            if node.port in self.stopped and node.proc is not None:
                with contextlib.suppress(OSError):
                    node.proc.send_signal(signal.SIGCONT)
            node.stop()
        self.stopped.clear()
        shutil.rmtree(self.base, ignore_errors=True)

    def __enter__(self) -> LocalCluster:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- addresses ------------------------------------------------------------------------
    @property
    def url(self) -> str:
        """A URL naming one node (any node of a cluster will do)."""
        return self.nodes[0].url

    def node(self, port: int) -> RedisProcess:
        return next(n for n in self.nodes if n.port == port)

    @contextlib.contextmanager
    def client(self, node: RedisProcess, timeout: float = 5.0) -> Iterator[redis.Redis]:
        c = redis.Redis(host="127.0.0.1", port=node.port, socket_timeout=timeout,
                        socket_connect_timeout=timeout, decode_responses=True)
        try:
            yield c
        finally:
            c.close()

    def alive(self) -> list[RedisProcess]:
        return [n for n in self.nodes if n.proc is not None and n.proc.poll() is None
                and n.port not in self.stopped]

    def role(self, node: RedisProcess) -> str:
        with self.client(node) as c:
            return str(c.info("replication")["role"])

    def slot_owners(self) -> dict[int, int]:
        """Slot range start -> the port of the master serving it, per a live node's view."""
        for node in self.alive():
            with contextlib.suppress(redis.RedisError), self.client(node) as c:
                owners: dict[int, int] = {}
                for start, end, master, *_ in c.execute_command("CLUSTER SLOTS"):
                    for s in range(int(start), int(end) + 1):
                        owners[s] = int(master[1])
                return owners
        raise RuntimeError("no node of the cluster answers")

    def masters(self) -> list[RedisProcess]:
        """The nodes serving slots now, in port order."""
        ports = sorted(set(self.slot_owners().values()))
        return [self.node(p) for p in ports]

    def master_of_slot(self, slot: int) -> RedisProcess:
        return self.node(self.slot_owners()[slot])

    def master_of_key(self, key: str) -> RedisProcess:
        return self.master_of_slot(key_slot(key.encode()))

    def replicas_of(self, master: RedisProcess) -> list[RedisProcess]:
        with self.client(master) as c:
            info = c.info("replication")
        ports = [int(v["port"]) for k, v in info.items()
                 if k.startswith("slave") and isinstance(v, dict)]
        return [self.node(p) for p in ports if any(n.port == p for n in self.nodes)]

    def non_owner_of(self, key: str) -> RedisProcess:
        """A master that does NOT serve the key's slot (a client must be redirected)."""
        owner = self.master_of_key(key)
        return next(m for m in self.masters() if m.port != owner.port)

    def url_of(self, node: RedisProcess) -> str:
        return node.url

    # -- readiness ------------------------------------------------------------------------
    def wait_ready(self, timeout: float = 60.0) -> None:
        """Every live node: state ok, all slots served, every node known; every replica's
        link to its master up and in sync."""
        self.wait_for(self._ready, timeout, "the cluster to be ready")

    def _ready(self) -> bool:
        live = self.alive()
        try:
            for node in live:
                with self.client(node, 1.0) as c:
                    info = c.execute_command("CLUSTER INFO")
                    if isinstance(info, str):
                        info = dict(line.split(":", 1) for line in info.split()
                                    if ":" in line)
                    if str(info.get("cluster_state")) != "ok":
                        return False
                    if int(info.get("cluster_slots_ok", 0)) != 16384:
                        return False
                    if int(info.get("cluster_known_nodes", 0)) < len(self.nodes):
                        return False
                    repl = c.info("replication")
                    if repl["role"] == "slave" and repl.get("master_link_status") != "up":
                        return False
                    if repl["role"] == "slave" and int(repl.get("master_sync_in_progress", 0)):
                        return False
            # every node's view agrees on who serves the slots
            views = set()
            for node in live:
                with self.client(node, 1.0) as c:
                    rows = c.execute_command("CLUSTER SLOTS")
                views.add(tuple(sorted((int(r[0]), int(r[1]), int(r[2][1])) for r in rows)))
            return len(views) == 1
        except (redis.RedisError, OSError):
            return False

    @staticmethod
    def wait_for(predicate: Callable[[], Any], timeout: float, what: str,
                 interval: float = 0.05) -> Any:
        deadline = time.monotonic() + timeout
        while True:
            value = predicate()
            if value:
                return value
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out after {timeout}s waiting for {what}")
            time.sleep(interval)

    # -- faults ---------------------------------------------------------------------------
    def kill(self, node: RedisProcess) -> None:
        """SIGKILL the node (its directory, with nodes.conf, is kept for a restart)."""
        node.kill(signal.SIGKILL)

    def restart(self, node: RedisProcess) -> None:
        node.start()

    def pause(self, node: RedisProcess) -> None:
        assert node.proc is not None
        node.proc.send_signal(signal.SIGSTOP)
        self.stopped.add(node.port)

    def resume(self, node: RedisProcess) -> None:
        assert node.proc is not None
        node.proc.send_signal(signal.SIGCONT)
        self.stopped.discard(node.port)

    def wait_failover(self, dead: RedisProcess, timeout: float = 30.0) -> RedisProcess:
        """After ``dead`` (a master) was killed: wait until another node serves its slots;
        returns that node."""
        def taken_over() -> RedisProcess | None:
            try:
                owners = self.slot_owners()
            except RuntimeError:
                return None
            ports = set(owners.values())
            if dead.port in ports:
                return None
            for node in self.alive():
                if node.port in ports and self.role(node) == "master":
                    return node
            return None
        return self.wait_for(taken_over, timeout, f"a failover of 127.0.0.1:{dead.port}")  # type: ignore[no-any-return]

    def node_id(self, node: RedisProcess) -> str:
        with self.client(node) as c:
            return str(c.execute_command("CLUSTER MYID"))

    def move_slot(self, slot: int, target: RedisProcess, batch: int = 10,
                  between_batches: Callable[[], None] | None = None) -> int:
        """Migrate one slot to ``target`` as a reshard does; returns the keys moved.
        ``between_batches`` runs after each MIGRATE batch (a test may pause there, so
        clients meet the slot half-moved: ASK and TRYAGAIN)."""
        source = self.master_of_slot(slot)
        if source.port == target.port:
            return 0
        src_id, dst_id = self.node_id(source), self.node_id(target)
        moved = 0
        with self.client(source, 10.0) as src, self.client(target, 10.0) as dst:
            dst.execute_command("CLUSTER SETSLOT", slot, "IMPORTING", src_id)
            src.execute_command("CLUSTER SETSLOT", slot, "MIGRATING", dst_id)
            while True:
                keys = src.execute_command("CLUSTER GETKEYSINSLOT", slot, batch)
                if not keys:
                    break
                src.execute_command("MIGRATE", "127.0.0.1", target.port, "", 0, 10000,
                                    "KEYS", *keys)
                moved += len(keys)
                if between_batches is not None:
                    between_batches()
            for node in (target, source):
                with self.client(node) as c:
                    c.execute_command("CLUSTER SETSLOT", slot, "NODE", dst_id)
            for node in self.masters():
                if node.port not in (source.port, target.port):
                    with self.client(node) as c:
                        c.execute_command("CLUSTER SETSLOT", slot, "NODE", dst_id)
        return moved

    # -- measurements ------------------------------------------------------------------
    def cpu_seconds(self, node: RedisProcess) -> float:
        """used_cpu_sys + used_cpu_user of the node's process so far."""
        with self.client(node) as c:
            info = c.info("cpu")
        return float(info["used_cpu_sys"]) + float(info["used_cpu_user"])

    def error_replies(self) -> Counter[str]:
        """Error replies sent so far by the live nodes, by prefix (TRYAGAIN, ASK,
        MOVED...: INFO errorstats)."""
        total: Counter[str] = Counter()
        for node in self.alive():
            with contextlib.suppress(redis.RedisError, OSError), self.client(node) as c:
                for name, row in c.info("errorstats").items():
                    if name.startswith("errorstat_") and isinstance(row, dict):
                        total[name[len("errorstat_"):]] += int(row["count"])
        return total

    def command_calls(self, node: RedisProcess, command: str = "evalsha") -> int:
        with self.client(node) as c:
            stats = c.info("commandstats")
        row = stats.get(f"cmdstat_{command}")
        return int(row["calls"]) if isinstance(row, dict) else 0


def start_cluster(**kwargs: Any) -> LocalCluster:
    if shutil.which("redis-cli") is None or shutil.which("redis-server") is None:
        raise RuntimeError("redis-server and redis-cli are needed for a local cluster")
    return LocalCluster.start(**kwargs)


__all__ = ["NODE_TIMEOUT_MS", "LocalCluster", "start_cluster"]
