"""Rates from successive counts, kept in this process's memory only.

The dashboard keeps no history in Redis: each time it reads a queue's counts (a page
load, or a live feed about once a second) it remembers them for ``WINDOW_S``, and a
rate is the change over the samples it has. A fresh process shows no rate until two
readings lie ``MIN_SPAN_S`` apart.

- in/s: jobs added (the growth of waiting+active+delayed+completed+failed+cancelled,
  which every added job enters and only purges leave)
- done/s: jobs completed; failed/s: jobs dead-lettered (replays can make the failed
  count fall; a fall counts as 0)
"""

from __future__ import annotations

from collections import deque

WINDOW_S = 30.0
MIN_SPAN_S = 0.9
MAX_SAMPLES = 256
_ALL = ("waiting", "active", "delayed", "completed", "failed", "cancelled")


class RateMeter:
    def __init__(self) -> None:
        self._samples: deque[tuple[float, int, int, int]] = deque(maxlen=MAX_SAMPLES)

    def observe(self, counts: dict[str, int], at: float) -> None:
        total = sum(int(counts.get(k, 0)) for k in _ALL)
        self._samples.append((at, total, int(counts.get("completed", 0)),
                              int(counts.get("failed", 0))))
        while self._samples and at - self._samples[0][0] > WINDOW_S:
            self._samples.popleft()

    def rates(self) -> dict[str, float] | None:
        """{'in', 'done', 'failed'} per second over the window; None with too few samples."""
        if len(self._samples) < 2:
            return None
        t0, total0, done0, failed0 = self._samples[0]
        t1, total1, done1, failed1 = self._samples[-1]
        span = t1 - t0
        if span < MIN_SPAN_S:
            return None
        return {"in": round(max(0, total1 - total0) / span, 1),
                "done": round(max(0, done1 - done0) / span, 1),
                "failed": round(max(0, failed1 - failed0) / span, 1)}


__all__ = ["RateMeter"]
