"""Priorities: levels 1 (most urgent) to 10, the names "high", "normal", "low" for 2, 5, 8.

Each level has its own lane (a stream). A lane is named in stored data by one digit, its
*lane number*: in entry references (``<lane number>:<entry id>`` in the index and the
moves hash), in delayed data, dead letters, flow hashes and schedules. The numbers 0, 1
and 2 kept the meaning they had when only the three named levels existed (high, normal,
low), so data written before the ten levels still reads right; the other seven levels
got 3 to 9. Lane numbers are therefore NOT in priority order: ``LANE_ORDER`` is (and
``lua/shared.lua`` holds the same table as ``LANE_ORDER`` there; a test compares them).

    level        1  2(high)  3  4  5(normal)  6  7  8(low)  9  10
    lane number  3  0        4  5  1          6  7  2       8  9
"""

from __future__ import annotations

from typing import Literal, TypeAlias

from .errors import ConfigError

PriorityName: TypeAlias = Literal["high", "normal", "low"]
Priority: TypeAlias = PriorityName | int
"""What ``JobOptions(priority=...)`` takes: an int from 1 (most urgent) to 10, or a name."""

LEVELS = 10
NAMES: dict[str, int] = {"high": 2, "normal": 5, "low": 8}
"""The names of three levels (the priorities streamq had before there were ten)."""

LEVEL_OF_LANE: tuple[int, ...] = (2, 5, 8, 1, 3, 4, 6, 7, 9, 10)
"""The level of each lane number (index = lane number)."""
LANE_OF_LEVEL: dict[int, int] = {level: lane for lane, level in enumerate(LEVEL_OF_LANE)}
LANE_ORDER: tuple[int, ...] = tuple(LANE_OF_LEVEL[level] for level in range(1, LEVELS + 1))
"""Lane numbers, most urgent first: the order a claim reads them."""
LANE_SUFFIXES: tuple[str, ...] = tuple(
    next((n for n, v in NAMES.items() if v == level), str(level)) for level in LEVEL_OF_LANE)
"""The key suffix of each lane (index = lane number): the named levels keep the stream
names they always had (``lane:normal`` is how queues are discovered), the others are
named by level (``lane:1``, ``lane:3`` ...)."""


def _shown(level: int) -> Priority:
    if level == NAMES["high"]:
        return "high"
    if level == NAMES["normal"]:
        return "normal"
    return "low" if level == NAMES["low"] else level


PRIORITY_OF_LANE: tuple[Priority, ...] = tuple(_shown(level) for level in LEVEL_OF_LANE)
"""How each lane's jobs report their priority (index = lane number): the name for the
named levels, else the level."""


def level_of(priority: object) -> int:
    """The level (1-10) of a priority as given; a one-line ``ConfigError`` otherwise."""
    if isinstance(priority, str):
        level = NAMES.get(priority)
        if level is not None:
            return level
    elif isinstance(priority, int) and not isinstance(priority, bool) and 1 <= priority <= LEVELS:
        return priority
    shown = repr(priority)[:40] if isinstance(priority, str | int | float) else type(priority).__name__
    raise ConfigError(f"priority {shown} is invalid: use an integer from 1 (most urgent) to "
                      f"{LEVELS}, or 'high', 'normal', 'low' (2, 5, 8)")


def lane_of(priority: object) -> int:
    """The lane number of a priority as given (checked, as ``level_of``)."""
    return LANE_OF_LEVEL[level_of(priority)]


def priority_of_lane(lane: int) -> Priority | None:
    """How a job's priority is reported (``Job.priority``, ``JobInfo.priority``): the
    name for levels 2, 5, 8, the level for the others; None for a number that is no lane."""
    return PRIORITY_OF_LANE[lane] if 0 <= lane < LEVELS else None


def rank_of_lane(lane: int) -> int:
    """Sort key of a lane number: its level (lower runs first)."""
    return LEVEL_OF_LANE[lane]


__all__ = ["LANE_OF_LEVEL", "LANE_ORDER", "LANE_SUFFIXES", "LEVELS", "LEVEL_OF_LANE", "NAMES",
           "PRIORITY_OF_LANE", "Priority", "PriorityName", "lane_of", "level_of",
           "priority_of_lane", "rank_of_lane"]
