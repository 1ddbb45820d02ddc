"""The façade's jobs (`fleet job run|ls|logs`, scheduled runs, deploy hooks): `Fleet` inherits them. A run takes the
fleet's lease for as long as it runs and records itself in etcd under it (fleet.engine.jobs, fleet.store.jobs);
reading runs and their logs takes no lease.
"""

from __future__ import annotations

import abc
import contextlib
import datetime as dt
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Self

from fleet.config.spec import JobSpec, ServiceSpec
from fleet.core import cron
from fleet.core.errors import FleetError
from fleet.core.model import Inventory, Node
from fleet.engine.apply import Engine
from fleet.engine.jobs import JobRunner, OnLine, hooked
from fleet.results.jobs import Attempt, JobRun
from fleet.store.etcd import EtcdStore
from fleet.store.etcd_records import EtcdRecords
from fleet.store.jobs import JobRecords
from fleet.store.lease import default_holder
from fleet.transport import Pool


@dataclass(frozen=True)
class JobLog:
    """One attempt of a run and its log file's text (None: the node could not be read; `error` says why)."""

    attempt: Attempt
    text: str | None
    error: str | None = None


class Jobs(abc.ABC):
    """Jobs over the façade's pool, records and lease; `jobs` are the playbooks' (a rollout's hooks need them)."""

    pool: Pool
    inventory: Inventory
    command: str
    jobs: Mapping[str, JobSpec] = MappingProxyType({})  # none until `with_jobs`

    @abc.abstractmethod
    def writing(self) -> contextlib.AbstractAsyncContextManager[Engine]: ...

    @abc.abstractmethod
    def records(self) -> EtcdRecords: ...

    @abc.abstractmethod
    async def shared(self) -> EtcdStore: ...

    @abc.abstractmethod
    async def unsealed(self, specs: Sequence[ServiceSpec] | None = None) -> Callable[[str], str | None] | None: ...

    @abc.abstractmethod
    def known(self, name: str) -> Node: ...

    def with_jobs(self, jobs: Mapping[str, JobSpec]) -> Self:
        """This façade with the playbooks' jobs: its rollouts run their services' `before_deploy` hooks."""
        self.jobs = dict(jobs)
        return self

    def job_records(self) -> JobRecords:
        """The runs' records, written under this run's lease (read-only outside it)."""
        return JobRecords(self.records())

    def hook(self, engine: Engine, secrets: Callable[[str], str | None] | None) -> Engine:
        """`engine` running the `before_deploy` jobs of this façade's `jobs` (none: as it was)."""
        return hooked(engine, self.jobs, secrets, self.job_records(), self.command) if self.jobs else engine

    async def job_run(self, job: JobSpec, on_line: OnLine | None = None) -> JobRun:
        """Run `job` now (`fleet job run`), under the fleet's lease, to its end; its recorded run."""
        async with self.writing() as engine:
            await engine.observe()
            runner = JobRunner(engine, await self.unsealed([job.run]), self.job_records(), command=self.command,
                               on_line=on_line)
            return await runner.run(job)

    async def job_runs(self, job: str | None = None) -> list[JobRun]:
        """Every recorded run (of `job`), oldest first; no lease."""
        return await JobRecords(EtcdRecords(await self.shared())).runs(job)

    async def job_log(self, job: str, run: str | None = None) -> tuple[JobRun, list[JobLog]]:
        """A run's log files (`run`: its ID or a prefix of it; default the newest), read from their nodes."""
        runs = [r for r in await self.job_runs(job) if r.status != "missed"]
        chosen = [r for r in runs if run is None or r.run.startswith(run)]
        if not chosen:
            raise FleetError(f"job {job}: no run{f' {run!r}' if run else ''} on this fleet's records "
                             "(see `fleet job ls`)")
        if run is not None and len(chosen) > 1 and all(r.run != run for r in chosen):
            raise FleetError(f"job {job}: {run!r} names several runs: {', '.join(r.run for r in chosen)}")
        picked = chosen[-1]
        logs = []
        for a in picked.attempts:
            if not a.log:
                logs.append(JobLog(a, None, a.reason or "it did not start"))
                continue
            res = await self.pool.run(self.known(a.node), ["cat", a.log], timeout=30)
            logs.append(JobLog(a, res.stdout if res.ok else None,
                               None if res.ok else (res.error or res.stderr.strip() or f"exit {res.exit_status}")))
        return picked, logs

    async def run_due(self, jobs: Sequence[JobSpec], on_line: OnLine | None = None,
                      clock: Callable[[], float] = time.time) -> list[JobRun]:
        """The scheduled jobs' slots that are due now (fleet.core.cron.due), each claimed in etcd first (create
        if absent, fenced: a slot another controller took is skipped), then run; missed slots are recorded as
        such. Takes the fleet's lease only when a slot is due (read first, without it)."""
        scheduled = [j for j in jobs if j.schedule]
        if not scheduled or not await self._anything_due(scheduled, clock):
            return []
        done: list[JobRun] = []
        async with self.writing() as engine:
            records = self.job_records()
            await engine.observe()
            secrets = await self.unsealed([j.run for j in scheduled])
            for job in scheduled:
                d = await self._due(job, records, clock)
                for slot in d.missed:
                    name = cron.slot_name(slot)
                    if await records.claim(job.name, name, "missed"):
                        missed = JobRun(job.name, f"missed-{name}", "schedule", default_holder(), self.command,
                                        job.run.image, slot.timestamp(), "missed", slot.timestamp(), None,
                                        "no controller ran it on time (catch_up: "
                                        f"{job.catch_up})", slot=name)
                        await records.save(missed)
                        done.append(missed)
                if d.run is None:
                    continue
                name = cron.slot_name(d.run)
                runner = JobRunner(engine, secrets, records, command=self.command, on_line=on_line, clock=clock)
                if await records.claim(job.name, name):
                    done.append(await runner.run(job, "schedule", slot=name))
        return done

    async def _due(self, job: JobSpec, records: JobRecords, clock: Callable[[], float]) -> cron.Due:
        c = job.cron()
        assert c is not None
        claimed = await records.slots(job.name)
        last = cron.parse_slot(max(claimed)) if claimed else None
        now = dt.datetime.fromtimestamp(clock(), dt.UTC)
        return cron.due(c, cron.zone(job.timezone), now, last, job.catch_up)

    async def _anything_due(self, jobs: Sequence[JobSpec], clock: Callable[[], float]) -> bool:
        records = JobRecords(EtcdRecords(await self.shared()))
        for job in jobs:
            d = await self._due(job, records, clock)
            if d.run is not None or d.missed:
                return True
        return False
