"""One local Redis Cluster (3 masters + 3 replicas) shared by the cluster tests of a session.

Tests that hurt it (a killed master, a moved slot, a stopped replica) leave it whole
again: the killed node restarted (as a replica now), the replica resumed, and they wait
for ``wait_ready`` before they return, so test order does not matter. Every test finds
masters and slot owners afresh instead of assuming the layout ``--cluster create`` made.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator

import pytest

from tests.support.cluster import LocalCluster, start_cluster


@pytest.fixture(scope="session")
def cluster() -> Iterator[LocalCluster]:
    if shutil.which("redis-cli") is None:
        pytest.skip("redis-cli is needed to create a local Redis Cluster")
    c = start_cluster()
    try:
        yield c
    finally:
        c.stop()


@pytest.fixture
def healthy(cluster: LocalCluster) -> Iterator[LocalCluster]:
    """The cluster, ready before the test and made whole again after it."""
    cluster.wait_ready()
    try:
        yield cluster
    finally:
        for node in cluster.nodes:
            if node.port in cluster.stopped:
                cluster.resume(node)
            if node.proc is None or node.proc.poll() is not None:
                cluster.restart(node)
        cluster.wait_ready(90)
