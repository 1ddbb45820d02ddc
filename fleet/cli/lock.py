"""`fleet lock status|break`: who holds the fleet's lease (an etcd lease) as each record node's member reports
it, and breaking it by hand (revoking it)."""

from __future__ import annotations

from collections import Counter
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console

from fleet.cli import common
from fleet.cli.common import esc
from fleet.core.errors import LeaseInfo

if TYPE_CHECKING:
    from fleet.results import NodeLease

# The façade is imported inside the commands: `fleet --help` and the other light commands do not pay for the
# store and the transport it loads.

app = typer.Typer(help="The fleet's lease: one writing command (apply, reconcile, rollback…) at a time.",
                  no_args_is_help=True)

TimeoutOpt = Annotated[float, typer.Option("--timeout", metavar="DURATION", parser=common.duration(),
                                           help=f"How long each record node gets to answer {common.DURATION_HELP}.")]


def node_state(lease: LeaseInfo | str | None) -> str:
    """held, expired, free or unreachable."""
    if isinstance(lease, str):
        return "unreachable"
    if lease is None:
        return "free"
    return "expired" if lease.expired else "held"


def holder_of(leases: list[NodeLease]) -> tuple[LeaseInfo | None, int]:
    """The live lease found on the most record nodes, and on how many (None, 0 when none is live)."""
    live = [info for _, info in leases if isinstance(info, LeaseInfo) and not info.expired]
    if not live:
        return None, 0
    counts = Counter(info.token for info in live)
    best = max(live, key=lambda info: counts[info.token])
    return best, counts[best.token]


def summary(leases: list[NodeLease]) -> str:
    """One line: held by whom (on how many of how many, with the majority needed), free, or unknown."""
    from fleet.results import majority

    needed = majority(len(leases))
    info, count = holder_of(leases)
    unread = sum(1 for _, lease in leases if isinstance(lease, str))
    if info is not None:
        where = f"on {count} of {len(leases)} record nodes"
        if count >= needed:
            return f"the fleet's lease is held by {info} ({where})"
        return f"the fleet's lease is held by no one: {info.holder} holds it only {where}, {needed} needed"
    if len(leases) - unread < needed:
        return f"the fleet's lease is unknown: only {len(leases) - unread} of {len(leases)} record nodes answered"
    return "the fleet's lease is free"


def lease_json(name: str, lease: LeaseInfo | str | None) -> dict[str, Any]:
    """One record node's lease for --json (the token is never shown)."""
    out: dict[str, Any] = {"node": name, "state": node_state(lease)}
    if isinstance(lease, str):
        out["error"] = lease
    elif lease is not None:
        out.update(holder=lease.holder, pid=lease.pid, command=lease.command, since=lease.since, until=lease.until,
                   remaining=round(lease.remaining, 3))
    return out


def print_leases(out: Console, leases: list[NodeLease], broken: bool = False) -> None:
    """One line per record node, then the summary (for status)."""
    width = max((len(name) for name, _ in leases), default=0)
    for name, lease in leases:
        state = node_state(lease)
        if isinstance(lease, str):
            text = f"[red]unreachable[/]: {esc(lease)}"
        elif lease is None:
            text = "was free" if broken else "[green]free[/]"
        elif broken:
            text = f"[yellow]broke[/] the lease of {esc(str(lease))}"
        elif state == "expired":
            text = f"[dim]free (expired lease of {esc(str(lease))})[/]"
        else:
            text = f"[yellow]held[/] by {esc(str(lease))} ({lease.remaining:.0f}s left unless renewed)"
        out.print(f"{esc(name):<{width}}  {text}", soft_wrap=True)


def _leases(inventory: str | None, timeout: float, breaking: bool) -> list[NodeLease]:
    """The lease on each record node (or what breaking it found); an inventory without nodes is exit 2."""
    from fleet.api import Fleet

    inv = common.inventory(inventory)

    async def go() -> list[NodeLease]:
        async with Fleet.connect(inv, connect_timeout=timeout, command_timeout=timeout, connect_attempts=1) as f:
            if breaking:
                return await f.break_lock(timeout=timeout)
            return await f.lock_status(timeout=timeout)

    return common.run(go)


def _exit(leases: list[NodeLease]) -> typer.Exit:
    return typer.Exit(common.EXIT_PARTIAL if any(isinstance(lease, str) for _, lease in leases) else common.EXIT_OK)


@app.command("status")
def status(inventory: common.InventoryOpt = None, json: common.JsonOpt = False, timeout: TimeoutOpt = 10.0) -> None:
    """Who holds the fleet's lease on each record node, since when and until when (exit 1: a node is unreachable).

    Example:

      fleet lock status --json"""
    from fleet.results import majority

    leases = _leases(inventory, timeout, breaking=False)
    if json:
        info, count = holder_of(leases)
        common.print_json({
            "held": info is not None and count >= majority(len(leases)),
            "holder": None if info is None else lease_json(info.node, info) | {"nodes": count},
            "needed": majority(len(leases)),
            "summary": summary(leases),
            "nodes": [lease_json(name, lease) for name, lease in leases],
        })
    else:
        out = common.console()
        print_leases(out, leases)
        out.print(esc(summary(leases)), soft_wrap=True)
    raise _exit(leases)


@app.command("break")
def break_(inventory: common.InventoryOpt = None,
           yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
           json: common.JsonOpt = False, timeout: TimeoutOpt = 10.0) -> None:
    """Remove the fleet's lease on every record node, whoever holds it; prints what was broken.

    Only for a holder that is gone for good (its lease also frees itself when its ttl runs out): a holder that
    is still running can write nothing more (every write is fenced by its lease) and stops at its next step,
    possibly midway through a rollout.

    Example:

      fleet lock break --yes"""
    if not yes:
        current = _leases(inventory, timeout, breaking=False)
        out = common.console()
        print_leases(out, current)
        info, _ = holder_of(current)
        if info is None and not any(isinstance(lease, str) for _, lease in current):
            out.print("the fleet's lease is free; nothing to break")
            raise typer.Exit(common.EXIT_OK)
        who = f" held by {info.holder} (pid {info.pid})" if info is not None else ""
        if not typer.confirm(f"Break the fleet's lease{who}?", default=False):
            common.fail("nothing broken", common.EXIT_PARTIAL)
    broken = _leases(inventory, timeout, breaking=True)
    if json:
        common.print_json({"broken": [lease_json(name, lease) | {"state": "broken" if isinstance(lease, LeaseInfo)
                                                                  else node_state(lease)}
                                      for name, lease in broken]})
    else:
        print_leases(common.console(), broken, broken=True)
    raise _exit(broken)
