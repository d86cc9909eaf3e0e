"""What the operator CLI prints: plain-text tables, times, redacted payloads, prompts, progress.

Plain text on purpose: the output is pasted into tickets and read over SSH, and a table
of a few columns does not need a rendering library.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, TextIO

import anyio
import anyio.to_thread
import msgspec

from ..crypto import sealed_label
from ..logs import DROPPED_KEYS
from ..redact import redact_text


class CliError(Exception):
    """A one-line error for the operator (exit code 2)."""


def table(headers: Sequence[str], rows: Sequence[Sequence[object]], *,
          right: Sequence[int] = ()) -> str:
    """Columns padded to their widest cell; the columns in ``right`` are right-aligned."""
    cells = [[str(c) for c in headers], *[[str(c) for c in r] for r in rows]]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    lines = []
    for r in cells:
        parts = [c.rjust(w) if i in right else c.ljust(w)
                 for i, (c, w) in enumerate(zip(r, widths, strict=True))]
        lines.append("  ".join(parts).rstrip())
    return "\n".join(lines)


def fmt_dt(dt: datetime | None) -> str:
    if dt is None:
        return "-"
    return dt.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S") + "Z"


def now_text() -> str:
    return fmt_dt(datetime.now(UTC))


def shorten(text: str, width: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 1] + "…"


def _redact(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {k: "***" if str(k).lower() in DROPPED_KEYS else _redact(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_redact(v) for v in value]
    if isinstance(value, str):
        return redact_text(value)
    return value


def payload_text(data: Any, reason: str = "") -> str:
    """A payload as JSON, with phone numbers masked and secret-bearing fields (message
    text, codes, keys: the same names the logs drop) replaced by ``***``. An encrypted
    payload this process cannot open is shown as a marker with its key id and ``reason``."""
    if isinstance(data, bytes | bytearray):
        return sealed_label(bytes(data), reason) or f"<{len(data)} bytes that do not decode>"
    try:
        builtins = msgspec.to_builtins(data)
    except (TypeError, msgspec.EncodeError):
        return f"<{type(data).__name__} that cannot be shown>"
    return msgspec.json.encode(_redact(builtins)).decode()


@dataclass
class Console:
    """The streams a command talks to; tests pass their own."""

    out: TextIO = field(default_factory=lambda: sys.stdout)
    err: TextIO = field(default_factory=lambda: sys.stderr)
    inp: TextIO = field(default_factory=lambda: sys.stdin)

    def print(self, text: str = "") -> None:
        self.out.write(text + "\n")
        self.out.flush()

    def note(self, text: str) -> None:
        self.err.write(text + "\n")
        self.err.flush()

    def out_is_tty(self) -> bool:
        return _isatty(self.out)

    async def confirm(self, question: str, *, yes: bool, action: str) -> bool:
        """True when ``--yes`` was given or the operator answers y. Without a terminal to
        ask on, refuse: a script must say --yes to destroy data."""
        if yes:
            return True
        if not _isatty(self.inp):
            raise CliError(f"refusing to {action} without confirmation: stdin is not a terminal; "
                           "pass --yes")
        self.err.write(f"{question} [y/N] ")
        self.err.flush()
        answer = await anyio.to_thread.run_sync(self.inp.readline)
        return answer.strip().lower() in ("y", "yes")


def _isatty(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


class Progress:
    """Progress of a long operation on stderr: one rewritten line on a terminal, one line
    per update otherwise (a log keeps every step)."""

    def __init__(self, console: Console, label: str, total: int) -> None:
        self.console = console
        self.label = label
        self.total = total
        self.t0 = time.monotonic()
        self.tty = _isatty(console.err)

    def update(self, done: int, extra: str = "") -> None:
        elapsed = max(time.monotonic() - self.t0, 1e-6)
        rate = done / elapsed
        pct = f" ({100 * done / self.total:.1f}%)" if self.total else ""
        eta = ""
        if self.total and rate > 0 and done < self.total:
            eta = f", about {(self.total - done) / rate:.0f}s left"
        line = f"{self.label}: {done}/{self.total}{pct}, {rate:.0f}/s{eta}{extra}"
        if self.tty:
            self.console.err.write("\r\x1b[2K" + line)
        else:
            self.console.err.write(line + "\n")
        self.console.err.flush()

    def finish(self) -> None:
        if self.tty:
            self.console.err.write("\n")
            self.console.err.flush()
