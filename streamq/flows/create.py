"""Adding a flow: validate the whole tree, then one Lua transition writes all of it.

    ref = await q.add_flow(FlowJob(data=..., children=[
              FlowJob(data=..., queue=other_queue), FlowJob(data=...)]),
          on_child_failure="fail")

Everything that can be checked without Redis is checked before anything is sent (each
payload through its queue's codec, options, ids unique in the tree, the policy, the
cluster rule); then ``lua/flow_add.lua`` checks that no id is live and writes every job
or none. A child without ``queue=`` goes to its parent's queue. A child without a
``job_id`` gets a new one carrying its parent's routing tag when the parent's id has
one (``{...}``), so a flow whose root has a tag stays in one partition.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, Literal

from redis.crc import key_slot

from ..errors import ConfigError
from ..job import JobOptions, JobRef
from ..routing import partition_of, routing_tag
from .link import FlowLink, NodeRef, with_link
from .tree import key_group, kids_text, qcfg_text, queue_cfg, read_tree

if TYPE_CHECKING:
    from ..queue import Queue

ChildFailurePolicy = Literal["fail", "continue"]
POLICIES: tuple[str, ...] = ("fail", "continue")
MAX_JOB_ID = 128
MAX_FLOW_JOBS = 10_000
"""Jobs in one flow: one script call writes them all."""
MAX_FLOW_DEPTH = 100
"""Levels of nesting below the root."""


@dataclass(frozen=True, slots=True, kw_only=True)
class FlowJob:
    """One job of a flow: its payload and options, its queue (default: its parent's, or
    for the root the queue ``add_flow`` is called on) and the children it waits for.
    ``on_child_failure`` overrides the policy ``add_flow`` gives for this job's children."""

    data: Any
    options: JobOptions | None = None
    children: Sequence[FlowJob] = ()
    queue: Queue | None = None
    on_child_failure: ChildFailurePolicy | None = None


@dataclass(frozen=True, slots=True)
class FlowRef(JobRef):
    """What ``add_flow`` returns: the root's reference, with its children's."""

    children: tuple[FlowRef, ...] = field(default=())

    def ids(self) -> list[str]:
        """Every job id of the flow, the root first (depth first)."""
        out = [self.job_id]
        for c in self.children:
            out += c.ids()
        return out


@dataclass(slots=True)
class _Node:
    job: FlowJob
    queue: Queue
    parent: int  # 1-based index, 0 for the root
    policy: str
    depth: int = 0
    job_id: str = ""
    args: list[Any] = field(default_factory=list)
    kids: list[int] = field(default_factory=list)
    partition: int = 0


def check_policy(policy: object, where: str = "on_child_failure") -> str:
    if policy not in POLICIES:
        raise ConfigError(f"{where} must be \"fail\" or \"continue\" (what a parent does when "
                          f"a child fails for good), got {policy!r}")
    return str(policy)


def _flatten(root: FlowJob, queue: Queue, policy: str) -> list[_Node]:
    """The tree in breadth-first order (parents before their children), validated. A
    parent's policy: its own ``on_child_failure``, else ``policy``."""
    nodes = [_Node(root, root.queue or queue, 0, check_policy(
        root.on_child_failure or policy))]
    i = 0
    while i < len(nodes):
        node = nodes[i]
        i += 1
        if not isinstance(node.job, FlowJob):
            raise ConfigError(f"a flow's jobs must be FlowJob objects, got "
                              f"{type(node.job).__name__}")
        for child in node.job.children:
            if not isinstance(child, FlowJob):
                raise ConfigError(f"a flow's children must be FlowJob objects, got "
                                  f"{type(child).__name__}")
            if child.on_child_failure is not None:
                check_policy(child.on_child_failure)
            nodes.append(_Node(child, child.queue or node.queue, i,
                               child.on_child_failure or policy, node.depth + 1))
            node.kids.append(len(nodes))
            if len(nodes) > MAX_FLOW_JOBS:
                raise ConfigError(f"a flow holds at most {MAX_FLOW_JOBS} jobs")
            if node.depth + 1 > MAX_FLOW_DEPTH:
                raise ConfigError(f"a flow nests at most {MAX_FLOW_DEPTH} levels below its root")
    return nodes


def _is_cluster(client: Any) -> bool:
    try:
        from redis.asyncio.cluster import RedisCluster
    except ImportError:  # pragma: no cover - redis-py always has it
        return False
    return isinstance(client, RedisCluster)


async def add_flow(queue: Queue, root: FlowJob, on_child_failure: str) -> FlowRef:
    """Validate the tree, then add it in one transition (see the module's doc)."""
    from ..queue import new_job_id

    policy = check_policy(on_child_failure)
    nodes = _flatten(root, queue, policy)
    seen: set[str] = set()
    for node in nodes:
        q = node.queue
        if q.redis_url != queue.redis_url and q.owns_client and queue.owns_client:
            raise ConfigError(f"a flow's queues must share one Redis: queue {q.name!r} uses "
                              f"another URL than queue {queue.name!r}")
        opts = node.job.options or JobOptions()
        if opts.job_id is None:
            parent_id = nodes[node.parent - 1].job_id if node.parent else ""
            tag = routing_tag(parent_id) if "{" in parent_id else parent_id
            job_id = new_job_id()
            if tag != parent_id and len(job_id) + len(tag) + 3 <= MAX_JOB_ID:
                job_id = f"{job_id}-{{{tag}}}"  # the parent's partition
            opts = replace(opts, job_id=job_id)
        node.job_id, node.args = q._job_args(node.job.data, opts)
        if node.job_id in seen:
            raise ConfigError(f"job id {node.job_id!r} appears twice in the flow")
        seen.add(node.job_id)
    lane_counts = {len(n.queue.keys.lanes) for n in nodes}
    if len(lane_counts) != 1:
        raise ConfigError("a flow's queues must have the same number of priority lanes")
    # the partition of each job, then the one slot rule on a cluster
    counts: dict[str, int] = {}
    for node in nodes:
        q = node.queue
        if q.name not in counts:
            counts[q.name] = await q.partition_count(store=True)
        node.partition = partition_of(node.job_id, counts[q.name])
    if _is_cluster(queue.redis):  # known once the queue has talked to Redis
        _check_one_slot(nodes)
    refs = [NodeRef(n.queue.name, n.partition, n.job_id) for n in nodes]
    keys: list[str] = []
    argv: list[Any] = [lane_counts.pop(), len(nodes)]
    for node in nodes:
        k = node.queue.layout.keys(node.partition)
        keys += key_group(k, node.job_id)
        job_id, payload, lane, attempts, delay_ms, backoff, jtype = node.args
        parent = refs[node.parent - 1] if node.parent else None
        spec = str(backoff)
        if node.kids or parent is not None:
            spec = with_link(spec, FlowLink(bool(node.kids), parent))
        kid_refs = [(refs[c - 1], bool(nodes[c - 1].kids)) for c in node.kids]
        qcfg = {nodes[c - 1].queue.name: queue_cfg(nodes[c - 1].queue) for c in node.kids}
        argv += [job_id, payload, lane, attempts, delay_ms, spec, jtype, node.parent,
                 node.policy if node.kids else "", kids_text(kid_refs),
                 parent.text() if parent else "", queue_cfg(node.queue).text(), qcfg_text(qcfg)]
    r = await queue.run_script("flow_add", keys, argv)
    status = int(r[0])
    if status == -1:
        bad = nodes[int(r[1]) - 1]
        raise ConfigError(f"job id {bad.job_id!r} is live already in queue {bad.queue.name!r}: "
                          "nothing of the flow was added")
    if status == 0:  # added before (a retried add_flow): the flow that is there
        tree = await read_tree(queue.redis, refs[0], True, None, queue_cfg(queue))
        return _refs([(n.ref, n.parent) for n in tree.nodes])
    return _refs([(ref, node.parent) for ref, node in zip(refs, nodes, strict=True)])


def _refs(nodes: list[tuple[NodeRef, int]]) -> FlowRef:
    """The FlowRef tree of nodes given parents first, each with its parent's 1-based index."""
    kids: list[list[FlowRef]] = [[] for _ in nodes]
    built: list[FlowRef] = []
    for i in range(len(nodes), 0, -1):  # children before their parents
        ref, parent = nodes[i - 1]
        built.append(FlowRef(ref.job_id, ref.queue, tuple(reversed(kids[i - 1]))))
        if parent:
            kids[parent - 1].append(built[-1])
    return built[-1]


def _check_one_slot(nodes: list[_Node]) -> None:
    """On a Redis Cluster a script touches one slot: every job of a flow must live in
    the root's (same queue, same partition: on a partitioned queue, ids sharing a
    ``{tag}``)."""
    root = nodes[0]
    slot = key_slot(root.queue.layout.keys(root.partition).prefix.encode())
    for node in nodes[1:]:
        k = node.queue.layout.keys(node.partition)
        if key_slot(k.prefix.encode()) != slot:
            raise ConfigError(
                f"on a Redis Cluster a flow must live in one slot: job {node.job_id!r} "
                f"(queue {node.queue.name!r}, partition {node.partition}) is not in the slot "
                f"of the root (queue {root.queue.name!r}, partition {root.partition}); use "
                "one queue, and on a partitioned queue job ids sharing a {tag} "
                "(docs/workflows.md)")


__all__ = ["MAX_FLOW_JOBS", "POLICIES", "ChildFailurePolicy", "FlowJob", "FlowRef", "add_flow",
           "check_policy"]
