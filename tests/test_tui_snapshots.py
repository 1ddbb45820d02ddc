"""Snapshots of `fleet ui`'s views at 80×24 and 200×50, drawn from the recording source's fixed data; the header
names the fleet (prod-eu) and its inventory on every one.

`pytest tests/test_tui_snapshots.py --snapshot-update` redraws them after an intended change; look at the SVGs
(tests/__snapshots__/) before committing them.
"""

from __future__ import annotations

import os
import time
from collections.abc import Awaitable, Callable, Iterator

import pytest
from test_tui import ready_app, until
from textual.pilot import Pilot
from tui_source import RecordingSource, event, snapshot

from fleet.tui import FleetApp
from fleet.tui.screens import (
    ConfirmScreen,
    DescribeScreen,
    EventsScreen,
    HelpScreen,
    HistoryScreen,
    ListScreen,
    LogScreen,
)
from fleet.tui.widgets import NodesTable, ServicesTable

SMALL, LARGE = (80, 24), (200, 50)
SIZES = pytest.mark.parametrize("size", [SMALL, LARGE], ids=["80x24", "200x50"])


@pytest.fixture(autouse=True)
def utc() -> Iterator[None]:
    """Times on screen (history, events) read the same on every machine."""
    old = os.environ.get("TZ")
    os.environ["TZ"] = "UTC"
    time.tzset()
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("TZ", None)
        else:
            os.environ["TZ"] = old
        time.tzset()


def app(read_only: bool = False) -> FleetApp:
    """Three refreshes 2 s apart so the charts and CPU USED have data."""
    source = RecordingSource(snapshot(0), snapshot(2), snapshot(4))
    source.events(event("start", "web", "started web-3-abc (revision 3)", "n1", 60.0))
    source.events(event("ready", "web", "web-3-abc is healthy in lb1", "n1", 62.0))
    source.events(event("stop", "web", "stopped web-3-old (SIGTERM, 0.4s)", "n2", 63.0))
    return FleetApp(source, interval=3600, read_only=read_only)


def then(*keys: str, view: type | None = None, settle: Callable[[FleetApp], bool] | None = None,
         table: type = ServicesTable) -> Callable[[Pilot[None]], Awaitable[None]]:
    async def run_before(pilot: Pilot[None]) -> None:
        a: FleetApp = pilot.app  # type: ignore[assignment]
        await ready_app(pilot, a)
        assert a.title == "fleet prod-eu"  # what the header shows on every snapshot
        for at in (2, 4):
            await pilot.press("r")
            await until(pilot, lambda at=at: a.snapshot is not None and a.snapshot.taken_at == snapshot(at).taken_at)
        a.main.query_one(table).focus()
        await pilot.press(*keys)
        if view is not None:
            await until(pilot, lambda: isinstance(a.screen, view))
        if settle is not None:
            await until(pilot, lambda: settle(a))
        # Let every message the last key or refresh set off be handled and drawn (under load this takes a while).
        for _ in range(3):
            await pilot.pause(0.05)
        await pilot.wait_for_scheduled_animations()

    return run_before


@SIZES
def test_main_view(snap_compare, size):
    assert snap_compare(app(), terminal_size=size, run_before=then())


def test_nodes_sorted_by_memory_used(snap_compare):
    """o seven times: NODE, STATUS, CORDON, CPU REQ, MEM REQ, CPU USED, MEM USED; lb1 (0B) comes first."""
    def sorted_by_mem(a: FleetApp) -> bool:
        return a.main.query_one(NodesTable).sort_by == "MEM USED"

    assert snap_compare(app(), terminal_size=SMALL, run_before=then(
        *["o"] * 7, table=NodesTable, settle=sorted_by_mem))


@SIZES
def test_describe_view(snap_compare, size):
    assert snap_compare(app(), terminal_size=size, run_before=then(
        "down", "d", view=DescribeScreen, settle=lambda a: getattr(a.screen, "described", None) is not None))


def test_main_view_read_only_has_no_action_keys(snap_compare):
    assert snap_compare(app(read_only=True), terminal_size=SMALL, run_before=then())


@SIZES
def test_history_view(snap_compare, size):
    assert snap_compare(app(), terminal_size=size, run_before=then(
        "down", "h", view=HistoryScreen, settle=lambda a: a.screen.query_one("HistoryTable").row_count == 3))


def test_log_view(snap_compare):
    assert snap_compare(app(), terminal_size=SMALL, run_before=then(
        "down", "l", view=LogScreen, settle=lambda a: len(a.screen.query_one("Log").lines) == 3))


def test_events_view(snap_compare):
    assert snap_compare(app(), terminal_size=LARGE, run_before=then("e", view=EventsScreen))


@SIZES
def test_destroy_confirmation(snap_compare, size):
    assert snap_compare(app(), terminal_size=size, run_before=then("D", view=ConfirmScreen))


def test_drain_confirmation(snap_compare):
    assert snap_compare(app(), terminal_size=SMALL, run_before=then("R", view=ConfirmScreen, table=NodesTable))


def test_lease_view(snap_compare):
    assert snap_compare(app(), terminal_size=SMALL, run_before=then(
        "k", view=ListScreen, settle=lambda a: a.screen.query_one("#list").row_count == 3))


def test_help(snap_compare):
    assert snap_compare(app(), terminal_size=LARGE, run_before=then("question_mark", view=HelpScreen))
