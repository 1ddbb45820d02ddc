"""`fleet plan`, `fleet apply`, `fleet scale`, `fleet destroy`: playbooks in, converged services out."""

from __future__ import annotations

import dataclasses
import json as jsonlib
import os
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Annotated, Any

import typer

from fleet.cli import common, records
from fleet.cli.common import esc
from fleet.cli.completion import ServiceArg
from fleet.core.errors import ConfigError

if TYPE_CHECKING:
    from rich.console import Console
    from rich.live import Live
    from rich.table import Table

    from fleet.api import Fleet
    from fleet.config.spec import JobSpec, ServiceSpec
    from fleet.plan.members import MembershipPlan
    from fleet.plan.reconcile import Plan
    from fleet.results import Event, Outcome, PlanView, RunResult

# Engines, specs and the history are imported inside the commands: `fleet nodes` and the other light
# commands should not pay for loading them at every start.

EXIT_CHANGES = common.EXIT_CHANGES
ParallelOpt = Annotated[int | None, typer.Option(
    "--parallel", min=1, show_default=False,
    help="Services converging at once, each with its own batches (default 16: a rollout mostly waits on "
         "health checks; HAProxy reloads, records and each node's SSH sessions are shared).")]
CHANGES = ("start", "stop", "remove", "rollback", "pull", "canary")

PlaybooksArg = Annotated[list[str] | None, typer.Argument(
    help="Playbook files or directories (default: $FLEET_PLAYBOOKS or ./playbooks).", show_default=False)]
# kubectl's `-f`, beside the positional arguments every playbook command has always taken: both may be given.
FileOpt = Annotated[list[str] | None, typer.Option(
    "-f", "--file", metavar="PATH", show_default=False,
    help="A playbook file or directory, repeatable (default: $FLEET_PLAYBOOKS or ./playbooks).")]
EnvFileOpt = Annotated[str | None, typer.Option(
    "--env-file", metavar="FILE", show_default=False,
    help="NAME=value lines for ${NAME} in the playbooks; the environment wins over the file.")]
SetOpt = Annotated[list[str] | None, typer.Option(
    "--set", metavar="SERVICE.image=REF", show_default=False,
    help="Run SERVICE with image REF instead of the playbook's, repeatable; recorded as `fleet deploy` "
         "(reconcile keeps it, `fleet plan` shows the playbook's image as drift).")]


def playbook_paths(args: list[str] | None, files: list[str] | None = None) -> list[str]:
    """The playbooks named as arguments and with -f, else $FLEET_PLAYBOOKS or ./playbooks; exit 2 saying how to
    name them when that default does not exist (rather than a bare "No such file or directory")."""
    named = [*(args or []), *(files or [])]
    if named:
        return named
    env = os.environ.get("FLEET_PLAYBOOKS")
    default = env or "playbooks"
    if not os.path.exists(default):
        where = f"FLEET_PLAYBOOKS={env}" if env else "the default ./playbooks"
        common.fail(f"no playbooks: {where} does not exist; name them (e.g. `fleet apply -f web.yaml`), "
                    f"or set FLEET_PLAYBOOKS to their directory")
    return [default]


def specs_from(paths: list[str] | None, files: list[str] | None = None,
               env_file: str | None = None) -> list[ServiceSpec]:
    """The playbooks' services, `${NAME}` expanded from the environment over `env_file`; exit 2 naming every
    problem (file:line)."""
    return playbooks_from(paths, files, env_file)[0]


def playbooks_from(paths: list[str] | None, files: list[str] | None = None,
                   env_file: str | None = None) -> tuple[list[ServiceSpec], dict[str, JobSpec]]:
    """The playbooks' services and jobs, `${NAME}` expanded from the environment over `env_file`; exit 2 naming
    every problem (file:line)."""
    from fleet.config.spec import jobs_of, load_playbook_files

    chosen = playbook_paths(paths, files)
    variables = playbook_variables(env_file)
    try:
        playbooks = load_playbook_files(chosen, variables)
    except ConfigError as exc:
        common.fail(str(exc))
    return [s for pb in playbooks for s in pb.services], jobs_of(playbooks)


def playbook_variables(env_file: str | None = None) -> dict[str, str]:
    """What `${NAME}` in the playbooks expands from: the environment over `env_file`'s lines; exit 2 naming every
    bad line (file:line)."""
    from fleet.config.variables import read_env_file
    from fleet.config.yamlmarks import read_text
    from fleet.core.errors import SpecError

    if env_file is None:
        return dict(os.environ)
    try:
        found, problems = read_env_file(env_file, read_text(env_file, "env file"))
        if problems:
            raise SpecError(problems)
    except ConfigError as exc:
        common.fail(str(exc))
    return {**found, **os.environ}


def images_set(sets: list[str] | None, specs: Sequence[ServiceSpec]) -> dict[str, str]:
    """`--set SERVICE.image=REF` as {service: image}; exit 2 naming a value that is not one."""
    from fleet.config.spec import IMAGE_RE

    names = {s.name for s in specs}
    out: dict[str, str] = {}
    for item in sets or []:
        key, sep, image = item.partition("=")
        service, dot, field = key.rpartition(".")
        if not sep or not dot or field != "image":
            common.fail(f"--set {item!r}: expected SERVICE.image=REF (only a service's image can be set)")
        if service not in names:
            common.fail(f"--set {item!r}: no service {service!r} in these playbooks")
        if len(image) > 255 or not IMAGE_RE.match(image):
            common.fail(f"--set {item!r}: expected an image reference such as registry.local/web:v2")
        out[service] = image
    return out


def plan_json(p: Plan, errors: dict[str, str]) -> dict[str, Any]:
    return {
        "changed": p.changed,
        "unreachable": errors,
        "unmanaged": list(p.unmanaged),
        "rejected": dict(p.rejected),
        "lacking": dict(p.lacking),
        "services": [{
            "service": s.name,
            "image": s.spec.image_ref,
            "replicas": s.spec.replicas,
            "keep": [r.id for r in s.keep],
            "start": [{"replica": a.replica, "node": a.node, "port": a.port, "reason": a.reason} for a in s.start],
            "replace": [{"id": r.id, "node": r.node, "image": r.image} for r in s.replace],
            "stop": [{"id": r.id, "node": r.node, "reason": why} for r, why in s.stop],
            "cleanup": [r.id for r in s.cleanup],
            "unplaced": [str(u) for u in s.unplaced],
            "lb": None if s.spec.lb is None else {"port": s.spec.lb.port, "mode": s.spec.lb.mode},
        } for s in p.services],
    }


def print_plan(p: Plan, errors: dict[str, str], changes: dict[str, list[str]] | None = None,
               notes: dict[str, str] | None = None) -> None:
    out = common.console()
    changes, notes = changes or {}, notes or {}
    for node, why in sorted(errors.items()):
        out.print(f"[yellow]! {node}: {esc(why)} (its replicas are placed elsewhere)[/]")
    for node, why in p.lacking.items():
        out.print(f"[yellow]! {node}: {esc(why)}[/]")
    for s in p.services:
        edits = [c for c in changes.get(s.name, []) if c]
        marker = "[yellow]~[/]" if s.changed or s.unplaced or edits else "[green]=[/]"
        lb = f", lb :{s.spec.lb.port}" if s.spec.lb else ""
        each = " per-node" if s.spec.per_node else ""
        out.print(f"{marker} [bold]{s.name}[/] ({esc(s.spec.image_ref)}, {s.spec.replicas}{each} replicas{lb})")
        for line in edits:
            out.print(f"    [yellow]~ {esc(line)}[/]")
        if s.name in notes:
            out.print(f"    [dim]reconcile: {esc(notes[s.name])}[/]")
        for a in s.start:
            out.print(f"    [green]+ start[/] {s.name}\\[{a.replica}] on {a.node}:{a.port}"
                      + (" (moved)" if a.reason == "move" else ""))
        if s.replace:
            old = sorted({r.image for r in s.replace})
            out.print(f"    [yellow]~ replace[/] {len(s.replace)} replica(s) running {esc(', '.join(old))} → "
                      f"{esc(s.spec.image_ref)}: rolling, max surge {s.spec.update.max_surge}, "
                      f"max unavailable {s.spec.update.max_unavailable}")
        for r, why in s.stop:
            out.print(f"    [red]- stop[/] {r.id} on {r.node} ({esc(why)})")
        for r in s.cleanup:
            out.print(f"    [red]- remove[/] stopped {r.id} on {r.node}")
        for u in s.unplaced:
            out.print(f"    [bold red]! cannot place[/] {esc(str(u))}")
        if not (s.changed or s.unplaced or edits):
            out.print(f"    no change ({len(s.keep)} replicas up to date)")
    if p.unplaced:
        for node, why in p.rejected.items():
            out.print(f"    [red]! {esc(node)}[/]: {esc(why)}")
    for name in p.unmanaged:
        out.print(f"[dim]  {name}: running, not in these playbooks (left alone)[/]")
    pending = p.changed or any(changes.get(s.name) for s in p.services)
    out.print("Plan: " + ("changes pending" if pending else "nothing to do")
              + (f"; {len(p.unplaced)} replica(s) cannot be placed" if p.unplaced else ""))


def print_lb_diff(diffs: dict[str, list[str]]) -> None:
    """The HAProxy config changes per lb node (unified diff), after the plan."""
    out = common.console()
    for node, lines in sorted(diffs.items()):
        out.print(f"[bold]HAProxy on {esc(node)}[/] would change:")
        for line in lines:
            style = "green" if line.startswith("+") else "red" if line.startswith("-") else "dim"
            out.print(f"  [{style}]{esc(line)}[/]")


def print_members(members: MembershipPlan, out: Console | None = None) -> None:
    """The etcd membership steps the apply makes first (or why it will refuse), after the plan."""
    out = out or common.console()
    if members.steps or members.refused or members.warnings:
        out.print("[bold]The record nodes[/] (etcd members; apply changes them first, one at a time):")
        records.print_plan(out, members)


def plan(playbooks: PlaybooksArg = None, file: FileOpt = None, inventory: common.InventoryOpt = None,
         json: common.JsonOpt = False, env_file: EnvFileOpt = None) -> None:
    """Show what `fleet apply` would change.

    Exit 0: nothing to do; 3: changes pending; 1: a node failed, a replica cannot be placed or the record
    nodes' change is refused; 2: a playbook is wrong.

    Example:

      fleet plan playbooks/web.yaml
      fleet plan -f playbooks/ --json
      IMAGE=registry.local/web:v2 fleet plan -f web.yaml --env-file staging.env"""
    from fleet.api import Fleet

    inv = common.inventory(inventory)
    specs = specs_from(playbooks, file, env_file)

    async def go() -> PlanView:
        async with Fleet.connect(inv) as f:
            return await f.plan(specs)

    view = common.run(go)
    if json:
        data = plan_json(view.plan, view.errors)
        for svc in data["services"]:
            svc["changes"] = view.changes.get(svc["service"], [])
            svc["held_back"] = view.notes.get(svc["service"])
        data["changed"] = view.changed
        data["lb_diff"] = view.lb_diff
        data["records"] = records.plan_json(view.members)
        common.print_json(data)
    else:
        print_plan(view.plan, view.errors, view.changes, view.notes)
        print_lb_diff(view.lb_diff)
        print_members(view.members)
    if view.plan.unplaced or not view.members.ok:
        raise typer.Exit(common.EXIT_PARTIAL)
    raise typer.Exit(EXIT_CHANGES if view.changed else common.EXIT_OK)


@dataclasses.dataclass
class _Row:
    """One service's line of the live table."""

    wanted: int | None = None
    started: int = 0
    ready: int = 0
    stopped: int = 0
    state: str = "queued"  # queued, running, done, failed, waiting
    message: str = ""
    since: float | None = None
    until: float | None = None


def _own(service: str, message: str) -> str:
    """The message without a leading "service: " (rows and prefixed lines already name the service)."""
    return message[len(service) + 2:] if service and message.startswith(f"{service}: ") else message


class _Progress:
    """Progress from engine events, readable while services converge at once: on a terminal a live table
    with one row per service; otherwise one line per step, prefixed by its service; `--json`: one JSON
    object per event; `quiet` (cron): one line per change."""

    def __init__(self, json: bool, quiet: bool = False, *, console: Console | None = None,
                 live: bool | None = None, clock: Callable[[], float] = time.time) -> None:
        self.json = json
        self.quiet = quiet
        self.console = console or common.console()
        self.live = (self.console.is_terminal if live is None else live) and not json and not quiet
        self.clock = clock
        self.rows: dict[str, _Row] = {}
        self._live: Live | None = None

    def add(self, service: str, total: int) -> None:
        self.rows.setdefault(service, _Row()).wanted = total

    def __enter__(self) -> _Progress:
        if self.live:
            from rich.live import Live

            self._live = Live(self, console=self.console, refresh_per_second=4, transient=False)
            self._live.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._live is not None:
            self._live.stop()
            self._live = None

    def __call__(self, e: Event) -> None:
        if self.quiet:
            # For cron: one line per change, nothing for the steps around it (drain, ready, routed, done).
            if e.step in CHANGES:
                self.console.print(f"{esc(e.service) + ': ' if e.service else ''}{esc(e.message)}",
                                   highlight=False)
            return
        if self.json:
            sys.stdout.write(jsonlib.dumps({"event": e.step, **dataclasses.asdict(e)}) + "\n")
            sys.stdout.flush()
            return
        if e.service:
            self._count(e)
        if not self.live:
            who = f"{esc(e.service)}: " if e.service else ""
            self.console.print(f"  {time.strftime('%H:%M:%S', time.localtime(e.at))} {who}"
                               f"{esc(_own(e.service, e.message))}", highlight=False)
        elif not e.service:
            self.console.print(f"  {esc(e.message)}" + (f" on {esc(e.node)}" if e.node else ""), highlight=False)

    def _count(self, e: Event) -> None:
        row = self.rows.setdefault(e.service, _Row())
        if row.since is None:
            row.since = e.at
        row.state = "running" if row.state == "queued" else row.state
        row.message = _own(e.service, e.message)
        if e.step == "start":
            row.started += 1
        elif e.step == "ready":
            row.ready += 1
        elif e.step in ("stop", "remove"):
            row.stopped += 1
        elif e.step == "done":
            row.state, row.until = "done", e.at

    def finish(self, outcomes: Sequence[Outcome]) -> None:
        """Every service's final state, from its outcome (a failure sends no event of its own)."""
        for o in outcomes:
            row = self.rows.setdefault(o.service, _Row())
            row.state = "failed" if not o.ok else "waiting" if o.waiting else "done"
            if row.until is None:
                row.until = self.clock()
            if o.reason:
                row.message = _own(o.service, o.reason)
            elif o.ok and row.state == "done" and not o.changed:
                row.message = "no change"
        if self._live is not None:
            self._live.refresh()

    def table(self) -> Table:
        from rich.table import Table

        t = Table(box=None, pad_edge=False, show_header=True, header_style="bold")
        t.add_column("service", no_wrap=True)
        t.add_column("", no_wrap=True)
        t.add_column("new ready", justify="right", no_wrap=True)
        t.add_column("started", justify="right", no_wrap=True)
        t.add_column("stopped", justify="right", no_wrap=True)
        t.add_column("time", justify="right", no_wrap=True)
        t.add_column("last step", no_wrap=True, overflow="ellipsis", max_width=70)
        marks = {"queued": "[dim]·[/]", "running": "[cyan]…[/]", "done": "[green]✓[/]", "failed": "[red]✗[/]",
                 "waiting": "[yellow]‖[/]"}
        now = self.clock()
        for name, row in self.rows.items():
            ready = f"{row.ready}/{row.wanted}" if row.wanted is not None else str(row.ready)
            took = "" if row.since is None else f"{(row.until or now) - row.since:.1f}s"
            t.add_row(esc(name), marks[row.state], ready, str(row.started), str(row.stopped), took,
                      esc(row.message) if row.state != "queued" else "[dim]waiting for a slot[/]")
        return t

    def __rich__(self) -> Table:
        return self.table()


def _run(op: Callable[[Fleet], Awaitable[RunResult]], inventory: str | None, json: bool, wait: str | None,
         *, quiet: bool = False, totals: dict[str, int] | None = None, report: bool = True) -> RunResult:
    """Run one changing operation through the façade, under the fleet's lease, with progress or JSON events;
    print the outcomes (`quiet`: only what changed or failed, for cron)."""
    from fleet.api import Fleet

    inv = common.inventory(inventory)
    show = _Progress(json, quiet and not json)
    seconds = common.wait_seconds(wait)

    async def go() -> RunResult:
        async with Fleet.connect(inv, on_event=show, wait=seconds) as f:
            for name, total in (totals or {}).items():
                show.add(name, total)
            with show:
                done = await op(f)
                show.finish(done.outcomes)
                return done

    result = common.run(go)
    if json:
        common.print_json({"outcomes": [dataclasses.asdict(o) for o in result.outcomes],
                           "unreachable": result.errors})
        return result
    out = common.console()
    if not report:
        return result
    for node, why in sorted(result.errors.items()):
        out.print(f"[yellow]! {node}: {esc(why)} (nothing was placed there)[/]")
    for o in result.outcomes:
        if quiet and o.ok and not o.reason:
            continue
        if o.ok and o.reason:
            out.print(f"[cyan]…[/] {o.service}: {esc(o.reason)}")
        elif o.ok:
            out.print(f"[green]✓[/] {o.service}: started {o.started}, stopped {o.stopped}")
        else:
            out.print(f"[red]✗ {o.service}: {esc(o.reason or '')}[/]")
    return result


def _exit(result: RunResult) -> typer.Exit:
    """0 when every service converged and every node answered; 1 otherwise (partial)."""
    return typer.Exit(common.EXIT_OK if result.ok else common.EXIT_PARTIAL)


def apply(playbooks: PlaybooksArg = None, file: FileOpt = None, inventory: common.InventoryOpt = None,
          json: common.JsonOpt = False, wait: common.WaitOpt = None, parallel: ParallelOpt = None,
          env_file: EnvFileOpt = None, set_: SetOpt = None) -> None:
    """Converge the fleet to the playbooks: place, start, health-check, route, then retire what is surplus.

    Takes the fleet's lease. Exit codes: 0 converged; 1 something failed (a service, a node); 2 bad input;
    75 another run holds the lease (see --wait).

    Example:

      fleet apply -f playbooks/web.yaml
      fleet apply --wait 5m
      fleet apply --env-file prod.env --set web.image=reg/web:v2"""
    specs, jobs = playbooks_from(playbooks, file, env_file)
    images = images_set(set_, specs)
    raise _exit(_run(lambda f: f.with_jobs(jobs).apply(specs, "apply", parallel, images=images), inventory, json,
                     wait, totals={s.name: s.replicas for s in specs if not s.per_node}))


def scale(service: ServiceArg, replicas: int, playbooks: FileOpt = None,
          inventory: common.InventoryOpt = None, json: common.JsonOpt = False, wait: common.WaitOpt = None) -> None:
    """Run SERVICE with N replicas now, until the next `apply`.

    `reconcile` keeps that count until the next `apply` (which returns to the playbook's count).

    Example:

      fleet scale web 5 -f playbooks/web.yaml"""
    if replicas < 0:
        common.fail("replicas cannot be negative")
    specs = [s for s in specs_from(playbooks) if s.name == service]
    if not specs:
        common.fail(f"no service {service!r} in the playbooks")
    if specs[0].per_node:
        common.fail(f"{service} runs one replica per node (replicas: per-node): its count follows the nodes")
    raise _exit(_run(lambda f: f.scale(specs[0], replicas), inventory, json, wait))


def destroy(service: ServiceArg, inventory: common.InventoryOpt = None, json: common.JsonOpt = False,
            grace: Annotated[float, typer.Option(
                metavar="DURATION", parser=common.duration(),
                help=f"How long each replica gets to stop after SIGTERM {common.DURATION_HELP}.")] = 10.0,
            wait: common.WaitOpt = None) -> None:
    """Remove SERVICE: out of the load balancers first, then every replica.

    Every replica is stopped and removed. Recorded on the fleet: a node that is down now has its replicas
    removed when it returns, and reconcile never brings it back.

    Example:

      fleet destroy web --grace 30s"""
    result = _run(lambda f: f.destroy(service, grace), inventory, json, wait, quiet=True, report=False)
    if not json:
        removed = sum(o.stopped for o in result.outcomes)
        later = f"; {', '.join(sorted(result.errors))}: removed when it answers again" if result.errors else ""
        common.console().print(f"{service}: removed {removed} replica(s) and its load-balancer entries{later}")
    raise _exit(result)


def reconcile(playbooks: PlaybooksArg = None, file: FileOpt = None, inventory: common.InventoryOpt = None,
              json: common.JsonOpt = False, wait: common.WaitOpt = None, parallel: ParallelOpt = None,
              env_file: EnvFileOpt = None) -> None:
    """Restore the accepted state (for cron): replace lost replicas, reschedule, restore routes.

    Replaces crashed, unhealthy or lost replicas, reschedules off dead nodes, restores load-balancer entries.
    A playbook changed since it was last tried is tried (as `apply`); a waiting canary, `abort` and `rollback`
    are left as they are, and a revision that failed is not retried until the playbook changes again. Prints
    nothing when nothing changed, one line per change otherwise. Then the scheduled jobs' slots that are due run
    (each slot once across every controller; see `catch_up` in docs/playbook.md, Jobs).

    Exit codes: 0 converged; 1 something failed (a service, a node); 2 bad input; 75 another run holds the
    fleet's lease (see --wait).

    Example:

      fleet reconcile -f playbooks/ --wait 2m"""
    from fleet.cli.job import reconcile_due

    specs, jobs = playbooks_from(playbooks, file, env_file)

    async def op(f: Fleet) -> RunResult:
        return await reconcile_due(f, jobs, await f.with_jobs(jobs).apply(specs, "reconcile", parallel))

    raise _exit(_run(op, inventory, json, wait, quiet=True))
