"""`fleet nodes`: every node's resources and status in one table (or --json)."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import typer
from rich.table import Table

from fleet.cli import common
from fleet.cli.common import esc
from fleet.core.units import short_size

if TYPE_CHECKING:
    from fleet.api import NodeReport

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
        "labels": dict(r.node.labels),
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
    }


def table(reports: list[NodeReport]) -> Table:
    """One row per node; reasons for nodes that are not ready are printed under the table."""
    t = Table(pad_edge=False, box=None, header_style="bold", padding=(0, 1))
    for col, just in [("NODE", "left"), ("ADDRESS", "left"), ("STATUS", "left"), ("ROLES", "left"),
                      ("ZONE", "left"), ("CPU", "right"), ("ALLOC", "right"), ("MEM FREE", "right"),
                      ("LOAD", "right"), ("DISK", "right"), ("RUNTIME", "left"), ("CTRS", "right")]:
        # STATUS alone may wrap ("runtime not / answering") so that a narrow terminal cuts no figure.
        t.add_column(col, justify=just, no_wrap=col != "STATUS")  # type: ignore[arg-type]
    for r in reports:
        f = r.facts
        alloc = r.allocatable
        cells = ["-"] * 7
        if f is not None:
            cells = [
                str(f.ncpu),
                f"{round(alloc.cpu, 2):g}/{short_size(alloc.memory)}" if alloc else "-",
                f"{short_size(f.mem_available)}/{short_size(f.mem_total)}",
                f"{f.load[0]:.2f}",
                short_size(f.disk_free),
                f"{f.runtime} {(f.runtime_version or '').split('~')[0]}".strip() if f.runtime else "none",
                f"{len(f.running)} ({short_size(f.used_memory)})",
            ]
        address = f"{r.node.address}:{r.node.port}" if r.node.port != 22 else r.node.address
        t.add_row(r.node.name, address, f"[{STATUS_STYLE.get(r.status, 'white')}]{r.status}[/]",
                  ",".join(r.node.roles), r.node.labels.get("zone", "-"), *cells)
    return t


def nodes(inventory: common.InventoryOpt = None, json: common.JsonOpt = False,
          timeout: float = typer.Option(10.0, help="Seconds to connect to a node (its facts command then has "
                                                   "10 s).")) -> None:
    """Show every node: status, CPU, memory, load, disk, runtime and containers.

    A node is ready, unreachable (sshd), no runtime (containerd missing or not running) or runtime not answering
    (containerd hung); exit 1 unless every node is ready."""
    from fleet.api import Fleet

    inv = common.inventory(inventory)

    async def go() -> tuple[list[NodeReport], float]:
        started = time.perf_counter()
        async with Fleet.connect(inv, connect_timeout=timeout, command_timeout=timeout) as f:
            reports = await f.nodes()
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
        out.print(f"{len(reports) - len(bad)}/{len(reports)} nodes ready in {elapsed:.2f}s ({inv.path})")
    raise typer.Exit(common.EXIT_OK if all(r.ok for r in reports) else common.EXIT_PARTIAL)
