"""`fleet ui` driven headless by Pilot: every view and action, against a source that records what was asked.

The source is the only stand-in (tests/tui_source.py): widgets, screens, workers and messages are the real ones.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable

import pytest
from helpers import wait_until_async
from textual.command import CommandPalette
from textual.css.query import NoMatches
from textual.message import Message
from textual.pilot import Pilot
from textual.widgets import Footer, Input, Log
from tui_source import HEALTHY, HOLDER, N2_DOWN, RecordingSource, event, ready, snapshot

from fleet.core.errors import LeaseHeld
from fleet.tui import Action, FleetApp
from fleet.tui.keys import KEYS
from fleet.tui.screens import (
    ActionScreen,
    AskScreen,
    ConfirmScreen,
    EventsScreen,
    HelpScreen,
    HistoryScreen,
    LogScreen,
    MainScreen,
)
from fleet.tui.widgets import (
    EventsTable,
    FleetTable,
    HistoryTable,
    NodesTable,
    ReplicasTable,
    RowChosen,
    ServicesTable,
    StatusLine,
)

SIZE = (120, 40)
ALL_VERBS = ("scale", "restart", "rollback", "promote", "abort", "destroy", "cordon", "uncordon", "drain", "exec")


async def until(pilot: Pilot[None], cond: Callable[[], object], timeout: float = 5.0) -> None:
    await wait_until_async(cond, timeout, 0.01, "the app to reach the state", pause=pilot.pause)


def column(table: FleetTable, index: int) -> list[str]:
    return [str(table.get_row_at(i)[index]) for i in range(table.row_count)]


def rows(table: FleetTable) -> list[tuple[str, ...]]:
    return [tuple(str(c) for c in table.get_row_at(i)) for i in range(table.row_count)]


def status_text(app: FleetApp) -> str:
    return app.main.query_one(StatusLine).text().plain


def footer_keys(app: FleetApp) -> set[str]:
    """The descriptions of the bindings the footer shows now."""
    return {b.description for _, b, enabled, _ in app.active_bindings.values() if b.show and enabled}


async def focus(pilot: Pilot[None], app: FleetApp, table: type[FleetTable]) -> FleetTable:
    widget = app.screen.query_one(table)
    widget.focus()
    await pilot.pause()
    return widget


async def ready_app(pilot: Pilot[None], app: FleetApp) -> None:
    await until(pilot, lambda: app.snapshot is not None and app.main.query_one(ServicesTable).row_count > 0
                and app.selected is not None)


@contextlib.asynccontextmanager
async def running(source: RecordingSource, size: tuple[int, int] = SIZE, read_only: bool = False
                  ) -> AsyncIterator[tuple[Pilot[None], FleetApp]]:
    """The app over `source`, refreshed only on `r`, with its first snapshot shown."""
    app = FleetApp(source, interval=3600, read_only=read_only)
    async with app.run_test(size=size) as pilot:
        await ready_app(pilot, app)
        yield pilot, app


# --- the main view ---------------------------------------------------------------------------------------------
async def test_tables_fill_from_the_snapshot():
    async with running(RecordingSource(HEALTHY)) as (_pilot, app):
        nodes = app.main.query_one(NodesTable)
        # requested = the running replicas' labels (0.1 CPU, 64M each: 3 on n1, 2 on n2); CPU used needs two reads
        assert [(r[0], r[1], r[-6], r[-5], r[-4], r[-3], r[-1]) for r in rows(nodes)] == [
            ("n1", "ready", "300m/1500m", "192M/3G", "-", "192M", "2"),
            ("n2", "ready", "200m/1500m", "128M/3G", "-", "128M", "2"),
            ("lb1", "ready", "0/1500m", "0B/3G", "-", "0B", "0")]
        # Rates need two reads of HAProxy's counters.
        assert rows(app.main.query_one(ServicesTable)) == [
            ("api", "1/2", "r3", "applied", "-", "-", "10.0.0.4:8080"),
            ("web", "3/3", "r3", "applied", "-", "-", "10.0.0.4:80")]
        assert app.selected == "api"
        assert column(app.main.query_one(ReplicasTable), 0) == ["api-1-abc", "api-2-abc"]
        assert status_text(app).startswith("refreshed 12:00:01 in 0.30s · 3/3 nodes ready")
        assert app.main.query_one(Footer) is not None
        assert app.source.asked == [("collect",)]  # type: ignore[attr-defined]


async def test_cpu_used_request_rates_and_charts_follow_the_counters_between_refreshes():
    source = RecordingSource(snapshot(0), snapshot(2), snapshot(4))
    async with running(source) as (pilot, app):
        for n in (2, 3):
            await pilot.press("r")
            await until(pilot, lambda n=n: source.calls == n and app.snapshot is source.snapshots[n - 1])
        nodes = app.main.query_one(NodesTable)
        cpu = NodesTable.COLUMNS.index("CPU USED") + (len(nodes.columns) - len(NodesTable.COLUMNS))
        # n1's containers used 0.4 core-seconds every 2 s: 200m; n2's 0.1: 50m
        assert column(nodes, cpu)[:2] == ["200m", "50m"]
        assert list(app.series["n1"].a) == [pytest.approx(0.2), pytest.approx(0.2)]
        assert str(app.main.query_one("#cpu-label").render()) == "n1 cpu 200m"
        # HAProxy's counters: api 4 requests a second, 0.5 of them 5xx; web 12.5, none.
        services = app.main.query_one(ServicesTable)
        assert [(r[0], r[4], r[5]) for r in rows(services)] == [("api", "4.0", "0.5"), ("web", "12.5", "0.0")]
        assert list(app.traffic["web"].a) == [pytest.approx(12.5)] * 2
        assert str(app.main.query_one("#req-label").render()) == "api req/s 4.0"
        assert str(app.main.query_one("#err-label").render()) == "api 5xx/s 0.5"


async def test_selecting_a_service_posts_a_message_and_shows_its_replicas():
    posted: list[Message] = []
    app = FleetApp(RecordingSource(HEALTHY), interval=3600)
    async with app.run_test(size=SIZE, message_hook=posted.append) as pilot:
        await ready_app(pilot, app)
        await focus(pilot, app, ServicesTable)
        await pilot.press("down")
        await until(pilot, lambda: app.selected == "web")
        replicas = app.main.query_one(ReplicasTable)
        assert column(replicas, 0) == ["web-1-abc", "web-2-abc", "web-3-abc"]
        assert column(replicas, 2) == ["10.0.0.1:8001", "10.0.0.2:8002", "10.0.0.1:8003"]
        assert column(replicas, 6) == ["lb1:up"] * 3
        assert replicas.border_title == "Replicas of web"
        assert [m.key for m in posted if isinstance(m, RowChosen) and isinstance(m.table, ServicesTable)][-1] == "web"


async def test_selection_survives_a_refresh():
    async with running(RecordingSource(HEALTHY, N2_DOWN)) as (pilot, app):
        await focus(pilot, app, ServicesTable)
        await pilot.press("down")
        await until(pilot, lambda: app.selected == "web")
        await pilot.press("r")
        await until(pilot, lambda: app.snapshot is N2_DOWN)
        assert app.selected == "web"
        assert app.main.query_one(ServicesTable).cursor_row == 1
        assert app.main.query_one(ReplicasTable).row_count == 3


async def test_unreachable_node_in_table_and_status_line():
    app = FleetApp(RecordingSource(N2_DOWN), interval=3600)
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: app.snapshot is N2_DOWN)
        await pilot.pause()
        assert rows(app.main.query_one(NodesTable))[1][:2] == ("n2", "unreachable")
        assert set(rows(app.main.query_one(NodesTable))[1][2:]) <= {"-"}
        text = status_text(app)
        assert "2/3 nodes ready" in text
        assert "! n2: unreachable: connect: timed out after 5s" in text


async def test_refresh_key_and_interval_each_read_again():
    source = RecordingSource(HEALTHY, N2_DOWN)
    app = FleetApp(source, interval=3600)
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: app.snapshot is HEALTHY)
        await pilot.pause(0.05)
        assert source.calls == 1
        await pilot.press("r")
        await until(pilot, lambda: app.snapshot is N2_DOWN)
        assert source.calls == 2
    source = RecordingSource(HEALTHY, N2_DOWN)
    app = FleetApp(source, interval=0.05)
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: source.calls >= 3)
        assert app.snapshot is N2_DOWN


async def test_a_refresh_that_ends_after_the_app_closed_finds_no_views_and_the_poll_ends_quietly():
    # The poll worker ends on NoMatches when the app closed while it read the fleet. With the screens gone,
    # `main` raised IndexError instead and the worker failed (WorkerFailed under load, with a 0.05 s interval).
    app = FleetApp(RecordingSource(HEALTHY), interval=3600)
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: app.snapshot is HEALTHY)
    with pytest.raises(NoMatches):
        app.show(N2_DOWN)
    with pytest.raises(NoMatches):
        app.status.busy = True


async def test_failed_refresh_keeps_last_data_and_says_why():
    source = RecordingSource(HEALTHY, RuntimeError("boom"))
    async with running(source) as (pilot, app):
        await pilot.press("r")
        await until(pilot, lambda: source.calls == 2 and app.snapshot is not HEALTHY)
        await pilot.pause()
        assert "! refresh: RuntimeError: boom" in status_text(app)
        assert column(app.main.query_one(NodesTable), 0) == ["n1", "n2", "lb1"]
        assert app.is_running


async def test_quit_key_exits():
    app = FleetApp(RecordingSource(HEALTHY), interval=3600)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("q")
        await pilot.pause()
        assert not app.is_running


@pytest.mark.parametrize(("size", "narrow"), [((100, 30), True), ((160, 45), False)])
async def test_below_140_columns_the_replicas_go_under_the_services(size, narrow):
    async with running(RecordingSource(HEALTHY), size=size) as (_pilot, app):
        services, replicas = app.main.query_one(ServicesTable), app.main.query_one(ReplicasTable)
        assert app.main.has_class("narrow") is narrow
        assert (replicas.region.y > services.region.y) is narrow
        # Every column of the replicas is on screen, at 100 columns too.
        assert replicas.virtual_size.width <= replicas.scrollable_content_region.width


# --- help, filter, palette, esc --------------------------------------------------------------------------------
def bound_keys() -> set[str]:
    from fleet.tui import screens, widgets

    classes = [FleetApp, *(getattr(widgets, n) for n in dir(widgets)), *(getattr(screens, n) for n in dir(screens))]
    keys = set()
    for cls in classes:
        for b in getattr(cls, "BINDINGS", []) if isinstance(cls, type) and cls.__module__.startswith("fleet") else []:
            if b.show and b.action not in ("focus_next", "focus_previous", "dismiss", "answer(False)", "cancel"):
                keys |= set(b.key.split(","))
    return keys


def test_help_lists_every_key_the_app_binds():
    names = {"question_mark": "?", "slash": "/", "escape": "esc", "space": "space", "enter": "enter"}
    listed = {k.strip() for _, key, _ in KEYS for k in key.split("/")} | {"/"}
    missing = {names.get(k, k) for k in bound_keys()} - listed
    assert missing == set()
    assert {"c", "u", "d", "h", "l", "s", "b", "p", "a", "D", "R", "x", "e", "r", "q"} <= listed


def test_docs_key_table_is_the_help_list():
    from pathlib import Path

    from fleet.tui.keys import key_table_markdown

    guide = (Path(__file__).resolve().parent.parent / "docs" / "guide" / "ui.md").read_text()
    assert key_table_markdown() in guide


async def test_help_key_shows_every_key_and_esc_closes_it():
    async with running(RecordingSource(HEALTHY)) as (pilot, app):
        await pilot.press("question_mark")
        await until(pilot, lambda: isinstance(app.screen, HelpScreen))
        table = app.screen.query_one("#keys")
        assert table.row_count == len(KEYS)  # type: ignore[attr-defined]
        await pilot.press("escape")
        await until(pilot, lambda: isinstance(app.screen, MainScreen))


async def test_filter_shows_matching_rows_and_esc_clears_it():
    async with running(RecordingSource(HEALTHY)) as (pilot, app):
        services = await focus(pilot, app, ServicesTable)
        await pilot.press("slash")
        await until(pilot, lambda: isinstance(app.focused, Input))
        await pilot.press("w", "e")
        await until(pilot, lambda: column(services, 0) == ["web"])
        assert app.selected == "web"  # the replicas follow the one row left
        await pilot.press("enter")
        await until(pilot, lambda: app.focused is services)
        assert services.border_subtitle == "/we"
        # A refresh keeps the filter.
        await pilot.press("r")
        await until(pilot, lambda: app.source.calls == 2)  # type: ignore[attr-defined]
        await pilot.pause()
        assert column(services, 0) == ["web"]
        await pilot.press("escape")
        await until(pilot, lambda: column(services, 0) == ["api", "web"])
        # The nodes table filters on any cell.
        nodes = await focus(pilot, app, NodesTable)
        await pilot.press("slash", "l", "b", "enter")
        await until(pilot, lambda: column(nodes, 0) == ["lb1"])


async def test_command_palette_offers_views_and_actions_by_name():
    source = RecordingSource(HEALTHY)
    async with running(source) as (pilot, app):
        await pilot.press("ctrl+p")
        await until(pilot, lambda: isinstance(app.screen, CommandPalette))
        await pilot.press(*"destroy web")
        await pilot.pause(0.3)
        await pilot.press("enter")
        await until(pilot, lambda: isinstance(app.screen, ConfirmScreen))
        assert app.screen.action == Action("destroy", "web", service="web")  # type: ignore[attr-defined]
        await pilot.press("n")
        await until(pilot, lambda: isinstance(app.screen, MainScreen))
        assert source.actions == []


async def test_esc_goes_back_from_every_view():
    async with running(RecordingSource(HEALTHY)) as (pilot, app):
        await focus(pilot, app, ServicesTable)
        for key, view in (("h", HistoryScreen), ("l", LogScreen), ("e", EventsScreen), ("question_mark", HelpScreen)):
            await focus(pilot, app, ServicesTable)
            await pilot.press(key)
            await until(pilot, lambda view=view: isinstance(app.screen, view))
            await pilot.press("escape")
            await until(pilot, lambda: isinstance(app.screen, MainScreen))
        assert len(app.screen_stack) == 1


# --- actions -----------------------------------------------------------------------------------------------------
async def test_scale_asks_the_count_confirms_naming_it_and_runs_through_the_source():
    source = RecordingSource(HEALTHY)
    async with running(source) as (pilot, app):
        await focus(pilot, app, ServicesTable)
        await pilot.press("s")
        await until(pilot, lambda: isinstance(app.screen, AskScreen))
        assert app.screen.query_one(Input).value == "2"  # the wanted count now
        await pilot.press("backspace", "x", "enter")
        await pilot.pause()
        assert "expected a whole number" in str(app.screen.query_one("#why").render())
        await pilot.press("backspace", "5", "enter")
        await until(pilot, lambda: isinstance(app.screen, ConfirmScreen))
        assert "Scale api from 2 to 5 replica(s)" in str(app.screen.query_one("#question").render())
        assert source.actions == []  # nothing runs before the confirmation
        await pilot.press("y")
        await until(pilot, lambda: isinstance(app.screen, ActionScreen) and app.screen.result is not None)
        assert source.actions == [Action("scale", "api", count=5, current=2)]
        assert "api: scale done" in str(app.screen.query_one("#outcome").render())
        # The data is read again once the action ends.
        await until(pilot, lambda: len(source.of("collect")) == 2)
        await pilot.press("escape")
        await until(pilot, lambda: isinstance(app.screen, MainScreen))


async def test_no_at_the_confirmation_changes_nothing():
    source = RecordingSource(HEALTHY)
    async with running(source) as (pilot, app):
        await focus(pilot, app, ServicesTable)
        await pilot.press("D")
        await until(pilot, lambda: isinstance(app.screen, ConfirmScreen))
        text = str(app.screen.query_one("#question").render())
        assert text.startswith("Destroy api: take it out of the load balancers") and "cannot be undone" in text
        await pilot.press("n")
        await until(pilot, lambda: isinstance(app.screen, MainScreen))
        assert source.actions == []


@pytest.mark.parametrize(("table", "key", "expected", "words"), [
    (ServicesTable, "D", Action("destroy", "api", service="api"), "Destroy api"),
    (ServicesTable, "p", Action("promote", "api", service="api"), "Promote the waiting canary of api"),
    (ServicesTable, "a", Action("abort", "api", service="api"), "Abort the waiting canary of api"),
    (ServicesTable, "b", Action("rollback", "api", service="api"), "Roll api back to the last good revision"),
    (NodesTable, "c", Action("cordon", "n1"), "Cordon n1"),
    (NodesTable, "u", Action("uncordon", "n1"), "Uncordon n1"),
    (NodesTable, "R", Action("drain", "n1"), "Drain n1: cordon it and move every replica elsewhere"),
    (ReplicasTable, "R", Action("restart", "n1/api-1-abc", service="api"), "Restart replica n1/api-1-abc of api"),
])
async def test_each_action_key_confirms_what_it_will_do_then_runs_it(table, key, expected, words):
    source = RecordingSource(HEALTHY)
    async with running(source) as (pilot, app):
        await focus(pilot, app, table)
        await pilot.press(key)
        await until(pilot, lambda: isinstance(app.screen, ConfirmScreen))
        assert str(app.screen.query_one("#question").render()).startswith(words)
        await pilot.click("#yes")
        await until(pilot, lambda: isinstance(app.screen, ActionScreen) and app.screen.result is not None)
        assert source.actions == [expected]


async def test_exec_asks_the_command_and_shows_its_output():
    source = RecordingSource(HEALTHY)
    async with running(source) as (pilot, app):
        await focus(pilot, app, ReplicasTable)
        await pilot.press("down", "x")
        await until(pilot, lambda: isinstance(app.screen, AskScreen))
        await pilot.press("enter")
        assert "type a command" in str(app.screen.query_one("#why").render())
        await pilot.press(*"sh -c 'echo hi'", "enter")
        await until(pilot, lambda: isinstance(app.screen, ActionScreen) and app.screen.result is not None)
        assert source.actions == [Action("exec", "n2/api-2-abc", service="api", argv=("sh", "-c", "echo hi"))]
        log = app.screen.query_one(Log)
        assert "hello from n2/api-2-abc" in log.lines


async def test_an_action_refused_because_the_lease_is_held_names_the_holder():
    source = RecordingSource(HEALTHY, refuse=True)
    async with running(source) as (pilot, app):
        await focus(pilot, app, ServicesTable)
        await pilot.press("b", "y")
        await until(pilot, lambda: isinstance(app.screen, ActionScreen) and app.screen.result is not None)
        outcome = str(app.screen.query_one("#outcome").render())
        assert outcome.startswith('refused: the fleet\'s lease is held by bob@ops-2 (pid 4242, "fleet apply web.yaml")')
        assert "secret-token" not in outcome
        result = app.results[-1][1]
        assert not result.ok and str(LeaseHeld(HOLDER).info) in result.summary
        assert any("bob@ops-2" in n.message and n.severity == "error" for n in app._notifications)


async def test_a_fleet_error_is_the_action_result_and_the_app_stays_up():
    source = RecordingSource(HEALTHY, fail="web: no accepted revision on this fleet's records")
    async with running(source) as (pilot, app):
        await focus(pilot, app, ServicesTable)
        await pilot.press("p", "y")
        await until(pilot, lambda: isinstance(app.screen, ActionScreen) and app.screen.result is not None)
        assert "promote api failed: web: no accepted revision" in str(app.screen.query_one("#outcome").render())
        assert app.is_running and app.running is None


async def test_a_running_action_shows_its_events_and_a_second_one_waits():
    emit = [event("start", "api", "started api-3 on n3", "n3", 1.0), event("ready", "api", "api-3 is ready", "n3", 2.0)]
    source = RecordingSource(HEALTHY, emit=emit)
    source.release.clear()
    app = FleetApp(source, interval=3600)
    async with app.run_test(size=SIZE) as pilot:
        await ready_app(pilot, app)
        await focus(pilot, app, ServicesTable)
        await pilot.press("D", "y")
        await until(pilot, lambda: isinstance(app.screen, ActionScreen) and len(app.screen.query_one(Log).lines) == 2)
        assert list(app.screen.query_one(Log).lines) == ["start api on n3: started api-3 on n3",
                                                         "ready api on n3: api-3 is ready"]
        assert app.screen.result is None
        assert "running: Destroy api" in status_text(app)
        # Closed, the action goes on; another one is refused until it ends. The app stays responsive.
        await pilot.press("escape")
        await until(pilot, lambda: isinstance(app.screen, MainScreen))
        await pilot.press("p")
        await pilot.pause()
        assert isinstance(app.screen, MainScreen) and len(source.actions) == 1
        await pilot.press("r")
        await until(pilot, lambda: len(source.of("collect")) == 2)
        source.release.set()
        await until(pilot, lambda: app.running is None and app.results)
        assert app.results[-1][1].ok


async def test_events_view_lists_the_controller_events_and_follows_new_ones():
    source = RecordingSource(HEALTHY)
    source.events(event("start", "web", "started web-4", "n1", 1.0))
    app = FleetApp(source, interval=3600)
    async with app.run_test(size=SIZE) as pilot:
        await ready_app(pilot, app)
        await pilot.press("e")
        await until(pilot, lambda: isinstance(app.screen, EventsScreen))
        table = app.screen.query_one(EventsTable)
        assert [r[1:] for r in rows(table)] == [("start", "web", "n1", "started web-4")]
        source.events(event("stop", "web", "stopped web-1", "n2", 2.0))
        await until(pilot, lambda: table.row_count == 2)
        assert rows(table)[1][1:] == ("stop", "web", "n2", "stopped web-1")
        assert table.cursor_row == 1


def test_a_counter_that_goes_back_starts_its_rate_again():
    from fleet.tui.data import Series

    s = Series()
    for at, requests, errors in ((0, 100, 5), (2, 120, 5), (4, 10, 0), (6, 30, 2)):
        s.rate(at, requests, errors)
    # 2→4: HAProxy restarted (counters back to 10): no rate for that step, the next one counts from 10.
    assert list(s.a) == [10.0, 10.0] and list(s.b) == [0.0, 1.0]


def test_the_event_ring_keeps_only_the_newest():
    source = RecordingSource()
    for i in range(150):
        source.events(event("start", "web", f"e{i}"))
    assert len(source.events) == 100 and next(iter(source.events)).message == "e50"
    assert bool(RecordingSource().events)  # an empty ring is still a callback (`on_event or default` keeps it)


async def test_history_view_reads_revisions_and_rolls_back_to_the_chosen_one():
    source = RecordingSource(HEALTHY)
    async with running(source) as (pilot, app):
        await focus(pilot, app, ServicesTable)
        await pilot.press("down", "h")
        await until(pilot, lambda: isinstance(app.screen, HistoryScreen) and app.screen.revisions is not None)
        table = app.screen.query_one(HistoryTable)
        await until(pilot, lambda: table.row_count == 3)
        assert source.of("history") == [("history", "web")]
        assert [(r[0], r[2], r[5]) for r in rows(table)] == [
            ("*3", "succeeded", ""), (" 2", "failed", "health: 0/3 ready after 20s"), (" 1", "succeeded", "")]
        table.focus()
        await pilot.press("down", "down", "enter")
        await until(pilot, lambda: isinstance(app.screen, ConfirmScreen))
        assert "Roll web back to revision 1" in str(app.screen.query_one("#question").render())
        await pilot.press("y")
        await until(pilot, lambda: source.actions == [Action("rollback", "web", revision=1)])


async def test_log_view_follows_searches_pauses_and_stops_reading_when_left():
    source = RecordingSource(HEALTHY)
    async with running(source) as (pilot, app):
        await focus(pilot, app, ServicesTable)
        await pilot.press("down", "l")
        await until(pilot, lambda: isinstance(app.screen, LogScreen) and len(app.screen.query_one(Log).lines) == 3)
        screen = app.screen
        assert isinstance(screen, LogScreen)
        assert source.of("logs") == [("logs", "web", True, 200)]
        assert list(screen.query_one(Log).lines)[2] == "n1/web-3-abc GET /missing 404"
        assert "(following)" in str(screen.query_one("#log-title").render())
        await pilot.press("slash", *"404")
        await until(pilot, lambda: list(screen.query_one(Log).lines) == ["n1/web-3-abc GET /missing 404"])
        assert "/404: 1 line(s)" in str(screen.query_one("#log-title").render())
        await pilot.press("enter", "escape")
        await until(pilot, lambda: len(screen.query_one(Log).lines) == 3)
        await pilot.press("space")
        assert "(paused)" in str(screen.query_one("#log-title").render())
        screen.add("n2/web-2-abc late line")
        assert len(screen.query_one(Log).lines) == 3  # paused: kept, not shown
        await pilot.press("f")
        assert len(screen.query_one(Log).lines) == 4
        await pilot.press("escape")
        await until(pilot, lambda: isinstance(app.screen, MainScreen))
        await until(pilot, lambda: ("logs-closed", "web") in source.asked)


async def test_replica_log_view_reads_that_replica_and_says_when_it_cannot():
    source = RecordingSource(HEALTHY)
    async with running(source) as (pilot, app):
        await focus(pilot, app, ServicesTable)
        await pilot.press("down")
        await until(pilot, lambda: app.selected == "web")
        await focus(pilot, app, ReplicasTable)
        await pilot.press("l")
        await until(pilot, lambda: isinstance(app.screen, LogScreen) and len(app.screen.query_one(Log).lines) == 2)
        assert source.of("logs") == [("logs", "n1/web-1-abc", True, 200)]
        await pilot.press("escape")
        await until(pilot, lambda: isinstance(app.screen, MainScreen))
        await pilot.press("down", "l")  # n2/web-2-abc: the source has no log for it
        await until(pilot, lambda: isinstance(app.screen, LogScreen) and app.screen.ended)
        assert "! FleetError: no container or service named 'n2/web-2-abc'" in app.screen.query_one(Log).lines


# --- what may be done --------------------------------------------------------------------------------------------
async def test_read_only_hides_every_action_but_keeps_the_views():
    source = RecordingSource(HEALTHY)
    async with running(source, read_only=True) as (pilot, app):
        for table in (NodesTable, ServicesTable, ReplicasTable):
            await focus(pilot, app, table)
            shown = footer_keys(app)
            assert not shown & {"Cordon", "Uncordon", "Drain", "Scale", "Rollback", "Promote", "Abort", "Destroy",
                                "Restart", "Exec"}, shown
            for key in ("c", "u", "s", "b", "p", "a", "D", "R", "x"):
                await pilot.press(key)
                await pilot.pause()
                assert not isinstance(app.screen, (AskScreen, ConfirmScreen)), key
        assert source.actions == []
        assert not any(app.allows(v) for v in ALL_VERBS)
        from fleet.tui.commands import commands

        names = [name for name, _, _ in commands(app)]
        assert "History of web" in names and "Logs of web" in names
        assert not [n for n in names if n.split()[0] in ("Scale", "Destroy", "Cordon", "Drain", "Promote", "Roll")]
        # The views still open.
        await focus(pilot, app, ServicesTable)
        await pilot.press("h")
        await until(pilot, lambda: isinstance(app.screen, HistoryScreen))
        await focus(pilot, app, HistoryTable)
        assert "Roll back to this" not in footer_keys(app)


async def test_node_actions_are_hidden_when_the_source_cannot_do_them():
    source = RecordingSource(HEALTHY, verbs=("scale", "destroy"))
    async with running(source) as (pilot, app):
        await focus(pilot, app, NodesTable)
        assert not footer_keys(app) & {"Cordon", "Uncordon", "Drain"}
        await pilot.press("c", "R")
        await pilot.pause()
        assert isinstance(app.screen, MainScreen)
        await focus(pilot, app, ServicesTable)
        assert {"Scale", "Destroy", "History", "Logs"} <= footer_keys(app)
        assert "Promote" not in footer_keys(app)


async def test_cordon_column_shows_when_the_reports_carry_it():
    async with running(RecordingSource(snapshot(nodes=(ready("n1"), ready("n2"))))) as (_pilot, app):
        nodes = app.main.query_one(NodesTable)
        has = hasattr(ready("n1"), "cordoned")
        assert ("CORDON" in [str(c.label) for c in nodes.columns.values()]) is has
        if has:
            assert column(nodes, 2) == ["-", "-"]
