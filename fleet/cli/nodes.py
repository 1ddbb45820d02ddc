"""`fleet nodes`: every node's resources and status in one table (or --json)."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.table import Table
from rich.text import Text

from fleet.cli import common, output
from fleet.cli.completion import node_names
from fleet.cli.output import Column, Listing
from fleet.core.units import short_size

if TYPE_CHECKING:
    from fleet.results import NodeReport

STATUS_STYLE = {"ready": "green", "unreachable": "red", "no runtime": "yellow", "runtime not answering": "red",
                "error": "red"}


def report_json(r: NodeReport) -> dict[str, Any]:
    f = r.facts
    alloc = r.allocatable
    return {
        "name": r.node.name,
        "address": r.node.address,
        "status": r.status,
        "reason": r.reason,
        "roles": list(r.node.roles),
        # The labels placement uses: the inventory's with `fleet node label`'s changes (kept on the fleet) over them.
        "labels": r.labels,
        "inventory_labels": dict(r.node.labels),
        "cordoned": r.cordoned,
        "draining": r.draining,
        "node_ops": {"labels": dict(r.mark.labels), "removed": sorted(r.mark.removed), "by": r.mark.by,
                     "at": r.mark.at, "error": r.mark_error},
        "duration_s": round(r.duration, 4),
        "facts": None if f is None else {
            "hostname": f.hostname,
            "cpus": f.ncpu,
            "memory_total": f.mem_total,
            "memory_available": f.mem_available,
            "load": list(f.load),
            "uptime_s": f.uptime_s,
            "disk_total": f.disk_total,
            "disk_free": f.disk_free,
            "runtime": f.runtime,
            "runtime_version": f.runtime_version,
            "cgroup": f.cgroup,
            "containers_running": len(f.running),
            "containers_memory": f.used_memory,
            "containers_cpu_ns": f.used_cpu_ns,
        },
        "allocatable": None if alloc is None else {"cpu": round(alloc.cpu, 3), "memory": alloc.memory},
        # What fleet's containers reserve beside what the node measures in use (by everything on it), and the part
        # of the measured use that the reservations do not cover, which the scheduler adds to them.
        "requested": None if f is None else {"cpu": round(f.requested.cpu, 3), "memory": f.requested.memory},
        "measured": None if f is None else {
            "scope": f.scope,
            "memory_used": f.mem_used,
            "memory_total": f.mem_total,
            "cpu_load": f.cpu_in_use,
            "others": {"cpu": f.others.cpu, "memory": f.others.memory},
        },
    }


def sched(r: NodeReport) -> Text:
    """The SCHED cell: draining / cordoned (yellow) or -, then the labels `fleet node label` set (k=v) or removed
    (-k); `?` when the fleet's record of its nodes could not be read."""
    if r.marks_unknown:
        return Text("?", style="red")
    text = Text(r.mark.schedule, style="yellow") if r.cordoned else Text("-")
    changes = r.mark.changes()
    return text + (" " + ",".join(changes) if changes else "")


COLUMNS = [Column("NODE"), Column("ADDRESS"), Column("STATUS"), Column("SCHED"), Column("ROLES"), Column("ZONE"),
           Column("CPU", "right"), Column("ALLOC", "right"), Column("REQUEST", "right"),
           Column("MEASURED", "right"), Column("DISK", "right"), Column("RUNTIME"), Column("CTRS", "right"),
           Column("LABELS", wide=True), Column("MEMORY", "right", wide=True), Column("UPTIME", "right", wide=True),
           Column("CGROUP", "right", wide=True), Column("HOSTNAME", wide=True)]


def listing(reports: list[NodeReport], wide: bool = False) -> Listing:
    """One row per node; reasons for nodes that are not ready are printed under it. SCHED (cordons and
    `fleet node label`'s labels) is a column when some node has any, when they could not be read, or with -o wide."""
    marked = wide or any(not r.mark.empty or r.marks_unknown for r in reports)
    rows = Listing(COLUMNS if marked else [c for c in COLUMNS if c.header != "SCHED"])
    for r in reports:
        f = r.facts
        alloc = r.allocatable
        cells = ["-"] * 7
        more = ["-"] * 4
        if f is not None:
            req = f.requested
            cells = [
                str(f.ncpu),
                f"{round(alloc.cpu, 2):g}/{short_size(alloc.memory)}" if alloc else "-",
                f"{round(req.cpu, 2):g}/{short_size(req.memory)}",
                # In use by everything on the node: the load it sustains, as the scheduler counts it (none for a
                # cgroup node: its load average is the host's) and memory.
                f"{'-' if f.cpu_in_use is None else format(f.cpu_in_use, '.2f')}/{short_size(f.mem_used)}",
                short_size(f.disk_free),
                f"{f.runtime} {(f.runtime_version or '').split('~')[0]}".strip() if f.runtime else "none",
                f"{len(f.running)} ({short_size(f.used_memory)})",
            ]
            more = [short_size(f.mem_total), output.age(f.uptime_s), f"v{f.cgroup}", f.hostname]
        address = f"{r.node.address}:{r.node.port}" if r.node.port != 22 else r.node.address
        labels = ",".join(f"{k}={v}" for k, v in sorted(r.labels.items())) or "-"
        rows.add(r.node.name, address, Text(r.status, style=STATUS_STYLE.get(r.status, "")),
                 *([sched(r)] if marked else []), ",".join(r.node.roles) or "-", r.labels.get("zone", "-"), *cells,
                 labels, *more)
    return rows


def table(reports: list[NodeReport]) -> Table:
    """The table a terminal shows (cells wrap, none is cut)."""
    return output.table(listing(reports))


def select(reports: list[NodeReport], names: list[str], selector: dict[str, str]) -> list[NodeReport]:
    """The reports of the nodes named (all when none) whose labels match `selector`, in inventory order."""
    return [r for r in reports if (not names or r.node.name in names) and output.matches(r.labels, selector)]


def nodes(names: Annotated[list[str] | None, typer.Argument(
              metavar="[NODE]...", show_default=False, autocompletion=node_names,
              help="Only these nodes (default: every node of the inventory).")] = None,
          inventory: common.InventoryOpt = None, json: common.JsonOpt = False, out: output.OutputOpt = None,
          selector: output.SelectorOpt = None,
          timeout: Annotated[float, typer.Option(
              metavar="DURATION", parser=common.duration(),
              help=f"How long to connect to a node, its facts command then has 10 s {common.DURATION_HELP}.")] = 10.0
          ) -> None:
    """Show every node: status, CPU, memory, load, disk, runtime and containers.

    ALLOC is what the node offers, REQUEST what fleet's containers reserve and MEASURED what everything on the
    node uses (the load it sustains: the lowest of its 1-, 5- and 15-minute averages; memory), each as cpu/memory;
    the scheduler counts the reservations plus the measured use they do not cover.

    A node is ready, unreachable (sshd), no runtime (containerd missing or not running) or runtime not answering
    (containerd hung); exit 1 unless every node shown is ready. Reasons and warnings go to stderr.

    Example:

      fleet nodes --timeout 5s
      fleet nodes n1 n2 -o wide
      fleet nodes --selector zone=eu-west -o name"""
    from fleet.api import reader

    fmt = output.chosen(out, json)
    wanted = output.parse_selector(selector or [])
    inv = common.inventory(inventory)
    output.check_names("node", names or [], inv.names())

    async def go() -> tuple[list[NodeReport], float]:
        started = time.perf_counter()
        # A `fleet watch` on this controller lends its connections; the pool is closed before the time is taken.
        async with reader(inv, connect_timeout=timeout, command_timeout=timeout) as read:
            reports = await read.nodes()
        return reports, time.perf_counter() - started

    everything, elapsed = common.run(go)
    reports = select(everything, names or [], wanted)
    doc = {"inventory": inv.path, "elapsed_s": round(elapsed, 4), "nodes": [report_json(r) for r in reports]}
    output.show(fmt, doc, listing(reports, wide=fmt == "wide"), (f"node/{r.node.name}" for r in reports))
    bad = [r for r in reports if not r.ok]
    if fmt not in ("json", "yaml", "name"):
        for r in bad:
            output.warn(f"[red]{common.esc(r.node.name)}[/]: {r.status}: {common.esc(r.reason or '')}")
        unread = next((r.mark_error for r in reports if r.marks_unknown), None)
        fresh = next((r.mark_error for r in reports if r.mark_error and not r.marks_unknown), None)
        if fresh:
            output.warn(f"[dim]{common.esc(fresh)}[/]")
        if unread:
            output.warn(f"[yellow]! cordons and node labels unknown (SCHED ?): {common.esc(unread)}[/]")
        # The summary too: a pipe gets the rows alone.
        output.warn(f"{len(reports) - len(bad)}/{len(reports)} nodes ready in {elapsed:.2f}s ({common.esc(inv.path)})")
    raise typer.Exit(common.EXIT_OK if not bad else common.EXIT_PARTIAL)
