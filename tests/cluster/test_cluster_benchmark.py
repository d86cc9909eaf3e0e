"""``python -m benchmarks.cluster_scaleout`` at a tiny size, so its code cannot rot (the
figures in benchmarks/README.md come from full runs by hand)."""

from __future__ import annotations

import subprocess
import sys

from tests.support.util import ROOT


def test_the_scaleout_benchmark_runs_and_prints_its_table() -> None:
    r = subprocess.run([sys.executable, "-m", "benchmarks.cluster_scaleout", "--configs",
                        "single,1,3", "--jobs", "300", "--rounds", "1", "--concurrency", "10"],
                       cwd=ROOT, capture_output=True, text=True, timeout=180)
    assert r.returncode == 0, r.stderr[-3000:]
    rows = [ln for ln in r.stdout.splitlines() if ln.startswith("| ")]
    assert [ln.split("|")[1].strip() for ln in rows[1:]] == [
        "single Redis, N=1", "cluster, N=1", "cluster, N=3"]
    # N = 3: three masters did work, none all of it
    per_master = rows[-1].split("|")[5].strip().split(" / ")
    assert len(per_master) == 3 and all(float(x) > 0 for x in per_master)
