"""Flows: jobs that wait for other jobs (a parent runs once all its children finished).

    from streamq import FlowJob
    ref = await q.add_flow(FlowJob(data=..., children=[FlowJob(data=..., queue=other),
                                                        FlowJob(data=...)]),
                           on_child_failure="fail")   # or "continue"

``create.py`` adds a tree (validated first, written by one transition), ``link.py`` is
how a job of a flow finds its parent, ``tree.py`` reads a whole tree for the
transitions that may touch all of it, ``finish.py`` finishes the jobs of flows (worker)
and cancels them (queue). docs/workflows.md tells the rules.
"""

from .create import MAX_FLOW_JOBS, POLICIES, ChildFailurePolicy, FlowJob, FlowRef, add_flow
from .link import FlowLink, NodeRef
from .view import FlowNode, FlowView, read_flow

__all__ = ["MAX_FLOW_JOBS", "POLICIES", "ChildFailurePolicy", "FlowJob", "FlowLink", "FlowNode",
           "FlowRef", "FlowView", "NodeRef", "add_flow", "read_flow"]
