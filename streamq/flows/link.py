"""How a job of a flow knows its place: the flow link it carries in its entry.

Every entry holds ``m = 'attempts|failed|stalls|offset|spec|type'``, and every transition
copies the *spec* as it is (retry, defer, promotion, take-over, release, dead letter,
replay), so a link written there at ``add_flow`` stays with the job wherever it moves,
with no change to those transitions. The spec is the backoff (``Backoff.encode``: digits,
``:`` and ``j``, with the job's own timeout as a 4th ``:`` part: ``job.run_spec``), then,
for a job of a flow, ``/`` and the link:

    ``c``                        a parent without a parent (a flow's root)
    ``c/<queue>/<partition>/<id>``   a parent that is also a child (a nested flow)
    ``-/<queue>/<partition>/<id>``   a child without children

Queue names and job ids cannot hold ``/``, so the split is exact. A spec without ``/``
is a job outside any flow: the transitions that finish a job look for the ``/`` only
where they read the entry anyway (dead letter, cancel), and the worker parses each
distinct spec once (cached), so a job outside a flow pays nothing for this.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

from ..job import Backoff, parse_run_spec
from ..keys import QueueKeys

SEP = "/"


@dataclass(frozen=True, slots=True)
class NodeRef:
    """Where a job of a flow lives: its queue, the partition holding it, its id."""

    queue: str
    partition: int
    job_id: str

    def text(self) -> str:
        return f"{self.queue}{SEP}{self.partition}{SEP}{self.job_id}"

    @classmethod
    def parse(cls, text: str) -> NodeRef:
        queue, partition, job_id = text.split(SEP, 2)
        return cls(queue, int(partition), job_id)

    @property
    def keys(self) -> QueueKeys:
        return _keys(self.queue, self.partition)


@lru_cache(maxsize=1024)
def _keys(queue: str, partition: int) -> QueueKeys:
    return QueueKeys(queue, partition)


@dataclass(frozen=True, slots=True)
class FlowLink:
    """A job's place in its flow: whether it has children, and its parent if any."""

    has_children: bool
    parent: NodeRef | None

    def encode(self) -> str:
        flag = "c" if self.has_children else "-"
        return flag if self.parent is None else f"{flag}{SEP}{self.parent.text()}"

    @classmethod
    def decode(cls, text: str) -> FlowLink:
        flag, _, parent = text.partition(SEP)
        return cls(flag == "c", NodeRef.parse(parent) if parent else None)


def with_link(backoff_spec: str, link: FlowLink) -> str:
    """The spec an entry of a flow carries: the backoff, then the link."""
    return f"{backoff_spec}{SEP}{link.encode()}"


@lru_cache(maxsize=256)
def parse_spec(spec: bytes) -> tuple[Backoff, float | None, FlowLink | None]:
    """An entry's spec: its backoff, its own timeout (``job.run_spec``; None: the
    worker's), and its flow link when it belongs to a flow."""
    text = spec.decode()
    run, sep, link = text.partition(SEP)
    backoff, timeout = parse_run_spec(run)
    return backoff, timeout, (FlowLink.decode(link) if sep else None)


__all__ = ["FlowLink", "NodeRef", "parse_spec", "with_link"]
