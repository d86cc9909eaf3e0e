"""The runnable examples of docs/workflows.md run as written and print what it says."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

from tests.support.util import ROOT

DOC = ROOT / "docs" / "workflows.md"


def example(marker: str) -> tuple[str, list[str]]:
    """The example's code and the output the page shows after it."""
    text = DOC.read_text()
    m = re.search(rf"<!-- example: {marker} -->\n```python\n(.*?)```\n\n[^\n]*\n\n```\n(.*?)```",
                  text, re.DOTALL)
    assert m is not None, f"no example {marker!r} (with its output) in docs/workflows.md"
    return m.group(1), m.group(2).splitlines()


@pytest.mark.parametrize(("marker", "names"), [
    ("results", ('"invoices"',)),
    ("progress", ('"imports"',)),
    ("flows", ('"reports"', '"fetch"')),
    ("priorities", ('"alerts"',)),
    ("batches", ('"mailings"',)),
])
def test_each_workflows_example_prints_what_the_page_shows(
    redis_url: str, queue_name: str, marker: str, names: tuple[str, ...]
) -> None:
    code, expected = example(marker)
    for i, name in enumerate(names):  # a fresh queue per run: custom job ids are reused
        code = code.replace(name, repr(f"{queue_name}{i}"))
    p = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                       timeout=60, env=dict(os.environ, REDIS_URL=redis_url,
                                            PYTHONPATH=str(ROOT)))
    assert p.returncode == 0, p.stderr
    # the worker's own log lines (structlog's default: stdout) are not the example's output
    lines = [line for line in p.stdout.splitlines()
             if not re.match(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d \[", line)]
    assert lines == expected
