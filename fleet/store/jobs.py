"""Jobs' records in etcd: every run and every claimed schedule slot, written fenced under the fleet's lease.

    /fleet/jobs/<job>/runs/<run>      one run (fleet.results.jobs.JobRun as JSON); <run> sorts by its start
    /fleet/jobs/<job>/slots/<ISO>     a schedule slot, claimed once by create-if-absent: the run that took it

A slot's key is created in a transaction that also compares the lease's fence and the key's absence, so two
watchers, or a watcher and `fleet reconcile`, can never both run one slot: the second finds the key and skips.
"""

from __future__ import annotations

import time
from typing import Any

from fleet.core.errors import RecordsError
from fleet.results.jobs import JobRun, from_doc
from fleet.store.etcd import SharedState, decode
from fleet.store.etcd_records import EtcdRecords
from fleet.store.lease import default_holder

JOBS = "/fleet/jobs/"


def run_key(job: str, run: str) -> str:
    return f"{JOBS}{job}/runs/{run}"


def slot_key(job: str, slot: str) -> str:
    return f"{JOBS}{job}/slots/{slot}"


class JobRecords:
    """Over the fleet's records (`records`): reads anywhere; writes only under the run's lease (its `shared`),
    each with its event in the log."""

    def __init__(self, records: EtcdRecords) -> None:
        self.records = records
        self.store = records.store

    def _writer(self) -> SharedState:
        if self.records.shared is None:
            raise RecordsError("jobs' runs are recorded only under the fleet's lease")
        return self.records.shared

    def _event(self, what: str, **fields: Any) -> dict[str, Any]:
        return self.records.event(what, **fields)

    async def save(self, run: JobRun) -> None:
        """Write the run as it stands (at its start, after each attempt, at its end); its end goes to the log."""
        event = None if run.status == "running" else self._event(
            f"job {run.job} run {run.run} {run.status}", job=run.job, run=run.run, exit_status=run.exit_status)
        await self._writer().write({run_key(run.job, run.run): run.to_doc()}, event=event)

    async def claim(self, job: str, slot: str, status: str = "run") -> bool:
        """Take the schedule slot (to `run` it, or to record it `missed`): True for the one writer that created
        its key, False for any other."""
        value = {"status": status, "by": default_holder(), "command": self.records.command, "at": time.time()}
        return await self._writer().create(slot_key(job, slot), value,
                                           event=self._event(f"job {job} slot {slot} claimed ({status})", job=job,
                                                             slot=slot))

    async def runs(self, job: str | None = None) -> list[JobRun]:
        """Every recorded run (of `job`), oldest first; RecordsError names a record that cannot be read."""
        out = []
        for kv in await self.store.range(f"{JOBS}{job}/runs/" if job else JOBS):
            if "/runs/" not in kv.key:
                continue
            try:
                out.append(from_doc(decode(kv)))
            except ValueError as exc:
                raise RecordsError(f"etcd key {kv.key}: {exc}; refusing it") from exc
        return sorted(out, key=lambda r: (r.started_at, r.run))

    async def slots(self, job: str) -> dict[str, dict[str, Any]]:
        """The job's claimed slots: ISO name -> what claimed it."""
        prefix = f"{JOBS}{job}/slots/"
        return {kv.key[len(prefix):]: decode(kv) for kv in await self.store.range(prefix)}
