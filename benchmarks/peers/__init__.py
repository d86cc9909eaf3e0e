"""The systems under test, one module each; ``SYSTEMS`` lists them in report order.

Each module defines a ``System`` subclass (the producer side, used in the benchmark
process) and, for Python systems, ``start_worker(args, probe)`` run inside the worker
process by ``python -m benchmarks.worker NAME``. A module whose library is missing is
still importable: the library is imported lazily and ``check()`` names what is missing.
"""

from __future__ import annotations

import importlib

from .base import System, Unavailable

#: name -> module (under benchmarks.peers) and class
SYSTEMS: dict[str, tuple[str, str]] = {
    "streamq": ("streamq", "StreamqSystem"),
    "raw": ("raw", "RawSystem"),
    "arq": ("arq", "ArqSystem"),
    "saq": ("saq", "SaqSystem"),
    "taskiq": ("taskiq", "TaskiqSystem"),
    "bullmq": ("bullmq", "BullmqSystem"),
    "bullmq-node": ("bullmq_node", "BullmqNodeSystem"),
}
QUICK_SYSTEMS = ("streamq", "raw")


def system_module(name: str) -> object:
    module, _ = SYSTEMS[name]
    return importlib.import_module(f"{__name__}.{module}")


def system_class(name: str) -> type[System]:
    _, cls = SYSTEMS[name]
    found: type[System] = getattr(system_module(name), cls)
    return found


__all__ = ["QUICK_SYSTEMS", "SYSTEMS", "System", "Unavailable", "system_class", "system_module"]
