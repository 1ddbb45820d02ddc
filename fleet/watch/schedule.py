"""The active watcher's scheduled jobs: when a slot of a job's schedule has come, the slots due run through the
façade (`Fleet.run_due`: each claimed in etcd first, so no other watcher or `fleet reconcile` runs it too). Between
slots nothing is read: the next slot's time is computed here, from the schedules alone."""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable, Sequence

from fleet.api import Fleet
from fleet.config.spec import JobSpec
from fleet.core import cron
from fleet.core.errors import FleetError, LeaseHeld

Log = Callable[..., None]


class Schedules:
    """Rounds of the scheduled jobs (`tick` once per watcher round); `clock` is the wall clock slots are read on."""

    def __init__(self, log: Log, clock: Callable[[], float] = time.time) -> None:
        self.log = log
        self.clock = clock
        self.next: float | None = None  # the soonest slot of any job; None: look now (start, playbooks changed)
        self._key: tuple[tuple[str, str, str, str], ...] = ()

    def _next(self, jobs: Sequence[JobSpec], now: float) -> float | None:
        at = dt.datetime.fromtimestamp(now, dt.UTC)
        found = [s.timestamp() for j in jobs if (c := j.cron()) is not None
                 and (s := cron.next_after(c, cron.zone(j.timezone), at)) is not None]
        return min(found) if found else None

    async def tick(self, fleet: Fleet, jobs: Sequence[JobSpec]) -> None:
        scheduled = [j for j in jobs if j.schedule]
        key = tuple((j.name, j.schedule or "", j.timezone, j.catch_up) for j in scheduled)
        if key != self._key:
            self._key, self.next = key, None
        now = self.clock()
        if not scheduled or (self.next is not None and now < self.next):
            return

        def line(job: str, index: int, text: str) -> None:
            self.log("job-output", job=job, container=index, line=text)

        try:
            runs = await fleet.fresh(on_event=fleet.on_event, command=fleet.command).run_due(scheduled, line,
                                                                                            clock=self.clock)
        except LeaseHeld as exc:
            self.log("lease-held", level="warning", message=f"scheduled jobs wait: {exc}")
            return
        except FleetError as exc:
            self.log("job-error", level="error", message=str(exc))
            return
        for r in runs:
            self.log("job", level="error" if r.status == "failed" else "info", job=r.job, run=r.run, slot=r.slot,
                     status=r.status, exit_status=r.exit_status, reason=r.reason)
        self.next = self._next(scheduled, now)
