"""The dashboard's pages: one small module per page, each with its own routes.

Adding a page (schedules, flows, provider breakers, ... as those features land): write
a module with a ``routes = web.RouteTableDef()`` of its handlers (render with
``render.page``; act through ``actions.act`` so the action is authorised, CSRF-checked
and written to the events stream), then list it in ``PAGES`` below, and add a
``NavItem`` to ``QUEUE_TABS`` if it is a tab of a queue.
"""

from __future__ import annotations

from types import ModuleType

from ..render import QUEUE_NAV, NavItem
from . import breakers, dead, job, live, login, overview, queue_jobs, schedules, search, workers

PAGES: tuple[ModuleType, ...] = (login, overview, queue_jobs, job, dead, workers, schedules,
                                  breakers, search, live)

QUEUE_TABS: tuple[NavItem, ...] = (
    NavItem("Jobs", ""),
    NavItem("Dead letters", "/dead"),
    NavItem("Workers", "/workers"),
    NavItem("Schedules", "/schedules"),
)

QUEUE_NAV[:] = QUEUE_TABS

__all__ = ["PAGES", "QUEUE_TABS"]
