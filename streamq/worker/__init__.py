"""The worker: ``Worker`` for embedding, ``python -m streamq.worker`` to run one."""

from .core import Handler, Worker

__all__ = ["Handler", "Worker"]
