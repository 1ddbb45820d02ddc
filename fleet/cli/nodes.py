"""`fleet nodes`: every node's resources and status in one table (or --json)."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.table import Table

from fleet.cli import common
from fleet.cli.common import esc
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


def sched(r: NodeReport) -> str:
    """The SCHED cell: draining / cordoned (yellow) or -, then the labels `fleet node label` set (k=v) or removed
    (-k); `?` when the fleet's record of its nodes could not be read."""
    if r.mark_error is not None:
        return "[red]?[/]"
    state = f"[yellow]{r.mark.schedule}[/]" if r.cordoned else "-"
    changes = r.mark.changes()
    return state + (" " + esc(",".join(changes)) if changes else "")


def table(reports: list[NodeReport]) -> Table:
    """One row per node; reasons for nodes that are not ready are printed under the table. SCHED (cordons and
    `fleet node label`'s labels) is shown when some node has any, or when they could not be read."""
    t = Table(pad_edge=False, box=None, header_style="bold", padding=(0, 1))
    marked = any(not r.mark.empty or r.mark_error is not None for r in reports)
    for col, just in [("NODE", "left"), ("ADDRESS", "left"), ("STATUS", "left"),
                      *([("SCHED", "left")] if marked else []), ("ROLES", "left"), ("ZONE", "left"),
                      ("CPU", "right"), ("ALLOC", "right"), ("REQUEST", "right"),
                      ("MEASURED", "right"), ("DISK", "right"), ("RUNTIME", "left"), ("CTRS", "right")]:
        # STATUS and SCHED alone may wrap ("runtime not / answering") so that a narrow terminal cuts no figure.
        t.add_column(col, justify=just, no_wrap=col not in ("STATUS", "SCHED"))  # type: ignore[arg-type]
    for r in reports:
        f = r.facts
        alloc = r.allocatable
        cells = ["-"] * 7
        if f is not None:
            req = f.requested
            cells = [
                str(f.ncpu),
                f"{round(alloc.cpu, 2):g}/{short_size(alloc.memory)}" if alloc else "-",
                f"{round(req.cpu, 2):g}/{short_size(req.memory)}",
                # In use by everything on the node: load (none for a cgroup node: its load average is the host's)
                # and memory.
                f"{'-' if f.cpu_in_use is None else format(f.load[0], '.2f')}/{short_size(f.mem_used)}",
                short_size(f.disk_free),
                f"{f.runtime} {(f.runtime_version or '').split('~')[0]}".strip() if f.runtime else "none",
                f"{len(f.running)} ({short_size(f.used_memory)})",
            ]
        address = f"{r.node.address}:{r.node.port}" if r.node.port != 22 else r.node.address
        t.add_row(r.node.name, address, f"[{STATUS_STYLE.get(r.status, 'white')}]{r.status}[/]",
                  *([sched(r)] if marked else []), ",".join(r.node.roles), r.labels.get("zone", "-"), *cells)
    return t


def nodes(inventory: common.InventoryOpt = None, json: common.JsonOpt = False,
          timeout: Annotated[float, typer.Option(
              metavar="DURATION", parser=common.duration(),
              help=f"How long to connect to a node, its facts command then has 10 s {common.DURATION_HELP}.")] = 10.0
          ) -> None:
    """Show every node: status, CPU, memory, load, disk, runtime and containers.

    ALLOC is what the node offers, REQUEST what fleet's containers reserve and MEASURED what everything on the
    node uses (1-minute load, memory), each as cpu/memory; the scheduler counts the reservations plus the measured
    use they do not cover.

    A node is ready, unreachable (sshd), no runtime (containerd missing or not running) or runtime not answering
    (containerd hung); exit 1 unless every node is ready.

    Example:

      fleet nodes --timeout 5s"""
    from fleet.api import reader

    inv = common.inventory(inventory)

    async def go() -> tuple[list[NodeReport], float]:
        started = time.perf_counter()
        # A `fleet watch` on this controller lends its connections; the pool is closed before the time is taken.
        async with reader(inv, connect_timeout=timeout, command_timeout=timeout) as read:
            reports = await read.nodes()
        return reports, time.perf_counter() - started

    reports, elapsed = common.run(go)
    if json:
        common.print_json({"inventory": inv.path, "elapsed_s": round(elapsed, 4),
                           "nodes": [report_json(r) for r in reports]})
    else:
        out = common.console()
        out.print(table(reports))
        bad = [r for r in reports if not r.ok]
        for r in bad:
            out.print(f"[red]{r.node.name}[/]: {r.status}: {esc(r.reason or '')}", highlight=False)
        unread = next((r.mark_error for r in reports if r.mark_error), None)
        if unread:
            out.print(f"[yellow]! cordons and node labels unknown (SCHED ?): {esc(unread)}[/]", highlight=False)
        out.print(f"{len(reports) - len(bad)}/{len(reports)} nodes ready in {elapsed:.2f}s ({inv.path})")
    raise typer.Exit(common.EXIT_OK if all(r.ok for r in reports) else common.EXIT_PARTIAL)
