"""`fleet plan`, `fleet apply`, `fleet scale`, `fleet destroy`: playbooks in, converged services out."""

from __future__ import annotations

import dataclasses
import json as jsonlib
import os
import sys
import time
from typing import TYPE_CHECKING, Annotated, Any

import typer

from ..errors import ConfigError, FleetError
from . import common
from .common import esc

if TYPE_CHECKING:
    from ..engine.apply import Event, Outcome
    from ..history import History
    from ..reconcile import Plan
    from ..spec import ServiceSpec

# Engines, specs and the history are imported inside the commands: `fleet nodes` and the other light
# commands should not pay for loading them at every start.

EXIT_CHANGES = 3

PlaybooksArg = Annotated[list[str] | None, typer.Argument(
    help="Playbook files or directories (default: $FLEET_PLAYBOOKS or ./playbooks).", show_default=False)]


def specs_from(paths: list[str] | None) -> list[ServiceSpec]:
    from ..spec import load_playbooks

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


def print_plan(p: Plan, errors: dict[str, str]) -> None:
    out = common.console()
    for node, why in sorted(errors.items()):
        out.print(f"[yellow]! {node}: {esc(why)} (its replicas are placed elsewhere)[/]")
    for s in p.services:
        marker = "[yellow]~[/]" if s.changed or s.unplaced else "[green]=[/]"
        lb = f", lb :{s.spec.lb.port}" if s.spec.lb else ""
        out.print(f"{marker} [bold]{s.name}[/] ({esc(s.spec.image)}, {s.spec.replicas} replicas{lb})")
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
        if not (s.changed or s.unplaced):
            out.print(f"    no change ({len(s.keep)} replicas up to date)")
    for name in p.unmanaged:
        out.print(f"[dim]  {name}: running, not in these playbooks (left alone)[/]")
    out.print("Plan: " + ("changes pending" if p.changed else "nothing to do")
              + (f"; {len(p.unplaced)} replica(s) cannot be placed" if p.unplaced else ""))


def plan(playbooks: PlaybooksArg = None, inventory: common.InventoryOpt = None, json: common.JsonOpt = False) -> None:
    """Show what `fleet apply` would change. Exit 0: nothing to do; 3: changes pending; 1: a node failed."""
    from ..api import Fleet
    from ..engine.apply import Engine
    from ..transport import Pool

    inv = common.inventory(inventory)
    specs = specs_from(playbooks)

    async def go() -> tuple[Plan, dict[str, str]]:
        async with Pool() as pool:
            f = Fleet(inv, pool)
            p, obs = await Engine(pool, await f.reports(ports=True)).plan(specs)
            return p, obs.errors

    p, errors = common.run(go)
    if json:
        common.print_json(plan_json(p, errors))
    else:
        print_plan(p, errors)
    if p.unplaced:
        raise typer.Exit(common.EXIT_PARTIAL)
    raise typer.Exit(EXIT_CHANGES if p.changed else common.EXIT_OK)


class _Progress:
    """Live progress from engine events: one bar per service, a log line per step."""

    def __init__(self, json: bool) -> None:
        from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

        self.json = json
        self.progress = Progress(SpinnerColumn(), TextColumn("{task.description}"), BarColumn(),
                                 TextColumn("{task.completed}/{task.total}"), TimeElapsedColumn(),
                                 console=common.console(), disable=json)
        self.tasks: dict[str, Any] = {}

    def add(self, service: str, total: int) -> None:
        self.tasks[service] = self.progress.add_task(service, total=max(total, 1))

    def __call__(self, e: Event) -> None:
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


def _apply(specs: list[ServiceSpec], inventory: str | None, json: bool) -> tuple[list[Outcome], dict[str, str]]:
    from ..api import Fleet
    from ..engine.apply import Engine
    from ..transport import Pool

    inv = common.inventory(inventory)
    show = _Progress(json)
    history = open_history()

    async def go() -> tuple[list[Outcome], dict[str, str]]:
        async with Pool() as pool:
            f = Fleet(inv, pool)
            engine = Engine(pool, await f.reports(ports=True), on_event=show, secrets=_keyring_secret, history=history)
            p, _ = await engine.plan(specs)
            for s in p.services:
                show.add(s.name, len(s.start) + len(s.replace) * 2 + len(s.stop) + len(s.cleanup))
            with show.progress:
                outcomes = await engine.apply(specs)
            return outcomes, {**engine.errors, **{n: "unreachable lb node" for n in engine.lbs.unreachable}}

    outcomes, errors = common.run(go)
    if json:
        common.print_json({"outcomes": [dataclasses.asdict(o) for o in outcomes], "unreachable": errors})
    else:
        out = common.console()
        for node, why in sorted(errors.items()):
            out.print(f"[yellow]! {node}: {esc(why)} (nothing was placed there)[/]")
        for o in outcomes:
            if o.ok and o.reason:
                out.print(f"[cyan]…[/] {o.service}: {esc(o.reason)}")
            elif o.ok:
                out.print(f"[green]✓[/] {o.service}: started {o.started}, stopped {o.stopped}")
            else:
                out.print(f"[red]✗ {o.service}: {esc(o.reason or '')}[/]")
    return outcomes, errors


def _exit(outcomes: list[Outcome], errors: dict[str, str]) -> typer.Exit:
    """0 when every service converged and every node answered; 1 otherwise (partial)."""
    return typer.Exit(common.EXIT_OK if all(o.ok for o in outcomes) and not errors else common.EXIT_PARTIAL)


def open_history() -> History:
    from ..history import History

    try:
        return History()
    except FleetError as exc:
        common.fail(f"cannot open the revision history: {exc}", common.EXIT_PARTIAL)


def _keyring_secret(name: str) -> str | None:
    from ..secrets import get_secret

    return get_secret(name)


def apply(playbooks: PlaybooksArg = None, inventory: common.InventoryOpt = None, json: common.JsonOpt = False) -> None:
    """Converge the fleet to the playbooks: place, start, health-check, route, then retire what is surplus."""
    raise _exit(*_apply(specs_from(playbooks), inventory, json))


def scale(service: str, replicas: int, playbooks: Annotated[list[str] | None, typer.Option(
          "-f", "--file", help="Playbooks (default: ./playbooks).")] = None,
          inventory: common.InventoryOpt = None, json: common.JsonOpt = False) -> None:
    """Run SERVICE with N replicas now (the playbook keeps its own count: the next `apply` returns to it)."""
    if replicas < 0:
        common.fail("replicas cannot be negative")
    specs = [s for s in specs_from(playbooks) if s.name == service]
    if not specs:
        common.fail(f"no service {service!r} in the playbooks")
    raise _exit(*_apply([dataclasses.replace(specs[0], replicas=replicas)], inventory, json))


def destroy(service: str, inventory: common.InventoryOpt = None, json: common.JsonOpt = False,
            grace: float = typer.Option(10.0, help="Seconds each replica gets to stop after SIGTERM.")) -> None:
    """Remove SERVICE: out of the load balancers first, then every replica stopped and removed."""
    from ..api import Fleet
    from ..engine.apply import Engine
    from ..transport import Pool

    inv = common.inventory(inventory)

    async def go() -> int:
        async with Pool() as pool:
            f = Fleet(inv, pool)
            return await Engine(pool, await f.reports()).destroy(service, grace)

    n = common.run(go)
    if json:
        common.print_json({"service": service, "removed": n})
    else:
        common.console().print(f"{service}: removed {n} replica(s) and its load-balancer entries")


def reconcile(playbooks: PlaybooksArg = None, inventory: common.InventoryOpt = None,
              json: common.JsonOpt = False) -> None:
    """Converge to the playbooks if anything drifted (for cron): replaces crashed, unhealthy or lost replicas,
    reschedules off dead nodes, restores load-balancer entries. Same as `apply`, quiet when nothing changed."""
    raise _exit(*_apply(specs_from(playbooks), inventory, json))
