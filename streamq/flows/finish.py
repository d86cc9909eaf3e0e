"""Finishing the jobs of a flow: the worker's side (complete, dead-letter, children's
results) and the queue's (cancel).

A job outside any flow never comes here: the worker knows a flow's job by the link its
entry carries (``link.py``) and sends only those through these transitions, one job per
call. Success (``lua/flow_complete.lua``) needs the keys of the job and of its parent
only. A final failure or a cancel may reach the whole tree (policy "fail"), so the tree
is read first (``tree.py``) and every node's keys go to ``lua/flow_dead_letter.lua`` /
``lua/flow_cancel.lua``, which check each node's state themselves.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, TypeVar

import anyio
import structlog
from redis.exceptions import RedisError, ResponseError

from ..errors import ChildFailed, PayloadError
from ..job import Job
from ..keys import GROUP, QueueKeys
from ..redact import redact_text
from ..results import result_tail
from .link import FlowLink, NodeRef, parse_spec
from .tree import key_group, parse_kids, queue_cfg, read_tree

if TYPE_CHECKING:
    from ..queue import Queue
    from ..worker.core import Worker

log = structlog.get_logger("streamq.worker")
T = TypeVar("T")
FLOW_BATCH = 100
"""Jobs of flows per flow_complete call (each brings its parent's keys along)."""


def _text(v: Any) -> str:
    return v.decode() if isinstance(v, bytes) else str(v or "")


def decode_outcome(q: Queue, child_id: str, raw: bytes, child_queue: str | None = None) -> Any:
    """A child's outcome as its parent's ``children_results()`` shows it (a result
    encrypted by the child's queue, ``child_queue``, is opened as that queue's)."""
    kind, rest = raw[:1], raw[2:]
    if kind == b"r":
        try:
            return q.codec.decode_value(rest, child_id, queue=child_queue)
        except PayloadError as exc:
            return ChildFailed(child_id, str(exc), "completed")
    if kind == b"f":
        return ChildFailed(child_id, rest.decode("utf-8", "replace"), "failed")
    if kind == b"k":
        return ChildFailed(child_id, rest.decode("utf-8", "replace"), "cancelled")
    return None  # n: returned None; x: completed, its result dropped (JobInfo.result_error)


class FlowFinisher:
    """A worker's transitions for the jobs of flows."""

    def __init__(self, worker: Worker) -> None:
        self.w = worker

    async def _retrying(self, what: str, call: Callable[[], Awaitable[T]]) -> T | None:
        """``call`` (a read before a fenced transition), retried while Redis is away,
        like ``Worker._call_retrying``; None when the worker stops and Redis stays away
        (the entry stays pending: another worker takes the job over later)."""
        w = self.w
        delay = 0.05
        since: float | None = None
        while True:
            try:
                with anyio.CancelScope(shield=True):
                    return await call()
            except (RedisError, OSError) as exc:
                if isinstance(exc, ResponseError):
                    raise
                now = time.monotonic()
                since = now if since is None else since
                if w._stopping and (w._cut_now.is_set() or now - since > w.shutdown_grace):
                    return None
                log.error("redis.unreachable", queue=w.queue.name, transition=what,
                          error=redact_text(str(exc)), retry_in=delay)
                await anyio.sleep(delay)
                delay = min(delay * 2, 5.0)

    async def complete(self, batch: list[tuple[Job, Any]]) -> None:
        """Record each job's success and tell its parent: one call per partition and
        FLOW_BATCH jobs."""
        groups: dict[int, list[tuple[Job, Any]]] = {}
        for done in batch:
            groups.setdefault(done[0].partition, []).append(done)
        for partition, jobs in groups.items():
            for start in range(0, len(jobs), FLOW_BATCH):
                await self._complete(partition, jobs[start:start + FLOW_BATCH])

    async def _complete(self, partition: int, batch: list[tuple[Job, Any]]) -> None:
        w = self.w
        q = w.queue
        d = q.defaults
        k = w._keys(partition)
        keys = [k.completed_index, k.events, k.stats, k.moves, *k.lanes]
        args: list[Any] = [len(k.lanes), GROUP, w.consumer, d.completed_ttl_ms,
                           d.events_max, d.completed_index_max, len(batch)]
        for job, result in batch:
            link = job.flow
            assert link is not None
            tail = None
            if result is not None:
                tail = result_tail(q.codec, d.max_result_bytes, q.name, job.id, result)
            keys += [k.bucket(job.id), k.job(job.id), k.flow(job.id)]
            parent = link.parent
            if parent is not None:
                keys += key_group(parent.keys, parent.job_id)
            args += [f"{job.lane}|{job.entry_id}|{job.attempt}|{job.created_ms}|"
                     f"{job.max_attempts}|{job.type_name or ''}|{job.id}",
                     tail or b"|", 1 if link.has_children else 0, 0 if parent is None else 1,
                     "" if parent is None else parent.job_id]
        try:
            lost = await w._call_retrying("flow_complete", keys, args)
        except (RedisError, OSError) as exc:
            log.error("worker.complete_failed", queue=q.name, jobs=len(batch),
                      error=redact_text(str(exc)))
            lost = None
        lost_pos = set(range(1, len(batch) + 1)) if lost is None else {int(i) for i in lost}
        for pos, (job, result) in enumerate(batch, 1):
            w._unacked.pop(id(job), None)
            if pos in lost_pos:
                log.warning("job.lost_claim", queue=q.name, job_id=job.id, attempt=job.attempt,
                            transition="complete")
            elif w.hooks.wants("completed"):
                await w.hooks.emit(w._event("completed", job, result=result))

    async def dead_letter(self, job: Job, error: str, made: int, attempt_failed: bool) -> Any:
        """Fail the job for good and settle its flow; the reply of lua/flow_dead_letter."""
        w = self.w
        q = w.queue
        link = job.flow
        assert link is not None
        me = NodeRef(q.name, job.partition, job.id)
        tree = await self._retrying("flow_dead_letter", lambda: read_tree(
            w.redis, me, link.has_children, link.parent, queue_cfg(q)))
        if tree is None:
            return None
        args: list[Any] = [tree.lanes(), GROUP, w.consumer, job.lane, job.entry_id, error, made,
                           1 if attempt_failed else 0, tree.index(me), *tree.args()]
        return await w._call_retrying("flow_dead_letter", tree.keys(), args)

    async def children_results(self, job: Job) -> dict[str, Any]:
        """The outcomes of the job's children, in their order (``Job.children_results``)."""
        if job.flow is None or not job.flow.has_children:
            return {}
        w = self.w
        k = w._keys(job.partition)
        raw: Any = await w.redis.hgetall(k.flow(job.id))
        if not raw:
            log.warning("job.children_results_gone", queue=w.queue.name, job_id=job.id,
                        note="the flow hash expired (a parent replayed after its TTL?)")
            return {}
        out: dict[str, Any] = {}
        for ref, _ in parse_kids(_text(raw.get(b"kids"))):
            outcome = raw.get(b"r:" + ref.job_id.encode())
            if outcome is not None:
                out[ref.job_id] = decode_outcome(w.queue, ref.job_id, outcome, ref.queue)
        return out


async def cancel_flow_job(q: Queue, k: QueueKeys, job_id: str, spec: str) -> int:
    """Cancel a job of a flow that has not started (and its not-started subtree), then
    settle its flow like a failure. ``spec``: the job's entry spec, '' for a parent
    waiting for its children (its link is then read from its flow hash). Returns the
    reply of lua/flow_cancel (1 cancelled, 0 finished or unknown, -1 running)."""
    me = NodeRef(q.name, k.partition, job_id)
    if spec:
        link = parse_spec(spec.encode())[2] or FlowLink(False, None)
    else:
        up = _text(await q.redis.hget(k.flow(job_id), "up"))
        link = FlowLink(True, NodeRef.parse(up) if up else None)
    tree = await read_tree(q.redis, me, link.has_children, link.parent, queue_cfg(q))
    return int(await q.run_script("flow_cancel", tree.keys(),
                                  [tree.lanes(), GROUP, tree.index(me), *tree.args()]))


__all__ = ["FlowFinisher", "cancel_flow_job", "decode_outcome"]
