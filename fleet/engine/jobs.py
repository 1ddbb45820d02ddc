"""Running a job (fleet.config.spec.jobs) under the fleet's lease: each of its containers placed like a replica
(the room book: the scheduler's placement, and the room other services of the run hold), started by the replicas'
path (files, secrets, volumes, `run_spec`) with labels that mark it a job run and no restart, its output followed
from its log file, waited for, killed past the deadline, tried again after a backoff, then removed (its log file
kept on the node); every run recorded in etcd (fleet.store.jobs) as it goes.

`JobHook` is a service's `before_deploy`: the job run once with the new revision's image and the service's
settings before any replica of that revision starts (fleet.engine.rollout).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime as dt
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import replace

from fleet.config.spec import JobSpec, ServiceSpec
from fleet.core import labels as L
from fleet.core.errors import CommandTimeout, ConnectError, FleetError, LeaseError, RecordsError
from fleet.core.model import Node
from fleet.engine.apply import Engine
from fleet.engine.calls import LIST_TIMEOUT, driver_for, perform
from fleet.engine.containers import STOP_MARGIN, forget
from fleet.engine.guarded import confirm
from fleet.engine.nodefiles import NodeFiles
from fleet.engine.replicas import NodeReplicas
from fleet.node.runtime.base import Call, RunSpec, Status, StopResult
from fleet.plan.scheduler import Assignment
from fleet.results import Event
from fleet.results.jobs import Attempt, JobRun, RunStatus
from fleet.store.jobs import JobRecords
from fleet.store.lease import default_holder
from fleet.transport import Pool

JOB = "fleet.job"
JOB_RUN = "fleet.job-run"
JOB_INDEX = "fleet.job-index"
POLL = 0.5  # seconds between looks at a running job (its task state and new log lines)
OUTPUT_TAIL = 20  # lines of a failed hook's output in the rollout's reason

OnLine = Callable[[str, int, str], None]  # (job, container index, line)


def run_id(now: float) -> str:
    """A run's ID: its start in UTC, sortable, and a random tail (`20261205T030000Z-k2x9`)."""
    stamp = dt.datetime.fromtimestamp(now, dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    return f"{stamp}-{L.random_suffix(4)}"


class JobReplicas(NodeReplicas):
    """The replicas' operations, starting a job's containers: labelled as the job's run (not as a replica, so no
    reconcile takes them for one), run once (no restart)."""

    def __init__(self, pool: Pool, engine: Engine, files: NodeFiles, run: str) -> None:
        super().__init__(pool, engine.view, engine.lbs, files, engine.on_event)
        self.run = run

    def shape(self, run: RunSpec) -> RunSpec:
        labels = {k: v for k, v in run.labels.items() if k not in (L.REPLICA, L.PORT)}
        labels.update({JOB: labels[L.SERVICE], JOB_RUN: self.run, JOB_INDEX: run.labels.get(L.REPLICA, "1")})
        return replace(run, labels=labels, restart="no")


class JobRunner:
    """Runs jobs on one engine (its view, room book and lease guard); records every run when `records` is given
    (under the lease); `on_line` hears every line a job's containers print."""

    def __init__(self, engine: Engine, secrets: Callable[[str], str | None] | None, records: JobRecords | None,
                 *, command: str = "", on_line: OnLine | None = None, clock: Callable[[], float] = time.time) -> None:
        self.engine = engine
        self.pool = engine.pool
        self.secrets = secrets
        self.records = records
        self.command = command
        self.on_line = on_line or (lambda job, index, line: None)
        self.clock = clock
        self._save_lock = asyncio.Lock()

    def emit(self, step: str, job: str, message: str, node: str | None = None, container: str | None = None) -> None:
        self.engine.on_event(Event(step, job, message, node, container))

    async def _save(self, run: JobRun) -> None:
        if self.records is not None:
            async with self._save_lock:
                await self.records.save(run)

    async def run(self, job: JobSpec, trigger: str = "manual", *, slot: str | None = None,
                  service: str | None = None, revision: int | None = None, prepare: bool = True) -> JobRun:
        """Run `job` to its end (every container, with its retries) and record it; the engine observed first.
        `prepare`: the workers first (hosts file, and the sweep of files no container uses); not within a rollout,
        which prepared them, and whose other services' new replicas have files but no container yet."""
        now = self.clock()
        rid = run_id(now)
        run = JobRun(job.name, rid, trigger, default_holder(), self.command, job.run.image, now, slot=slot,
                     service=service, revision=revision)
        await self._save(run)
        self.emit("job", job.name, f"{job.name}: run {rid} ({trigger}), {job.parallelism} container(s), "
                                   f"{job.retries} retries")
        ops = JobReplicas(self.pool, self.engine, NodeFiles(self.pool, self.secrets), rid)
        attempts: list[Attempt] = []

        async def progress(a: Attempt) -> None:
            attempts.append(a)
            await self._save(replace(run, attempts=tuple(attempts)))

        try:
            if prepare:
                await self.engine.ops.prepare([job.run])
            ends = await self._all(job, ops, revision or 0, progress)
        except (LeaseError, RecordsError):
            raise  # nothing more can be recorded
        except BaseException as exc:
            why = str(exc) if isinstance(exc, FleetError) else f"interrupted ({type(exc).__name__})"
            await asyncio.shield(self._save(replace(run, status="failed", finished_at=self.clock(), reason=why,
                                                    attempts=tuple(attempts))))
            raise
        failed = [a for a in ends if a.exit_status != 0]
        status: RunStatus = "failed" if failed else "succeeded"
        code = (failed[0].exit_status if failed[0].exit_status is not None else 1) if failed else 0
        reason = "; ".join(f"container {a.index}: {a.reason or f'exit {a.exit_status}'}" for a in failed)
        run = replace(run, status=status, finished_at=self.clock(), exit_status=code, reason=reason,
                      attempts=tuple(sorted(attempts, key=lambda a: (a.started_at, a.index))))
        await self._save(run)
        self.emit("job", job.name, f"{job.name}: run {rid} {status} (exit {code}) after "
                                   f"{run.duration or 0:.1f}s, {len(attempts)} attempt(s)")
        return run

    async def _all(self, job: JobSpec, ops: JobReplicas, revision: int,
                   progress: Callable[[Attempt], Awaitable[None]]) -> list[Attempt]:
        """Every container of the job at once, each to its last attempt. An error that is not the job's own
        failure (a lost lease, a node gone) stops the others, whose containers are removed on the way out."""
        try:
            async with asyncio.TaskGroup() as tg:
                tasks = [tg.create_task(self._container(job, ops, revision, progress))
                         for _ in range(job.parallelism)]
        except BaseExceptionGroup as group:
            raise group.exceptions[0] from None
        return [t.result() for t in tasks]

    async def _container(self, job: JobSpec, ops: JobReplicas, revision: int,
                         progress: Callable[[Attempt], Awaitable[None]]) -> Attempt:
        """One of the job's containers, tried until it exits 0 or its retries are spent; its last attempt."""
        last: Attempt | None = None
        for number in range(1, job.retries + 2):
            if last is not None:
                wait = job.backoff_before(number)
                self.emit("retry", job.name, f"{job.name}: container {last.index} failed "
                                             f"({last.reason or f'exit {last.exit_status}'}); try {number} of "
                                             f"{job.retries + 1} in {wait:g}s")
                await asyncio.sleep(wait)
            last = await self._attempt(job, ops, revision, number)
            await progress(last)
            if last.exit_status == 0:
                break
        assert last is not None
        return last

    async def _attempt(self, job: JobSpec, ops: JobReplicas, revision: int, number: int) -> Attempt:
        engine = self.engine
        spec = replace(job.run, replicas=job.parallelism)
        started = self.clock()
        async with engine.book.reserve(spec, revision, 1, set(), engine.view.volumes) as (a,):
            try:
                await engine.ops.ensure_images(a.node, {spec.image})
                await confirm(engine.stage.guard)
                r = await ops.start(spec, revision, a)
            except (LeaseError, RecordsError):
                raise
            except FleetError as exc:
                return Attempt(number, a.replica, a.node, "", "", started, self.clock(), None,
                               f"did not start: {exc}")
            report = engine.view.by_name[a.node]
            driver = driver_for(report.node, report.facts)
            log = getattr(driver, "log_path", lambda cid: "")(r.id)
            try:
                code, why = await self._follow(job, a, report.node, r.id, log)
            except BaseException:
                # Interrupted (SIGTERM, a lost node, a lost lease): the container is stopped and removed all the
                # same, its log kept, so nothing of the run is left running.
                await asyncio.shield(self._end(ops, report.node, driver.stop(r.id, 0.0), r.id))
                raise
            await ops.storage.release(report.node, r.id)
        return Attempt(number, a.replica, a.node, r.id, log, started, self.clock(), code, why)

    async def _follow(self, job: JobSpec, a: Assignment, node: Node, cid: str, log: str) -> tuple[int | None, str]:
        """Print the container's output as it comes, until it exits or its deadline passes (then it is killed);
        then remove it, keeping its log file. (exit status, why it failed beyond that)."""
        report = self.engine.view.by_name[a.node]
        driver = driver_for(node, report.facts)
        deadline = time.monotonic() + job.deadline if job.deadline is not None else None
        seen, why = 0, ""
        while True:
            try:
                tasks = await perform(self.pool, node, driver.task(cid), timeout=LIST_TIMEOUT)
                status = tasks.get(cid, (None, Status.UNKNOWN))[1]
            except (CommandTimeout, ConnectError):
                status = Status.RUNNING  # not known this round: look again
            seen = await self._read(job.name, a.replica, node, log, seen, final=False)
            if status not in (Status.RUNNING, Status.CREATED):
                break
            if deadline is not None and time.monotonic() > deadline:
                assert job.deadline is not None
                why = f"killed: its deadline ({job.deadline:g}s) passed"
                self.emit("deadline", job.name, f"{job.name}: {cid} {why}", a.node, cid)
                break
            await asyncio.sleep(POLL)
        grace = job.run.stop_grace_period if why else 0.0
        stopped = await perform(self.pool, node, driver.stop(cid, grace), timeout=grace + STOP_MARGIN)
        await self._read(job.name, a.replica, node, log, seen, final=True)
        await forget(self.pool, node, cid)
        return stopped.exit_code, why

    async def _end(self, ops: JobReplicas, node: Node, stop: Call[StopResult], cid: str) -> None:
        with contextlib.suppress(FleetError):
            await perform(self.pool, node, stop, timeout=STOP_MARGIN)
            await forget(self.pool, node, cid)
            await ops.storage.release(node, cid)

    async def _read(self, job: str, index: int, node: Node, log: str, seen: int, *, final: bool) -> int:
        """Hand on the log's lines after the first `seen` (a line still being written waits for its end, but
        for the `final` read); the count of lines handed on."""
        if not log:
            return seen
        res = await self.pool.run(node, ["tail", "-n", f"+{seen + 1}", log], timeout=30)
        if not res.ok:
            return seen
        lines = res.stdout.split("\n")
        whole, rest = lines[:-1], lines[-1]
        for line in whole:
            self.on_line(job, index, line)
        if final and rest:
            self.on_line(job, index, rest)
        return seen + len(whole)


@dataclasses.dataclass
class JobHook:
    """A service's `before_deploy` on one engine: its job, run with the new revision's image and the service's
    env, configs and secrets; None when it succeeded, else why the rollout must not start (with its output)."""

    runner: JobRunner
    jobs: Mapping[str, JobSpec]
    output: list[str] = dataclasses.field(default_factory=list)

    async def __call__(self, spec: ServiceSpec, revision: int) -> str | None:
        name = spec.before_deploy
        job = self.jobs.get(name or "")
        if job is None:
            return (f"{spec.name}: before_deploy job {name!r} is not in the playbooks this run read; the rollout "
                    "did not start")
        self.output.clear()
        run = await self.runner.run(job.with_service(spec), "before_deploy", service=spec.name, revision=revision,
                                    prepare=False)
        if run.status == "succeeded":
            return None
        tail = "".join(f"\n    {line}" for line in self.output[-OUTPUT_TAIL:])
        return (f"{spec.name}: before_deploy job {job.name} failed (run {run.run}: {run.reason}); revision "
                f"{revision} was not rolled out" + (f"; its last output:{tail}" if tail else ""))

    def hear(self, job: str, index: int, line: str) -> None:
        self.output.append(line)


def hooked(engine: Engine, jobs: Mapping[str, JobSpec], secrets: Callable[[str], str | None] | None,
           records: JobRecords | None, command: str) -> Engine:
    """`engine` with its rollouts running their services' `before_deploy` jobs from `jobs`; the job's output
    goes to the engine's events (`job-output`)."""
    def line(job: str, index: int, text: str) -> None:
        hook.hear(job, index, text)
        engine.on_event(Event("job-output", job, text))

    hook = JobHook(JobRunner(engine, secrets, records, command=command, on_line=line), jobs)
    engine.stage.hook = hook
    return engine


def by_name(jobs: Sequence[JobSpec]) -> dict[str, JobSpec]:
    return {j.name: j for j in jobs}
