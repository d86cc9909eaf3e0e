"""The worker: ``Worker`` for embedding, ``python -m streamq.worker`` to run one."""

from .batch import BatchHandler, BatchOptions
from .core import Handler, Worker

__all__ = ["BatchHandler", "BatchOptions", "Handler", "Worker"]
