"""`fleet status`: each service's replicas per node, their health in the load balancers, and its address."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import typer
from rich.table import Table

from fleet.cli import common
from fleet.cli.common import esc

if TYPE_CHECKING:
    from fleet.results import FleetStatus

HEALTH_STYLE = {"up": "green", "down": "red", "drain": "yellow", "maint": "yellow", "nocheck": "dim"}


def status_json(st: FleetStatus) -> dict[str, Any]:
    return {
        "services": [{
            "service": s.name,
            "endpoints": list(s.endpoints),
            "running": s.running,
            "healthy": s.healthy,
            "replicas": [{
                "id": r.replica.id, "node": r.replica.node, "address": r.address, "port": r.replica.port,
                "replica": r.replica.replica, "revision": r.replica.revision, "image": r.replica.image,
                "running": r.replica.running, "lb": r.lb_health,
            } for r in s.replicas],
        } for s in st.services],
        "unreachable": st.errors,
        "lb_errors": st.lb_errors,
        "virtual_ip": None if st.vip is None else {
            "address": st.vip.address, "holders": st.vip.holders,
            "nodes": {n: {"keepalived": "running" if v.running else "stopped", "holds": v.holds}
                      for n, v in sorted(st.vip.states.items())},
            "errors": st.vip.errors,
        },
    }


def vip_line(st: FleetStatus) -> tuple[str, bool]:
    """One line on the virtual IP, and whether all is well (exactly one lb node holds it)."""
    assert st.vip is not None
    held = st.vip.holders
    if len(held) == 1:
        return f"virtual IP {st.vip.address} held by {held[0]}", True
    if not held:
        return f"[yellow]! virtual IP {st.vip.address} is held by no lb node[/]", False
    return f"[yellow]! virtual IP {st.vip.address} is held by {', '.join(held)} at once[/]", False


def render(st: FleetStatus) -> Table:
    t = Table(box=None, pad_edge=False, header_style="bold", padding=(0, 1))
    for col in ("SERVICE", "ENDPOINT", "REPLICA", "NODE", "ADDRESS", "REV", "IMAGE", "STATE", "LB"):
        t.add_column(col, no_wrap=True)
    for s in st.services:
        for i, r in enumerate(s.replicas):
            lb = " ".join(f"[{HEALTH_STYLE.get(h, 'white')}]{h}[/]" for h in r.lb_health.values()) or "-"
            t.add_row(s.name if i == 0 else "", ", ".join(s.endpoints) if i == 0 else "",
                      str(r.replica.replica), r.replica.node, f"{r.address}:{r.replica.port}",
                      str(r.replica.revision or "-"), r.replica.image.split("/")[-1],
                      "running" if r.replica.running else "[red]stopped[/]", lb)
    return t


def status_cmd(inventory: common.InventoryOpt = None, json: common.JsonOpt = False) -> None:
    """Services, replicas per node, health in HAProxy and each service's stable address.

    Example:

      fleet status
      fleet status --json"""
    from fleet.api import reader

    inv = common.inventory(inventory)

    async def go() -> FleetStatus:
        async with reader(inv) as read:  # a `fleet watch` on this controller lends its connections
            return await read.status()

    st = common.run(go)
    if json:
        common.print_json(status_json(st))
    else:
        out = common.console()
        out.print(render(st))
        for s in st.services:
            out.print(f"{s.name}: {s.healthy}/{s.running} replicas healthy"
                      + (f", served at {', '.join(e if '://' in e else 'http://' + e for e in s.endpoints)}"
                         if s.endpoints else ""))
        for node, why in {**st.errors, **st.lb_errors}.items():
            out.print(f"[yellow]! {node}: {esc(why)}[/]")
    vip_ok = True
    if st.vip is not None:
        line, vip_ok = vip_line(st)
        if not json:
            common.console().print(line)
    raise typer.Exit(common.EXIT_OK if not st.errors and not st.lb_errors and vip_ok else common.EXIT_PARTIAL)
