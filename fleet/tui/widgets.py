"""The TUI's widgets: tables, charts and a status line that draw the values handed down to them and post messages
up (a row chosen, a view or an action asked for). They import no transport and no engine at run time."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, ClassVar

from rich.text import Text
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical
from textual.message import Message
from textual.reactive import var
from textual.widgets import DataTable, Label, Sparkline, Static

from fleet.core.units import format_cpu, short_size
from fleet.tui.data import Series, cpu_text, rate_text, size_text, sort_key

if TYPE_CHECKING:
    from textual.app import ComposeResult

    from fleet.core.errors import LeaseInfo
    from fleet.results import Event, NodeLease, NodeReport, Revision, ServiceStatus, VolumeListing
    from fleet.results.jobs import JobRun
    from fleet.tui.data import ServiceRecord, Snapshot

STATUS_STYLE = {"ready": "green", "unreachable": "red", "no runtime": "yellow", "runtime not answering": "red",
                "error": "red"}
HEALTH_STYLE = {"up": "green", "down": "red", "drain": "yellow", "maint": "yellow", "nocheck": "dim"}
OUTCOME_STYLE = {"succeeded": "green", "failed": "red", "rolled-back": "yellow", "aborted": "yellow",
                 "in-progress": "cyan", "canary": "cyan"}
Cell = str | Text
Row = tuple[str, tuple[Cell, ...]]


def cordon_of(r: NodeReport) -> str | None:
    """The node's mark when the façade's reports carry one: `draining`, `cordoned` or `-` (None: they do not)."""
    cordoned = getattr(r, "cordoned", None)
    if cordoned is None:
        return None
    return "draining" if getattr(r, "draining", False) else ("cordoned" if cordoned else "-")


def node_cells(r: NodeReport, snapshot: Snapshot | None = None, series: Series | None = None,
               cordon: bool = False) -> tuple[Cell, ...]:
    """name, status, [cordon], cpu req/alloc, mem req/alloc, cpu used, mem used, load, containers."""
    status = Text(r.status, style=STATUS_STYLE.get(r.status, ""))
    mark: tuple[Cell, ...] = ()
    if cordon:
        c = cordon_of(r) or "-"
        mark = (Text(c, "dim" if c == "-" else "yellow"),)
    f, alloc = r.facts, r.allocatable
    if f is None:
        return (r.node.name, status, *mark, "-", "-", "-", "-", "-", "-")
    req_cpu, req_mem = snapshot.requested(r.node.name) if snapshot is not None else (0.0, 0)
    cpu_used = cpu_text(series.a[-1]) if series is not None and series.a else "-"
    return (r.node.name, status, *mark,
            f"{cpu_text(req_cpu)}/{format_cpu(round(alloc.cpu, 3))}" if alloc else "-",
            f"{short_size(req_mem)}/{short_size(alloc.memory)}" if alloc else "-",
            cpu_used, short_size(f.used_memory), f"{f.load[0]:.2f}", str(len(f.running)))


def rollout_text(rec: ServiceRecord | None) -> Text:
    if rec is None:
        return Text("-", "dim")
    if rec.canary is not None:
        return Text(f"canary r{rec.canary} waiting", "cyan")
    style = {"applied": "green", "failed": "red", "pinned": "yellow", "rolled-back": "yellow"}.get(rec.decision, "")
    return Text(rec.decision or "-", style)


def service_cells(s: ServiceStatus, rec: ServiceRecord | None = None, traffic: Series | None = None
                  ) -> tuple[Cell, ...]:
    """service, ready/wanted, revision, rollout, requests/s, 5xx/s, endpoint."""
    wanted = rec.wanted if rec is not None and rec.wanted is not None else s.running
    ok = s.healthy == wanted and s.running == wanted
    revs = sorted({r.replica.revision for r in s.replicas if r.replica.revision is not None})
    rev = f"r{rec.accepted}" if rec is not None and rec.accepted is not None else "-"
    if revs and [f"r{x}" for x in revs] != [rev]:
        rev += " (" + ",".join(f"r{x}" for x in revs) + ")"
    req = rate_text(traffic.a[-1]) if traffic is not None and traffic.a else "-"
    err = traffic.b[-1] if traffic is not None and traffic.b else None
    return (s.name, Text(f"{s.healthy}/{wanted}", style="green" if ok else "yellow"), rev, rollout_text(rec), req,
            Text(rate_text(err), "red" if err else "") if err is not None else "-", ", ".join(s.endpoints) or "-")


def replica_cells(s: ServiceStatus) -> list[Row]:
    """(key `node/id`, cells) per replica: id, node, port, revision, image, state, LB health."""
    rows: list[Row] = []
    for r in s.replicas:
        rep = r.replica
        lb = Text(" ").join(Text(f"{name}:{h}", style=HEALTH_STYLE.get(h, "")) for name, h in r.lb_health.items())
        rows.append((f"{rep.node}/{rep.id}", (
            rep.id, rep.node, f"{r.address}:{rep.port}", str(rep.revision) if rep.revision is not None else "-",
            rep.image.rsplit("/", 1)[-1], Text("running", "green") if rep.running else Text("stopped", "red"),
            lb if lb.plain else Text("-", "dim"))))
    return rows


def revision_cells(rev: Revision, accepted: int | None) -> tuple[Cell, ...]:
    """revision (* accepted), image, outcome, when, by, reason."""
    mark = "*" if rev.revision == accepted else " "
    when = time.strftime("%m-%d %H:%M:%S", time.localtime(rev.created_at))
    outcome = Text(rev.outcome, OUTCOME_STYLE.get(rev.outcome, ""))
    return (f"{mark}{rev.revision}", rev.image.rsplit("/", 1)[-1], outcome, when, rev.user, rev.reason or "")


def event_cells(e: Event) -> tuple[Cell, ...]:
    return (time.strftime("%H:%M:%S", time.localtime(e.at)), e.step, e.service, e.node or "-", e.message)


def volume_rows(listing: VolumeListing) -> list[Row]:
    """(key `node/volume`, cells) per volume: volume, node, kind, size, the containers using it."""
    return [(f"{r.node}/{r.ref}", (r.ref, r.node, r.kind, short_size(r.size) if r.size is not None else "-",
                                   ", ".join(r.users) or Text("-", "dim")))
            for r in listing.rows]


def image_rows(found: Mapping[str, Mapping[str, str]]) -> list[Row]:
    """(key `node/ref`, cells) per image on each node: node, image, digest (its first 19 characters)."""
    return [(f"{node}/{ref}", (node, ref, digest[:19])) for node, images in found.items()
            for ref, digest in sorted(images.items())]


LEASE_STYLE = {"held": "yellow", "free": "green", "expired": "dim", "unreachable": "red"}


def lease_rows(leases: Sequence[NodeLease], state_of: Callable[[LeaseInfo | str | None], str]) -> list[Row]:
    """(key node, cells) per record node: node, state, holder (or why the node could not be read), seconds left,
    since, pid, command."""
    rows: list[Row] = []
    for name, lease in leases:
        state = state_of(lease)
        cells: tuple[Cell, ...] = (name, Text(state, LEASE_STYLE.get(state, "")))
        if isinstance(lease, str):
            cells += (Text(lease, "red"), "-", "-", "-", "-")
        elif lease is None:
            cells += ("-", "-", "-", "-", "-")
        else:
            cells += (lease.holder, f"{lease.remaining:.0f}s", time.strftime("%H:%M:%S", time.localtime(lease.since)),
                      str(lease.pid), lease.command)
        rows.append((name, cells))
    return rows


RUN_STYLE = {"succeeded": "green", "failed": "red", "missed": "yellow", "running": "cyan"}


def job_rows(runs: Sequence[JobRun]) -> list[Row]:
    """(key `job/run`, cells) per recorded run, newest first, as `fleet job ls` shows it: job, run, trigger (with
    its slot, or the service and revision a deploy hook ran for), started (UTC), duration, status, exit, node of
    the last attempt, who."""
    rows: list[Row] = []
    for r in sorted(runs, key=lambda r: r.started_at, reverse=True):
        trigger = r.trigger + (f" {r.slot}" if r.slot else "") + (f" {r.service} rev {r.revision}" if r.service else "")
        rows.append((f"{r.job}/{r.run}", (
            r.job, r.run, trigger, time.strftime("%Y-%m-%d %H:%M:%SZ", time.gmtime(r.started_at)),
            "-" if r.duration is None else f"{r.duration:.1f}s", Text(r.status, RUN_STYLE.get(r.status, "")),
            "-" if r.exit_status is None else str(r.exit_status), r.last.node if r.last else "-", r.who)))
    return rows


class Requested(Message):
    """The user asked, from a table, for a view (`history`, `logs`) or an action (a Verb) on `target`."""

    def __init__(self, what: str, target: str, service: str | None = None) -> None:
        super().__init__()
        self.what = what
        self.target = target
        self.service = service


class RowChosen(Message):
    """The cursor moved to the row `key` of `table` (None: the table is empty)."""

    def __init__(self, table: FleetTable, key: str | None) -> None:
        super().__init__()
        self.table = table
        self.key = key


class FleetTable(DataTable[Cell]):
    """A table of keyed rows that keeps its cursor on the same key across refreshes and shows only the rows
    containing `filter` (case-insensitive, in any cell), sorted by the column `sort_by` (o: the next column, O:
    reverse; numbers as numbers, a missing `-` last; None: the order the rows came in). Actions named in ACTIONS
    post `Requested` for the current row; the app hides those it does not allow (read-only, or a verb the façade
    lacks)."""

    TITLE = ""
    COLUMNS: ClassVar[tuple[str, ...]] = ()
    ACTIONS: ClassVar[frozenset[str]] = frozenset()
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("o", "sort_next", "Sort"),
        Binding("O", "sort_reverse", "Reverse", show=False),
    ]
    items: var[tuple[Row, ...]] = var((), init=False)
    filter: var[str] = var("", init=False)
    sort_by: var[str | None] = var(None, init=False)
    sort_reverse: var[bool] = var(False, init=False)

    def __init__(self, id: str | None = None) -> None:
        super().__init__(cursor_type="row", zebra_stripes=True, id=id)
        self.current: str | None = None
        self._widths: tuple[int, ...] = ()
        self.add_columns(*self.COLUMNS)

    def on_mount(self) -> None:
        self.border_title = self.TITLE

    def on_idle(self) -> None:
        # Textual's DataTable measures new rows only when idle, and keeps a row it drew before that under the same
        # cache key: a table drawn before it was first idle kept label-wide, cut columns (seen in snapshots under
        # load). Once the widths change, those drawings are dropped.
        widths = tuple(c.content_width for c in self.columns.values())
        if widths != self._widths:
            self._widths = widths
            self._clear_caches()
            self.refresh()

    def set_columns(self, columns: Sequence[str]) -> None:
        if tuple(str(c.label) for c in self.columns.values()) != tuple(columns):
            self.clear(columns=True)
            self.add_columns(*columns)
            self._draw()

    def watch_items(self) -> None:
        self._draw()

    def watch_filter(self) -> None:
        self._draw()

    def watch_sort_by(self) -> None:
        self._draw()

    def watch_sort_reverse(self) -> None:
        self._draw()

    def labels(self) -> list[str]:
        return [str(c.label) for c in self.columns.values()]

    def action_sort_next(self) -> None:
        """The next column (after the last: back to the rows' own order)."""
        labels = self.labels()
        at = labels.index(self.sort_by) + 1 if self.sort_by in labels else 0
        self.sort_by = labels[at] if at < len(labels) else None

    def action_sort_reverse(self) -> None:
        if self.sort_by is None:
            self.sort_by = self.labels()[0] if self.columns else None
        self.sort_reverse = not self.sort_reverse

    def shown(self) -> list[Row]:
        needle = self.filter.lower()
        rows = [row for row in self.items if not needle or any(needle in str(c).lower() for c in row[1])]
        labels = self.labels()
        if self.sort_by in labels:
            at = labels.index(self.sort_by)
            rows.sort(key=lambda row: sort_key(row[1][at]) if at < len(row[1]) else (2, 0.0, ""),
                      reverse=self.sort_reverse)
        return rows

    def _draw(self) -> None:
        marks = [f"/{self.filter}"] if self.filter else []
        if self.sort_by is not None:
            marks.append(f"sorted by {self.sort_by} {'▼' if self.sort_reverse else '▲'}")
        self.border_subtitle = " · ".join(marks)
        keep = self.current
        self.clear()
        rows = self.shown()
        for key, cells in rows:
            self.add_row(*cells, key=key)
        keys = [k for k, _ in rows]
        if keep in keys:
            self.move_cursor(row=keys.index(keep), scroll=False)
        self._choose(keep if keep in keys else (keys[0] if keys else None))

    def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        event.stop()
        self._choose(event.row_key.value)

    def _choose(self, key: str | None) -> None:
        changed = key != self.current
        self.current = key
        if changed or key is None:
            self.post_message(RowChosen(self, key))

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action in self.ACTIONS:
            allows = getattr(self.app, "allows", None)
            return bool(allows(action)) if allows is not None else True
        return True

    def request(self, what: str) -> None:
        if self.current is not None:
            self.post_message(Requested(what, self.current, self.service_of(self.current)))
        else:
            self.notify("nothing selected", severity="warning")

    def service_of(self, key: str) -> str | None:
        return None


class NodesTable(FleetTable):
    """One row per node, in inventory order; d describes it, c, u, R cordon, uncordon and drain it (R as k9s's r,
    which here refreshes)."""

    TITLE = "Nodes"
    # REQ cells are requested/allocatable ("300m/1500m"); short labels keep every column within 80 columns.
    COLUMNS = ("NODE", "STATUS", "CPU REQ", "MEM REQ", "CPU USED", "MEM USED", "LOAD", "CTRS")
    ACTIONS = frozenset({"cordon", "uncordon", "drain"})
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("d", "describe", "Describe"),
        Binding("c", "cordon", "Cordon"),
        Binding("u", "uncordon", "Uncordon"),
        Binding("R", "drain", "Drain"),
    ]

    def action_describe(self) -> None:
        self.request("describe")

    def action_cordon(self) -> None:
        self.request("cordon")

    def action_uncordon(self) -> None:
        self.request("uncordon")

    def action_drain(self) -> None:
        self.request("drain")


class ServicesTable(FleetTable):
    """One row per service; the highlighted one's replicas show beside it."""

    TITLE = "Services"
    COLUMNS = ("SERVICE", "READY", "REV", "ROLLOUT", "REQ/S", "5XX/S", "ADDRESS")
    ACTIONS = frozenset({"scale", "rollback", "promote", "abort", "destroy"})
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("d", "describe", "Describe"),
        Binding("h", "history", "History"),
        Binding("l", "logs", "Logs"),
        Binding("s", "scale", "Scale"),
        Binding("b", "rollback", "Rollback"),
        Binding("p", "promote", "Promote"),
        Binding("a", "abort", "Abort"),
        Binding("D", "destroy", "Destroy"),
    ]

    def action_describe(self) -> None:
        self.request("describe")

    def action_history(self) -> None:
        self.request("history")

    def action_logs(self) -> None:
        self.request("logs")

    def action_scale(self) -> None:
        self.request("scale")

    def action_rollback(self) -> None:
        self.request("rollback")

    def action_promote(self) -> None:
        self.request("promote")

    def action_abort(self) -> None:
        self.request("abort")

    def action_destroy(self) -> None:
        self.request("destroy")

    def service_of(self, key: str) -> str | None:
        return key


class ReplicasTable(FleetTable):
    """The replicas of the highlighted service with their health in every load balancer."""

    TITLE = "Replicas"
    COLUMNS = ("ID", "NODE", "ADDRESS", "REV", "IMAGE", "STATE", "LB")
    ACTIONS = frozenset({"restart", "exec"})
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("l", "logs", "Logs"),
        Binding("R", "restart", "Restart"),
        Binding("x", "exec", "Exec"),
    ]
    service: str | None = None

    def action_logs(self) -> None:
        self.request("logs")

    def action_restart(self) -> None:
        self.request("restart")

    def action_exec(self) -> None:
        self.request("exec")

    def service_of(self, key: str) -> str | None:
        return self.service


class HistoryTable(FleetTable):
    """A service's revisions, newest first; enter or b rolls back to the highlighted one."""

    TITLE = "History"
    COLUMNS = ("REV", "IMAGE", "OUTCOME", "CREATED", "BY", "REASON")
    ACTIONS = frozenset({"rollback"})
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("b", "rollback", "Roll back to this"),
        Binding("enter", "rollback", "Roll back to this", show=False),
    ]

    def action_rollback(self) -> None:
        self.request("rollback")


class ListTable(FleetTable):
    """The rows of a list view (volumes, images, the lease, job runs); its columns are the view's."""

    TITLE = ""


class EventsTable(FleetTable):
    """What the controller did, oldest first, following the newest."""

    TITLE = "Events"
    COLUMNS = ("TIME", "STEP", "SERVICE", "NODE", "MESSAGE")


class Charts(Horizontal):
    """Sparklines of the highlighted node (container CPU, memory in use) and service (requests and 5xx responses
    per second at the load balancers) over the last refreshes."""

    NAMES = ("cpu", "mem", "req", "err")

    def compose(self) -> ComposeResult:
        for name in self.NAMES:
            with Vertical(classes="chart"):
                yield Label(name, id=f"{name}-label")
                yield Sparkline([], id=f"{name}-chart")

    def _put(self, name: str, data: list[float], text: str) -> None:
        self.query_one(f"#{name}-chart", Sparkline).data = data
        self.query_one(f"#{name}-label", Label).update(text)

    def show_node(self, node: str | None, series: Series | None) -> None:
        cpu, mem = (list(series.a), list(series.b)) if series else ([], [])
        name = node or "-"
        self._put("cpu", cpu, f"{name} cpu {cpu_text(cpu[-1]) if cpu else '-'}")
        self._put("mem", mem, f"{name} mem {size_text(mem[-1]) if mem else '-'}")

    def show_service(self, service: str | None, series: Series | None) -> None:
        req, err = (list(series.a), list(series.b)) if series else ([], [])
        name = service or "-"
        self._put("req", req, f"{name} req/s {rate_text(req[-1]) if req else '-'}")
        self._put("err", err, f"{name} 5xx/s {rate_text(err[-1]) if err else '-'}")


class StatusLine(Static):
    """When the shown data was read, how long it took, the running action, and every node or balancer that could
    not be read."""

    snapshot: var[Snapshot | None] = var(None, init=False)
    busy: var[bool] = var(False, init=False)
    running: var[str] = var("", init=False)

    def watch_snapshot(self) -> None:
        self.update(self.text())

    def watch_busy(self) -> None:
        self.update(self.text())

    def watch_running(self) -> None:
        self.update(self.text())

    def text(self) -> Text:
        snap = self.snapshot
        if snap is None:
            out = Text("reading the fleet…", style="dim")
        else:
            out = Text.assemble(
                (f"refreshed {snap.taken_at:%H:%M:%S}", "bold"),
                f" in {snap.duration:.2f}s{' via ' + snap.via if snap.via else ''} · ",
                (f"{snap.ready}/{len(snap.nodes)} nodes ready", "green" if snap.ready == len(snap.nodes) else "yellow"))
            if self.busy:
                out.append(" · refreshing…", style="dim")
        if self.running:
            out.append(" · ")
            out.append(f"running: {self.running}", style="bold cyan")
        for where, why in snap.errors.items() if snap is not None else ():
            out.append(" · ")
            out.append(f"! {where}: {why}", style="red")
        return out

