"""The `fleet ui` application: one exclusive worker reads a snapshot every `interval` seconds and hands it down."""

from __future__ import annotations

import asyncio
import contextlib

from textual import work
from textual.app import App, ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal
from textual.widgets import Footer

from fleet.tui.data import Snapshot, Source, failed
from fleet.tui.widgets import NodesTable, ReplicasTable, ServiceSelected, ServicesTable, StatusLine


class FleetApp(App[None]):
    """Nodes, services and the selected service's replicas, refreshed from `source`."""

    TITLE = "fleet"
    CSS_PATH = "app.tcss"
    BINDINGS = [  # noqa: RUF012 (Textual reads this class attribute as declared)
        Binding("r", "refresh", "Refresh"),
        Binding("q", "quit", "Quit"),
        Binding("tab", "focus_next", "Switch focus", priority=True),
        Binding("shift+tab", "focus_previous", "Previous pane", show=False, priority=True),
    ]

    def __init__(self, source: Source, interval: float = 2.0) -> None:
        super().__init__()
        self.source = source
        self.interval = interval
        self.snapshot: Snapshot | None = None
        self.selected: str | None = None
        self._wake = asyncio.Event()

    def compose(self) -> ComposeResult:
        yield NodesTable(id="nodes")
        with Horizontal(id="services-row"):
            yield ServicesTable(id="services")
            yield ReplicasTable(id="replicas")
        yield StatusLine(id="status")
        yield Footer()

    def on_mount(self) -> None:
        self.poll()

    @work(exclusive=True, group="refresh")
    async def poll(self) -> None:
        """Read, show, then wait `interval` seconds or until `r` is pressed; a refresh is never cut short."""
        status = self.query_one(StatusLine)
        while True:
            self._wake.clear()
            status.busy = True
            try:
                snapshot = await self.source.collect()
            # Whatever one refresh hits, the last good data stays on screen with the reason beside it.
            except Exception as exc:
                snapshot = failed(self.snapshot, exc)
            status.busy = False
            self.show(snapshot)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.interval):
                    await self._wake.wait()

    def show(self, snapshot: Snapshot) -> None:
        """Hand the snapshot down: each widget gets the part it draws."""
        self.snapshot = snapshot
        self.query_one(NodesTable).reports = snapshot.nodes
        self.query_one(ServicesTable).services = snapshot.status.services if snapshot.status else ()
        self.query_one(StatusLine).snapshot = snapshot
        self._show_replicas()

    def _show_replicas(self) -> None:
        services = self.snapshot.status.services if self.snapshot and self.snapshot.status else ()
        self.query_one(ReplicasTable).service = next((s for s in services if s.name == self.selected), None)

    def on_service_selected(self, message: ServiceSelected) -> None:
        self.selected = message.service
        self._show_replicas()

    def action_refresh(self) -> None:
        self._wake.set()
