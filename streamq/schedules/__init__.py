"""Scheduled jobs: cron expressions and intervals whose every slot fires exactly once.

    await q.upsert_schedule("digest", cron="0 8 * * *", tz="Africa/Nairobi", data={...})
    await q.upsert_schedule("ping", every=30.0, data={...})
    await q.schedules()                 # -> list[Schedule]
    await q.remove_schedule("digest")   # -> bool

Schedules live in Redis (``model.py``: one hash each, in the partition of their id);
producers and operators change them through ``store.py``; the queue's running workers
fire them (``runner.py``); ``timing.py`` computes the slots (cron with cronsim, in the
schedule's IANA zone, and its DST rule). docs/schedules.md tells the whole story.
"""

from .model import Schedule, run_job_id
from .runner import ScheduleEvent, ScheduleRunner, plan_fire
from .store import Schedules
from .timing import Timing

__all__ = ["Schedule", "ScheduleEvent", "ScheduleRunner", "Schedules", "Timing", "plan_fire",
           "run_job_id"]
