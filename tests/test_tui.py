"""`fleet ui`: the app driven headless by Pilot over fixed snapshots, and once over the real lab.

The fixed snapshots stand in for the data layer only (FakeSource); widgets, worker and messages are the real ones.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

import pytest
from helpers import wait_until_async
from textual.message import Message
from textual.pilot import Pilot
from textual.widgets import Footer

from fleet.api import Fleet, NodeReport
from fleet.core.model import Inventory, Node, Resources
from fleet.engine.status import FleetStatus, ReplicaStatus, ServiceStatus
from fleet.node.facts import NodeFacts
from fleet.plan.reconcile import Replica
from fleet.transport import Pool
from fleet.tui import FleetApp, FleetSource, Snapshot, collect
from fleet.tui.widgets import NodesTable, ReplicasTable, ServiceSelected, ServicesTable, StatusLine

SIZE = (120, 40)
GiB = 1024**3


def facts(ncpu: int = 2) -> NodeFacts:
    return NodeFacts(hostname="h", ncpu=ncpu, mem_total=4 * GiB, mem_available=3 * GiB, load=(0.25, 0.2, 0.1),
                     uptime_s=100.0, disk_total=20 * GiB, disk_free=10 * GiB, runtime="ctr",
                     runtime_version="1.6.20~ds1", runtime_socket=True, cgroup=2, tasks=())


def ready(name: str) -> NodeReport:
    return NodeReport(Node(name, f"10.0.0.{name[-1]}", reserved=Resources(0.5, GiB)), "ready", None, facts(), 0.01)


def unreachable(name: str) -> NodeReport:
    return NodeReport(Node(name, "10.0.0.9"), "unreachable", "connect: timed out after 5s", None, 5.0)


def replica(service: str, n: int, node: str, health: str = "up") -> ReplicaStatus:
    rep = Replica(node=node, id=f"{service}-{n}-abc", service=service, replica=n, revision=3, spec_hash="h",
                  port=8000 + n, running=True, resources=Resources(0.1, 64 * 1024**2),
                  image=f"registry.local/{service}:v3")
    return ReplicaStatus(rep, f"10.0.0.{node[-1]}", {"lb1": health})


FLEET = FleetStatus(
    services=(
        ServiceStatus("api", (replica("api", 1, "n1"), replica("api", 2, "n2", "down")), ("10.0.0.4:8080",)),
        ServiceStatus("web", (replica("web", 1, "n1"), replica("web", 2, "n2"), replica("web", 3, "n1")),
                      ("10.0.0.4:80",)),
    ),
    errors={}, lb_errors={})

HEALTHY = Snapshot((ready("n1"), ready("n2"), ready("lb1")), FLEET, {}, datetime(2024, 5, 1, 12, 0, 1), 0.3)
N2_DOWN = Snapshot((ready("n1"), unreachable("n2"), ready("lb1")), FLEET,
                   {"n2": "unreachable: connect: timed out after 5s"}, datetime(2024, 5, 1, 12, 0, 3), 5.0)


class FakeSource:
    """Test double for the data layer: hands out the given snapshots in order, then the last one again."""

    def __init__(self, *snapshots: Snapshot | Exception) -> None:
        self.snapshots = list(snapshots)
        self.calls = 0

    async def collect(self) -> Snapshot:
        item = self.snapshots[min(self.calls, len(self.snapshots) - 1)]
        self.calls += 1
        if isinstance(item, Exception):
            raise item
        return item


async def until(pilot: Pilot[None], cond: Callable[[], bool], timeout: float = 5.0) -> None:
    await wait_until_async(cond, timeout, 0.01, "the app to reach the state", pause=pilot.pause)


def column(table: NodesTable | ServicesTable | ReplicasTable, index: int) -> list[str]:
    return [str(table.get_row_at(i)[index]) for i in range(table.row_count)]


def status_text(app: FleetApp) -> str:
    return app.query_one(StatusLine).text().plain


async def test_tables_fill_from_the_snapshot():
    app = FleetApp(FakeSource(HEALTHY), interval=3600)
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: app.snapshot is HEALTHY)
        await pilot.pause()
        nodes = app.query_one(NodesTable)
        assert [tuple(str(c) for c in nodes.get_row_at(i)) for i in range(nodes.row_count)] == [
            (n, "ready", "2", "1500m/3G", "3G/4G", "0.25", "0 (0B)") for n in ("n1", "n2", "lb1")]
        services = app.query_one(ServicesTable)
        assert [tuple(str(c) for c in services.get_row_at(i)) for i in range(2)] == [
            ("api", "10.0.0.4:8080", "1/2"), ("web", "10.0.0.4:80", "3/3")]
        # The first service is selected until the user moves.
        assert app.selected == "api"
        assert column(app.query_one(ReplicasTable), 0) == ["api-1-abc", "api-2-abc"]
        assert status_text(app).startswith("refreshed 12:00:01 in 0.30s · 3/3 nodes ready")
        assert app.query_one(Footer) is not None


async def test_selecting_a_service_posts_a_message_and_shows_its_replicas():
    posted: list[Message] = []
    app = FleetApp(FakeSource(HEALTHY), interval=3600)
    async with app.run_test(size=SIZE, message_hook=posted.append) as pilot:
        await until(pilot, lambda: app.selected == "api")
        await pilot.press("tab")
        assert app.focused is app.query_one(ServicesTable)
        await pilot.press("down")
        await until(pilot, lambda: app.selected == "web")
        replicas = app.query_one(ReplicasTable)
        assert column(replicas, 0) == ["web-1-abc", "web-2-abc", "web-3-abc"]
        assert column(replicas, 1) == ["n1", "n2", "n1"]
        assert column(replicas, 2) == ["10.0.0.1:8001", "10.0.0.2:8002", "10.0.0.1:8003"]
        assert column(replicas, 4) == ["web:v3"] * 3
        assert column(replicas, 6) == ["lb1:up"] * 3
        assert replicas.border_title == "Replicas of web"
        assert [m.service for m in posted if isinstance(m, ServiceSelected)][-1] == "web"


async def test_selection_survives_a_refresh():
    source = FakeSource(HEALTHY, N2_DOWN)
    app = FleetApp(source, interval=3600)
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: app.selected == "api")
        await pilot.press("tab", "down")
        await until(pilot, lambda: app.selected == "web")
        await pilot.press("r")
        await until(pilot, lambda: app.snapshot is N2_DOWN)
        await pilot.pause()
        assert app.selected == "web"
        assert app.query_one(ServicesTable).cursor_row == 1
        assert app.query_one(ReplicasTable).row_count == 3


async def test_unreachable_node_in_table_and_status_line():
    app = FleetApp(FakeSource(N2_DOWN), interval=3600)
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: app.snapshot is N2_DOWN)
        nodes = app.query_one(NodesTable)
        assert [tuple(str(c) for c in nodes.get_row_at(1))] == [("n2", "unreachable", "-", "-", "-", "-", "-")]
        text = status_text(app)
        assert "2/3 nodes ready" in text
        assert "! n2: unreachable: connect: timed out after 5s" in text


async def test_refresh_key_triggers_a_new_collect():
    source = FakeSource(HEALTHY, N2_DOWN)
    app = FleetApp(source, interval=3600)
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: app.snapshot is HEALTHY)
        await pilot.pause(0.05)
        assert source.calls == 1
        await pilot.press("r")
        await until(pilot, lambda: app.snapshot is N2_DOWN)
        assert source.calls == 2
        assert "! n2" in status_text(app)


async def test_interval_refreshes_without_a_key():
    source = FakeSource(HEALTHY, N2_DOWN)
    app = FleetApp(source, interval=0.05)
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: source.calls >= 3)
        assert app.snapshot is N2_DOWN


async def test_failed_refresh_keeps_last_data_and_says_why():
    source = FakeSource(HEALTHY, RuntimeError("boom"))
    app = FleetApp(source, interval=3600)
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: app.snapshot is HEALTHY)
        await pilot.press("r")
        await until(pilot, lambda: source.calls == 2 and app.snapshot is not HEALTHY)
        await pilot.pause()
        assert "! refresh: RuntimeError: boom" in status_text(app)
        assert column(app.query_one(NodesTable), 0) == ["n1", "n2", "lb1"]
        assert app.is_running


async def test_quit_key_exits():
    app = FleetApp(FakeSource(HEALTHY), interval=3600)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("q")
        await pilot.pause()
        assert not app.is_running


class DownFleet(Fleet):
    """A façade whose every node is unreachable: `collect` runs the real status pass with nothing to read."""

    def __init__(self, pool: Pool) -> None:
        super().__init__(Inventory("<down>", ()), pool)

    async def nodes(self, *, ports: bool = False) -> list[NodeReport]:
        return [unreachable("n1"), unreachable("lb1")]


async def test_collect_reports_unreachable_nodes_without_raising():
    async with Pool() as pool:
        snap = await collect(DownFleet(pool))
    assert snap.ready == 0
    assert dict(snap.errors) == {"n1": "unreachable: connect: timed out after 5s",
                                 "lb1": "unreachable: connect: timed out after 5s"}
    assert snap.status is not None and snap.status.services == ()


@pytest.mark.lab
async def test_lab_nodes_table_lists_every_node_ready(lab):
    async with Pool() as pool:
        app = FleetApp(FleetSource(Fleet(lab.inventory, pool)), interval=3600)
        async with app.run_test(size=SIZE) as pilot:
            await until(pilot, lambda: app.snapshot is not None, timeout=30)
            await pilot.pause()
            nodes = app.query_one(NodesTable)
            rows = {str(nodes.get_row_at(i)[0]): str(nodes.get_row_at(i)[1]) for i in range(nodes.row_count)}
            assert rows == {"n1": "ready", "n2": "ready", "n3": "ready", "lb1": "ready"}
            assert "4/4 nodes ready" in status_text(app)
            assert app.snapshot is not None and app.snapshot.status is not None
