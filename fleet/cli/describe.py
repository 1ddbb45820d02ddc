"""`fleet describe SERVICE|NODE`: everything about one object, the view to open first when something is wrong.

Built from the façade's reads: a service is its record (accepted revision, last decision), the spec at that
revision, its replicas per node with their health in each HAProxy, and its last revisions; a node is its facts,
its mark (cordon, drain, labels) and the containers on it."""

from __future__ import annotations

import json as jsonlib
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Annotated, Any

import typer
import yaml
from rich.console import Console, Group, RenderableType
from rich.table import Table
from rich.text import Text

from fleet.cli import common, nodes, output, ps, rollout, status
from fleet.cli.completion import node_names, playbook_services, service_names
from fleet.cli.output import Column, Listing
from fleet.core.errors import FleetError
from fleet.core.units import format_memory
from fleet.results import PsResult

if TYPE_CHECKING:
    from fleet.api import Fleet
    from fleet.results import FleetStatus, NodeReport, Revision

REVISIONS = 5  # the last revisions shown


@dataclass(frozen=True)
class ServiceView:
    """What `describe` read about one service."""

    name: str
    state: dict[str, Any] | None
    revisions: list[Revision]
    status: FleetStatus
    # Every container of the service, running or not, one-offs (`fleet run`) too: status counts only replicas.
    containers: PsResult = field(default_factory=lambda: PsResult(()))
    errors: dict[str, str] = field(default_factory=dict)  # what could not be read, by what

    @property
    def accepted(self) -> Revision | None:
        number = (self.state or {}).get("accepted")
        return next((r for r in self.revisions if r.revision == number), None)


@dataclass(frozen=True)
class NodeView:
    """What `describe` read about one node."""

    report: NodeReport
    containers: PsResult


def service_json(v: ServiceView) -> dict[str, Any]:
    st = status.status_json(v.status)
    svc = next(iter(st["services"]), None)
    accepted = v.accepted
    return {
        "kind": "service",
        "name": v.name,
        "record": v.state,
        "accepted_revision": accepted.revision if accepted else None,
        "spec": jsonlib.loads(accepted.spec_json) if accepted else None,
        "endpoints": svc["endpoints"] if svc else [],
        "running": svc["running"] if svc else 0,
        "healthy": svc["healthy"] if svc else 0,
        "replicas": svc["replicas"] if svc else [],
        "requests": dict(zip(("total", "5xx"), v.status.services[0].requests, strict=True))
        if v.status.services else None,
        "lb_errors": st["lb_errors"],
        "virtual_ip": st["virtual_ip"],
        "unreachable": st["unreachable"],
        "revisions": [{k: x for k, x in rollout.revision_json(r).items() if k not in ("spec", "spec_json")}
                      for r in v.revisions[-REVISIONS:]],
        "containers": [ps.row_json(r) for r in v.containers.rows],
        "errors": {**v.errors, **v.containers.errors},
    }


def node_json(v: NodeView) -> dict[str, Any]:
    return {"kind": "node", **nodes.report_json(v.report),
            "containers": [ps.row_json(r) for r in v.containers.rows],
            "errors": dict(v.containers.errors)}


def _fields(*pairs: tuple[str, RenderableType]) -> Table:
    g = Table.grid(padding=(0, 2))
    g.add_column(style="bold", no_wrap=True)
    g.add_column(overflow="fold")
    for key, value in pairs:
        g.add_row(key, value)
    return g


def _when(ts: Any) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts)) if isinstance(ts, (int, float)) and ts else "-"


def _section(title: str, body: RenderableType) -> Group:
    return Group(Text(""), Text(title, style="bold underline"), body)


REPLICA_COLUMNS = [Column("REPLICA", "right"), Column("NODE"), Column("ADDRESS"), Column("REV", "right"),
                   Column("STATE"), Column("LB"), Column("CONTAINER")]


def replicas(st: FleetStatus) -> Listing:
    """The service's replicas, without what the view says once above (its name, endpoints, image, spec)."""
    rows = Listing(REPLICA_COLUMNS)
    for s in st.services:
        for r in s.replicas:
            rep = r.replica
            rows.add(str(rep.replica), rep.node, f"{r.address}:{rep.port}", str(rep.revision or "-"),
                     Text("running") if rep.running else Text("stopped", style="red"),
                     status.lb_cell(r.lb_health, wide=True), rep.id)
    return rows


def service_view(v: ServiceView, out: Console) -> Group:
    doc = service_json(v)
    rec = v.state or {}
    accepted = v.accepted
    decision = (f"{rec.get('decision', '-')}" + (f" by {rec['by']}" if rec.get("by") else "")
                + (f" at {_when(rec.get('at'))}" if rec.get("at") else "")
                + (f": {rec['reason']}" if rec.get("reason") else ""))
    parts: list[RenderableType] = [_fields(
        ("Service", v.name),
        ("Endpoints", ", ".join(doc["endpoints"]) or "-"),
        ("Accepted", f"revision {accepted.revision} ({accepted.image})" if accepted else "none on record"),
        ("Decision", decision if v.state else "none on record"),
        *([("Canary", f"revision {rec['canary']} waiting for promote or abort")] if rec.get("canary") else []),
        *([("Scaled to", str(rec["replicas"]))] if rec.get("replicas") is not None else []),
        ("Replicas", f"{doc['running']} running, {doc['healthy']} healthy in every load balancer"),
        ("Requests", "-" if doc["requests"] is None
         else f"{doc['requests']['total']} ({doc['requests']['5xx']} 5xx) through HAProxy"),
    )]
    if doc["spec"] is not None:
        parts.append(_section(f"Spec at revision {accepted.revision if accepted else '?'}",
                              Text(yaml.safe_dump(doc["spec"], sort_keys=False).rstrip())))
    parts.append(_section("Replicas and their health in HAProxy (lb node:state)",
                          output.renderable(replicas(v.status), out) if v.status.services else Text("none running")))
    lb = [common.esc(f"{node}: {why}") for node, why in {**v.status.lb_errors, **v.status.errors}.items()]
    if v.status.vip is not None:
        lb.append(status.vip_line(v.status)[0])
    if lb:
        parts.append(_section("Load balancers and nodes", Text.from_markup("\n".join(lb))))
    rows = list(v.containers.rows)
    parts.append(_section(f"Containers, running or not ({len(rows)})",
                          output.renderable(ps.listing(rows), out) if rows else Text("none")))
    if v.revisions:
        parts.append(_section(f"Last revisions (of {len(v.revisions)})",
                              output.renderable(rollout.listing(v.revisions[-REVISIONS:]), out)))
    if doc["errors"]:
        parts.append(_section("Not read", Text("\n".join(f"{k}: {why}" for k, why in doc["errors"].items()))))
    return Group(*parts)


def node_view(v: NodeView, out: Console) -> Group:
    r = v.report
    f = r.facts
    mark = r.mark
    parts: list[RenderableType] = [_fields(
        ("Node", r.node.name),
        ("Address", f"{r.node.address}:{r.node.port}"),
        ("Status", r.status + (f": {r.reason}" if r.reason else "")),
        ("Roles", ",".join(r.node.roles) or "-"),
        ("Labels", ",".join(f"{k}={v}" for k, v in sorted(r.labels.items())) or "-"),
        ("Schedule", nodes.sched(r)),
        *([("Marked by", f"{mark.by} at {_when(mark.at)}")] if mark.by else []),
        *([("Marks", f"unknown: {r.mark_error}" if r.marks_unknown else f"none: {r.mark_error}")]
          if r.mark_error else []),
    )]
    if f is not None:
        alloc = r.allocatable
        parts.append(_section("Facts", _fields(
            ("Hostname", f.hostname),
            ("CPUs", f"{f.ncpu}, load {' '.join(f'{x:.2f}' for x in f.load)}"),
            ("Memory", f"{format_memory(f.mem_total)} total, {format_memory(f.mem_available)} available, "
                       f"{format_memory(f.mem_used)} used"),
            ("Disk", f"{format_memory(f.disk_free)} free of {format_memory(f.disk_total)}"),
            ("Runtime", f"{f.runtime or 'none'} {f.runtime_version or ''}".strip()),
            ("Cgroup", f"v{f.cgroup}"),
            ("Uptime", output.age(f.uptime_s)),
            ("Allocatable", f"cpu {alloc.cpu:g}, memory {format_memory(alloc.memory)}" if alloc else "-"),
            ("Requested", f"cpu {f.requested.cpu:g}, memory {format_memory(f.requested.memory)}"),
        )))
    rows = list(v.containers.rows)
    parts.append(_section(f"Containers ({len(rows)})",
                          output.renderable(ps.listing(rows), out) if rows else Text("none")))
    if v.containers.errors:
        parts.append(_section("Not read", Text("\n".join(f"{k}: {why}" for k, why in v.containers.errors.items()))))
    return Group(*parts)


def _split(ref: str) -> tuple[str | None, str]:
    kind, sep, name = ref.partition("/")
    return (kind, name) if sep and kind in ("service", "node") else (None, ref)


async def read_service(f: Fleet, name: str) -> ServiceView:
    errors: dict[str, str] = {}
    try:
        state, revisions = await f.records().state(name), await f.history(name)
    except (FleetError, ValueError) as exc:  # no record node answers (or none to keep them): replicas still shown
        state, revisions, errors["records"] = None, [], str(exc)
    st = status.select(await f.status(), [name], None)
    every = await f.ps(all=True)
    mine = PsResult(tuple(r for r in every.rows if r.service == name), every.errors)
    return ServiceView(name, state, revisions, st, mine, errors)


async def read_node(f: Fleet, name: str) -> NodeView:
    """`name`'s report and every container on it, running or not (`fleet ui`'s describe view reads this too)."""
    report = next(r for r in await f.nodes() if r.node.name == name)
    every = await f.ps(all=True)
    mine = [r for r in every.rows if r.node == name]
    return NodeView(report, PsResult(tuple(mine), {n: w for n, w in every.errors.items() if n == name}))


def _names(ctx: typer.Context, incomplete: str) -> list[str]:
    """Completion: the inventory's nodes and the playbooks' services."""
    return sorted({*node_names(ctx, incomplete), *service_names(ctx, incomplete)})


def describe(ref: Annotated[str, typer.Argument(metavar="SERVICE|NODE", autocompletion=_names,
                                                help="A service or a node by name; service/NAME or node/NAME "
                                                     "when one name is both.")],
             inventory: common.InventoryOpt = None, json: common.JsonOpt = False,
             out: output.OutputOpt = None) -> None:
    """Everything about one service or node: spec, replicas, health, revisions; or facts, marks, containers.

    Example:

      fleet describe web
      fleet describe node/n1 -o yaml"""
    from fleet.api import Fleet

    fmt = output.chosen(out, json)
    if fmt in ("wide", "name"):
        common.fail(f"describe: -o {fmt} is for listings; use json or yaml")
    kind, name = _split(ref)
    inv = common.inventory(inventory)
    node_names = inv.names()
    if kind is None and name in node_names:
        kind = "node"
    if kind == "node":
        output.check_names("node", [name], node_names)

    async def go() -> ServiceView | NodeView:
        async with Fleet.connect(inv, connect_timeout=10.0) as f:
            if kind == "node":
                return await read_node(f, name)
            view = await read_service(f, name)
            if not (view.revisions or view.status.services or view.containers.rows or view.errors):
                known = set(await f.records().services()) | set(playbook_services()) | set(node_names)
                common.fail(output.unknown("service or node", name, known))
            return view

    view = common.run(go)
    if fmt in ("json", "yaml"):
        output.print_doc(node_json(view) if isinstance(view, NodeView) else service_json(view), fmt)
    else:
        console = common.console()
        console.print(node_view(view, console) if isinstance(view, NodeView) else service_view(view, console),
                      highlight=False)
    bad = (not view.report.ok or bool(view.containers.errors)) if isinstance(view, NodeView) else \
        bool(view.errors or view.containers.errors or view.status.errors or view.status.lb_errors)
    raise typer.Exit(common.EXIT_PARTIAL if bad else common.EXIT_OK)
