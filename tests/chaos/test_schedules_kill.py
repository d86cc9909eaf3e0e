"""Schedules under chaos: several worker processes fire a one-second schedule for 20 s
while one of them is SIGKILLed every 2 s and restarted; every slot yields exactly one
run (python -m benchmarks.schedules runs the same for a minute, by hand)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.chaos.schedule_scenario import ScheduleKillConfig, run_schedule_kills

pytestmark = pytest.mark.chaos


@pytest.mark.timeout(150)
async def test_each_slot_fires_exactly_once_while_workers_are_killed(tmp_path: Path) -> None:
    cfg = ScheduleKillConfig(seconds=20, workers=3, kill_every=2.0)
    report = await run_schedule_kills(cfg, tmp_path)
    print("\n".join(report.lines()))
    assert report.problems() == []
    assert len(report.faults) >= 5, "the run was too short to kill anything"
    assert report.fired == report.expected
    assert "Traceback" not in report.logs


@pytest.mark.timeout(120)
async def test_each_slot_fires_exactly_once_on_a_partitioned_queue(tmp_path: Path) -> None:
    cfg = ScheduleKillConfig(seconds=8, workers=2, kill_every=0, partitions=3)
    report = await run_schedule_kills(cfg, tmp_path)
    print("\n".join(report.lines()))
    assert report.problems() == []
    assert report.fired == report.expected
