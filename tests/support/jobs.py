"""A handler for ``python -m streamq.worker --handler tests.support.jobs:check``: its
payload ``{"ok": ...}`` says what the job does."""

from __future__ import annotations

import anyio

from streamq import Job, PermanentError


async def check(job: Job) -> str:
    """``ok`` True: complete; False: fail for good; "retry": fail the first attempt only;
    "hang": run until cut."""
    ok = job.data["ok"]
    if ok == "hang":
        await anyio.sleep_forever()
    if ok == "retry" and job.attempt == 1:
        raise RuntimeError("once")
    if ok is False:
        raise PermanentError("not ok")
    return "done"
