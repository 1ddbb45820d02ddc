"""The TUI's views (main, describe, history, logs, events) and dialogs (help, confirm, ask, a running action).

Views get their data from the app (attributes down) or read it in their own worker through the app's source;
they post `Requested` up for every action. Leaving a view cancels its workers (a followed log stops reading).
"""

from __future__ import annotations

import io
from typing import TYPE_CHECKING, ClassVar, Literal

from rich.console import Console, RenderableType
from rich.text import Text
from textual import on, work
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.message import Message
from textual.screen import ModalScreen, Screen
from textual.widgets import Button, DataTable, Footer, Header, Input, Label, Log, Static

from fleet.cli.describe import NodeView, ServiceView, node_view, service_view
from fleet.cli.lock import node_state, summary
from fleet.tui.keys import K9S, KEYS
from fleet.tui.widgets import (
    Charts,
    EventsTable,
    FleetTable,
    HistoryTable,
    ListTable,
    NodesTable,
    ReplicasTable,
    ServicesTable,
    StatusLine,
    event_cells,
    image_rows,
    job_rows,
    lease_rows,
    revision_cells,
    volume_rows,
)

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from textual.app import ComposeResult

    from fleet.results import Event, Revision
    from fleet.tui.data import Action, ActionResult, Source


class FilterBar(Input):
    """The `/` filter of a view: typing filters its table live; enter keeps the filter, esc clears it."""

    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape", "clear", "Clear filter", show=False)]

    def __init__(self) -> None:
        super().__init__(placeholder="filter…", id="filter", classes="hidden")

    def action_clear(self) -> None:
        self.value = ""
        self.screen.close_filter()  # type: ignore[attr-defined]


class View(Screen[None]):
    """A full-screen view with a `/` filter over one of its tables."""

    def filter_table(self) -> FleetTable | None:
        focused = self.focused
        if isinstance(focused, FleetTable):
            return focused
        tables = list(self.query(FleetTable))
        return tables[0] if tables else None

    def open_filter(self) -> None:
        table = self.filter_table()
        if table is None:
            return
        self._filtering = table
        bar = self.query_one(FilterBar)
        bar.value = table.filter
        bar.remove_class("hidden")
        bar.focus()

    def close_filter(self) -> None:
        bar = self.query_one(FilterBar)
        bar.add_class("hidden")
        table = getattr(self, "_filtering", None)
        if table is not None:
            table.filter = bar.value
            table.focus()

    @on(Input.Changed, "#filter")
    def _filter_changed(self, event: Input.Changed) -> None:
        table = getattr(self, "_filtering", None)
        if table is not None:
            table.filter = event.value

    @on(Input.Submitted, "#filter")
    def _filter_done(self) -> None:
        self.close_filter()

    def back(self) -> bool:
        """esc: clear this view's filter if one is set; True when that was all esc had to do."""
        table = self.filter_table()
        if table is not None and table.filter:
            table.filter = ""
            return True
        return False


class MainReady(Message):
    """The main view is mounted: the app may start refreshing it."""


class MainScreen(View):
    """Nodes with charts of the highlighted one, services, and the highlighted service's replicas."""

    def on_mount(self) -> None:
        self.post_message(MainReady())

    def compose(self) -> ComposeResult:
        yield Header(icon="⛴")
        yield NodesTable(id="nodes")
        yield Charts(id="charts")
        with Horizontal(id="services-row"):
            yield ServicesTable(id="services")
            yield ReplicasTable(id="replicas")
        yield FilterBar()
        yield StatusLine(id="status")
        yield Footer(compact=True)

    def on_resize(self) -> None:
        # Below 140 columns the replicas go under the services: both stay readable at 100 (and 80). Below 30 rows
        # the charts give their lines to the tables.
        self.set_class(self.size.width < 140, "narrow")
        self.set_class(self.size.height < 30, "short")


class HistoryScreen(View):
    """The revisions of one service, newest first, read once when opened (r reads again)."""

    def __init__(self, service: str, accepted: int | None) -> None:
        super().__init__()
        self.service = service
        self.accepted = accepted
        self.revisions: Sequence[Revision] | None = None

    def compose(self) -> ComposeResult:
        yield Header(icon="⛴")
        yield HistoryTable(id="history")
        yield Label("", id="history-note")
        yield FilterBar()
        yield Footer(compact=True)

    def on_mount(self) -> None:
        table = self.query_one(HistoryTable)
        table.border_title = f"History of {self.service}  (* accepted)"
        table.service_of = lambda key: self.service  # type: ignore[method-assign]
        self.load()

    @work(exclusive=True, group="history")
    async def load(self) -> None:
        source: Source = self.app.source  # type: ignore[attr-defined]
        note = self.query_one("#history-note", Label)
        note.update("reading the fleet's records…")
        try:
            self.revisions = revs = await source.history(self.service)
        except Exception as exc:  # shown where the table would be; the view stays usable
            note.update(Text(f"! {type(exc).__name__}: {exc}", "red"))
            return
        note.update(f"{len(revs)} revision(s)")
        self.query_one(HistoryTable).items = tuple(
            (str(r.revision), revision_cells(r, self.accepted)) for r in reversed(revs))


class LogScreen(View):
    """The live log of a service (every replica) or one replica: follows until left; space pauses, `/` searches."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("space", "pause", "Pause/resume"),
        Binding("f", "follow", "Follow"),
    ]
    MAX_LINES = 5000

    def __init__(self, ref: str, tail: int = 200) -> None:
        super().__init__()
        self.ref = ref
        self.tail = tail
        self.lines: list[str] = []
        self.paused = False
        self.search = ""
        self.ended = False

    def compose(self) -> ComposeResult:
        yield Header(icon="⛴")
        yield Label(f"Logs of {self.ref}", id="log-title")
        yield Log(max_lines=self.MAX_LINES, id="log")
        yield Input(placeholder="search…", id="search", classes="hidden")
        yield Footer(compact=True)

    def on_mount(self) -> None:
        self.query_one(Log).focus()
        self._title()
        self.follow()

    @work(exclusive=True, group="logs")
    async def follow(self) -> None:
        source: Source = self.app.source  # type: ignore[attr-defined]
        try:
            async with source.logs(self.ref, follow=True, tail=self.tail) as lines:
                async for prefix, line in lines:
                    self.add(f"{prefix} {line}")
        except Exception as exc:  # the view says why it stopped and stays open
            self.add(f"! {type(exc).__name__}: {exc}")
        self.ended = True
        self._title()

    def add(self, line: str) -> None:
        self.lines.append(line)
        del self.lines[: -self.MAX_LINES]
        if not self.paused and self.matches(line):
            self.query_one(Log).write_line(line)

    def matches(self, line: str) -> bool:
        return not self.search or self.search.lower() in line.lower()

    def shown(self) -> list[str]:
        return [line for line in self.lines if self.matches(line)]

    def redraw(self) -> None:
        log = self.query_one(Log)
        log.clear()
        log.write_lines(self.shown())
        self._title()

    def _title(self) -> None:
        state = "ended" if self.ended else ("paused" if self.paused else "following")
        found = f" · /{self.search}: {len(self.shown())} line(s)" if self.search else ""
        self.query_one("#log-title", Label).update(f"Logs of {self.ref} ({state}){found}")

    def action_pause(self) -> None:
        self.paused = not self.paused
        self.redraw()

    def action_follow(self) -> None:
        self.paused = False
        self.redraw()
        self.query_one(Log).scroll_end(animate=False)

    def filter_table(self) -> FleetTable | None:
        return None

    def open_filter(self) -> None:
        bar = self.query_one("#search", Input)
        bar.value = self.search
        bar.remove_class("hidden")
        bar.focus()

    @on(Input.Changed, "#search")
    def _search_changed(self, event: Input.Changed) -> None:
        self.search = event.value
        self.redraw()

    @on(Input.Submitted, "#search")
    def _search_done(self) -> None:
        self.query_one("#search", Input).add_class("hidden")
        self.query_one(Log).focus()

    def back(self) -> bool:
        bar = self.query_one("#search", Input)
        if self.search or not bar.has_class("hidden"):
            self.search = ""
            bar.value = ""
            bar.add_class("hidden")
            self.redraw()
            self.query_one(Log).focus()
            return True
        return False


class DescribeScreen(View):
    """Everything about one service or node, as `fleet describe` prints it (its own renderer), read when opened;
    r reads it again."""

    BINDINGS: ClassVar[list[BindingType]] = [Binding("r", "reload", "Read again")]

    def __init__(self, kind: Literal["service", "node"], name: str) -> None:
        super().__init__()
        self.kind = kind
        self.target = name
        self.described: ServiceView | NodeView | None = None

    def compose(self) -> ComposeResult:
        yield Header(icon="⛴")
        yield Label(f"Describe {self.kind} {self.target}", id="describe-title")
        with VerticalScroll(id="describe-box"):
            yield Static("reading…", id="describe")
        yield Footer(compact=True)

    def on_mount(self) -> None:
        self.query_one("#describe-box").focus()
        self.load()

    def action_reload(self) -> None:
        self.load()

    @work(exclusive=True, group="describe")
    async def load(self) -> None:
        source: Source = self.app.source  # type: ignore[attr-defined]
        title = self.query_one("#describe-title", Label)
        title.update(f"Describe {self.kind} {self.target} (reading…)")
        try:
            self.described = await source.describe(self.kind, self.target)
        except Exception as exc:  # shown in place; the view stays usable (r tries again)
            self.query_one("#describe", Static).update(Text(f"! {type(exc).__name__}: {exc}", "red"))
            title.update(f"Describe {self.kind} {self.target}")
            return
        self.query_one("#describe", Static).update(self.rendered())
        title.update(f"Describe {self.kind} {self.target}")

    def rendered(self) -> RenderableType:
        """The view as `fleet describe` draws it, laid out for this screen's width."""
        console = Console(width=max(40, self.size.width - 2), file=io.StringIO(), highlight=False)
        view = self.described
        if view is None:
            return Text("reading…")
        return node_view(view, console) if isinstance(view, NodeView) else service_view(view, console)


ListKind = Literal["volumes", "images", "lease", "jobs"]
LIST_COLUMNS: dict[str, tuple[str, ...]] = {
    "volumes": ("VOLUME", "NODE", "KIND", "SIZE", "USED BY"),
    "images": ("NODE", "IMAGE", "DIGEST"),
    "lease": ("NODE", "STATE", "HOLDER", "LEFT", "SINCE", "PID", "COMMAND"),
    "jobs": ("JOB", "RUN", "TRIGGER", "STARTED", "DURATION", "STATUS", "EXIT", "NODE", "WHO"),
}
LIST_TITLES = {"volumes": "Volumes", "images": "Images", "lease": "The fleet's lease", "jobs": "Job runs"}


class ListScreen(View):
    """Volumes, images, the fleet's lease or the job runs (as `fleet volume ls`, `fleet image ls`, `fleet lock
    status`, `fleet job ls`), read when opened; r reads again. What could not be read (and why a run failed or was
    missed) is named under the table."""

    BINDINGS: ClassVar[list[BindingType]] = [Binding("r", "reload", "Read again")]

    def __init__(self, kind: ListKind) -> None:
        super().__init__()
        self.kind = kind

    def compose(self) -> ComposeResult:
        yield Header(icon="⛴")
        yield ListTable(id="list")
        yield Label("", id="list-note")
        yield FilterBar()
        yield Footer(compact=True)

    def on_mount(self) -> None:
        table = self.query_one(ListTable)
        table.set_columns(LIST_COLUMNS[self.kind])
        table.border_title = LIST_TITLES[self.kind]
        table.focus()
        self.load()

    def action_reload(self) -> None:
        self.load()

    @work(exclusive=True, group="list")
    async def load(self) -> None:
        source: Source = self.app.source  # type: ignore[attr-defined]
        note = self.query_one("#list-note", Label)
        note.update("reading the fleet…")
        try:
            rows, lines = await self.read(source)
        except Exception as exc:  # shown where the table is; the view stays usable (r tries again)
            note.update(Text(f"! {type(exc).__name__}: {exc}", "red"))
            return
        self.query_one(ListTable).items = tuple(rows)
        note.update(Text("\n".join(lines) or f"{len(rows)} row(s)"))

    async def read(self, source: Source) -> tuple[list[tuple[str, tuple[str | Text, ...]]], list[str]]:
        """The rows, and the lines under them (what could not be read; the lease's summary; why runs failed)."""
        if self.kind == "volumes":
            listing = await source.volumes()
            return volume_rows(listing), [f"! {n}: {why}" for n, why in listing.errors.items()]
        if self.kind == "images":
            found, errors = await source.images()
            return image_rows(found), [f"! {n}: {why}" for n, why in errors.items()]
        if self.kind == "jobs":
            runs = await source.job_runs()
            return job_rows(runs), [f"{r.job} {r.run}: {r.reason}" for r in reversed(runs)
                                    if r.status in ("failed", "missed") and r.reason]
        leases = await source.lease()
        return lease_rows(leases, node_state), [summary(leases)]


class EventsScreen(View):
    """The controller's events, oldest first, following the newest as they come."""

    def __init__(self, events: Sequence[Event]) -> None:
        super().__init__()
        self.initial = tuple(events)

    def compose(self) -> ComposeResult:
        yield Header(icon="⛴")
        yield EventsTable(id="events")
        yield FilterBar()
        yield Footer(compact=True)

    def on_mount(self) -> None:
        self.show(self.initial)

    def show(self, events: Sequence[Event]) -> None:
        table = self.query_one(EventsTable)
        table.border_title = f"Events ({len(events)})"
        table.items = tuple((str(i), event_cells(e)) for i, e in enumerate(events))
        if table.row_count:
            table.move_cursor(row=table.row_count - 1)


class HelpScreen(ModalScreen[None]):
    """Every key, by view."""

    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape,question_mark,q", "dismiss", "Close")]

    def compose(self) -> ComposeResult:
        with VerticalScroll(id="help"):
            yield Label("fleet ui: keys (esc closes)")
            yield DataTable(id="keys", cursor_type="row")
            yield Label("Coming from k9s: what differs")
            yield DataTable(id="k9s", cursor_type="row")

    def on_mount(self) -> None:
        keys: DataTable[str] = self.query_one("#keys", DataTable)
        keys.add_columns("VIEW", "KEY", "WHAT IT DOES")
        for row in KEYS:
            keys.add_row(*row)
        k9s: DataTable[str] = self.query_one("#k9s", DataTable)
        k9s.add_columns("TO", "K9S", "FLEET UI")
        for row in K9S:
            k9s.add_row(*row)
        keys.focus()


class ConfirmScreen(ModalScreen[bool]):
    """Names what will happen; y or the Yes button goes ahead, n, esc or No does nothing."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("y", "answer(True)", "Yes"),
        Binding("n,escape", "answer(False)", "No"),
    ]

    def __init__(self, action: Action, where: str = "") -> None:
        super().__init__()
        self.action = action
        self.where = where  # which fleet: its name and inventory, so a destroy never hits the wrong one

    def compose(self) -> ComposeResult:
        with Vertical(id="dialog"):
            if self.where:
                yield Static(Text(self.where, "bold"), id="where")
            yield Static(Text(self.action.describe()), id="question")
            with Horizontal(id="buttons"):
                yield Button("Yes (y)", variant="error", id="yes")
                yield Button("No (n)", variant="primary", id="no")

    def on_mount(self) -> None:
        self.query_one("#no", Button).focus()

    def action_answer(self, yes: bool) -> None:
        self.dismiss(yes)

    @on(Button.Pressed)
    def _pressed(self, event: Button.Pressed) -> None:
        self.dismiss(event.button.id == "yes")


class AskScreen(ModalScreen[str | None]):
    """One line of input; `check` returns why a value is refused (shown under it) or None to accept it."""

    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape", "cancel", "Cancel")]

    def __init__(self, prompt: str, value: str = "", check: Callable[[str], str | None] | None = None) -> None:
        super().__init__()
        self.prompt = prompt
        self.value = value
        self.check = check

    def compose(self) -> ComposeResult:
        with Vertical(id="dialog"):
            yield Label(self.prompt)
            yield Input(self.value, id="answer")
            yield Label("", id="why")

    @on(Input.Submitted, "#answer")
    def _submitted(self, event: Input.Submitted) -> None:
        why = self.check(event.value) if self.check is not None else None
        if why is not None:
            self.query_one("#why", Label).update(Text(why, "red"))
            return
        self.dismiss(event.value)

    def action_cancel(self) -> None:
        self.dismiss(None)


class ActionScreen(ModalScreen[None]):
    """A running action: what it is, each event and output line as it comes, and how it ended. esc closes the
    dialog; the action goes on (its events stay in the events view)."""

    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape,enter", "dismiss", "Close")]

    def __init__(self, action: Action, lines: Sequence[str] = ()) -> None:
        super().__init__()
        self.action = action
        self.initial = tuple(lines)
        self.result: ActionResult | None = None

    def compose(self) -> ComposeResult:
        with Vertical(id="dialog"):
            yield Static(Text(self.action.describe(), "bold"), id="what")
            with VerticalScroll(id="progress-box"):
                yield Log(id="progress")
            yield Static(Text("running…", "cyan"), id="outcome")

    def on_mount(self) -> None:
        self.query_one(Log).write_lines(self.initial)

    def add(self, line: str) -> None:
        self.query_one(Log).write_line(line)

    def finish(self, result: ActionResult) -> None:
        self.result = result
        for line in result.lines:
            self.add(line)
        self.query_one("#outcome", Static).update(
            Text(result.summary + "  (esc closes)", "bold green" if result.ok else "bold red"))
