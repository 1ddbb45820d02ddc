"""`fleet ui`: the fleet named in the header and every confirmation, sortable tables, the describe view (the same
content as `fleet describe`), and the keys k9s users expect. Pilot against the recording source
(tests/tui_source.py)."""

from __future__ import annotations

import html
import re
from typing import Any

import pytest
from test_tui import column, focus, rows, running, until
from textual.widgets import DataTable, Header, Input, Label
from tui_source import HEALTHY, INVENTORY, LEASES, RecordingSource

from fleet.cli.lock import node_state
from fleet.tui import Action
from fleet.tui.data import fleet_name, sort_key
from fleet.tui.keys import K9S
from fleet.tui.screens import AskScreen, ConfirmScreen, DescribeScreen, HelpScreen, ListScreen, MainScreen
from fleet.tui.widgets import ListTable, NodesTable, ReplicasTable, ServicesTable

WHERE = f"fleet prod-eu · inventory {INVENTORY}"


def screen_text(app: Any) -> str:
    """What the terminal shows, as text (the screenshot's SVG without its markup)."""
    svg = app.export_screenshot()
    return html.unescape(re.sub(r"<[^>]+>", "", svg)).replace("\xa0", " ")


@pytest.mark.parametrize(("path", "name"), [
    ("/etc/fleet/prod-eu/inventory.yaml", "prod-eu"),
    ("/var/lib/fleet-lab/fl/inventory.yaml", "fl"),
    ("staging.ini", "staging"),
    ("/srv/ops/hosts", "ops"),
    ("inventory.yaml", "inventory"),
])
def test_the_fleet_is_named_by_its_inventory(path: str, name: str) -> None:
    assert fleet_name(path) == name


def test_columns_sort_numbers_as_numbers_and_missing_values_last() -> None:
    cells = ["1500m", "-", "12.5", "2.0", "r10", "r3 (r2,r3)", "web", "api", "192M", "3G", "0B"]
    # 1500m is 1.5 (millicores), 192M and 3G are sizes.
    assert sorted(cells, key=sort_key) == ["0B", "1500m", "2.0", "r3 (r2,r3)", "r10", "12.5", "192M", "3G", "api",
                                           "web", "-"]


async def listed(pilot, app):  # type: ignore[no-untyped-def]
    """The table of the list view the last key opened, once it has rows."""
    await until(pilot, lambda: isinstance(app.screen, ListScreen) and app.screen.query_one(ListTable).row_count)
    return app.screen.query_one(ListTable)


async def test_the_header_names_the_fleet_and_its_inventory() -> None:
    async with running(RecordingSource(HEALTHY)) as (pilot, app):
        assert app.title == "fleet prod-eu" and app.sub_title == f"inventory {INVENTORY}"
        assert app.screen.query_one(Header).display
        await pilot.pause()
        shown = screen_text(app)
        assert "fleet prod-eu" in shown and INVENTORY in shown


@pytest.mark.parametrize(("table", "key", "verb"), [(ServicesTable, "D", "destroy"), (NodesTable, "R", "drain"),
                                                    (ServicesTable, "b", "rollback")])
async def test_every_confirmation_names_the_fleet(table: type, key: str, verb: str) -> None:
    source = RecordingSource(HEALTHY)
    async with running(source) as (pilot, app):
        await focus(pilot, app, table)
        await pilot.press(key)
        await until(pilot, lambda: isinstance(app.screen, ConfirmScreen))
        assert str(app.screen.query_one("#where").render()) == WHERE
        await pilot.press("n")
        await until(pilot, lambda: isinstance(app.screen, MainScreen))
        assert source.actions == []


async def test_scale_asks_and_confirms_naming_the_fleet() -> None:
    source = RecordingSource(HEALTHY)
    async with running(source) as (pilot, app):
        await focus(pilot, app, ServicesTable)
        await pilot.press("s")
        await until(pilot, lambda: isinstance(app.screen, AskScreen))
        assert WHERE in app.screen.prompt  # type: ignore[attr-defined]
        await pilot.press("backspace", "4", "enter")
        await until(pilot, lambda: isinstance(app.screen, ConfirmScreen))
        assert str(app.screen.query_one("#where").render()) == WHERE
        assert str(app.screen.query_one("#question").render()).startswith("Scale api from 2 to 4 replica(s)")
        await pilot.press("y")
        await until(pilot, lambda: source.actions == [Action("scale", "api", count=4, current=2)])


async def test_o_cycles_the_sort_column_and_O_reverses_it() -> None:
    async with running(RecordingSource(HEALTHY)) as (pilot, app):
        nodes = await focus(pilot, app, NodesTable)
        assert column(nodes, 0) == ["n1", "n2", "lb1"]  # inventory order until asked
        await pilot.press("o")
        assert nodes.sort_by == "NODE" and column(nodes, 0) == ["lb1", "n1", "n2"]
        assert "sorted by NODE ▲" in str(nodes.border_subtitle)
        await pilot.press("O")
        assert column(nodes, 0) == ["n2", "n1", "lb1"] and "sorted by NODE ▼" in str(nodes.border_subtitle)
        await pilot.press("O")
        # MEM USED, as numbers: 0B < 128M < 192M (not as text, where "0B" < "128M" < "192M" happens to agree,
        # so check the CPU requested column too: 0 < 200m < 300m).
        while nodes.sort_by != "CPU REQ":
            await pilot.press("o")
        assert column(nodes, 0) == ["lb1", "n2", "n1"]
        await pilot.press("O")
        assert column(nodes, 0) == ["n1", "n2", "lb1"]
        # The cursor stays on its node through a sort.
        await pilot.press("down")
        chosen = nodes.current
        await pilot.press("O")
        assert nodes.current == chosen and column(nodes, 0)[nodes.cursor_row] == chosen
        # Past the last column: the rows' own order again.
        while nodes.sort_by is not None:
            await pilot.press("o")
        assert column(nodes, 0) == ["n1", "n2", "lb1"] and nodes.border_subtitle == ""


async def test_sorting_survives_a_refresh_and_the_filter() -> None:
    source = RecordingSource(HEALTHY, HEALTHY)
    async with running(source) as (pilot, app):
        services = await focus(pilot, app, ServicesTable)
        await pilot.press("O")  # reverse of the first column
        assert column(services, 0) == ["web", "api"]
        await pilot.press("r")
        await until(pilot, lambda: len(source.of("collect")) == 2)
        await pilot.pause()
        assert column(services, 0) == ["web", "api"]


async def test_d_describes_the_service_as_fleet_describe_does() -> None:
    source = RecordingSource(HEALTHY)
    async with running(source, read_only=True) as (pilot, app):  # a view: read-only keeps it
        await focus(pilot, app, ServicesTable)
        await pilot.press("down", "d")
        await until(pilot, lambda: isinstance(app.screen, DescribeScreen) and app.screen.described is not None)
        await pilot.pause()
        assert ("describe", "service", "web") in source.asked
        text = screen_text(app)
        for expected in ("Describe service web", "fleet prod-eu", "Accepted", "revision 3 (registry.local/web:v3)",
                         "Spec at revision 3", "/healthz", "Replicas and their health in HAProxy", "web-2-abc",
                         "Last revisions"):
            assert expected in text, expected
        await pilot.press("escape")
        await until(pilot, lambda: isinstance(app.screen, MainScreen))


async def test_d_describes_a_node_and_r_reads_it_again() -> None:
    source = RecordingSource(HEALTHY)
    async with running(source) as (pilot, app):
        await focus(pilot, app, NodesTable)
        await pilot.press("d")
        await until(pilot, lambda: isinstance(app.screen, DescribeScreen) and app.screen.described is not None)
        await pilot.pause()
        text = screen_text(app)
        for expected in ("Describe node n1", "Facts", "Allocatable", "Containers (0)"):
            assert expected in text, expected
        await pilot.press("r")
        await until(pilot, lambda: source.asked.count(("describe", "node", "n1")) == 2)
        assert source.actions == []  # d no longer drains


async def test_replicas_have_no_describe_key() -> None:
    async with running(RecordingSource(HEALTHY)) as (pilot, app):
        await focus(pilot, app, ReplicasTable)
        await pilot.press("d")
        await pilot.pause()
        assert isinstance(app.screen, MainScreen)


async def test_help_lists_the_differences_from_k9s() -> None:
    async with running(RecordingSource(HEALTHY)) as (pilot, app):
        await pilot.press("question_mark")
        await until(pilot, lambda: isinstance(app.screen, HelpScreen))
        table = app.screen.query_one("#k9s", DataTable)
        assert table.row_count == len(K9S)
        assert ("describe", "d", "d (services, nodes)") in K9S
        assert any(what == "drain a node" and ours.startswith("R") for what, _, ours in K9S)


async def test_the_palette_describes_services_and_nodes_even_read_only() -> None:
    from fleet.tui.commands import commands

    async with running(RecordingSource(HEALTHY), read_only=True) as (pilot, app):
        found = {name: callback for name, callback, _ in commands(app)}
        assert {"Describe web", "Describe api", "Describe node n1"} <= set(found)
        found["Describe node n2"]()
        await until(pilot, lambda: isinstance(app.screen, DescribeScreen) and app.screen.described is not None)
        assert (app.screen.kind, app.screen.target) == ("node", "n2")  # type: ignore[attr-defined]
        await pilot.pause()


@pytest.mark.parametrize(("key", "kind", "rows", "note"), [
    ("v", "volumes", [("db/data", "n1", "local", "48M", "n1/db-0-abc"), ("web/shared", "lb1", "sshfs", "3M", "-")],
     "! n2: unreachable: connect: timed out after 5s"),
    ("i", "images", [("n1", "registry.local/api:v3", "sha256:cdcdcdcdcdcd"),
                     ("n1", "registry.local/web:v3", "sha256:abababababab"),
                     ("n2", "registry.local/web:v3", "sha256:abababababab")], "! lb1: no runtime"),
])
async def test_volume_and_image_views_list_what_the_cli_lists(key: str, kind: str, rows: list[tuple[str, ...]],
                                                              note: str) -> None:
    source = RecordingSource(HEALTHY)
    async with running(source, read_only=True) as (pilot, app):
        await pilot.press(key)
        table = await listed(pilot, app)
        assert app.screen.kind == kind  # type: ignore[attr-defined]
        assert [tuple(str(c) for c in table.get_row_at(i)) for i in range(table.row_count)] == rows
        assert str(app.screen.query_one("#list-note", Label).render()) == note
        assert (kind,) in source.asked
        await pilot.press("escape")
        await until(pilot, lambda: isinstance(app.screen, MainScreen))


async def test_lease_view_names_the_holder_on_each_record_node_and_sorts() -> None:
    source = RecordingSource(HEALTHY)
    async with running(source) as (pilot, app):
        await pilot.press("k")
        table = await listed(pilot, app)
        assert column(table, 0) == ["n1", "n2", "lb1"]
        states = [node_state(lease) for _, lease in LEASES]  # held or expired, by the clock; then these two
        assert column(table, 1) == states and states[1:] == ["unreachable", "free"]
        assert "the fleet's lease" in str(app.screen.query_one("#list-note", Label).render())
        assert column(table, 2)[0] == "bob@ops-2" and column(table, 3)[0] == "25s"
        assert column(table, 6)[0] == "fleet apply web.yaml"
        assert "secret-token" not in screen_text(app)  # the lease's token is never shown
        await pilot.press("o")
        assert column(table, 0) == ["lb1", "n1", "n2"]
        await pilot.press("r")
        await until(pilot, lambda: source.asked.count(("lease",)) == 2)


async def test_jobs_view_lists_the_recorded_runs_newest_first_with_the_failure_and_sorts() -> None:
    source = RecordingSource(HEALTHY)
    async with running(source, read_only=True) as (pilot, app):
        await pilot.press("J")
        table = await listed(pilot, app)
        assert app.screen.kind == "jobs"  # type: ignore[attr-defined]
        assert table.border_title == "Job runs"
        assert rows(table) == [
            ("migrate", "m-0501b", "before_deploy web rev 3", "2024-05-01 12:01:01Z", "3.0s", "failed", "1", "n1",
             "alice@ci"),
            ("report", "r-0501a", "schedule 2024-05-01T12:00Z", "2024-05-01 12:00:01Z", "12.5s", "succeeded", "0",
             "n2", "fleet-watch@ctl"),
        ]
        assert table.get_row_at(0)[5].style == "red"  # the failed run stands out
        assert str(app.screen.query_one("#list-note", Label).render()) == "migrate m-0501b: exit 1 after 2 attempts"
        await pilot.press("o")  # sorted by JOB
        assert column(table, 0) == ["migrate", "report"]
        await pilot.press("o", "o", "o", "o")  # by DURATION: 3.0s before 12.5s, numerically
        assert column(table, 4) == ["3.0s", "12.5s"]
        await pilot.press("O")
        assert column(table, 4) == ["12.5s", "3.0s"]
        await pilot.press("slash")
        await until(pilot, lambda: isinstance(app.focused, Input))
        await pilot.press(*"report", "enter")
        await until(pilot, lambda: table.row_count == 1 and app.focused is table)
        assert column(table, 0) == ["report"]
        await pilot.press("escape")
        await until(pilot, lambda: table.row_count == 2)
        await pilot.press("r")
        await until(pilot, lambda: source.asked.count(("jobs",)) == 2)
        await pilot.press("escape")
        await until(pilot, lambda: isinstance(app.screen, MainScreen))


async def test_the_palette_opens_the_jobs_view() -> None:
    from textual.command import CommandPalette

    source = RecordingSource(HEALTHY)
    async with running(source) as (pilot, app):
        await pilot.press("ctrl+p")
        await until(pilot, lambda: isinstance(app.screen, CommandPalette))
        await pilot.press(*"jobs")
        await pilot.pause(0.3)
        await pilot.press("enter")
        await listed(pilot, app)
        assert app.screen.kind == "jobs"  # type: ignore[attr-defined]
        assert ("jobs",) in source.asked
