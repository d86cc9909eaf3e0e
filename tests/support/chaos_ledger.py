"""Worker events for the chaos suite, next to the completion ledger (docs/reliability.md, part 3).

A ledger worker started with ``--events`` appends one line per engine hook to its own
``events-<pid>-<ns>.log`` file (``O_APPEND``, ``os.write``: whole lines or none):

    C <job_id> <pid> <t>            completed (the fenced complete script recorded it)
    K <job_id> <stalls> <pid> <t>   stalled: this process's reclaim sweep put it back
    D <job_id> <pid> <t>            dead-lettered by this process

The files are separate from ``ledger-*.log`` so that ``read_ledger`` is unchanged.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path


class EventWriter:
    def __init__(self, directory: str | os.PathLike[str]) -> None:
        path = Path(directory) / f"events-{os.getpid()}-{time.monotonic_ns()}.log"
        self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        self._pid = os.getpid()

    def _write(self, *parts: object) -> None:
        os.write(self._fd, (" ".join(str(p) for p in parts) + "\n").encode())

    def completed(self, job_id: str) -> None:
        self._write("C", job_id, self._pid, f"{time.time():.6f}")

    def stalled(self, job_id: str, stalls: int) -> None:
        self._write("K", job_id, stalls, self._pid, f"{time.time():.6f}")

    def dead(self, job_id: str) -> None:
        self._write("D", job_id, self._pid, f"{time.time():.6f}")

    def close(self) -> None:
        os.close(self._fd)


@dataclass
class EventView:
    completed: list[tuple[str, int, float]] = field(default_factory=list)
    stalled: list[tuple[str, int, int, float]] = field(default_factory=list)
    dead: list[tuple[str, int, float]] = field(default_factory=list)


def read_events(directory: str | os.PathLike[str]) -> EventView:
    view = EventView()
    for path in sorted(Path(directory).glob("events-*.log")):
        for line in path.read_text().splitlines():
            p = line.split()
            if len(p) == 4 and p[0] == "C":
                view.completed.append((p[1], int(p[2]), float(p[3])))
            elif len(p) == 5 and p[0] == "K":
                view.stalled.append((p[1], int(p[2]), int(p[3]), float(p[4])))
            elif len(p) == 4 and p[0] == "D":
                view.dead.append((p[1], int(p[2]), float(p[3])))
    return view
