"""`fleet job run|ls|logs`: the playbooks' jobs, run by hand, and every run the fleet recorded."""

from __future__ import annotations

import datetime as dt
import sys
from typing import TYPE_CHECKING, Annotated

import typer

from fleet.cli import common
from fleet.cli.apply import FileOpt, playbooks_from
from fleet.cli.common import esc

if TYPE_CHECKING:
    from fleet.api import Fleet, JobLog, JobRun
    from fleet.config.spec import JobSpec, ServiceSpec
    from fleet.results import Event, RunResult

app = typer.Typer(help="Jobs: containers that run to their end (a migration, a nightly report), by hand or on a "
                       "schedule; their runs as the fleet recorded them.", no_args_is_help=True)

JobArg = Annotated[str, typer.Argument(help="The job's name, as the playbooks' jobs: section says.",
                                       show_default=False)]


def load(paths: list[str] | None, files: list[str] | None = None) -> tuple[list[ServiceSpec], dict[str, JobSpec]]:
    """The playbooks' services and jobs (exit 2 naming file, line and field when one is wrong)."""
    return playbooks_from(paths, files)


def _when(at: float | None) -> str:
    return "-" if at is None else dt.datetime.fromtimestamp(at, dt.UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def _event(e: Event) -> None:
    if e.step != "job-output":
        common.console(stderr=True).print(f"[dim]{esc(e.message)}[/]", highlight=False)


def run(name: JobArg, file: FileOpt = None, inventory: common.InventoryOpt = None, json: common.JsonOpt = False,
        wait: common.WaitOpt = None) -> None:
    """Run job NAME now, print its output as it comes, and exit with its exit status.

    Each of its `parallelism` containers is placed like a replica (placement, room), started with its env,
    secrets, configs and volumes, waited for, killed past its `deadline` and tried again after a failure
    (`retries`, `backoff` doubling); then removed, its log file kept on the node (`fleet job logs`). Takes
    the fleet's lease for as long as it runs; the run is recorded on the fleet (`fleet job ls`).

    Exit codes: the job's own (0 when every container exited 0); 1 when it could not start; 2 bad input;
    75 another run holds the lease (see --wait).

    Example:

      fleet job run migrate -f playbooks/"""
    from fleet.api import Fleet

    _, jobs = load(None, file)
    job = jobs.get(name)
    if job is None:
        common.fail(f"no job {name!r} in the playbooks (jobs: {', '.join(sorted(jobs)) or 'none'})")
    inv = common.inventory(inventory)
    seconds = common.wait_seconds(wait)
    many = job.parallelism > 1

    def line(_job: str, index: int, text: str) -> None:
        if not json:
            sys.stdout.write(f"[{index}] {text}\n" if many else f"{text}\n")
            sys.stdout.flush()

    async def go() -> JobRun:
        async with Fleet.connect(inv, on_event=None if json else _event, wait=seconds) as f:
            return await f.with_jobs(jobs).job_run(job, line)

    done = common.run(go)
    if json:
        common.print_json(done.to_doc())
    else:
        common.console(stderr=True).print(f"{name}: run {done.run} {done.status} (exit {done.exit_status}, "
                                          f"{len(done.attempts)} attempt(s), {done.duration or 0:.1f}s)",
                                          highlight=False)
    raise typer.Exit(0 if done.status == "succeeded" else done.exit_status or common.EXIT_PARTIAL)


def ls(name: Annotated[str | None, typer.Argument(help="Only this job's runs.", show_default=False)] = None,
       inventory: common.InventoryOpt = None, json: common.JsonOpt = False,
       last: Annotated[int, typer.Option("--last", "-n", min=1, help="The newest N runs.")] = 20) -> None:
    """List the runs the fleet recorded: manual, scheduled (missed slots too) and deploy hooks.

    Example:

      fleet job ls migrate"""
    from fleet.api import Fleet

    inv = common.inventory(inventory)

    async def go() -> list[JobRun]:
        async with Fleet.connect(inv) as f:
            return await f.job_runs(name)

    runs = common.run(go)[-last:]
    if json:
        common.print_json([r.to_doc() for r in runs])
        return
    from rich.table import Table

    t = Table(box=None, pad_edge=False, header_style="bold")
    for col in ("job", "run", "trigger", "started", "status", "exit", "took", "tries", "node", "who"):
        t.add_column(col, no_wrap=True)
    colour = {"succeeded": "green", "failed": "red", "missed": "yellow", "running": "cyan"}
    for r in runs:
        trigger = r.trigger + (f" {r.slot}" if r.slot else "") + (
            f" {r.service} rev {r.revision}" if r.service else "")
        took = "-" if r.duration is None else f"{r.duration:.1f}s"
        t.add_row(esc(r.job), r.run, esc(trigger), _when(r.started_at), f"[{colour[r.status]}]{r.status}[/]",
                  "-" if r.exit_status is None else str(r.exit_status), took, str(len(r.attempts)),
                  esc(r.last.node) if r.last else "-", esc(r.who))
    out = common.console()
    out.print(t) if runs else out.print("no job runs recorded" + (f" for {name}" if name else ""))
    for r in runs:
        if r.status in ("failed", "missed") and r.reason:
            out.print(f"[dim]{r.job} {r.run}: {esc(r.reason)}[/]", highlight=False)


def logs(name: JobArg, run: Annotated[str | None, typer.Argument(
             help="The run's ID (or its start); default the newest.", show_default=False)] = None,
         inventory: common.InventoryOpt = None) -> None:
    """Print a run's output from the log files its containers left on their nodes, attempt by attempt.

    Example:

      fleet job logs migrate
      fleet job logs migrate 20261205T030000Z"""
    from fleet.api import Fleet

    inv = common.inventory(inventory)

    async def go() -> tuple[JobRun, list[JobLog]]:
        async with Fleet.connect(inv) as f:
            return await f.job_log(name, run)

    picked, found = common.run(go)
    err = common.console(stderr=True)
    bad = False
    for log in found:
        a = log.attempt
        err.print(f"[dim]== {picked.run} container {a.index} try {a.number} on {esc(a.node)} ({esc(a.log or '-')}): "
                  f"exit {a.exit_status}{f', {esc(a.reason)}' if a.reason else ''}[/]", highlight=False)
        if log.text is not None:
            sys.stdout.write(log.text)
            sys.stdout.flush()
        else:
            bad = True
            err.print(f"[yellow]! {esc(log.error or 'unreadable')}[/]")
    raise typer.Exit(common.EXIT_PARTIAL if bad else common.EXIT_OK)


async def reconcile_due(f: Fleet, jobs: dict[str, JobSpec], result: RunResult) -> RunResult:
    """`fleet reconcile`'s scheduled jobs: the slots due now run (or are recorded missed) after the services
    converged; each run is one more outcome (`job NAME`), so a failed one makes the exit status 1."""
    from fleet.results import Outcome, RunResult

    runs = await f.run_due(list(jobs.values()))
    extra = [Outcome(f"job {r.job}", r.status != "failed", reason=f"slot {r.slot}: {r.status}"
                     + (f" ({r.reason})" if r.reason else ""), changed=True) for r in runs]
    return RunResult([*result.outcomes, *extra], result.errors)


app.command("run")(run)
app.command("ls")(ls)
app.command("logs")(logs)
