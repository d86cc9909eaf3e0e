"""The dashboard on a cluster URL: its discovery SCANs every master, so queues whose
slots live on different masters are all listed, and their pages read the right master."""

from __future__ import annotations

import uuid

import aiohttp

from streamq import Queue
from streamq.keys import QueueKeys
from tests.support.cluster import LocalCluster
from tests.support.dashboard import VIEWER, bearer, running_dashboard


async def test_the_dashboard_finds_queues_on_every_master(healthy: LocalCluster) -> None:
    by_master: dict[int, str] = {}
    while len(by_master) < 3:  # one queue on each master
        name = "d" + uuid.uuid4().hex[:10].translate(str.maketrans("0123456789", "ghijklmnop"))
        by_master.setdefault(healthy.master_of_key(QueueKeys(name).prefix).port, name)
    names = sorted(by_master.values())
    replica = next(n for n in healthy.nodes if healthy.role(n) == "slave")
    for n in names:
        async with Queue(n, redis_url=healthy.url) as q:
            await q.add({"n": n})
    async with running_dashboard(replica.url, rescan_s=0) as d, aiohttp.ClientSession() as s:
        assert d.dashboard.redis.__class__.__name__ == "ClusterClient"
        async with s.get(d.url + "/", headers={**bearer(VIEWER), "Accept": "text/html"}) as r:
            text = await r.text()
            assert r.status == 200 and all(n in text for n in names), text[:500]
        for n in names:
            async with s.get(d.url + f"/q/{n}", headers={**bearer(VIEWER),
                                                          "Accept": "text/html"}) as r:
                assert r.status == 200
            async with s.get(d.url + f"/api/counts?queue={n}", headers=bearer(VIEWER)) as r:
                body = await r.json()
                assert body[n]["counts"]["waiting"] == 1
