"""The `fleet ui` application: one exclusive worker reads a snapshot every `interval` seconds and hands it down;
views and tables post requests up, and the app turns each into a view or an action (asked, confirmed, run in a
worker under the fleet's lease, its progress shown to the end).

With `read_only` every action is hidden: its keys, footer entries and palette commands.
"""

from __future__ import annotations

import asyncio
import contextlib
import shlex
from typing import TYPE_CHECKING, ClassVar

from textual import work
from textual.app import App
from textual.binding import Binding, BindingType
from textual.css.query import NoMatches
from textual.message import Message

from fleet.core.errors import FleetError, LeaseHeld
from fleet.tui.commands import FleetCommands
from fleet.tui.data import Action, ActionResult, Series, Snapshot, Source, Verb, failed, fleet_name, track
from fleet.tui.screens import (
    ActionScreen,
    AskScreen,
    ConfirmScreen,
    DescribeScreen,
    EventsScreen,
    HelpScreen,
    HistoryScreen,
    ListKind,
    ListScreen,
    LogScreen,
    MainScreen,
    View,
)
from fleet.tui.widgets import (
    Charts,
    NodesTable,
    ReplicasTable,
    Requested,
    RowChosen,
    ServicesTable,
    StatusLine,
    cordon_of,
    node_cells,
    replica_cells,
    service_cells,
)

if TYPE_CHECKING:
    from fleet.results import Event

VERBS: frozenset[str] = frozenset(
    {"scale", "restart", "rollback", "promote", "abort", "destroy", "cordon", "uncordon", "drain", "exec"})


class EventArrived(Message):
    def __init__(self, event: Event) -> None:
        super().__init__()
        self.event = event


class FleetApp(App[None]):
    """Nodes, services, replicas, history, logs and events of the fleet `source` reads; actions on them."""

    TITLE = "fleet"
    CSS_PATH = "app.tcss"
    COMMANDS = App.COMMANDS | {FleetCommands}
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("question_mark", "help", "Help"),
        Binding("slash", "filter", "Filter"),
        Binding("escape", "go_back", "Back", show=False),
        Binding("e", "events", "Events"),
        # The fleet's other objects, listed by `?` and the palette: volumes, images, the lease, the job runs.
        Binding("v", "list('volumes')", "Volumes", show=False),
        Binding("i", "list('images')", "Images", show=False),
        Binding("k", "list('lease')", "Lease", show=False),
        Binding("J", "list('jobs')", "Jobs", show=False),
        # Listed by `?`, not in the footer: at 100 columns it keeps room for the pane's own actions.
        Binding("r", "refresh", "Refresh", show=False),
        Binding("q", "quit", "Quit", show=False),
        Binding("tab", "focus_next", "Next pane", show=False, priority=True),
        Binding("shift+tab", "focus_previous", "Previous pane", show=False, priority=True),
    ]

    def __init__(self, source: Source, interval: float = 2.0, *, read_only: bool = False) -> None:
        super().__init__()
        self.source = source
        self.interval = interval
        self.read_only = read_only
        self.snapshot: Snapshot | None = None
        self.selected: str | None = None
        self.node: str | None = None
        self.series: dict[str, Series] = {}  # per node: container CPU, memory
        self.traffic: dict[str, Series] = {}  # per service: requests and 5xx per second
        self.running: Action | None = None
        self.results: list[tuple[Action, ActionResult]] = []
        self.first_shown: float | None = None
        self._progress: list[str] = []
        self._wake = asyncio.Event()
        # The header names the fleet and its inventory on every view; every confirmation names them too.
        self.inventory = getattr(source, "inventory", "") or ""
        self.fleet_name = fleet_name(self.inventory) if self.inventory else "?"
        self.title = f"fleet {self.fleet_name}"
        self.sub_title = f"inventory {self.inventory}" if self.inventory else ""

    @property
    def where(self) -> str:
        """Which fleet an action changes, as the confirmation says it."""
        return f"fleet {self.fleet_name} · inventory {self.inventory or '?'}"

    # --- what may be done -------------------------------------------------------------------------------
    def allows(self, verb: str) -> bool:
        """An action is offered unless the app is read-only or the source cannot carry it out."""
        return not self.read_only and verb in VERBS and self.source.can(verb)  # type: ignore[arg-type]

    # --- refreshing -------------------------------------------------------------------------------------
    def get_default_screen(self) -> MainScreen:
        return MainScreen()

    def on_mount(self) -> None:
        self.source.events.listeners.append(self._event)

    def on_main_ready(self) -> None:
        if self.snapshot is None:
            self.poll()

    def on_unmount(self) -> None:
        with contextlib.suppress(ValueError):
            self.source.events.listeners.remove(self._event)

    def _event(self, event: Event) -> None:
        self.post_message(EventArrived(event))

    @work(exclusive=True, group="refresh")
    async def poll(self) -> None:
        """Read, show, then wait `interval` seconds or until `r` is pressed; a refresh is never cut short."""
        while True:
            self._wake.clear()
            try:
                self.status.busy = True
            except NoMatches:  # the app is closing: its views are gone
                return
            try:
                # The first screen shows the nodes as soon as they answer; later refreshes replace it whole.
                snapshot = await self.source.collect(self.show if self.snapshot is None else None)
            # Whatever one refresh hits, the last good data stays on screen with the reason beside it.
            except Exception as exc:
                snapshot = failed(self.snapshot, exc)
            else:
                track(self.series, self.traffic, snapshot)
            try:
                self.status.busy = False
                self.show(snapshot)
            except NoMatches:  # the app closed while this refresh read the fleet
                return
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.interval):
                    await self._wake.wait()

    @property
    def main(self) -> MainScreen:
        if not self.screen_stack:  # closed: a refresh that ends now finds no views, as `poll` expects
            raise NoMatches("the app has closed: its screens are gone")
        screen = self.screen_stack[0]
        assert isinstance(screen, MainScreen)
        return screen

    @property
    def status(self) -> StatusLine:
        return self.main.query_one(StatusLine)

    def show(self, snapshot: Snapshot) -> None:
        """Hand the snapshot down: each widget gets the part it draws."""
        self.snapshot = snapshot
        main = self.main
        cordon = any(cordon_of(r) is not None for r in snapshot.nodes)
        nodes = main.query_one(NodesTable)
        columns = list(NodesTable.COLUMNS)
        if cordon:
            columns.insert(2, "CORDON")
        nodes.set_columns(columns)
        nodes.items = tuple((r.node.name, node_cells(r, snapshot, self.series.get(r.node.name), cordon))
                           for r in snapshot.nodes)
        main.query_one(ServicesTable).items = tuple(
            (s.name, service_cells(s, snapshot.records.get(s.name), self.traffic.get(s.name)))
            for s in snapshot.services)
        self.status.snapshot = snapshot
        self._show_replicas()
        self._show_charts()
        if self.first_shown is None:
            self.first_shown = asyncio.get_running_loop().time()

    def _show_replicas(self) -> None:
        service = self.snapshot.service(self.selected) if self.snapshot else None
        table = self.main.query_one(ReplicasTable)
        table.service = self.selected
        table.border_title = f"Replicas of {self.selected}" if service else "Replicas"
        table.items = tuple(replica_cells(service)) if service else ()

    def _show_charts(self) -> None:
        charts = self.main.query_one(Charts)
        charts.show_node(self.node, self.series.get(self.node or ""))
        charts.show_service(self.selected, self.traffic.get(self.selected or ""))

    def on_row_chosen(self, message: RowChosen) -> None:
        if not self.screen_stack:  # a late message while the app shuts down
            return
        if isinstance(message.table, ServicesTable):
            self.selected = message.key
            self._show_replicas()
            self._show_charts()
        elif isinstance(message.table, NodesTable):
            self.node = message.key
            self._show_charts()

    def on_event_arrived(self, message: EventArrived) -> None:
        e = message.event
        if self.running is not None:
            line = f"{e.step} {e.service}{' on ' + e.node if e.node else ''}: {e.message}"
            self._progress.append(line)
            for screen in self.screen_stack:
                if isinstance(screen, ActionScreen) and screen.action is self.running:
                    screen.add(line)
        for screen in self.screen_stack:
            if isinstance(screen, EventsScreen):
                screen.show(list(self.source.events))

    # --- keys everywhere --------------------------------------------------------------------------------
    def action_refresh(self) -> None:
        self._wake.set()

    def action_help(self) -> None:
        if not isinstance(self.screen, HelpScreen):
            self.push_screen(HelpScreen())

    def action_events(self) -> None:
        if not isinstance(self.screen, EventsScreen):
            self.push_screen(EventsScreen(list(self.source.events)))

    def action_list(self, kind: ListKind) -> None:
        if not (isinstance(self.screen, ListScreen) and self.screen.kind == kind):
            self.push_screen(ListScreen(kind))

    def action_filter(self) -> None:
        if isinstance(self.screen, View):
            self.screen.open_filter()

    def action_go_back(self) -> None:
        screen = self.screen
        if isinstance(screen, View) and screen.back():
            return
        if len(self.screen_stack) > 1:
            self.pop_screen()

    # --- views and actions asked for --------------------------------------------------------------------
    def on_requested(self, message: Requested) -> None:
        message.stop()
        self.request(message.what, message.target, message.service,
                     from_history=isinstance(self.screen, HistoryScreen))

    def request(self, what: str, target: str, service: str | None = None, *, from_history: bool = False) -> None:
        """Open the view `what` names, or ask for, confirm and run the action."""
        if what == "history":
            record = self.snapshot.records.get(target) if self.snapshot else None
            self.push_screen(HistoryScreen(target, record.accepted if record else None))
            return
        if what == "logs":
            self.push_screen(LogScreen(target))
            return
        if what == "describe":
            self.push_screen(DescribeScreen("service" if service is not None else "node", target))
            return
        if not self.allows(what):
            self.notify(f"{what} is not available here", severity="warning")
            return
        if self.running is not None:
            self.notify(f"wait: {self.running.verb} {self.running.target} is still running", severity="warning")
            return
        verb: Verb = what  # type: ignore[assignment]
        if verb == "rollback" and from_history and service is not None:
            self.prepare(Action("rollback", service, revision=int(target)))
        else:
            self.prepare(Action(verb, target, service=service))

    @work(group="ask")
    async def prepare(self, action: Action) -> None:
        """Ask what the action needs (a count, a command), confirm it, run it."""
        if action.verb == "scale":
            record = self.snapshot.records.get(action.target) if self.snapshot else None
            service = self.snapshot.service(action.target) if self.snapshot else None
            current = record.wanted if record and record.wanted is not None else (service.running if service else None)
            answer = await self.push_screen_wait(AskScreen(
                f"{self.where}\nReplicas of {action.target} (now {current if current is not None else '?'}):",
                str(current if current is not None else ""), count_problem))
            if answer is None:
                return
            action = Action("scale", action.target, count=int(answer), current=current)
        elif action.verb == "exec":
            answer = await self.push_screen_wait(AskScreen(f"Command to run in {action.target}:", "",
                                                           command_problem))
            if answer is None:
                return
            action = Action("exec", action.target, service=action.service, argv=tuple(shlex.split(answer)))
        if action.verb != "exec" and not await self.push_screen_wait(ConfirmScreen(action, self.where)):
            self.notify("cancelled: nothing was changed")
            return
        await self.carry_out(action)

    async def carry_out(self, action: Action) -> ActionResult:
        """Run `action` with its progress on an ActionScreen; a refusal (lease held, fleet error) is a result."""
        self.running = action
        self._progress = []
        self.status.running = action.describe().split(":")[0].split(".")[0]
        screen = ActionScreen(action)
        await self.push_screen(screen)
        try:
            result = await self.source.act(action, self._output)
        except LeaseHeld as exc:
            result = ActionResult(False, f"refused: the fleet's lease is held by {exc.info}",
                                  ("nothing was changed; try again when it is free (see `fleet lock status`)",))
        except FleetError as exc:
            result = ActionResult(False, f"{action.verb} {action.target} failed: {exc}")
        finally:
            self.running = None
            self.status.running = ""
        self.results.append((action, result))
        if screen.is_attached:
            screen.finish(result)
        self.notify(result.summary, severity="information" if result.ok else "error", timeout=8)
        self._wake.set()
        return result

    def _output(self, line: str) -> None:
        self._progress.append(line)
        for screen in self.screen_stack:
            if isinstance(screen, ActionScreen) and screen.action is self.running:
                screen.add(line)


def count_problem(text: str) -> str | None:
    """Why `text` is not a replica count (None: it is one)."""
    try:
        n = int(text.strip())
    except ValueError:
        return f"expected a whole number of replicas, got {text!r}"
    return "replicas cannot be negative" if n < 0 else None


def command_problem(text: str) -> str | None:
    try:
        argv = shlex.split(text)
    except ValueError as exc:
        return f"cannot read the command: {exc}"
    return None if argv else "type a command to run"
