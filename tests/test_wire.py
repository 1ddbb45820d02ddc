"""The watcher's socket speaks JSON: every value it carries (node reports, status, ps) round trips through the
codec with its types (read-only mappings, frozensets, enums, nested dataclasses), anything of another shape is
refused naming where, and a watcher socket that answers with a pickle or JSON of the wrong shape is not believed:
the reader reads the nodes itself. Values are built from recorded node output where there is some."""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import os
import pickle
from collections.abc import AsyncIterator, Sequence
from dataclasses import replace
from pathlib import Path
from types import MappingProxyType
from typing import Any

import pytest

from fleet.api import Fleet
from fleet.core import labels as L
from fleet.core import wire
from fleet.core.errors import WireError
from fleet.core.model import CommandResult, Inventory, Node, Resources, Vrrp
from fleet.core.nodeops import NodeMark
from fleet.engine.reader import Reader
from fleet.node.facts import parse_facts
from fleet.node.keepalived import VrrpState
from fleet.node.runtime import ctr
from fleet.node.runtime.base import ContainerInfo, Status
from fleet.plan.reconcile import Replica
from fleet.results import (
    LIST_TIMEOUT,
    FleetStatus,
    NodeReport,
    PsResult,
    PsRow,
    ReplicaStatus,
    ServiceStatus,
    VipStatus,
)
from fleet.transport import Pool, warm
from fleet.watch.server import serving

DATA = Path(__file__).parent / "data"


def recorded(path: str) -> dict[str, Any]:
    rec: dict[str, Any] = json.loads((DATA / path).read_text())
    assert rec["source"]
    return rec


def report() -> NodeReport:
    facts = parse_facts(recorded("facts/lab_node_cgroup_hog.json")["stdout"])
    node = Node("n1", "10.0.0.1", 2222, labels={"zone": "a"}, roles=("worker", "lb"),
                capacity=Resources(2.0, 1 << 30), reserved=Resources(0.25, 64 << 20),
                vrrp=Vrrp("10.0.0.100", 24, 51), key_files=("/k",), source_line=3)
    mark = NodeMark(cordoned=True, labels={"gpu": "a"}, removed=frozenset({"zone"}), by="me@host", at=1.5)
    facts = replace(facts, listening=frozenset({22, 80, 20001}))
    return NodeReport(node, "ready", None, facts, 0.25, ip="10.0.0.1", mark=mark)


def ps() -> PsResult:
    rec = recorded("ctr/list.json")
    infos = ctr.parse_list(CommandResult("n1", rec["exit_status"], rec["stdout"], rec["stderr"], 0.0))
    rows = tuple(PsRow("n1", i, L.parse_labels(i.labels)) for i in infos)
    assert any(r.labels is not None for r in rows) and any(r.labels is None for r in rows)
    return PsResult(rows, {"n2": "unreachable"})


def status() -> FleetStatus:
    replica = Replica("n1", "web-0-abc", "web", 0, 3, "h1", 20001, True, Resources(0.1, 32 << 20), "img", False,
                      L.LbLabel(80, "http", "roundrobin"), L.HealthLabel("http", "/healthz", 1.0, 0.5, 3, 2), 9.5)
    svc = ServiceStatus("web", (ReplicaStatus(replica, "10.0.0.1:20001", {"lb1": "up"}),), ("10.0.0.9:80",), (7, 1))
    vip = VipStatus("10.0.0.100", {"lb1": VrrpState(True, True), "lb2": VrrpState(True, False)}, {"lb3": "no answer"})
    return FleetStatus((svc,), {"n2": "unreachable"}, {"lb2": "stats socket refused"}, vip)


VALUES: list[tuple[str, Any]] = [("nodes", [report()]), ("status", status()), ("ps", ps())]


@pytest.mark.parametrize(("op", "value"), VALUES, ids=[op for op, _ in VALUES])
def test_each_value_the_socket_carries_round_trips_with_its_types(op: str, value: Any) -> None:
    body = warm.dumps(op, value)
    json.loads(body)  # plain JSON
    back = warm.loads(op, body)
    assert back == value
    if op == "nodes":
        [r] = back
        assert isinstance(r.node.labels, MappingProxyType) and isinstance(r.mark.labels, MappingProxyType)
        assert r.facts.listening == frozenset({22, 80, 20001}) and isinstance(r.facts.load, tuple)
        assert r.node.vrrp == Vrrp("10.0.0.100", 24, 51) and r.allocatable == value[0].allocatable
    if op == "ps":
        assert all(isinstance(r.info.status, Status) for r in back.rows)
        assert isinstance(back.errors, MappingProxyType) and isinstance(back.rows[0].info.labels, MappingProxyType)
    if op == "status":
        assert back.vip.holders == ["lb1"] and back.services[0].requests == (7, 1)


def _status_doc() -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(warm.dumps("status", status()))
    return doc


def _with(path: Sequence[str | int], value: Any) -> bytes:
    doc = _status_doc()
    target: Any = doc
    for part in path[:-1]:
        target = target[part]
    target[path[-1]] = value
    return json.dumps(doc).encode()


class Planted:
    """Unpickling this would create a file: the proof that a pickle was not loaded."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self) -> tuple[Any, tuple[str, str]]:
        return open, (self.path, "w")


@pytest.mark.parametrize(("body", "message"), [
    (_with(("services", 0, "replicas", 0, "replica", "port"), "20001"),
     "services[0].replicas[0].replica.port: expected int, got str '20001'"),
    (_with(("services", 0, "replicas", 0, "replica", "running"), 1),
     "services[0].replicas[0].replica.running: expected bool, got int 1"),
    (_with(("services", 0, "requests"), [1, 2, 3]), "services[0].requests: expected 2 items, got 3"),
    (_with(("vip", "states", "lb1"), {"running": True, "holds": True, "cmd": "x"}),
     "vip.states.lb1: VrrpState fields differ (unknown: ['cmd'], missing: [])"),
    (_with(("errors",), ["n2"]), "errors: expected a mapping, got list ['n2']"),
    (b'{"services": [], "errors": {}, "lb_errors": {}}',
     "value: FleetStatus fields differ (unknown: [], missing: ['vip'])"),
    (b"[1, 2]", "value: expected FleetStatus (an object), got list [1, 2]"),
    (pickle.dumps(Planted("/nonexistent/x")), "value: not JSON"),
], ids=["str-for-int", "int-for-bool", "tuple-length", "unknown-field", "list-for-map", "missing-field", "list",
        "pickle"])
def test_a_reply_of_the_wrong_shape_is_refused_naming_where(body: bytes, message: str) -> None:
    with pytest.raises(WireError) as info:
        warm.loads("status", body)
    assert str(info.value).startswith(message), str(info.value)


def test_the_codec_sends_only_what_the_type_says() -> None:
    with pytest.raises(WireError, match="expected FleetStatus"):
        warm.dumps("status", {"services": []})
    with pytest.raises(WireError, match=r"^lb_errors: expected a mapping"):
        warm.dumps("status", FleetStatus((), {}, None, None))  # type: ignore[arg-type]
    with pytest.raises(WireError, match="expected a finite float"):
        wire.dumps(Resources, Resources(math.nan, 1))
    with pytest.raises(WireError, match="cannot carry"):
        wire.dumps(dict[int, str], {1: "a"})
    with pytest.raises(WireError, match="no such op"):
        warm.dumps("exec", [])
    assert wire.loads(ContainerInfo, wire.dumps(ContainerInfo, ContainerInfo("c", "i", {}, Status.STOPPED))).status \
        is Status.STOPPED


# --- through the socket ---------------------------------------------------------------------------------------------

@pytest.fixture
def state(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("FLEET_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.delenv("FLEET_NO_WATCHER", raising=False)
    return tmp_path / "state"


@contextlib.asynccontextmanager
async def hostile(inventory: str, body: bytes) -> AsyncIterator[Path]:
    """A socket where the watcher's would be (owned by this user, 0600) answering "ok" with `body`."""
    path = warm.socket_path(inventory)
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readline()
        writer.write(json.dumps({"ok": True, "size": len(body)}).encode() + b"\n" + body)
        await writer.drain()
        writer.close()

    server = await asyncio.start_unix_server(handle, path=str(path))
    os.chmod(path, 0o600)
    try:
        yield path
    finally:
        server.close()
        await server.wait_closed()
        path.unlink(missing_ok=True)


class DirectReads:
    """In-memory direct reads (a fake: what matters here is which way the reader went, not what a node says)."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    async def nodes(self, *, ports: bool = False) -> list[NodeReport]:
        self.calls.append("nodes")
        return [report()]

    async def status(self, reports: Sequence[NodeReport] | None = None) -> FleetStatus:
        self.calls.append("status")
        return status()

    async def ps(self, *, all: bool = False, timeout: float = LIST_TIMEOUT) -> PsResult:
        self.calls.append("ps")
        return ps()


@pytest.mark.parametrize("kind", ["pickle", "wrong shape"])
async def test_a_hostile_reply_is_refused_and_the_reader_reads_the_nodes_itself(state: Path, tmp_path: Path,
                                                                                kind: str) -> None:
    inventory = str(tmp_path / "inv.yaml")
    planted = tmp_path / "planted"
    body = pickle.dumps(Planted(str(planted))) if kind == "pickle" else _with(("services",), "everything")
    async with hostile(inventory, body):
        assert await warm.ask(inventory, "status") is None
        direct = DirectReads()
        reader = Reader(inventory, direct)
        assert await reader.status() == status()
        assert (direct.calls, reader.warm, reader.direct) == (["status"], 0, 1)
    assert not planted.exists(), "the pickle was never loaded"


async def test_a_watcher_whose_answer_is_not_the_ops_type_sends_not_ok(state: Path, tmp_path: Path) -> None:
    inv_path = tmp_path / "inv.yaml"
    inv_path.write_text("nodes: {}\n")

    async def reply(fleet: Any, op: str, args: dict[str, Any], recent: Any) -> Any:
        return {"services": []} if op == "status" else status()

    async with Pool() as pool, serving(Fleet(Inventory(str(inv_path), (Node("n1", "10.0.0.1"),)), pool),
                                       lambda event, **f: None, reply):
        assert await warm.ask(str(inv_path), "status") is None
        assert await warm.ask(str(inv_path), "ps") is None, "a FleetStatus is not what ps promises"
