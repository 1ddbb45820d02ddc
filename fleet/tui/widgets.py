"""The TUI's widgets: tables and a status line that draw the values handed down to them and post messages up.

They import no transport and no engine at run time: everything they show arrives as an attribute.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from rich.text import Text
from textual.message import Message
from textual.reactive import var
from textual.widgets import DataTable, Static

from fleet.core.units import format_cpu, short_size

if TYPE_CHECKING:
    from fleet.api import NodeReport, ServiceStatus
    from fleet.tui.data import Snapshot

STATUS_STYLE = {"ready": "green", "unreachable": "red", "no runtime": "yellow", "runtime not answering": "red",
                "error": "red"}
HEALTH_STYLE = {"up": "green", "down": "red", "drain": "yellow", "maint": "yellow", "nocheck": "dim"}
Cell = str | Text


def node_cells(r: NodeReport) -> tuple[Cell, ...]:
    """name, status, cpu, alloc, mem, load, containers."""
    status = Text(r.status, style=STATUS_STYLE.get(r.status, ""))
    f, alloc = r.facts, r.allocatable
    if f is None:
        return (r.node.name, status, "-", "-", "-", "-", "-")
    return (r.node.name, status, str(f.ncpu),
            f"{format_cpu(round(alloc.cpu, 3))}/{short_size(alloc.memory)}" if alloc else "-",
            f"{short_size(f.mem_available)}/{short_size(f.mem_total)}", f"{f.load[0]:.2f}",
            f"{len(f.running)} ({short_size(f.used_memory)})")


def service_cells(s: ServiceStatus) -> tuple[Cell, ...]:
    """service, endpoint, healthy/running."""
    ok = s.healthy == s.running and s.running > 0
    return (s.name, ", ".join(s.endpoints) or "-", Text(f"{s.healthy}/{s.running}", style="green" if ok else "yellow"))


def replica_cells(s: ServiceStatus) -> list[tuple[str, tuple[Cell, ...]]]:
    """(key, cells) per replica: id, node, port, revision, image, state, LB health."""
    rows: list[tuple[str, tuple[Cell, ...]]] = []
    for r in s.replicas:
        rep = r.replica
        lb = Text(" ").join(Text(f"{name}:{h}", style=HEALTH_STYLE.get(h, "")) for name, h in r.lb_health.items())
        rows.append((f"{rep.node}/{rep.id}", (
            rep.id, rep.node, f"{r.address}:{rep.port}", str(rep.revision) if rep.revision is not None else "-",
            rep.image.rsplit("/", 1)[-1], Text("running", "green") if rep.running else Text("stopped", "red"),
            lb if lb.plain else Text("-", "dim"))))
    return rows


class ServiceSelected(Message):
    """The user moved to a service (None when the table is empty); the app shows its replicas."""

    def __init__(self, service: str | None) -> None:
        super().__init__()
        self.service = service


class NodesTable(DataTable[Cell]):
    """One row per node, in inventory order."""

    reports: var[tuple[NodeReport, ...]] = var((), init=False)

    def __init__(self, id: str | None = None) -> None:
        super().__init__(cursor_type="row", zebra_stripes=True, id=id)

    def on_mount(self) -> None:
        self.border_title = "Nodes"
        self.add_columns("NODE", "STATUS", "CPU", "ALLOC", "MEM FREE", "LOAD", "CONTAINERS")

    def watch_reports(self, reports: tuple[NodeReport, ...]) -> None:
        row = self.cursor_row
        self.clear()
        for r in reports:
            self.add_row(*node_cells(r), key=r.node.name)
        if reports:
            self.move_cursor(row=min(row, len(reports) - 1), scroll=False)


class ServicesTable(DataTable[Cell]):
    """One row per service; moving the cursor posts ServiceSelected, kept on the same service across refreshes."""

    services: var[tuple[ServiceStatus, ...]] = var((), init=False)

    def __init__(self, id: str | None = None) -> None:
        super().__init__(cursor_type="row", id=id)
        self._current: str | None = None

    def on_mount(self) -> None:
        self.border_title = "Services"
        self.add_columns("SERVICE", "ENDPOINT", "HEALTHY/RUNNING")

    def watch_services(self, services: tuple[ServiceStatus, ...]) -> None:
        names = [s.name for s in services]
        keep = self._current if self._current in names else (names[0] if names else None)
        self.clear()
        for s in services:
            self.add_row(*service_cells(s), key=s.name)
        if keep is not None:
            self.move_cursor(row=names.index(keep), scroll=False)
        self._select(keep)

    def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        event.stop()
        self._select(event.row_key.value)

    def _select(self, name: str | None) -> None:
        self._current = name
        self.post_message(ServiceSelected(name))


class ReplicasTable(DataTable[Cell]):
    """The replicas of the selected service with their health in every load balancer."""

    service: var[ServiceStatus | None] = var(None, init=False)

    def __init__(self, id: str | None = None) -> None:
        super().__init__(cursor_type="row", id=id)

    def on_mount(self) -> None:
        self.border_title = "Replicas"
        self.add_columns("ID", "NODE", "ADDRESS", "REV", "IMAGE", "STATE", "LB")

    def watch_service(self, service: ServiceStatus | None) -> None:
        self.border_title = f"Replicas of {service.name}" if service else "Replicas"
        row = self.cursor_row
        self.clear()
        if service is None:
            return
        for key, cells in replica_cells(service):
            self.add_row(*cells, key=key)
        if service.replicas:
            self.move_cursor(row=min(row, len(service.replicas) - 1), scroll=False)


class StatusLine(Static):
    """When the shown data was read, how long it took, and every node or balancer that could not be read."""

    snapshot: var[Snapshot | None] = var(None, init=False)
    busy: var[bool] = var(False, init=False)

    def watch_snapshot(self) -> None:
        self.update(self.text())

    def watch_busy(self) -> None:
        self.update(self.text())

    def text(self) -> Text:
        snap = self.snapshot
        if snap is None:
            return Text("reading the fleet…", style="dim")
        out = Text.assemble(
            (f"refreshed {snap.taken_at:%H:%M:%S}", "bold"), f" in {snap.duration:.2f}s · ",
            (f"{snap.ready}/{len(snap.nodes)} nodes ready", "green" if snap.ready == len(snap.nodes) else "yellow"))
        if self.busy:
            out.append(" · refreshing…", style="dim")
        for where, why in snap.errors.items():
            out.append(" · ")
            out.append(f"! {where}: {why}", style="red")
        return out
