"""What a running job asks of its worker: progress, and a flow parent's children's results.

``Job.progress`` and ``Job.children_results`` call the ``WorkerRuntime`` the worker sets
on each job it runs; the work is in ``streamq/progress.py`` and ``streamq/flows/``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..flows.finish import FlowFinisher
from ..job import Job
from ..progress import ProgressBoard

if TYPE_CHECKING:
    from .core import Worker


class WorkerRuntime:
    """One per worker: its progress board and its flow transitions."""

    def __init__(self, worker: Worker) -> None:
        self.board = ProgressBoard(worker)
        self.flows = FlowFinisher(worker)

    async def progress(self, job: Job, value: Any) -> None:
        await self.board.report(job, value)

    async def children_results(self, job: Job) -> dict[str, Any]:
        return await self.flows.children_results(job)


__all__ = ["WorkerRuntime"]
