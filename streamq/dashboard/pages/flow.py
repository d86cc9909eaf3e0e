"""A job's flow as a tree, on its job page: the root, every parent with its failure
policy and pending count, every child with its state and, once finished, its result or
error as its parent recorded it (masked). Children on other queues link to their own
queue's job page. Read by ``streamq.flows.view.read_flow``; nothing here writes.

A completed or cancelled job without children keeps no link to its parent, so the links
of this tree carry the parent (``?parent=queue/partition/id``, a job id, never data); a
job page believes it only when that parent's flow lists the job.
"""

from __future__ import annotations

from collections import Counter

from aiohttp import web

from ...flows.link import NodeRef
from ...flows.view import FlowNode, FlowView, QueueOf, outcome_text, parse_ref, read_flow
from ...queue import Queue
from ..render import esc, link, mask, masked_payload, q_path, with_query
from ..state import Dashboard, dashboard_of

SHOWN = 300
"""Jobs of one flow shown on a page (a flow holds up to 10,000)."""
RESULT_CHARS = 200


def node_path(ref: NodeRef, parent: NodeRef | None) -> str:
    path = q_path(ref.queue, "jobs", ref.job_id)
    return with_query(path, parent=parent.text() if parent else None)


def _state(node: FlowNode) -> str:
    if node.state:
        return node.state
    if not node.readable:
        return node.outcome_state or "not shown here"
    return node.outcome_state or "expired"


def _outcome(node: FlowNode) -> str:
    if not node.outcome_state:
        return ""
    if node.outcome_state != "completed":
        return (f' <span class=outcome>{esc(node.outcome_state)}: <span class=error>'
                f"{mask(outcome_text(node))}</span></span>")
    if node.outcome is None:
        return " <span class=outcome>completed</span>"
    shown = masked_payload(node.outcome).replace("\n", " ")
    if len(shown) > RESULT_CHARS:
        shown = shown[:RESULT_CHARS - 1] + "…"
    return f" <span class=outcome>result <code>{esc(shown)}</code></span>"


def _node(view: FlowView, i: int, root_queue: str) -> str:
    node = view.nodes[i - 1]
    parent = view.nodes[node.parent - 1].ref if node.parent else None
    state = _state(node)
    ident = mask(node.ref.job_id)
    title = (link(node_path(node.ref, parent), ident, "mono") if node.readable
             else f"<span class=mono>{ident}</span>")
    where = (f' <span class=hint>on queue <b>{esc(node.ref.queue)}</b></span>'
             if node.ref.queue != root_queue else "")
    facts = ""
    if node.has_children:
        pending = "?" if node.pending is None else str(node.pending)
        facts = (f' <span class=flow-facts>· {len(node.children)} children, '
                 f'<span data-flow-pending="{esc(node.ref.job_id)}">{esc(pending)}</span> '
                 f"not finished · on a child's failure: <b>{esc(node.policy or '?')}</b>"
                 + (f" · flow {esc(node.flow_state)}" if node.flow_state else "") + "</span>")
    focus = " focus" if i == view.focus else ""
    head = (f'<li class="flow-node{focus}" data-flow-node="{esc(node.ref.job_id)}">'
            f'<span class="badge st-{esc(state)}" data-flow-state="{esc(node.ref.job_id)}">'
            f"{esc(state)}</span> {title}{where}{facts}{_outcome(node)}")
    shown = [c for c in node.children if view.nodes[c - 1].read]
    kids = "".join(_node(view, c, root_queue) for c in shown)
    hidden = [view.nodes[c - 1] for c in node.children if not view.nodes[c - 1].read]
    if hidden:
        tally = Counter(n.outcome_state or "not finished" for n in hidden)
        kids += (f"<li class=hint>… and {len(hidden):,} more children not shown ("
                 + ", ".join(f"{v:,} {esc(k)}" for k, v in sorted(tally.items())) + ")</li>")
    return head + (f"<ul>{kids}</ul>" if kids else "") + "</li>"


async def flow_section(request: web.Request, q: Queue, job_id: str) -> str:
    """The flow around job ``job_id`` as HTML ('' for a job outside any flow)."""
    dash = dashboard_of(request)
    via = parse_ref(request.query.get("parent", ""))
    view = await read_flow(q, job_id, queue_of=_reader(dash), via=via, limit=SHOWN)
    if view is None:
        return ""
    root = view.root
    total = len(view.nodes)
    more = (f" The states of {view.unread:,} of its {total:,} jobs were not read: a page "
            f"shows {SHOWN}." if view.unread else "")
    return ("<section class=flow><h2>Flow</h2><p class=hint>This job is part of a flow of "
            f"{total:,} jobs rooted at <span class=mono>{mask(root.ref.job_id)}</span> (a parent "
            "runs once all its children finished). Each finished child shows its outcome as its "
            "parent recorded it; results masked." + more + "</p>"
            f'<ul class=flow-tree>{_node(view, 1, root.ref.queue)}</ul></section>')


def _reader(dash: Dashboard) -> QueueOf:
    async def queue_of(name: str) -> Queue | None:
        try:
            return await dash.queue(name)
        except web.HTTPNotFound:  # a queue this dashboard does not show
            return None

    return queue_of


__all__ = ["flow_section", "node_path"]
