"""`fleet status`: each service's replicas per node, their health in the load balancers, and its address."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.table import Table
from rich.text import Text

from fleet.cli import common, output
from fleet.cli.completion import playbook_services, service_names
from fleet.cli.output import Column, Listing
from fleet.core.units import format_cpu, format_memory

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


COLUMNS = [Column("SERVICE"), Column("REPLICA", "right"), Column("NODE"), Column("ADDRESS"), Column("REV", "right"),
           Column("STATE"), Column("LB"), Column("IMAGE"), Column("ENDPOINT"), Column("CONTAINER", wide=True),
           Column("SPEC", wide=True), Column("CPU", "right", wide=True), Column("MEM", "right", wide=True)]


def lb_cell(health: dict[str, str], wide: bool = False) -> Text:
    """Each lb node's view of the replica (up, down, drain...); with the lb node's name in -o wide."""
    if not health:
        return Text("-")
    return Text(" ").join(Text(f"{node}:{h}" if wide else h, style=HEALTH_STYLE.get(h, ""))
                          for node, h in sorted(health.items()))


def listing(st: FleetStatus, wide: bool = False) -> Listing:
    """One row per replica, each with its service's name and endpoints (a row read alone, or grepped, is whole)."""
    rows = Listing(COLUMNS, keys=2)
    for s in st.services:
        for r in s.replicas:
            rep = r.replica
            rows.add(s.name, str(rep.replica), rep.node, f"{r.address}:{rep.port}", str(rep.revision or "-"),
                     Text("running") if rep.running else Text("stopped", style="red"), lb_cell(r.lb_health, wide),
                     rep.image, ", ".join(s.endpoints) or "-", rep.id, rep.spec_hash[:12] or "-",
                     format_cpu(rep.resources.cpu), format_memory(rep.resources.memory))
    return rows


def render(st: FleetStatus) -> Table:
    return output.table(listing(st))


def select(st: FleetStatus, services: Sequence[str], nodes: set[str] | None) -> FleetStatus:
    """The status of the services named (all when none), with only the replicas on `nodes` (all when None); a
    service with no replica there is left out unless named."""
    kept = []
    for s in st.services:
        if services and s.name not in services:
            continue
        replicas = tuple(r for r in s.replicas if nodes is None or r.replica.node in nodes)
        if replicas or services:
            kept.append(dataclasses.replace(s, replicas=replicas))
    errors = {n: why for n, why in st.errors.items() if nodes is None or n in nodes}
    return dataclasses.replace(st, services=tuple(kept), errors=errors)


def status_cmd(services: Annotated[list[str] | None, typer.Argument(
                   metavar="[SERVICE]...", show_default=False, autocompletion=service_names,
                   help="Only these services (default: every service running on the fleet).")] = None,
               inventory: common.InventoryOpt = None, json: common.JsonOpt = False, out: output.OutputOpt = None,
               node: output.NodeOpt = None, selector: output.SelectorOpt = None) -> None:
    """Services, replicas per node, health in HAProxy and each service's stable address.

    Per-node failures and warnings go to stderr; on a pipe the rows are tab-separated full values.

    Example:

      fleet status
      fleet status web api --node n1 -o wide
      fleet status --selector zone=eu-west --json"""
    from fleet.api import reader

    fmt = output.chosen(out, json)
    wanted = output.parse_selector(selector or [])
    inv = common.inventory(inventory)
    output.check_names("node", node or [], inv.names())

    async def go() -> tuple[FleetStatus, set[str] | None]:
        async with reader(inv) as read:  # a `fleet watch` on this controller lends its connections
            if not wanted:
                return await read.status(), set(node) if node else None
            reports = await read.nodes()  # the labels `fleet node label` set are read with the nodes
            chosen = {r.node.name for r in reports if output.matches(r.labels, wanted)
                      and (not node or r.node.name in node)}
            return await read.status(reports), chosen

    everything, nodes = common.run(go)
    output.check_names("service", services or [], [s.name for s in everything.services] + playbook_services())
    st = select(everything, services or [], nodes)
    output.show(fmt, status_json(st), listing(st, wide=fmt == "wide"), (f"service/{s.name}" for s in st.services))
    vip_ok = True
    if st.vip is not None:
        line, vip_ok = vip_line(st)
    if fmt not in ("json", "yaml", "name"):
        for s in st.services:
            output.warn(f"{common.esc(s.name)}: {s.healthy}/{s.running} replicas healthy"
                        + (f", served at {', '.join(e if '://' in e else 'http://' + e for e in s.endpoints)}"
                           if s.endpoints else ""))
        for name, why in {**st.errors, **st.lb_errors}.items():
            output.warn(f"[yellow]! {common.esc(name)}: {common.esc(why)}[/]")
        if st.vip is not None:
            output.warn(line)
    raise typer.Exit(common.EXIT_OK if not st.errors and not st.lb_errors and vip_ok else common.EXIT_PARTIAL)
