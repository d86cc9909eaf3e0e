"""The runnable example of docs/schedules.md runs as written (against the test Redis) and
prints what the page says it prints."""

from __future__ import annotations

import os
import re
import subprocess
import sys

from tests.support.util import ROOT

DOC = ROOT / "docs" / "schedules.md"


def example(marker: str) -> str:
    m = re.search(rf"<!-- example: {marker} -->\n```python\n(.*?)```", DOC.read_text(), re.DOTALL)
    assert m is not None, f"no example {marker!r} in docs/schedules.md"
    return m.group(1)


def printed(marker: str) -> list[str]:
    text = DOC.read_text()
    start = text.index(f"<!-- example: {marker} -->")
    m = re.search(r"it prints:\n\n```\n(.*?)```", text[start:], re.DOTALL)
    assert m is not None
    return m.group(1).strip().splitlines()


def test_the_schedules_example_runs_and_prints_what_the_page_says(
        redis_url: str, queue_name: str) -> None:
    code = example("schedules").replace('"reports"', repr(queue_name))
    p = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                       timeout=60, env=dict(os.environ, REDIS_URL=redis_url,
                                            PYTHONPATH=str(ROOT)))
    assert p.returncode == 0, p.stderr
    # the worker's own log lines (structlog's default: stdout) are not the example's output
    lines = [line for line in p.stdout.splitlines()
             if not re.match(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d \[", line)]
    assert lines == printed("schedules")
