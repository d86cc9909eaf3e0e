"""An independent completion ledger (docs/reliability.md, part 3): append-only files, one per process.

A handler writes ``S <job_id> <attempt> <pid> <t>`` before its side effect and
``E <job_id> <pid> <t>`` after it, with ``os.write`` on an ``O_APPEND`` descriptor so
lines from a killed process are whole or absent. The ledger does not live in the
Redis under test, so it survives Redis kills.
"""

from __future__ import annotations

import os
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path


class LedgerWriter:
    def __init__(self, directory: str | os.PathLike[str]) -> None:
        path = Path(directory) / f"ledger-{os.getpid()}-{time.monotonic_ns()}.log"
        self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)

    def start(self, job_id: str, attempt: int) -> None:
        os.write(self._fd, f"S {job_id} {attempt} {os.getpid()} {time.time():.6f}\n".encode())

    def end(self, job_id: str) -> None:
        os.write(self._fd, f"E {job_id} {os.getpid()} {time.time():.6f}\n".encode())

    def close(self) -> None:
        os.close(self._fd)


@dataclass
class LedgerView:
    starts: list[tuple[str, int, int, float]] = field(default_factory=list)
    ends: list[tuple[str, int, float]] = field(default_factory=list)

    @property
    def done(self) -> set[str]:
        return {j for j, _, _ in self.ends}

    @property
    def end_counts(self) -> Counter[str]:
        return Counter(j for j, _, _ in self.ends)

    @property
    def duplicated(self) -> dict[str, int]:
        return {j: n for j, n in self.end_counts.items() if n > 1}

    def in_flight(self, pid: int, at: float | None = None) -> int:
        """Jobs a process had started and not ended (before time ``at``)."""
        started = Counter(j for j, _, p, t in self.starts if p == pid and (at is None or t <= at))
        ended = Counter(j for j, p, t in self.ends if p == pid and (at is None or t <= at))
        return sum((started - ended).values())


def read_ledger(directory: str | os.PathLike[str]) -> LedgerView:
    view = LedgerView()
    for path in sorted(Path(directory).glob("ledger-*.log")):
        for line in path.read_text().splitlines():
            parts = line.split()
            if not parts:
                continue
            if parts[0] == "S" and len(parts) == 5:
                view.starts.append((parts[1], int(parts[2]), int(parts[3]), float(parts[4])))
            elif parts[0] == "E" and len(parts) == 4:
                view.ends.append((parts[1], int(parts[2]), float(parts[3])))
    return view


@dataclass
class CheckResult:
    lost: set[str]
    unexpected: set[str]
    duplicated: dict[str, int]
    dead: set[str]


def check(ok: set[str], view: LedgerView, dead: set[str], cancelled: set[str] = frozenset()  # type: ignore[assignment]
          ) -> CheckResult:
    """Jepsen-style: lost = ok - done - dead - cancelled; unexpected = done - ok."""
    done = view.done
    return CheckResult(
        lost=ok - done - dead - set(cancelled),
        unexpected=done - ok,
        duplicated=view.duplicated,
        dead=dead,
    )
