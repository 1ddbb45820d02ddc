"""`fleet records status|add|remove`: the etcd cluster that keeps the fleet's shared state, one member per record
node, and changing its members one at a time as the inventory names them."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any, Literal

import typer
from rich.console import Console

from fleet.cli import common
from fleet.cli.common import esc
from fleet.plan.members import MembershipPlan

if TYPE_CHECKING:
    from fleet.api import MemberRow, RecordsView, StepReport

# The façade is imported inside the commands: `fleet --help` does not pay for the store and the transport.

app = typer.Typer(help="The record nodes: the etcd members that keep the fleet's lease, history and events.",
                  no_args_is_help=True)

TimeoutOpt = Annotated[float, typer.Option("--timeout", metavar="DURATION", parser=common.duration(),
                                           help=f"How long each node gets to answer {common.DURATION_HELP}.")]
YesOpt = Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")]
NodeArg = Annotated[str, typer.Argument(help="The record node, by its inventory name.", show_default=False)]


def role(row: MemberRow) -> str:
    return "learner" if row.learner else "leader" if row.leader else "follower"


def member_json(row: MemberRow) -> dict[str, Any]:
    return {"id": f"{row.id:x}", "name": row.name, "node": row.node, "role": role(row), "state": row.state,
            "healthy": row.healthy, "revision": row.revision, "error": row.error}


def plan_json(plan: MembershipPlan) -> dict[str, Any]:
    return {"steps": plan.lines(), "refused": plan.refused, "warnings": list(plan.warnings)}


def view_json(view: RecordsView) -> dict[str, Any]:
    leader = view.leader
    return {"members": [member_json(m) for m in view.members], "record_nodes": list(view.record_nodes),
            "voters": view.voters, "healthy": view.healthy, "quorum": view.quorum,
            "leader": (leader.node or leader.name) if leader else None, "plan": plan_json(view.plan),
            "error": view.error}


def print_plan(out: Console, plan: MembershipPlan) -> None:
    for line in plan.lines():
        out.print(f"  {esc(line)}", soft_wrap=True)
    if plan.refused:
        out.print(f"[bold red]refused:[/] {esc(plan.refused)}", soft_wrap=True)
    for warning in plan.warnings:
        out.print(f"[yellow]warning:[/] {esc(warning)}", soft_wrap=True)


def print_view(out: Console, view: RecordsView) -> None:
    """The members as a table, the quorum and leader in one line, then what the inventory asks for."""
    if view.error is not None:
        out.print(f"[red]the etcd cluster could not be read[/]: {esc(view.error)}", soft_wrap=True)
        return
    rows = [("MEMBER", "NODE", "ID", "ROLE", "STATE", "REVISION")]
    rows += [(m.name or "(not started)", m.node or "(not in inventory)", f"{m.id:x}", role(m),
              m.state + (f": {m.error}" if m.error else ""), "" if m.revision is None else str(m.revision))
             for m in view.members]
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        out.print(esc("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip()), soft_wrap=True)
    leader = view.leader
    out.print(f"quorum: {view.healthy} of {view.voters} voting members healthy, {view.quorum} needed; leader "
              f"{esc((leader.node or leader.name) if leader else 'none')}", soft_wrap=True)
    out.print(f"record nodes in the inventory: {esc(', '.join(view.record_nodes))}", soft_wrap=True)
    if view.plan.steps or view.plan.refused:
        out.print("the next apply changes the members:" if view.plan.ok else "the inventory asks for:")
    else:
        out.print("the members are the inventory's record nodes")
    print_plan(out, view.plan)


def print_reports(out: Console, reports: list[StepReport]) -> None:
    for report in reports:
        mark = "[green]done[/]" if report.ok else "[red]failed[/]"
        out.print(f"{esc(report.step.line())}: {mark}", soft_wrap=True)
        for line in report.done:
            out.print(f"  {esc(line)}", soft_wrap=True)
        if report.error:
            out.print(f"  [red]{esc(report.error)}[/]", soft_wrap=True)


@app.command("status")
def status(inventory: common.InventoryOpt = None, json: common.JsonOpt = False, timeout: TimeoutOpt = 10.0) -> None:
    """The etcd members, their quorum and leader, and what the inventory asks for (exit 1: one is not healthy).

    Each member's node, role (leader, follower, learner), state and revision; then the changes the
    inventory's record nodes ask for, which the next apply makes (or why it is refused).

    Example:

      fleet records status --json"""
    from fleet.api import Fleet

    inv = common.inventory(inventory)

    async def go() -> RecordsView:
        async with Fleet.connect(inv, connect_timeout=timeout, command_timeout=timeout, connect_attempts=1) as f:
            return await f.membership().view()

    view = common.run(go)
    if json:
        common.print_json(view_json(view))
    else:
        print_view(common.console(), view)
    bad = view.error is not None or any(not m.healthy for m in view.members)
    raise typer.Exit(common.EXIT_PARTIAL if bad else common.EXIT_OK)


def _change(action: Literal["add", "remove"], node: str, inventory: str | None, yes: bool, json: bool,
            timeout: float) -> None:
    """Check the node against the inventory, show the plan, confirm, then carry it out under the lease."""
    from fleet.api import Fleet

    inv = common.inventory(inventory)
    if action == "add" and node not in {n.name for n in inv.nodes}:
        common.fail(f"{node}: no such node in {inv.path}")

    async def planned() -> tuple[list[str], MembershipPlan | None]:
        async with Fleet.connect(inv, connect_timeout=timeout, connect_attempts=1) as f:
            membership = f.membership()
            record = [n.name for n in membership.record]
            if (node in record) != (action == "add"):
                return record, None  # refused below, before any node is contacted
            return record, (await membership.plan_one(action, node))[1]

    record, plan = common.run(planned)
    if plan is None and action == "add":
        common.fail(f"{node} is not one of the record nodes {inv.path} names ({', '.join(record)}): name it one "
                    f"(the role `record`), then run this again")
    if plan is None:
        common.fail(f"{node} is still a record node in {inv.path}: unname it (drop its role `record` or label "
                    f"fleet.records), then run this again")
    if not plan.ok:
        common.fail(plan.refused or "refused")
    out = common.console(stderr=json)
    if not plan.steps:
        if json:
            common.print_json({"plan": plan_json(plan), "steps": []})
        else:
            out.print(f"{esc(node)} is {'already' if action == 'add' else 'not'} a member; nothing to do")
        raise typer.Exit(common.EXIT_OK)
    if yes:
        print_plan(out, MembershipPlan(warnings=plan.warnings))
    else:
        print_plan(out, plan)
        if not typer.confirm("Change the etcd cluster's members?", default=False):
            common.fail("nothing changed", common.EXIT_PARTIAL)

    async def change() -> tuple[MembershipPlan, list[StepReport]]:
        async with Fleet.connect(inv, connect_timeout=timeout, connect_attempts=1) as f, f.leased():
            return await f.membership(lambda line: out.print(f"{esc(line)} ...")).change(action, node, plan.steps)

    done, reports = common.run(change)
    if not done.ok:
        common.fail(done.refused or "refused")
    if json:
        common.print_json({"plan": plan_json(done), "steps": [
            {"step": r.step.line(), "done": list(r.done), "error": r.error} for r in reports]})
    else:
        print_reports(out, reports)
    raise typer.Exit(common.EXIT_OK if all(r.ok for r in reports) else common.EXIT_PARTIAL)


@app.command("add")
def add(node: NodeArg, inventory: common.InventoryOpt = None, yes: YesOpt = False, json: common.JsonOpt = False,
        timeout: TimeoutOpt = 10.0) -> None:
    """Make NODE an etcd member, once the inventory names it a record node.

    It joins as a learner through a running member, starts, catches up, is promoted to a voting member and
    is waited on until healthy. Refused when any step would leave the cluster without a quorum.

    Example:

      fleet records add n4 --yes"""
    _change("add", node, inventory, yes, json, timeout)


@app.command("remove")
def remove(node: NodeArg, inventory: common.InventoryOpt = None, yes: YesOpt = False, json: common.JsonOpt = False,
           timeout: TimeoutOpt = 10.0) -> None:
    """Take NODE's etcd member out, once the inventory no longer names it a record node.

    The member is removed through another one, then NODE's etcd is stopped and its data moved aside (kept).
    Refused when it would leave the cluster without a quorum, or with no member.

    Example:

      fleet records remove n2 --yes"""
    _change("remove", node, inventory, yes, json, timeout)
