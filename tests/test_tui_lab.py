"""`fleet ui` on the real lab, driven by Pilot over FleetSource and the Fleet façade: the first screen's time,
scale and roll back from the UI under load through HAProxy (0 failed requests), a replica's log lines, and an
action refused while another process holds the fleet's lease."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from loadgen import Load
from test_tui import column, rows, until
from textual.widgets import Input, Log

from fleet.api import Fleet
from fleet.config.spec import load_playbooks
from fleet.image.demo import build_demo
from fleet.transport import Pool
from fleet.tui import FleetApp, FleetSource
from fleet.tui.screens import (
    ActionScreen,
    AskScreen,
    ConfirmScreen,
    DescribeScreen,
    HistoryScreen,
    LogScreen,
    MainScreen,
)
from fleet.tui.widgets import HistoryTable, NodesTable, ReplicasTable, ServicesTable

pytestmark = pytest.mark.lab

SIZE = (120, 40)
NAME, PORT = "tui-web", 19571

HOLD = """
import asyncio, sys
from fleet.api import Fleet
from fleet.config.inventory import load_inventory

async def main():
    async with Fleet.connect(load_inventory(sys.argv[1]), command="lease holder (test)") as f:
        async with f.writing():
            print("held", flush=True)
            await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)

asyncio.run(main())
"""


def playbook(d: Path, version: str, replicas: int = 2) -> Path:
    path = d / f"{NAME}-{version}.yaml"
    path.write_text(f"""services:
  {NAME}:
    image: fleet.local/demo:{version}
    replicas: {replicas}
    resources: {{cpu: 0.05, memory: 32MiB}}
    health: {{http: /healthz, interval: 1s, timeout: 1s, failure_threshold: 2}}
    lb: {{port: {PORT}}}
    stop_grace_period: 3s
    update: {{max_surge: 1, max_unavailable: 0, ready_deadline: 20s, min_ready: 1s}}
""")
    return path


async def finish_action(pilot, app: FleetApp):
    await until(pilot, lambda: isinstance(app.screen, ActionScreen) and app.screen.result is not None, timeout=120)
    result = app.screen.result  # type: ignore[attr-defined]
    await pilot.press("escape")
    return result


def replica_images(app: FleetApp) -> list[str]:
    service = app.snapshot.service(NAME) if app.snapshot else None
    return sorted(r.replica.image for r in service.replicas if r.replica.running) if service else []


@pytest.fixture
async def deployed(lab, monkeypatch):
    """tui-web at v1 then v2 (two revisions), 2 replicas behind lb1; destroyed afterwards."""
    # A directory of its own, not pytest's numbered tmp_path: other pytest sessions on this machine rotate those
    # away, and the controller's history cache lives in it until the service is destroyed.
    tmp_path = Path(tempfile.mkdtemp(prefix="fleet-tui-lab-"))
    monkeypatch.setenv("FLEET_STATE_DIR", str(tmp_path / "state"))
    async with contextlib.AsyncExitStack() as stack:
        stack.callback(shutil.rmtree, tmp_path, True)
        pool = await stack.enter_async_context(Pool())
        fleet = Fleet(lab.inventory, pool, command="test_tui_lab")
        for v in ("v1", "v2"):
            img = build_demo(v, str(tmp_path / f"demo-{v}.tar"))
            assert all(r.ok for r in await fleet.push(img.path)), v
        for v in ("v1", "v2"):
            result = await Fleet(lab.inventory, pool, command="test_tui_lab").apply(
                load_playbooks([str(playbook(tmp_path, v))]))
            assert result.ok, result
        try:
            yield pool
        finally:
            await Fleet(lab.inventory, pool, command="test_tui_lab").destroy(NAME)


async def test_ui_on_the_lab_scales_rolls_back_reads_logs_and_names_the_lease_holder(lab, deployed):
    lb = lab.inventory.node("lb1").address
    opened = time.monotonic()
    # Its own pool, cold, as `fleet ui` starts.
    async with Pool(connect_timeout=5.0, command_timeout=10.0, connect_attempts=1) as pool:
        source = FleetSource(Fleet(lab.inventory, pool))
        app = FleetApp(source, interval=1.0)
        async with app.run_test(size=SIZE) as pilot:
            await ui_session(pilot, app, source, lab, lb, opened)


async def ui_session(pilot, app: FleetApp, source: FleetSource, lab, lb: str, opened: float) -> None:
    # The first screen: the nodes as soon as they answer, then services and replicas.
    await until(pilot, lambda: app.snapshot is not None, timeout=10)
    first = time.monotonic() - opened
    services = app.main.query_one(ServicesTable)
    await until(pilot, lambda: NAME in column(services, 0), timeout=10)
    full = time.monotonic() - opened
    print(f"\nfirst screen (nodes) after {first:.2f}s, services after {full:.2f}s "
          f"(the first read took {app.snapshot.duration:.2f}s)")
    assert column(app.main.query_one(NodesTable), 1) == ["ready"] * 4

    with Load(lb, PORT, clients=4, max_seconds=150) as load:
        # Scale 2 → 3 from the services table.
        services.focus()
        services.move_cursor(row=column(services, 0).index(NAME))
        await until(pilot, lambda: app.selected == NAME)
        await pilot.press("s")
        await until(pilot, lambda: isinstance(app.screen, AskScreen))
        assert app.screen.query_one(Input).value == "2"
        await pilot.press("backspace", "3", "enter")
        await until(pilot, lambda: isinstance(app.screen, ConfirmScreen))
        await pilot.press("y")
        result = await finish_action(pilot, app)
        assert result.ok, result
        replicas = app.main.query_one(ReplicasTable)
        await until(pilot, lambda: replicas.row_count == 3 and app.snapshot.records[NAME].wanted == 3, timeout=20)
        assert replica_images(app) == ["fleet.local/demo:v2"] * 3
        assert rows(services)[column(services, 0).index(NAME)][1] == "3/3"
        # HAProxy's counters of the backend, as rates between refreshes: the load is seen, without 5xx.
        await until(pilot, lambda: any(x > 0 for x in app.traffic[NAME].a), timeout=10)
        assert not any(app.traffic[NAME].b)

        # Roll back to revision 1 from the history view.
        await pilot.press("h")
        await until(pilot, lambda: isinstance(app.screen, HistoryScreen) and app.screen.revisions is not None,
                    timeout=20)
        history = app.screen.query_one(HistoryTable)
        assert column(history, 0) == ["*2", " 1"]
        history.focus()
        await pilot.press("down", "enter")
        await until(pilot, lambda: isinstance(app.screen, ConfirmScreen))
        assert "Roll tui-web back to revision 1" in str(app.screen.query_one("#question").render())
        await pilot.press("y")
        result = await finish_action(pilot, app)
        assert result.ok, result
        await pilot.press("escape")
        await until(pilot, lambda: isinstance(app.screen, MainScreen))
        # Revision 1 as it was recorded: v1, at its count (2).
        await until(pilot, lambda: replica_images(app) == ["fleet.local/demo:v1"] * 2, timeout=30)
        time.sleep(0.5)
    assert load.result.ok > 0
    assert load.result.failed == 0, (load.result.errors, load.result.failures[:5])
    assert set(load.result.versions) <= {"v1", "v2"} and "v1" in load.result.versions

    # A replica's log lines in the log view.
    replicas.focus()
    await pilot.pause()
    ref = replicas.current
    assert ref is not None and ref.split("/")[1].startswith(NAME)
    await pilot.press("l")
    await until(pilot, lambda: isinstance(app.screen, LogScreen)
                and any("listening on" in line for line in app.screen.query_one(Log).lines), timeout=20)
    assert all(line.startswith(ref.split("/")[0] + "/") for line in app.screen.query_one(Log).lines)
    await pilot.press("escape")
    await until(pilot, lambda: isinstance(app.screen, MainScreen))

    # Another controller holds the lease: the action is refused and names it.
    # Another controller: its own process and state directory, as on another machine.
    other = {**os.environ, "FLEET_STATE_DIR": tempfile.mkdtemp(prefix="fleet-tui-lab-other-")}
    holder = subprocess.Popen([sys.executable, "-c", HOLD, lab.inventory_path], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=other)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        services.focus()
        await pilot.press("s", "backspace", "1", "enter")
        await until(pilot, lambda: isinstance(app.screen, ConfirmScreen))
        await pilot.press("y")
        result = await finish_action(pilot, app)
        assert not result.ok
        assert result.summary.startswith("refused: the fleet's lease is held by ")
        assert f"(pid {holder.pid}, \"lease holder (test)\")" in result.summary
    finally:
        holder.communicate(input="", timeout=30)
        shutil.rmtree(other["FLEET_STATE_DIR"], ignore_errors=True)
    assert holder.returncode == 0
    await pilot.press("r")
    await until(pilot, lambda: app.snapshot is not None and app.snapshot.taken_at.timestamp() > time.time() - 1)
    assert replica_images(app) == ["fleet.local/demo:v1"] * 2  # nothing changed
    # The controller's events of the UI's own actions are in the events view's ring.
    steps = {e.step for e in source.events}
    assert steps, "the engine's events reach the UI through the façade's on_event"

    # Cordon and uncordon a node from the nodes table (the façade's node operations, under the lease).
    nodes = app.main.query_one(NodesTable)
    assert "CORDON" in [str(c.label) for c in nodes.columns.values()]
    mark = [str(c.label) for c in nodes.columns.values()].index("CORDON")
    nodes.focus()
    nodes.move_cursor(row=column(nodes, 0).index("n3"))
    await until(pilot, lambda: app.node == "n3")
    for key, want in (("c", "cordoned"), ("u", "-")):
        await pilot.press(key)
        await until(pilot, lambda: isinstance(app.screen, ConfirmScreen))
        await pilot.press("y")
        result = await finish_action(pilot, app)
        assert result.ok, result
        await until(pilot, lambda want=want: column(nodes, mark)[column(nodes, 0).index("n3")] == want, timeout=10)

    # The header names the lab's fleet (its inventory's directory); d describes a node and the service with
    # fleet describe's own reads over this UI's pool.
    assert app.title == f"fleet {Path(lab.inventory_path).parent.name}"
    await pilot.press("d")
    await until(pilot, lambda: isinstance(app.screen, DescribeScreen) and app.screen.described is not None,
                timeout=10)
    node_view = app.screen.described
    assert node_view.report.node.name == "n3" and node_view.report.facts is not None  # type: ignore[union-attr]
    await pilot.press("escape")
    await until(pilot, lambda: isinstance(app.screen, MainScreen))
    services.focus()
    services.move_cursor(row=column(services, 0).index(NAME))
    await pilot.press("d")
    await until(pilot, lambda: isinstance(app.screen, DescribeScreen) and app.screen.described is not None,
                timeout=10)
    view = app.screen.described
    assert view.accepted is not None and view.status.services, view  # type: ignore[union-attr]
    assert view.status.services[0].replicas  # type: ignore[union-attr]
    await pilot.press("escape")
    await until(pilot, lambda: isinstance(app.screen, MainScreen))
