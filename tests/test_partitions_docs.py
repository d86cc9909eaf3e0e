"""The runnable example of docs/partitions.md runs as written (against the test Redis)."""

from __future__ import annotations

import os
import re
import subprocess
import sys

from tests.support.util import ROOT


def example(marker: str) -> str:
    text = (ROOT / "docs" / "partitions.md").read_text()
    m = re.search(rf"<!-- example: {marker} -->\n```python\n(.*?)```", text, re.DOTALL)
    assert m is not None, f"no example {marker!r} in docs/partitions.md"
    return m.group(1)


def test_the_partitions_example_runs(redis_url: str, queue_name: str) -> None:
    code = example("partitions").replace('"orders"', repr(queue_name))
    p = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                       timeout=60, env=dict(os.environ, REDIS_URL=redis_url,
                                            PYTHONPATH=str(ROOT)))
    assert p.returncode == 0, p.stderr
    # the worker's own log lines (structlog's default: stdout) are not the example's output
    lines = [line for line in p.stdout.splitlines()
             if not re.match(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d \[", line)]
    waiting = [int(x) for x in re.findall(r"\d+", lines[0])]
    assert len(waiting) == 3 and sum(waiting) == 302 and min(waiting) > 0
    assert lines[1] == "ran per partition: " + str(waiting)
    assert "'completed': 302" in lines[2]
    assert lines[3:] == ["completed", "partitions: 3"]
