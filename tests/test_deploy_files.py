"""docker-compose.yml and the Dockerfile: the worker gets SIGTERM and the time to use it.

Docker itself is not available in CI; these checks hold the files to what a graceful stop
needs (exec form, no install at start-up, a stop grace period above the worker's), and
the Dockerfile's command line is parsed by the worker's own parser, so a flag typo fails
here instead of in a container.
"""

from __future__ import annotations

import json
import re
from typing import Any

import yaml

from streamq.worker.__main__ import build_parser, resolve_env
from tests.support.util import ROOT

COMPOSE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"


def _compose() -> dict[str, Any]:
    doc = yaml.safe_load(COMPOSE.read_text())
    assert isinstance(doc, dict)
    return doc


def _instructions() -> list[tuple[str, str]]:
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def _exec_form(rest: str) -> list[str]:
    value = json.loads(rest)  # shell form is not JSON: it would fail here
    assert isinstance(value, list) and all(isinstance(v, str) for v in value)
    return value


def _seconds(text: str) -> float:
    m = re.fullmatch(r"(?:(\d+)m)?(?:(\d+(?:\.\d+)?)s)?", text.strip())
    assert m and any(m.groups()), text
    return int(m.group(1) or 0) * 60 + float(m.group(2) or 0)


def test_the_worker_is_built_once_and_run_in_exec_form() -> None:
    worker = _compose()["services"]["worker"]
    assert worker["build"] == "."
    assert "pip" not in json.dumps(worker), "nothing may be installed at start-up"
    assert isinstance(worker["command"], list), "shell form would make sh PID 1"
    assert worker.get("init") is True
    steps = _instructions()
    assert any(w == "RUN" and "pip install" in rest for w, rest in steps)
    entry = [_exec_form(rest) for w, rest in steps if w == "ENTRYPOINT"]
    cmd = [_exec_form(rest) for w, rest in steps if w == "CMD"]
    assert entry == [["python", "-m", "streamq.worker"]]
    assert len(cmd) == 1 and not any(part == "sh" for part in entry[0] + cmd[0])
    # both command lines are valid worker options
    for argv in (cmd[0], worker["command"]):
        args = resolve_env(build_parser().parse_args(argv))
        assert args.metrics_port == 9108 and args.metrics_host == "0.0.0.0"


def test_stop_grace_period_leaves_the_worker_its_grace() -> None:
    worker = _compose()["services"]["worker"]
    grace = float(worker["environment"]["STREAMQ_SHUTDOWN_GRACE"])
    assert _seconds(worker["stop_grace_period"]) >= grace + 5


def test_the_metrics_port_is_published_and_exposed() -> None:
    worker = _compose()["services"]["worker"]
    assert any(str(p).endswith(":9108") for p in worker["ports"])
    assert ("EXPOSE", "9108") in _instructions()


def test_the_image_gets_everything_the_wheel_needs() -> None:
    copied = {src for w, rest in _instructions() if w == "COPY" for src in rest.split()[:-1]}
    assert {"pyproject.toml", "README.md", "lua", "streamq"} <= copied
    for name in copied:
        assert (ROOT / name).exists(), name
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert not {"streamq", "lua", "pyproject.toml", "README.md"} & set(ignored)


# -- the cluster profile -------------------------------------------------------------------------
def test_the_default_services_stay_outside_every_profile() -> None:
    services = _compose()["services"]
    assert "profiles" not in services["redis"] and "profiles" not in services["worker"]


def test_the_cluster_profile_joins_six_nodes_three_masters_with_a_replica_each() -> None:
    services = _compose()["services"]
    nodes = {name: s for name, s in services.items() if name.startswith("redis-node-")}
    assert sorted(nodes) == [f"redis-node-{i}" for i in range(1, 7)]
    volumes = set()
    for name, node in nodes.items():
        assert node["profiles"] == ["cluster"]
        assert node["hostname"] == name  # announced to clients: reachable by name
        command = " ".join(node["command"].split())
        for option in ("--cluster-enabled yes", "--cluster-announce-hostname",
                       "--cluster-preferred-endpoint-type hostname", "--appendonly yes",
                       "--maxmemory-policy noeviction"):
            assert option in command, (name, option)
        [volume] = node["volumes"]
        assert volume.endswith(":/data")
        volumes.add(volume.split(":")[0])
        assert "healthcheck" in node
    assert len(volumes) == 6 and volumes <= set(_compose()["volumes"])
    init = services["cluster-init"]
    assert init["profiles"] == ["cluster"]
    script = " ".join(init["command"])
    assert "--cluster create" in script and "--cluster-replicas 1" in script
    assert "--cluster-yes" in script and "for i in 1 2 3 4 5 6" in script
    assert "cluster_state:ok" in script  # a no-op once joined, and waits until it is ok
    assert {n: d["condition"] for n, d in init["depends_on"].items()} == {
        n: "service_healthy" for n in nodes}


def test_the_cluster_worker_is_the_worker_pointed_at_a_node() -> None:
    services = _compose()["services"]
    worker, twin = services["worker"], services["worker-cluster"]
    assert twin["profiles"] == ["cluster"]
    assert twin["depends_on"] == {"cluster-init": {"condition": "service_completed_successfully"}}
    assert twin["environment"]["REDIS_URL"].startswith("redis://redis-node-")
    float(twin["environment"]["STREAMQ_CLUSTER_RETRY_S"])
    for key in ("build", "image", "init", "stop_grace_period"):
        assert twin[key] == worker[key], key
    grace = float(twin["environment"]["STREAMQ_SHUTDOWN_GRACE"])
    assert _seconds(twin["stop_grace_period"]) >= grace + 5
    args = resolve_env(build_parser().parse_args(twin["command"]))
    assert args.metrics_port == 9108 and args.partitions == 3
    # metrics ports apart from the single-Redis worker's
    assert not set(twin["ports"]) & set(worker["ports"])
