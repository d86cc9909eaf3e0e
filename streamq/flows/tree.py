"""A flow's tree as the failure and cancel transitions need it: every node, its keys.

A child's failure under the policy "fail" can reach every job of its flow (the parent
fails, its children that have not started are cancelled, the parent's own parent may
fail in turn), and a Lua script must be handed every key it touches. The tree never
changes once added, so it is read first, here (climb the ``up`` links to the root,
then down the ``kids`` lists, one pipelined read per level), and the transition then
checks every node's state itself, atomically.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..keys import QueueKeys
from .link import SEP, NodeRef

if TYPE_CHECKING:
    from ..queue import Queue

FLOW_GROUP = 11
"""Keys per node before its lanes (lua/flow_shared.lua)."""


def _text(v: Any) -> str:
    return v.decode() if isinstance(v, bytes) else str(v or "")


def key_group(k: QueueKeys, job_id: str) -> list[str]:
    """A node's key group, in lua/flow_shared.lua's order: the lanes last."""
    return [k.events, k.delayed, k.delayed_data, k.control, k.stats, k.moves, k.dead,
            k.bucket(job_id), k.job(job_id), k.flow(job_id), k.lane_map, *k.lanes]


@dataclass(frozen=True, slots=True)
class QueueCfg:
    """What a transition needs of a node's queue (its QueueDefaults), stored at add."""

    failed_ttl_ms: int
    events_max: int
    dead_max: int

    def text(self) -> str:
        return f"{self.failed_ttl_ms}{SEP}{self.events_max}{SEP}{self.dead_max}"

    @classmethod
    def parse(cls, text: str) -> QueueCfg:
        a, b, c = text.split(SEP)
        return cls(int(a), int(b), int(c))


DEFAULT_CFG = QueueCfg(7 * 24 * 3600 * 1000, 2000, 100_000)


def queue_cfg(q: Queue) -> QueueCfg:
    """The figures of a queue's QueueDefaults that flow transitions need."""
    d = q.defaults
    return QueueCfg(d.failed_ttl_ms, d.events_max, d.dead_letter_max)


@dataclass(slots=True)
class TreeNode:
    ref: NodeRef
    parent: int
    """1-based index of the parent in the tree, 0 for the root."""
    has_children: bool
    cfg: QueueCfg


@dataclass(slots=True)
class Tree:
    nodes: list[TreeNode]

    def index(self, ref: NodeRef) -> int:
        """The 1-based index of a node."""
        for i, node in enumerate(self.nodes, 1):
            if node.ref == ref:
                return i
        raise KeyError(ref)

    def lanes(self) -> int:
        counts = {len(n.ref.keys.lanes) for n in self.nodes}
        if len(counts) != 1:
            raise ValueError("the queues of one flow must have the same number of lanes")
        return counts.pop()

    def keys(self) -> list[str]:
        out: list[str] = []
        for n in self.nodes:
            out += key_group(n.ref.keys, n.ref.job_id)
        return out

    def args(self) -> list[Any]:
        out: list[Any] = [len(self.nodes)]
        for n in self.nodes:
            out += [n.ref.job_id, n.parent, 1 if n.has_children else 0, n.cfg.failed_ttl_ms,
                    n.cfg.events_max, n.cfg.dead_max]
        return out


def parse_kids(text: str) -> list[tuple[NodeRef, bool]]:
    out = []
    for line in text.split("\n"):
        if line:
            queue, partition, flag, job_id = line.split(SEP, 3)
            out.append((NodeRef(queue, int(partition), job_id), flag == "c"))
    return out


def kids_text(kids: Sequence[tuple[NodeRef, bool]]) -> str:
    return "\n".join(f"{r.queue}{SEP}{r.partition}{SEP}{'c' if c else '-'}{SEP}{r.job_id}"
                     for r, c in kids)


def _qcfg(text: str) -> dict[str, QueueCfg]:
    out = {}
    for line in text.split("\n"):
        if line:
            queue, rest = line.split(SEP, 1)
            out[queue] = QueueCfg.parse(rest)
    return out


def qcfg_text(cfgs: dict[str, QueueCfg]) -> str:
    return "\n".join(f"{q}{SEP}{c.text()}" for q, c in cfgs.items())


async def read_tree(redis: Any, start: NodeRef, has_children: bool, parent: NodeRef | None,
                    start_cfg: QueueCfg) -> Tree:
    """The whole tree holding ``start`` (as far as its flow hashes still exist): climb to
    the root through the parents' ``up`` links, then read every parent's children.
    ``start_cfg`` is used for ``start`` when no parent above it names its queue's."""
    # climb
    top, top_children = start, has_children
    up = parent
    while up is not None:
        got = await redis.hmget(up.keys.flow(up.job_id), ["up", "st"])
        if got[1] is None:  # expired or unknown: nothing above waits for anything
            break
        top, top_children = up, True
        text = _text(got[0])
        up = NodeRef.parse(text) if text else None
    root_cfg = start_cfg
    if top_children:
        cfg_text = _text(await redis.hget(top.keys.flow(top.job_id), "cfg"))
        if cfg_text:
            root_cfg = QueueCfg.parse(cfg_text)
    nodes = [TreeNode(top, 0, top_children, root_cfg)]
    # descend, one pipelined read per level
    level = [1] if top_children else []
    while level:
        pipe = redis.pipeline(transaction=False)
        for i in level:
            ref = nodes[i - 1].ref
            pipe.hmget(ref.keys.flow(ref.job_id), ["kids", "qcfg"])
        replies = await pipe.execute()
        nxt = []
        for i, (kids, qcfg) in zip(level, replies, strict=True):
            cfgs = _qcfg(_text(qcfg))
            for ref, c in parse_kids(_text(kids)):
                nodes.append(TreeNode(ref, i, c, cfgs.get(ref.queue, DEFAULT_CFG)))
                if c:
                    nxt.append(len(nodes))
        level = nxt
    if all(n.ref != start for n in nodes):  # its parent's flow expired: a tree of one
        nodes = [TreeNode(start, 0, has_children, start_cfg)]
    return Tree(nodes)


__all__ = [
    "FLOW_GROUP",
    "QueueCfg",
    "Tree",
    "TreeNode",
    "key_group",
    "kids_text",
    "parse_kids",
    "qcfg_text",
    "queue_cfg",
    "read_tree",
]
