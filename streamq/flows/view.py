"""A flow as operators look at it: the tree around one job, each node's state, each
finished child's outcome as its parent recorded it (for the dashboard's job page).

    view = await read_flow(q, job_id, queue_of=lookup)   # None: not a job of a flow

Where a job stands is read by ``lua/flow_link.lua`` (its flow hash when it has
children, else the link its entry carries: lane, delayed data or dead letter). A
completed or cancelled job without children keeps no link, so its parent must be named
(``via``, e.g. from the tree's own links); it is believed only when that parent's
``kids`` list holds the job. The tree itself is read as the failure transitions read it
(``tree.read_tree``), then each parent's flow hash (policy, pending count, outcomes)
and the state of up to ``limit`` nodes: the asked job, its ancestors and children
first, then the rest breadth first. Nothing is written.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..errors import ChildFailed
from ..keys import GROUP, QueueKeys, check_job_id, check_queue_name
from ..pipelines import Call
from .finish import decode_outcome
from .link import SEP, NodeRef, parse_spec
from .tree import parse_kids, queue_cfg, read_tree

if TYPE_CHECKING:
    from ..queue import Queue

DEFAULT_LIMIT = 300
"""Nodes whose state is read for one view (a flow holds up to 10,000 jobs)."""
STATE_BATCH = 500
"""get_job calls per pipeline."""
FLOW_STATES = {"w": "waiting for children", "r": "released", "d": "done", "f": "failed",
               "x": "cancelled"}
OUTCOME_STATES = {"n": "completed", "r": "completed", "x": "completed", "f": "failed",
                  "k": "cancelled"}

QueueOf = Callable[[str], Awaitable["Queue | None"]]
"""A queue by name, None when it is not to be read (the dashboard: a queue not shown)."""


def _text(v: Any) -> str:
    return v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v or "")


@dataclass(slots=True)
class FlowNode:
    ref: NodeRef
    parent: int
    """1-based index of its parent in ``FlowView.nodes``; 0 for the root."""
    has_children: bool
    state: str = ""
    """Its state now (``JobState`` values; '': its record expired, its queue is not read,
    or it is beyond the limit)."""
    read: bool = False
    """Whether it is among the nodes read (the limit): its state was asked for."""
    readable: bool = True
    """False when its queue is not to be read (``queue_of`` said None)."""
    outcome_state: str = ""
    """How it finished, as its parent recorded it: completed, failed, cancelled ('' not yet)."""
    outcome: Any = None
    """Its result as recorded with its parent (decoded), or its ChildFailed."""
    flow_state: str = ""
    """A parent's flow: waiting for children, released, done, failed, cancelled."""
    policy: str = ""
    """A parent's policy when a child fails: fail | continue."""
    pending: int | None = None
    """A parent's children not finished yet."""
    children: list[int] = field(default_factory=list)
    """1-based indexes of its children, in their order."""


@dataclass(slots=True)
class FlowView:
    nodes: list[FlowNode]
    """The root first, parents before their children."""
    focus: int
    """1-based index of the job asked about."""

    @property
    def root(self) -> FlowNode:
        return self.nodes[0]

    @property
    def unread(self) -> int:
        """Nodes beyond the limit (their state was not read)."""
        return sum(1 for n in self.nodes if not n.read)


def parse_ref(text: str) -> NodeRef | None:
    """``queue/partition/id`` from outside (a URL): a NodeRef, or None if malformed."""
    try:
        ref = NodeRef.parse(text)
        check_queue_name(ref.queue)
        check_job_id(ref.job_id)
    except ValueError:  # ConfigError and JobIdError are ValueErrors too
        return None
    return ref if ref.partition >= 0 else None


async def _link(q: Queue, job_id: str) -> tuple[QueueKeys, list[Any]] | None:
    """flow_link.lua's reply in the partition that knows the job (None: unknown)."""
    for k in q.layout.lookup(job_id, await q.partition_count()):
        reply = await q.run_script(
            "flow_link",
            [*k.lanes, k.moves, k.delayed_data, k.bucket(job_id), k.job(job_id), k.dead,
             k.flow(job_id)], [job_id])
        if reply:
            return k, [_text(v) for v in reply]
    return None


async def _listed_by(q: Queue, parent: NodeRef, job_id: str) -> NodeRef | None:
    """The child ``job_id`` as ``parent``'s kids list names it (None: not its child)."""
    kids = _text(await q.redis.hget(parent.keys.flow(parent.job_id), "kids"))
    for ref, _ in parse_kids(kids):
        if ref.job_id == job_id:
            return ref
    return None


async def read_flow(q: Queue, job_id: str, *, queue_of: QueueOf, via: NodeRef | None = None,
                    limit: int = DEFAULT_LIMIT) -> FlowView | None:
    """The flow holding job ``job_id`` of ``q``; None for a job outside any flow (or one
    whose flow is gone). ``via``: its parent, for a finished job without children that
    keeps no link of its own."""
    check_job_id(job_id)
    found = await _link(q, job_id)
    me: NodeRef | None = None
    has_children, parent = False, None
    if found is not None:
        k, reply = found
        me = NodeRef(q.name, k.partition, job_id)
        if reply[0] == "parent":
            has_children, parent = True, (NodeRef.parse(reply[1]) if reply[1] else None)
        elif reply[0] == "spec" and SEP in reply[1]:
            link = parse_spec(reply[1].encode())[2]
            if link is not None:
                has_children, parent = link.has_children, link.parent
    if not has_children and parent is None and via is not None:
        listed = await _listed_by(q, via, job_id)
        if listed is not None and listed.queue == q.name:
            me, parent = listed, via
    if me is None or (not has_children and parent is None):
        return None
    tree = await read_tree(q.redis, me, has_children, parent, queue_cfg(q))
    nodes = [FlowNode(n.ref, n.parent, n.has_children) for n in tree.nodes]
    for i, n in enumerate(nodes, 1):
        if n.parent:
            nodes[n.parent - 1].children.append(i)
    if len(nodes) == 1 and not has_children:
        return None  # its parent's flow expired: nothing left to show as a tree
    focus = next(i for i, n in enumerate(nodes, 1) if n.ref.job_id == job_id and n.ref == me)
    chosen = _chosen(nodes, focus, limit)
    await _read_parents(q, nodes, set(chosen))
    await _read_states(nodes, chosen, queue_of)
    return FlowView(nodes, focus)


async def _read_parents(q: Queue, nodes: list[FlowNode], chosen: set[int]) -> None:
    """Each parent's flow hash: its state, policy, pending count, how each child finished,
    and the outcomes of the ``chosen`` children (opened as the parent's queue opens them:
    ``decode_outcome``)."""
    parents = [i for i, n in enumerate(nodes, 1) if n.has_children]
    if not parents:
        return
    pipe = q.redis.pipeline(transaction=False)
    for i in parents:
        ref = nodes[i - 1].ref
        pipe.hgetall(ref.keys.flow(ref.job_id))
    replies = await pipe.execute()
    for i, raw in zip(parents, replies, strict=True):
        node = nodes[i - 1]
        h = {_text(key): v for key, v in (raw or {}).items()}
        node.flow_state = FLOW_STATES.get(_text(h.get("st")), "")
        node.policy = _text(h.get("pol"))
        pend = _text(h.get("pend"))
        node.pending = int(pend) if pend.lstrip("-").isdigit() else None
        for c in node.children:
            child = nodes[c - 1]
            raw_outcome = h.get("r:" + child.ref.job_id)
            if isinstance(raw_outcome, bytes) and raw_outcome:
                child.outcome_state = OUTCOME_STATES.get(raw_outcome[:1].decode(), "")
                if c in chosen:
                    child.outcome = decode_outcome(q, child.ref.job_id, raw_outcome,
                                                   child.ref.queue)


def _chosen(nodes: list[FlowNode], focus: int, limit: int) -> list[int]:
    """The nodes whose state is read: the asked job and its ancestors, its children, then
    the others breadth first, up to ``limit``."""
    out: dict[int, None] = {}
    i = focus
    while i:
        out[i] = None
        i = nodes[i - 1].parent
    for c in nodes[focus - 1].children:
        out.setdefault(c, None)
    for i in range(1, len(nodes) + 1):
        if len(out) >= limit:
            break
        out.setdefault(i, None)
    return list(out)[:max(limit, 1)]


async def _read_states(nodes: list[FlowNode], chosen: list[int], queue_of: QueueOf) -> None:
    """The state of each chosen node: one pipeline of ``get_job`` calls per queue (the
    state is all a tree line shows; a job not in its current partition is looked up again
    under the queue's earlier partition counts, one call each)."""
    queues: dict[str, Queue | None] = {}
    for i in chosen:
        name = nodes[i - 1].ref.queue
        if name not in queues:
            queues[name] = await queue_of(name)
    by_queue: dict[str, list[int]] = {}
    for i in chosen:
        node = nodes[i - 1]
        node.read = True
        node.readable = queues[node.ref.queue] is not None
        if node.readable:
            by_queue.setdefault(node.ref.queue, []).append(i)
    for name, wanted in by_queue.items():
        q = queues[name]
        assert q is not None
        states = await job_states(q, [nodes[i - 1].ref.job_id for i in wanted])
        for i, state in zip(wanted, states, strict=True):
            nodes[i - 1].state = state


async def job_states(q: Queue, job_ids: Sequence[str]) -> list[str]:
    """The state of each job ('' when unknown or expired), pipelined."""
    count = await q.partition_count()
    out: list[str] = []
    for start in range(0, len(job_ids), STATE_BATCH):
        part = job_ids[start:start + STATE_BATCH]
        calls: list[Call] = []
        for job_id in part:
            k = q.layout.lookup(job_id, count)[0]
            calls.append(("get_job", [*k.lane_keys, k.moves, k.delayed, k.delayed_data,
                                      k.bucket(job_id), k.job(job_id), k.delivery(job_id)],
                          [GROUP, job_id]))
        # read-only calls: safe to send again after cluster trouble (pipelines.py)
        replies = await q.run_calls(calls, per_trip=None)
        for job_id, reply in zip(part, replies, strict=True):
            if reply:
                out.append(_text(reply[0]))
            elif len(q.layout.lookup(job_id, count)) > 1:  # added under an earlier count
                info = await q.get_job(job_id)
                out.append(info.state.value if info else "")
            else:
                out.append("")
    return out


def outcome_text(node: FlowNode) -> str:
    """A child's failure reason as recorded with its parent ('' when it did not fail)."""
    return node.outcome.error if isinstance(node.outcome, ChildFailed) else ""


__all__ = ["DEFAULT_LIMIT", "FlowNode", "FlowView", "QueueOf", "job_states", "outcome_text",
           "parse_ref", "read_flow"]
