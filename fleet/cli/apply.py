"""`fleet plan`, `fleet apply`, `fleet scale`, `fleet destroy`: playbooks in, converged services out."""

from __future__ import annotations

import dataclasses
import json as jsonlib
import os
import sys
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Annotated, Any

import typer

from fleet.cli import common
from fleet.cli.common import esc
from fleet.core.errors import ConfigError

if TYPE_CHECKING:
    from fleet.api import Event, Fleet, PlanView, RunResult
    from fleet.config.spec import ServiceSpec
    from fleet.plan.reconcile import Plan

# Engines, specs and the history are imported inside the commands: `fleet nodes` and the other light
# commands should not pay for loading them at every start.

EXIT_CHANGES = 3
CHANGES = ("start", "stop", "remove", "rollback", "pull", "canary")

PlaybooksArg = Annotated[list[str] | None, typer.Argument(
    help="Playbook files or directories (default: $FLEET_PLAYBOOKS or ./playbooks).", show_default=False)]


def specs_from(paths: list[str] | None) -> list[ServiceSpec]:
    from fleet.config.spec import load_playbooks

    chosen = paths or [os.environ.get("FLEET_PLAYBOOKS", "playbooks")]
    try:
        return load_playbooks(chosen)
    except ConfigError as exc:
        common.fail(str(exc))


def plan_json(p: Plan, errors: dict[str, str]) -> dict[str, Any]:
    return {
        "changed": p.changed,
        "unreachable": errors,
        "unmanaged": list(p.unmanaged),
        "services": [{
            "service": s.name,
            "image": s.spec.image,
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
    for s in p.services:
        edits = [c for c in changes.get(s.name, []) if c]
        marker = "[yellow]~[/]" if s.changed or s.unplaced or edits else "[green]=[/]"
        lb = f", lb :{s.spec.lb.port}" if s.spec.lb else ""
        out.print(f"{marker} [bold]{s.name}[/] ({esc(s.spec.image)}, {s.spec.replicas} replicas{lb})")
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
                      f"{s.spec.image}: rolling, max surge {s.spec.update.max_surge}, "
                      f"max unavailable {s.spec.update.max_unavailable}")
        for r, why in s.stop:
            out.print(f"    [red]- stop[/] {r.id} on {r.node} ({esc(why)})")
        for r in s.cleanup:
            out.print(f"    [red]- remove[/] stopped {r.id} on {r.node}")
        for u in s.unplaced:
            out.print(f"    [bold red]! cannot place[/] {esc(str(u))}")
        if not (s.changed or s.unplaced or edits):
            out.print(f"    no change ({len(s.keep)} replicas up to date)")
    for name in p.unmanaged:
        out.print(f"[dim]  {name}: running, not in these playbooks (left alone)[/]")
    pending = p.changed or any(changes.get(s.name) for s in p.services)
    out.print("Plan: " + ("changes pending" if pending else "nothing to do")
              + (f"; {len(p.unplaced)} replica(s) cannot be placed" if p.unplaced else ""))


def plan(playbooks: PlaybooksArg = None, inventory: common.InventoryOpt = None, json: common.JsonOpt = False) -> None:
    """Show what `fleet apply` would change. Exit 0: nothing to do; 3: changes pending; 1: a node failed or a
    replica cannot be placed; 2: a playbook is wrong."""
    from fleet.api import Fleet

    inv = common.inventory(inventory)
    specs = specs_from(playbooks)

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
        common.print_json(data)
    else:
        print_plan(view.plan, view.errors, view.changes, view.notes)
    if view.plan.unplaced:
        raise typer.Exit(common.EXIT_PARTIAL)
    raise typer.Exit(EXIT_CHANGES if view.changed else common.EXIT_OK)


class _Progress:
    """Live progress from engine events: one bar per service, a log line per step."""

    def __init__(self, json: bool, quiet: bool = False) -> None:
        from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

        self.json = json
        self.quiet = quiet
        self.progress = Progress(SpinnerColumn(), TextColumn("{task.description}"), BarColumn(),
                                 TextColumn("{task.completed}/{task.total}"), TimeElapsedColumn(),
                                 console=common.console(), disable=json or quiet)
        self.tasks: dict[str, Any] = {}

    def add(self, service: str, total: int) -> None:
        self.tasks[service] = self.progress.add_task(service, total=max(total, 1))

    def __call__(self, e: Event) -> None:
        if self.quiet:
            # For cron: one line per change, nothing for the steps around it (drain, ready, routed, done).
            if e.step in CHANGES:
                self.progress.console.print(f"{esc(e.service) + ': ' if e.service else ''}{esc(e.message)}",
                                            highlight=False)
            return
        if self.json:
            sys.stdout.write(jsonlib.dumps({"event": e.step, **dataclasses.asdict(e)}) + "\n")
            sys.stdout.flush()
            return
        self.progress.console.print(f"  {time.strftime('%H:%M:%S')} {esc(e.message)}", highlight=False)
        task = self.tasks.get(e.service)
        if task is not None and e.step in ("ready", "stop", "remove"):
            self.progress.advance(task)
        if task is not None and e.step == "done":
            self.progress.update(task, completed=self.progress.tasks[task].total)


def _run(op: Callable[[Fleet], Awaitable[RunResult]], inventory: str | None, json: bool, wait: str | None,
         *, quiet: bool = False, totals: dict[str, int] | None = None, report: bool = True) -> RunResult:
    """Run one changing operation through the façade, under the fleet's lease, with progress or JSON events;
    print the outcomes (`quiet`: only what changed or failed, for cron)."""
    from fleet.api import Fleet, secret_get

    inv = common.inventory(inventory)
    show = _Progress(json, quiet and not json)
    seconds = common.wait_seconds(wait)

    async def go() -> RunResult:
        async with Fleet.connect(inv, on_event=show, secrets=secret_get, wait=seconds) as f:
            for name, total in (totals or {}).items():
                show.add(name, total)
            with show.progress:
                return await op(f)

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


def apply(playbooks: PlaybooksArg = None, inventory: common.InventoryOpt = None, json: common.JsonOpt = False,
          wait: common.WaitOpt = None) -> None:
    """Converge the fleet to the playbooks: place, start, health-check, route, then retire what is surplus.

    Takes the fleet's lease. Exit codes: 0 converged; 1 something failed (a service, a node); 2 bad input;
    75 another run holds the lease (see --wait)."""
    specs = specs_from(playbooks)
    raise _exit(_run(lambda f: f.apply(specs, "apply"), inventory, json, wait))


def scale(service: str, replicas: int, playbooks: Annotated[list[str] | None, typer.Option(
          "-f", "--file", help="Playbooks (default: ./playbooks).")] = None,
          inventory: common.InventoryOpt = None, json: common.JsonOpt = False, wait: common.WaitOpt = None) -> None:
    """Run SERVICE with N replicas now; `reconcile` keeps that count until the next `apply` (which returns to the
    playbook's count)."""
    if replicas < 0:
        common.fail("replicas cannot be negative")
    specs = [s for s in specs_from(playbooks) if s.name == service]
    if not specs:
        common.fail(f"no service {service!r} in the playbooks")
    raise _exit(_run(lambda f: f.scale(specs[0], replicas), inventory, json, wait))


def destroy(service: str, inventory: common.InventoryOpt = None, json: common.JsonOpt = False,
            grace: float = typer.Option(10.0, help="Seconds each replica gets to stop after SIGTERM."),
            wait: common.WaitOpt = None) -> None:
    """Remove SERVICE: out of the load balancers first, then every replica stopped and removed. Recorded on the
    fleet: a node that is down now has its replicas removed when it returns, and reconcile never brings it back."""
    result = _run(lambda f: f.destroy(service, grace), inventory, json, wait, quiet=True, report=False)
    if not json:
        removed = sum(o.stopped for o in result.outcomes)
        later = f"; {', '.join(sorted(result.errors))}: removed when it answers again" if result.errors else ""
        common.console().print(f"{service}: removed {removed} replica(s) and its load-balancer entries{later}")
    raise _exit(result)


def reconcile(playbooks: PlaybooksArg = None, inventory: common.InventoryOpt = None,
              json: common.JsonOpt = False, wait: common.WaitOpt = None) -> None:
    """Restore the accepted state (for cron): replace crashed, unhealthy or lost replicas, reschedule off dead
    nodes, restore load-balancer entries. A playbook changed since it was last tried is tried (as `apply`); a
    waiting canary, `abort` and `rollback` are left as they are, and a revision that failed is not retried until
    the playbook changes again. Prints nothing when nothing changed, one line per change otherwise.

    Exit codes: 0 converged; 1 something failed (a service, a node); 2 bad input; 75 another run holds the
    fleet's lease (see --wait)."""
    specs = specs_from(playbooks)
    raise _exit(_run(lambda f: f.apply(specs, "reconcile"), inventory, json, wait, quiet=True))
